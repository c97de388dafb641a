// The attach begins when runc hands the container's seccomp listener over (--exec-deny
// errno, the default): the init exists then and waits before its entrypoint, so the daemon
// fences it while runc create finishes and sends cgfence-runc the outcome unasked (a launcher
// that did not offer to take it asks for its attach, and is answered with it).
// Here the real runc runs behind a wrapper that holds `create` open after runc returns, so the
// test can look while cgfence-runc has not yet asked for its attach; and a wrapper that writes
// another pid into the pid file, which must be refused (the fence made for the first undone).
// Real containerd, runc and kernel.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { IMAGE, cid, cli, containerPids, ctr, removeContainer, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('hoff');
let p: SandboxPaths;
let tmp = '';
const ALLOW = ['--annotation', 'cgfence.io/exec-allow=/bin/sh'];

/**
 * A runtime for `ctr run --runc-binary`: cgfence-runc, whose "real runc" is a wrapper that runs
 * runc and then, for `create` only, does `then` (shell) before it returns.
 */
function launcherWith(name: string, then: string, socket?: string): string {
  const realRunc = spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).stdout.trim();
  const wrapper = path.join(tmp, `${name}-runc`);
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh
pidfile=""; prev=""; cmd=""
for a in "$@"; do
  case "$prev" in --pid-file) pidfile="$a";; esac
  case "$a" in --pid-file=*) pidfile="\${a#--pid-file=}";; create) [ -z "$cmd" ] && cmd=create;; esac
  prev="$a"
done
${realRunc} "$@" || exit $?
[ "$cmd" = create ] || exit 0
${then}
exit 0
`,
    { mode: 0o755 },
  );
  const launcher = path.join(tmp, `${name}-launcher`);
  const env = socket ? `CGFENCE_SOCKET=${socket} ` : '';
  fs.writeFileSync(launcher, `#!/bin/sh\n${env}CGFENCE_REAL_RUNC=${wrapper} exec ${p.runc} "$@"\n`, { mode: 0o755 });
  return launcher;
}

/** ctr, without blocking this event loop (the proxy below lives in it). */
function ctrAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('error', reject);
    c.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

interface Proxy {
  socket: string;
  /** Every line each way, in order, per connection. */
  lines: Array<{ to: 'daemon' | 'launcher'; json: Record<string, unknown> }>;
  close(): Promise<void>;
}

/** A socket between cgfence-runc and the daemon that records the lines; `edit` may rewrite the launcher's. */
async function proxy(name: string, edit: (line: string) => string = (l) => l): Promise<Proxy> {
  const socket = path.join(tmp, `${name}.sock`);
  const lines: Proxy['lines'] = [];
  const conns = new Set<net.Socket>();
  const relay = (from: net.Socket, to: net.Socket, dir: 'daemon' | 'launcher', rewrite: (l: string) => string) => {
    let buf = '';
    from.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = rewrite(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        lines.push({ to: dir, json: JSON.parse(line) as Record<string, unknown> });
        to.write(line + '\n');
      }
    });
    from.on('end', () => to.end());
    from.on('error', () => to.destroy());
  };
  const server = net.createServer((launcher) => {
    const daemon = net.connect(p.socket);
    conns.add(launcher).add(daemon);
    relay(launcher, daemon, 'daemon', edit);
    relay(daemon, launcher, 'launcher', (l) => l);
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket,
    lines,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of conns) c.destroy();
        server.close(() => resolve());
      }),
  };
}

function psRow(id: string): { id: string; pid: number; controls: Record<string, string> } | undefined {
  const r = cli(p, ['ps', '--json']);
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Array<{ id: string; pid: number; controls: Record<string, string> }>).find((c) => c.id === id);
}

beforeAll(async () => {
  p = await sandboxUp(dir);
  tmp = fs.mkdtempSync(path.join(dir, 'hand-off-'));
}, 180_000);

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('attach at the seccomp listener hand-off', () => {
  it('the container is fenced before runc create has returned, and the fence holds once it runs', async () => {
    const id = cid('early');
    const held = path.join(tmp, `${id}.held`);
    const release = path.join(tmp, `${id}.release`);
    // Holds create open (at most 30 s) until the test releases it.
    const launcher = launcherWith(
      'hold',
      `touch ${held}; i=0; while [ ! -e ${release} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done`,
    );
    let run: ChildProcess | undefined;
    try {
      run = spawn(
        'ctr',
        [
          '-a',
          p.containerdSocket,
          '-n',
          SANDBOX_NAMESPACE,
          'run',
          '-d',
          '--runc-binary',
          launcher,
          ...ALLOW,
          IMAGE,
          id,
          '/bin/sh',
          '-c',
          'sleep 60',
        ],
        {
          stdio: 'ignore',
        },
      );
      const exited = new Promise<number | null>((resolve) => run!.on('exit', (code) => resolve(code)));
      await waitFor('runc create to return inside the launcher', () => fs.existsSync(held), 30_000);
      // cgfence-runc has not asked for its attach yet (it waits for the wrapper): the daemon
      // attached on the hand-off alone.
      const row = await waitFor('the container in ps while create is held', () => psRow(id), 10_000);
      expect(row.controls.exec).toBe('enforced');
      const attach = (await readRecords(p.auditLog, { container: id })).find((r) => r.type === 'lifecycle' && r.action === 'attach');
      expect(attach?.pid).toBe(row.pid);
      fs.writeFileSync(release, '');
      expect(await exited).toBe(0);
      // The same init, and the fence works: a forbidden exec gets EACCES, an allowed one runs.
      expect(containerPids(p, id)[0]).toBe(row.pid);
      const ex = ctr(p, ['task', 'exec', '--exec-id', 'x1', id, '/bin/sh', '-c', '/usr/local/bin/tool-a; echo rc=$?']);
      expect(ex.stdout + ex.stderr).toMatch(/Permission denied/);
      expect(ex.stdout).toContain('rc=126');
      expect(
        (await readRecords(p.auditLog, { container: id })).filter((r) => r.type === 'lifecycle' && r.action === 'attach'),
        'one attach record',
      ).toHaveLength(1);
    } finally {
      fs.writeFileSync(release, '');
      run?.kill('SIGKILL');
      await removeContainer(p, id);
    }
  });

  it('a pid file that names another process than the one runc handed over: refused, the early fence undone', async () => {
    const id = cid('pidswap');
    // Any live process other than the init: the wrapper's own shell.
    const launcher = launcherWith('swap', 'echo $$ > "$pidfile"');
    try {
      const r = ctr(p, ['run', '-d', '--runc-binary', launcher, ...ALLOW, IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/reported init pid \d+ with the seccomp listener but \d+ in its pid file/);
      expect(psRow(id)).toBeUndefined();
      const recs = await waitFor('the refusal and detach records', async () => {
        const all = await readRecords(p.auditLog, { container: id });
        return all.some((x) => x.action === 'refuse') && all.some((x) => x.action === 'detach') ? all : undefined;
      });
      const actions = recs.filter((x) => x.type === 'lifecycle').map((x) => x.action);
      expect(actions.indexOf('attach')).toBeLessThan(actions.indexOf('detach'));
      expect(String(recs.find((x) => x.action === 'refuse')?.reason)).toContain('pid file');
    } finally {
      await removeContainer(p, id);
    }
  });

  it('cgfence-runc asks for no attach: the outcome comes unasked, for the init runc started', async () => {
    const id = cid('push');
    const px = await proxy('push');
    try {
      const launcher = launcherWith('push', ':', px.socket);
      const r = await ctrAsync(['run', '-d', '--runc-binary', launcher, ...ALLOW, IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
      expect(r.status, r.stderr).toBe(0);
      const sent = px.lines.filter((l) => l.to === 'daemon').map((l) => l.json);
      expect(sent.map((q) => q.op)).toEqual(['prepare']);
      expect(sent[0].push).toBe(true);
      const got = px.lines.filter((l) => l.to === 'launcher').map((l) => l.json);
      expect(got[0]).toMatchObject({ ok: true, fence: true, push: true });
      const pid = containerPids(p, id)[0];
      expect(got[1]).toMatchObject({ ok: true, fence: true, pushed: 'attach', pid });
      expect(psRow(id)?.pid).toBe(pid);
      // The fence holds.
      const ex = ctr(p, ['task', 'exec', '--exec-id', 'x1', id, '/bin/sh', '-c', '/usr/local/bin/tool-a; echo rc=$?']);
      expect(ex.stdout).toContain('rc=126');
    } finally {
      await px.close();
      await removeContainer(p, id);
    }
  });

  it('a launcher that does not offer to take the outcome (an older one) asks for its attach and is answered', async () => {
    const id = cid('nopush');
    const px = await proxy('nopush', (l) => l.replace(',"push":true', ''));
    try {
      const launcher = launcherWith('nopush', ':', px.socket);
      const r = await ctrAsync(['run', '-d', '--runc-binary', launcher, ...ALLOW, IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
      expect(r.status, r.stderr).toBe(0);
      const sent = px.lines.filter((l) => l.to === 'daemon').map((l) => l.json);
      expect(sent.map((q) => q.op)).toEqual(['prepare', 'attach']);
      expect(sent[0].push).toBeUndefined();
      const got = px.lines.filter((l) => l.to === 'launcher').map((l) => l.json);
      expect(got).toHaveLength(2);
      expect(got[0].push).toBeUndefined();
      expect(got.some((g) => g.pushed !== undefined)).toBe(false);
      expect(psRow(id)?.pid).toBe(containerPids(p, id)[0]);
    } finally {
      await px.close();
      await removeContainer(p, id);
    }
  });
});
