// Churn, short variant (the long one is `npm run bench churn`): containers started and
// exited through the sandbox leave BPF objects, pins and the daemon's fds at their baseline.
import fs from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { footprint, Footprint } from '../src/sandbox/footprint';
import { holderPids } from './helpers/daemon-restart';
import { cid, cli, ctr, runFenced, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('churn');
const N = 20;
let p: SandboxPaths;

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Seccomp notify fds held by these processes (the daemon and the fd-holder keep one per fenced container). */
function notifyFds(pids: number[]): number {
  let n = 0;
  for (const pid of pids)
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:seccomp notify') n++;
      } catch {
        /* closed meanwhile */
      }
    }
  return n;
}

/** Waits (10 s at most) for the BPF objects, pins and daemon fds to be back at `before`; returns the last footprint. */
async function expectBaseline(pid: number, before: Footprint): Promise<Footprint> {
  const after = await waitFor(
    'BPF objects back at the baseline',
    () => {
      const f = footprint(p.pinDir, pid);
      return f.progs === before.progs && f.maps === before.maps && f.links === before.links && f.daemonFds === before.daemonFds && f;
    },
    10_000,
  ).catch(() => footprint(p.pinDir, pid));
  expect({ progs: after.progs, maps: after.maps, links: after.links, pins: after.pins, fds: after.daemonFds }).toEqual({
    progs: before.progs,
    maps: before.maps,
    links: before.links,
    pins: before.pins,
    fds: before.daemonFds,
  });
  return after;
}

it(`${N} fenced containers started and exited leave nothing behind`, async () => {
  const pid = Number(fs.readFileSync(p.daemonPid, 'utf8'));
  // Warm up once so the baseline includes what the daemon allocates on first use.
  runFenced(p, cid('warm'), { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/true']);
  await waitFor('warm-up detach', () => JSON.parse(cli(p, ['ps', '--json']).stdout).length === 0);
  const before: Footprint = footprint(p.pinDir, pid);
  for (let i = 0; i < N; i++) {
    const r = runFenced(p, cid('churn'), { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/sh', '-c', '/usr/local/bin/tool-a; true']);
    expect(r.status, r.stderr).toBe(0);
  }
  await waitFor('every container detached', () => JSON.parse(cli(p, ['ps', '--json']).stdout).length === 0);
  const after = await expectBaseline(pid, before);
  // RSS is not exact (the JS heap grows and shrinks with GC): bounded growth only.
  expect(after.daemonRssKb - before.daemonRssKb).toBeLessThan(64 * 1024);
});

it('containers refused at attach (an allow-list typo, a forbidden entrypoint, with network rules too) leave nothing behind', async () => {
  const pid = Number(fs.readFileSync(p.daemonPid, 'utf8'));
  const tables = () => JSON.parse(cli(p, ['status', '--json']).stdout).tables as Record<string, { used: number }>;
  await waitFor('nothing fenced', () => JSON.parse(cli(p, ['ps', '--json']).stdout).length === 0);
  const before = footprint(p.pinDir, pid);
  const usedBefore = tables();
  const holders = () => [pid, ...holderPids(p)];
  const notifyBefore = notifyFds(holders());
  const refused: Array<Record<string, string>> = [
    { 'cgfence.io/exec-allow': '/bin/sh,/bin/nosuch', 'cgfence.io/egress-deny': '10.0.0.0/8' },
    { 'cgfence.io/exec-allow': '/usr/local/bin/tool-a', 'cgfence.io/egress-deny': '10.0.0.0/8' },
  ];
  for (let i = 0; i < 6; i++) {
    const id = cid('refused');
    const r = runFenced(p, id, refused[i % 2], ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN']);
    ctr(p, ['containers', 'delete', id]);
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('SHOULD-NOT-RUN');
    expect(r.stderr).toMatch(i % 2 ? /does not allow the entrypoint/ : /\/bin\/nosuch: no such file in the container/);
  }
  expect(JSON.parse(cli(p, ['ps', '--json']).stdout)).toEqual([]);
  await expectBaseline(pid, before);
  // runc handed each one's seccomp listener over before it was refused: none may be kept.
  await waitFor('no notify fd kept for a refused container', () => notifyFds(holders()) === notifyBefore, 10_000).catch(() => undefined);
  expect(notifyFds(holders())).toBe(notifyBefore);
  const usedAfter = tables();
  for (const [name, t] of Object.entries(usedBefore)) expect(usedAfter[name].used, name).toBe(t.used);
});
