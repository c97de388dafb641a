// Denied execs fail with EACCES instead of being killed: seccomp user notification through
// runc's listenerPath, decided by the native notify loop, with the kernel exec fence behind
// it. Real containerd, runc and kernel.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { FIXTURE_DIR, importFixtureImage } from './helpers/fixture-image';
import { cid, cli, ctr, removeContainer, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('nt');
const IMAGE = 'cgfence.local/notify-test:latest';
let p: SandboxPaths;

function run(id: string, annotations: Record<string, string>, script: string) {
  const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  return ctr(p, ['run', '--rm', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', script], 120_000);
}

const FENCED = { 'cgfence.io/exec-allow': `/bin/sh,${FIXTURE_DIR}/exec-probe,${FIXTURE_DIR}/exec-race` };

function notifyStats(): Record<string, number> {
  const st = JSON.parse(cli(p, ['status', '--json']).stdout) as { kernel: { backends: { exec: { notify: Record<string, number> } } } };
  return st.kernel.backends.exec.notify;
}

beforeAll(async () => {
  p = await sandboxUp(dir);
  await importFixtureImage(p, IMAGE, ['exec-probe', 'exec-race', 'marker']);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('a denied exec fails with EACCES', () => {
  it('sh says "Permission denied" and returns 126; allowed programs run; the denial is audited', async () => {
    const id = cid('deny');
    const r = run(
      id,
      FENCED,
      [
        '/usr/local/bin/tool-a echo FORBIDDEN-RAN; echo rc=$?',
        '(exec -a echo /bin/busybox allowed-ran)',
        'ls / >/dev/null && echo ls-ok',
        'nosuchprogram; echo missing=$?',
      ].join('; '),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('FORBIDDEN-RAN');
    expect(r.stdout).toContain('rc=126');
    expect(r.stderr).toContain('/usr/local/bin/tool-a: Permission denied');
    expect(r.stdout).toContain('allowed-ran');
    expect(r.stdout).toContain('ls-ok');
    // What cannot be resolved is the kernel's to fail: a PATH miss still reads "not found".
    expect(r.stdout).toContain('missing=127');
    let recs: Awaited<ReturnType<typeof readRecords>> = [];
    const rec = await waitFor('deny record', () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find((x) => x.type === 'exec' && x.action === 'deny');
    });
    expect(rec).toMatchObject({
      path: '/usr/local/bin/tool-a',
      via: 'seccomp-notify',
      errno: 'EACCES',
      syscall: 'execve',
      comm: 'sh',
      namespace: 'default',
    });
    expect(String(rec.inode)).toMatch(/^\d+$/);
    expect(recs.some((x) => x.type === 'exec' && x.action === 'deny' && x.via === undefined)).toBe(false); // nothing killed
    const detach = await waitFor('detach record', () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find((x) => x.type === 'lifecycle' && x.action === 'detach');
    });
    // The refusal counts as the container's one denial, though the kernel fence never saw it.
    expect(detach).toMatchObject({ denied: 1, denied_by_notify: 1 });
  });

  it("resolves the path in the container's own root: symlinks, relative paths, /proc/self", () => {
    const r = run(
      cid('paths'),
      FENCED,
      [
        'ln -s /usr/local/bin/tool-a /tmp/abs; /tmp/abs; echo abs=$?',
        'ln -s ../usr/local/bin/tool-b /tmp/rel; /tmp/rel; echo rel=$?',
        'cd /usr/local; ./bin/tool-a; echo dot=$?',
        '/proc/self/root/usr/local/bin/tool-a; echo procroot=$?',
        'cd /; /proc/self/cwd/bin/true; echo procok=$?',
      ].join('; '),
    );
    expect(r.status, r.stderr).toBe(0);
    for (const k of ['abs', 'rel', 'dot', 'procroot']) expect(r.stdout, r.stderr).toContain(`${k}=126`);
    expect(r.stdout).toContain('procok=0');
    expect(r.stderr).not.toMatch(/Killed/);
  });

  it('judges execs through an fd by the file behind it: execveat(AT_EMPTY_PATH), /proc/self/fd/N, a memfd', () => {
    const modes = ['execve', 'execveat-empty', 'procfd', 'relative', 'memfd'];
    const script = [
      ...modes.map((m) => `${FIXTURE_DIR}/exec-probe ${m} /usr/local/bin/tool-a echo BAD-${m}; echo "bad-${m}=$?"`),
      ...modes.map((m) => `${FIXTURE_DIR}/exec-probe ${m} /bin/echo good-${m}; echo "good-${m}=$?"`),
    ].join('; ');
    const r = run(cid('fds'), FENCED, script);
    expect(r.status, r.stderr).toBe(0);
    for (const m of modes) {
      expect(r.stdout).not.toContain(`BAD-${m}`);
      // exec-probe exits 127 after printing the exec call's errno
      expect(r.stdout, r.stderr).toContain(`bad-${m}=127`);
    }
    expect(r.stderr).toMatch(/exec-probe: execveat: Permission denied/);
    expect(r.stderr).toMatch(/exec-probe: fexecve: Permission denied/);
    expect(r.stderr).toMatch(/exec-probe: execve \/proc\/self\/fd: Permission denied/);
    // A memfd is a new file: even a copy of an allowed program is not allowed.
    expect(r.stdout).not.toMatch(/^good-memfd$/m);
    expect(r.stdout).toContain('good-memfd=127');
    for (const m of modes.filter((x) => x !== 'memfd')) expect(r.stdout, r.stderr).toContain(`good-${m}\ngood-${m}=0`);
  });

  it('denies `ctr task exec` of a forbidden program with EACCES and runs an allowed one', async () => {
    const id = cid('taskexec');
    const ann = Object.entries(FENCED).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
    const start = ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const bad = ctr(p, ['task', 'exec', '--exec-id', 'bad', id, '/usr/local/bin/tool-a', 'echo', 'EXEC-RAN']);
      expect(bad.status).not.toBe(0);
      expect(bad.stdout).not.toContain('EXEC-RAN');
      expect(bad.stderr).toMatch(/permission denied/i);
      const ok = ctr(p, ['task', 'exec', '--exec-id', 'ok', id, '/bin/sh', '-c', '/usr/local/bin/tool-b; echo inner=$?']);
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stdout).toContain('inner=126');
    } finally {
      await removeContainer(p, id);
    }
  });

  it('in audit mode nothing is routed: the program runs and the kernel fence audits it', () => {
    const r = run(cid('audit'), { ...FENCED, 'cgfence.io/mode': 'audit' }, '(exec -a echo /usr/local/bin/tool-a AUDIT-RAN)');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('AUDIT-RAN');
  });
});

describe('time of check, time of use', () => {
  it('a thread flipping the path between an allowed and a forbidden file never gets the forbidden one to run', () => {
    const before = notifyStats();
    const script = [
      `ln -s /bin/true /tmp/link; ln -s ${FIXTURE_DIR}/marker /tmp/other`,
      `CGFENCE_MARKER=/tmp/forbidden-ran ${FIXTURE_DIR}/exec-race /tmp/link /tmp/other 600`,
      'test -e /tmp/forbidden-ran && echo MARKER-EXISTS || echo no-marker',
    ].join('; ');
    const r = run(cid('race'), FENCED, script);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('no-marker');
    const m = /ran=(\d+) denied=(\d+) killed=(\d+) other=(\d+) swaps=(\d+)/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    const [ran, denied, killed, other] = m!.slice(1, 5).map(Number);
    console.log(`exec race: ${m![0]}`);
    expect(ran + denied + killed).toBe(600);
    expect(other).toBe(0);
    // Both sides of the race were hit: allowed runs and notify-time denials. The killed ones
    // passed the check with the allowed file and met the forbidden one in the kernel.
    expect(ran).toBeGreaterThan(0);
    expect(denied).toBeGreaterThan(0);
    const after = notifyStats();
    expect(after.denied - before.denied).toBeGreaterThanOrEqual(denied);
  });
});
