// The notify path under load and its allowed-path cache: 20 exec-fenced containers exec at
// once, each a mix of allowed and forbidden programs, and every exec must be decided as its
// allow-list says (none left waiting, none forbidden let through, none allowed refused).
// Real containerd, runc and kernel; correctness only, nothing timed (the 50-container figure
// is `npm run bench exec-load`).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { FIXTURE_DIR, importFixtureImage } from './helpers/fixture-image';
import { cid, cli, ctr, removeContainers, sandboxDir } from './helpers/sandbox';

const dir = sandboxDir('nl');
const IMAGE = 'cgfence.local/notify-load:latest';
const CONTAINERS = 20;
const EXECS = 300;
const EVERY = 10; // one forbidden exec in ten
let p: SandboxPaths;
const started: string[] = [];

const ALLOW = { 'cgfence.io/exec-allow': `/bin/sh,${FIXTURE_DIR}/exec-mix` };

function notifyStats(): Record<string, number> {
  const r = cli(p, ['status', '--json']);
  return (JSON.parse(r.stdout) as { kernel: { backends: { exec: { notify: Record<string, number> } } } }).kernel.backends.exec.notify;
}

function startDetached(id: string): void {
  const ann = Object.entries(ALLOW).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  const r = ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', 'sleep 600'], 120_000);
  if (r.status !== 0) throw new Error(`ctr run ${id}: ${r.stderr}`);
  started.push(id);
}

/** `ctr task exec`, asynchronously, so that all containers exec at once. */
function execAsync(
  id: string,
  execId: string,
  argv: string[],
  timeoutMs: number,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'task', 'exec', '--exec-id', execId, id, ...argv], {
      timeout: timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

beforeAll(async () => {
  p = await sandboxUp(dir);
  await importFixtureImage(p, IMAGE, ['exec-mix', 'marker']);
}, 180_000);

afterAll(async () => {
  await removeContainers(p, started);
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
}, 180_000);

describe('under load', () => {
  it(`${CONTAINERS} fenced containers exec at once: every exec decided as the allow-list says, none left waiting`, async () => {
    const ids = Array.from({ length: CONTAINERS }, (_, i) => cid(`ld${i}`));
    for (const id of ids) startDetached(id);
    // --exec-deny errno is the default: every one of them is routed to the notify loop.
    const rows = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; execDeny: string | null }>;
    for (const id of ids) expect(rows.find((x) => x.id === id)?.execDeny, id).toBe('errno');
    const before = notifyStats();
    const runs = await Promise.all(
      ids.map((id) =>
        execAsync(
          id,
          'mix',
          [
            '/bin/sh',
            '-c',
            `CGFENCE_MARKER=/tmp/forbidden-ran ${FIXTURE_DIR}/exec-mix n${EXECS} /bin/true ${FIXTURE_DIR}/marker ${EVERY}; test -e /tmp/forbidden-ran && echo MARKER-EXISTS || echo no-marker`,
          ],
          240_000,
        ),
      ),
    );
    let denied = 0;
    for (const [i, r] of runs.entries()) {
      // A notification left unanswered would hold its exec, and the run, past the timeout.
      expect(r.status, `${ids[i]}: ${r.stderr}`).toBe(0);
      const m = /execs=(\d+) allowed=(\d+) denied=(\d+) killed=(\d+) bypass=(\d+) other=(\d+)/.exec(r.stdout);
      expect(m, r.stdout + r.stderr).not.toBeNull();
      const [execs, allowed, refused, killed, bypass, other] = m!.slice(1).map(Number);
      expect({ execs, allowed, refused, killed, bypass, other }).toEqual({
        execs: EXECS,
        allowed: EXECS - EXECS / EVERY,
        refused: EXECS / EVERY,
        killed: 0,
        bypass: 0,
        other: 0,
      });
      expect(r.stdout).toContain('no-marker');
      denied += refused;
    }
    const after = notifyStats();
    // Each forbidden exec was refused by the notify loop (EACCES), not by luck elsewhere.
    expect(after.denied - before.denied).toBeGreaterThanOrEqual(denied);
    expect(after.notifications - before.notifications).toBeGreaterThanOrEqual(CONTAINERS * EXECS);
    expect(after.threads).toBeGreaterThanOrEqual(CONTAINERS);
    expect(after.syncWakeUp).toBeGreaterThan(0);
  }, 600_000);
});

describe('the allowed-path cache', () => {
  it('answers a path it found allowed without resolving it again; a file renamed over it since is killed by the kernel fence, never run', async () => {
    const id = cid('cache');
    startDetached(id);
    const before = notifyStats();
    const r = await execAsync(
      id,
      'c',
      [
        '/bin/sh',
        '-c',
        [
          `cp ${FIXTURE_DIR}/exec-mix /tmp/prog`, // a copy is a new file: not allowed
          `${FIXTURE_DIR}/exec-mix n3 /bin/true /bin/true 1000; echo first=$?`,
          `${FIXTURE_DIR}/exec-mix n3 /bin/true /bin/true 1000; echo second=$?`,
          // The cached path now names a forbidden file: the check is skipped, the kernel decides.
          `cp ${FIXTURE_DIR}/marker /tmp/swap && mv /tmp/swap ${FIXTURE_DIR}/exec-mix`,
          `CGFENCE_MARKER=/tmp/ran ${FIXTURE_DIR}/exec-mix; echo third=$?`,
          'test -e /tmp/ran && echo MARKER-EXISTS || echo no-marker',
          // A path never found allowed is resolved every time: a forbidden file is refused.
          `CGFENCE_MARKER=/tmp/ran2 /tmp/prog; echo copy=$?`,
          `CGFENCE_MARKER=/tmp/ran2 /tmp/prog; echo copy-again=$?`,
        ].join('; '),
      ],
      120_000,
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('first=0');
    expect(r.stdout).toContain('second=0');
    expect(r.stdout).toContain('third=137'); // SIGKILL before its first instruction
    expect(r.stdout).toContain('no-marker');
    expect(r.stdout).toContain('copy=126');
    expect(r.stdout).toContain('copy-again=126');
    const after = notifyStats();
    expect(after.cacheHits - before.cacheHits).toBeGreaterThanOrEqual(2);
  }, 180_000);
});
