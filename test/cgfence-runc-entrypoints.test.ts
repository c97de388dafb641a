// Every runc entry point that starts a container, through cgfence-runc with the real runc and
// the real daemon, on bundles made by hand (`runc spec`, a busybox rootfs), no containerd in
// between: `run` in the foreground and detached is fenced (prepare, create, attach, start),
// `restore` is refused, and a container that asks for nothing starts while the daemon is
// down unless the node has a defaultProfile (issue 14, deliverables 2 and 6).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { killDaemon } from './helpers/daemon-restart';
import { cid, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('rep');
let p: SandboxPaths;
let tmp = '';
let runcRoot = '';
let realRunc = '';

/** A bundle with a busybox rootfs: /bin/sh (allowed when annotated) and /bin/printf, a copy (a different file). */
function bundle(name: string, args: string[], annotations: Record<string, string>, terminal = false): string {
  const b = path.join(tmp, name);
  fs.mkdirSync(path.join(b, 'rootfs', 'bin'), { recursive: true });
  spawnSync(realRunc, ['spec'], { cwd: b });
  fs.copyFileSync('/bin/busybox', path.join(b, 'rootfs/bin/busybox'));
  fs.chmodSync(path.join(b, 'rootfs/bin/busybox'), 0o755);
  fs.copyFileSync('/bin/busybox', path.join(b, 'rootfs/bin/printf'));
  fs.chmodSync(path.join(b, 'rootfs/bin/printf'), 0o755);
  for (const applet of ['sh', 'echo', 'sleep', 'cat']) fs.symlinkSync('busybox', path.join(b, 'rootfs/bin', applet));
  const spec = JSON.parse(fs.readFileSync(path.join(b, 'config.json'), 'utf8'));
  spec.process.terminal = terminal;
  spec.process.args = args;
  spec.annotations = annotations;
  fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify(spec));
  return b;
}

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CGFENCE_SOCKET: p.socket,
    CGFENCE_REAL_RUNC: realRunc,
    CGFENCE_RUNC_CONFIG: path.join(tmp, 'no-runc.conf'),
    CGFENCE_NODE_HINT: path.join(p.stateDir, 'launcher-node.conf'),
    CGFENCE_SPOOL_DIR: path.join(tmp, 'spool'),
    ...extra,
  };
}

let calls = 0;

/**
 * cgfence-runc with stdout and stderr in files: a created or detached container keeps the
 * launcher's stdio (as runc's does), so a pipe would not close until the container exits.
 */
function launcher(args: string[], extra: Record<string, string> = {}) {
  const out = path.join(tmp, `out-${++calls}`);
  const err = path.join(tmp, `err-${calls}`);
  const fds = [fs.openSync(out, 'w'), fs.openSync(err, 'w')];
  const r = spawnSync(p.runc, ['--root', runcRoot, ...args], { env: env(extra), stdio: ['ignore', fds[0], fds[1]], timeout: 60_000 });
  fds.forEach((fd) => fs.closeSync(fd));
  return { status: r.status, stdout: fs.readFileSync(out, 'utf8'), stderr: fs.readFileSync(err, 'utf8') };
}

function runcState(id: string): string | null {
  const r = spawnSync(realRunc, ['--root', runcRoot, 'state', id], { encoding: 'utf8' });
  return r.status === 0 ? (JSON.parse(r.stdout).status as string) : null;
}

function auditFor(id: string): Array<Record<string, unknown>> {
  if (!fs.existsSync(p.auditLog)) return [];
  return fs
    .readFileSync(p.auditLog, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.container_id === id);
}

function cleanup(id: string): void {
  spawnSync(realRunc, ['--root', runcRoot, 'delete', '--force', id]);
}

const ALLOW_SH = { 'cgfence.io/exec-allow': '/bin/sh' };
const PROBE = ['/bin/sh', '-c', 'echo inside; /bin/printf "escaped\\n"; echo "other=$?"; exit 3'];

beforeAll(async () => {
  p = await sandboxUp(dir);
  tmp = fs.mkdtempSync('/tmp/cgft-rep-');
  runcRoot = path.join(tmp, 'runc-root');
  realRunc = spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).stdout.trim();
});

afterAll(async () => {
  for (const d of fs.existsSync(runcRoot) ? fs.readdirSync(runcRoot) : []) cleanup(d);
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('runc create through cgfence-runc', () => {
  it('fenced at create: after runc start the entrypoint runs under the allow-list', async () => {
    const id = cid('create');
    const b = bundle(id, ['/bin/sh', '-c', 'echo inside; /bin/printf escaped; echo "other=$?"; sleep 60'], ALLOW_SH);
    const c = launcher(['create', '--bundle', b, '--pid-file', path.join(b, 'init.pid'), id]);
    expect(c.status, c.stderr).toBe(0);
    expect(runcState(id)).toBe('created');
    expect(auditFor(id).find((a) => a.action === 'attach')).toBeTruthy();
    const st = launcher(['start', id]);
    expect(st.status, st.stderr).toBe(0);
    await waitFor('the exec denial in the audit log', () => auditFor(id).some((a) => JSON.stringify(a).includes('/bin/printf')), 20_000);
    cleanup(id);
  });
});

describe('runc run through cgfence-runc', () => {
  it('foreground: fenced before the entrypoint, stdio and exit status as runc run, deleted afterwards', () => {
    const id = cid('run-fg');
    const b = bundle(id, PROBE, ALLOW_SH);
    const r = launcher(['run', '--bundle', b, id]);
    expect(r.stdout, r.stderr).toContain('inside\n');
    expect(r.stdout).not.toContain('escaped');
    expect(r.stdout).toContain('other=126');
    expect(r.stderr).toMatch(/\/bin\/printf: Permission denied/);
    expect(r.status).toBe(3);
    expect(runcState(id)).toBeNull();
    const attach = auditFor(id).find((a) => a.action === 'attach');
    expect(attach, JSON.stringify(auditFor(id))).toMatchObject({ how: 'create' });
    expect(auditFor(id).some((a) => a.decision === 'deny' || a.action === 'deny' || JSON.stringify(a).includes('/bin/printf'))).toBe(true);
  });

  it('foreground: a signal to the launcher goes to the container init, --keep keeps it', async () => {
    const id = cid('run-sig');
    const b = bundle(id, ['/bin/sh', '-c', 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 1; done'], ALLOW_SH);
    const child = spawn(p.runc, ['--root', runcRoot, 'run', '--keep', '--bundle', b, id], {
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await waitFor('the container to be ready', () => out.includes('ready'), 30_000);
    child.kill('SIGTERM');
    expect(await exit).toBe(7);
    expect(out).toContain('got-term');
    expect(runcState(id)).toBe('stopped');
    cleanup(id);
  });

  it('detached: create (fenced) then start, the launcher returns at once and the container runs', async () => {
    const id = cid('run-d');
    const b = bundle(id, ['/bin/sh', '-c', 'sleep 60'], ALLOW_SH);
    const r = launcher(['run', '-d', '--bundle', b, id]);
    expect(r.status, r.stderr).toBe(0);
    expect(runcState(id)).toBe('running');
    expect(auditFor(id).find((a) => a.action === 'attach')).toBeTruthy();
    const ex = spawnSync(realRunc, ['--root', runcRoot, 'exec', id, '/bin/printf', 'escaped'], { encoding: 'utf8', timeout: 30_000 });
    expect(ex.stdout).not.toContain('escaped');
    expect(ex.status).not.toBe(0);
    cleanup(id);
  });

  it("a refused policy: nothing is created, the reason is the launcher's answer", () => {
    const id = cid('run-bad');
    const b = bundle(id, PROBE, { 'cgfence.io/egress-allow': '10.0.0.300/8' });
    const r = launcher(['run', '--bundle', b, id]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cgfence: invalid cgfence policy: cgfence.io\/egress-allow/);
    expect(r.stdout).not.toContain('inside');
    expect(runcState(id)).toBeNull();
  });

  it('foreground with process.terminal is refused (its pty relay lives only inside runc run)', () => {
    const id = cid('run-tty');
    const b = bundle(id, PROBE, ALLOW_SH, true);
    const r = launcher(['run', '--bundle', b, id]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/process.terminal=true is not supported/);
    expect(runcState(id)).toBeNull();
  });
});

describe('runc restore through cgfence-runc', () => {
  it('is refused with a clear message, runc never runs', () => {
    const id = cid('restore');
    const b = bundle(id, PROBE, ALLOW_SH);
    const r = launcher(['restore', '--bundle', b, '--image-path', path.join(tmp, 'img'), id]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cgfence: runc restore is not supported/);
    expect(runcState(id)).toBeNull();
  });
});

describe('the daemon is down', () => {
  beforeAll(async () => {
    await killDaemon(p);
  });

  it('a container that asks for nothing starts: create, and run', () => {
    const id = cid('plain');
    const b = bundle(id, ['/bin/sh', '-c', 'echo plain'], {});
    const c = launcher(['create', '--bundle', b, '--pid-file', path.join(b, 'init.pid'), id]);
    expect(c.status, c.stderr).toBe(0);
    expect(runcState(id)).toBe('created');
    cleanup(id);
    const id2 = cid('plain-run');
    const b2 = bundle(id2, ['/bin/sh', '-c', 'echo plain; /bin/printf "other-runs\\n"'], { 'io.example/other': 'x' });
    const r = launcher(['run', '--bundle', b2, id2]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('plain\nother-runs\n');
  });

  it('an annotated container is refused (fail-closed)', () => {
    const id = cid('ann');
    const b = bundle(id, PROBE, ALLOW_SH);
    const r = launcher(['create', '--bundle', b, '--pid-file', path.join(b, 'init.pid'), id]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/daemon unreachable .* refusing to create/);
    expect(runcState(id)).toBeNull();
  });

  it('with a defaultProfile on the node, or no word from the daemon about it, an unannotated one is refused too', () => {
    const hint = path.join(tmp, 'hint-profile.conf');
    fs.writeFileSync(hint, 'default_profile=baseline\n');
    for (const h of [hint, path.join(tmp, 'no-such-hint.conf')]) {
      const id = cid('dp');
      const b = bundle(id, PROBE, {});
      const r = launcher(['create', '--bundle', b, '--pid-file', path.join(b, 'init.pid'), id], { CGFENCE_NODE_HINT: h });
      expect(r.status, h).toBe(1);
      expect(r.stderr).toMatch(/daemon unreachable .* refusing to create/);
      expect(runcState(id)).toBeNull();
    }
  });

  it('the daemon wrote what the launcher reads: no defaultProfile here', () => {
    expect(fs.readFileSync(path.join(p.stateDir, 'launcher-node.conf'), 'utf8')).toMatch(/^default_profile=$/m);
  });
});
