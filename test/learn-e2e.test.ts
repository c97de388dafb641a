// Learn mode with real containerd and runc: a workload runs with cgfence.io/mode=learn, the
// learned annotations (`cgfence learn`) fence the same workload in enforce mode with no
// denial, and a step it never took (a new binary, a new destination, a new syscall) is denied.
import { SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { recordsOf, waitRecord } from './helpers/container-records';
import { parseLearned } from './helpers/learn-output';
import { killDaemon } from './helpers/daemon-restart';
import { cid, cli, ctr, removeContainer, runFencedBounded, sandboxDir, startFenced, waitFor } from './helpers/sandbox';
import { mapField } from '../src/audit/audit-read';

const dir = sandboxDir('learn');
let p: SandboxPaths;

// Every step prints its outcome, so a denial anywhere shows up as a missing line. Learning
// records the code paths the run took, so the workload takes the same ones whatever the
// timing: the first connection is refused on purpose (the enforce run may see refusals while
// its listener starts), and there is no `wait` for the listener (busybox sh waits with
// rt_sigsuspend only when the job is still running, a path a learn run may never take; an
// enforce run that takes it spins on EPERM). The loops bound retries, not time: 20,000, since
// on a loaded machine (CI runs the e2e files in parallel) 2,000 tries of the connect loop ran
// out in about a second, before the listener in the background had started. The listener's
// stdin is a FIFO nobody writes to (opened read-write, so it never ends): busybox nc shuts its
// side of a connection down when its stdin ends, and a listener with /dev/null as stdin did
// so at once, so under load a client whose `echo hello` had not reached it yet saw the
// listener's FIN first and left without sending (exit 0, /tmp/got empty, step-net missing).
const WORKLOAD = [
  'ls / >/dev/null && echo step-ls',
  'echo data > /tmp/f && cat /tmp/f >/dev/null && echo step-file',
  '(exec -a echo /usr/local/bin/tool-a step-tool-a)',
  'echo early | nc 127.0.0.1 7001 2>/dev/null || echo step-refused',
  'mkfifo /tmp/idle && nc -l -p 7001 <>/tmp/idle > /tmp/got &',
  'i=0; until echo hello | nc 127.0.0.1 7001 2>/dev/null; do i=$((i+1)); [ $i -gt 20000 ] && break; done',
  'i=0; until grep -q hello /tmp/got; do i=$((i+1)); [ $i -gt 20000 ] && break; done',
  'grep -q hello /tmp/got && echo step-net',
  'echo WORKLOAD-DONE',
].join('\n');
const STEPS = ['step-ls', 'step-file', 'step-tool-a', 'step-refused', 'step-net', 'WORKLOAD-DONE'];

function networkBackend(): boolean {
  const st = JSON.parse(cli(p, ['status', '--json']).stdout) as { kernel: { backends: Record<string, { backend: string }> } };
  return !st.kernel.backends.network.backend.startsWith('none');
}

/** `ctr run --rm` through cgfence-runc; a hung container is killed and removed, so the test fails instead. */
function runFenced(id: string, annotations: Record<string, string>, argv: string[]): SpawnSyncReturns<string> {
  return runFencedBounded(p, id, annotations, argv, 90_000);
}

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('learn, then enforce what was learned', () => {
  const learnId = cid('learn');
  let learned: Record<string, string> = {};
  let withNetwork = true;

  it('records the workload in learn mode, blocking nothing, and writes the result at exit', async () => {
    const r = runFenced(learnId, { 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', WORKLOAD]);
    expect(r.status, r.stderr).toBe(0);
    for (const s of STEPS) expect(r.stdout).toContain(s);

    const attach = await waitRecord(p, learnId, (x) => x.type === 'lifecycle' && x.action === 'attach', 'attach record');
    expect(attach.controls).toEqual({ exec: 'learning', network: 'learning', seccomp: 'learning' });
    const rec = await waitRecord(p, learnId, (x) => x.type === 'lifecycle' && x.action === 'learned', 'learned record');
    expect(mapField(rec.annotations)['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a');

    const out = cli(p, ['learn', learnId]);
    expect(out.status, out.stderr).toBe(0);
    learned = parseLearned(out.stdout);
    expect(Object.keys(learned)).toEqual([
      'cgfence.io/exec-allow',
      'cgfence.io/egress-allow',
      'cgfence.io/ingress-allow',
      'cgfence.io/seccomp-allow',
    ]);
    // Applets run as /bin/ls, /proc/self/exe...: one identity, listed by the file's own path.
    expect(learned['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a');
    expect(learned['cgfence.io/egress-allow']).toBe('127.0.0.1/32');
    expect(learned['cgfence.io/ingress-allow']).toBe('127.0.0.1/32');
    const syscalls = learned['cgfence.io/seccomp-allow'].split(',');
    for (const s of ['execve', 'socket', 'connect', 'bind', 'listen', 'write', 'exit_group']) expect(syscalls).toContain(s);
    expect(syscalls).not.toContain('mkdir');
    expect(syscalls).not.toContain('mkdirat');

    const json = JSON.parse(cli(p, ['learn', learnId, '--json']).stdout) as {
      running: boolean;
      annotations: Record<string, string>;
      exec: Array<{ path: string; names: string[] }>;
      network: { flows: Array<{ direction: string; address: string; proto: string; port: number }> };
    };
    expect(json.running).toBe(false);
    expect(json.annotations).toEqual(learned);
    expect(json.exec.find((e) => e.path === '/usr/local/bin/tool-a')?.names).toEqual(['/usr/local/bin/tool-a']);
    // Both ends of the connection, on the server's port; replies add no flows.
    expect(json.network.flows).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ direction: 'egress', address: '127.0.0.1', proto: 'tcp', port: 7001 }),
        expect.objectContaining({ direction: 'ingress', address: '127.0.0.1', proto: 'tcp', port: 7001 }),
      ]),
    );
    expect(json.network.flows.every((f) => f.port === 7001)).toBe(true);
  });

  it('the same workload under the learned annotations in enforce mode runs with zero denials', async () => {
    expect(learned['cgfence.io/exec-allow']).toBeTruthy();
    withNetwork = networkBackend();
    // This host has cgroup v2 for containers: the network fence must be there, not skipped.
    expect(withNetwork, 'the network backend is loaded').toBe(true);
    const ann = { ...learned };
    if (!withNetwork) {
      // Without a network fence, -allow lists would be refused (fail-closed): leave them out.
      delete ann['cgfence.io/egress-allow'];
      delete ann['cgfence.io/ingress-allow'];
    }
    const id = cid('enforce');
    const r = runFenced(id, ann, ['/bin/sh', '-c', WORKLOAD]);
    expect(r.status, r.stderr).toBe(0);
    for (const s of STEPS) expect(r.stdout).toContain(s);
    const attach = await waitRecord(p, id, (x) => x.type === 'lifecycle' && x.action === 'attach', 'attach record');
    expect(attach.controls).toEqual({ exec: 'enforced', network: withNetwork ? 'enforced' : 'none', seccomp: 'enforced' });
    const detach = await waitRecord(p, id, (x) => x.type === 'lifecycle' && x.action === 'detach', 'detach record');
    expect(detach.denied).toBe(0);
    // The network counters live in the cgroup's storage: when runc removed the cgroup before
    // the daemon handled the exit they are gone, and the detach record has none; the deny
    // records below are the evidence then.
    if (withNetwork && detach.net_denied_egress !== undefined) {
      expect(detach.net_denied_egress).toBe(0);
      expect(detach.net_denied_ingress).toBe(0);
    }
    expect((await recordsOf(p, id)).filter((x) => x.action === 'deny')).toEqual([]);
  });

  it('a binary the workload never ran is denied', async () => {
    const id = cid('newbin');
    const r = runFenced(id, learned, [
      '/bin/sh',
      '-c',
      `${WORKLOAD}\n(exec -a echo /usr/local/bin/tool-b NEW-BINARY-RAN); echo tool-b-rc=$?`,
    ]);
    expect(r.stdout).toContain('WORKLOAD-DONE');
    expect(r.stdout).not.toContain('NEW-BINARY-RAN');
    expect(r.stdout).toMatch(/tool-b-rc=(126|137)/);
    const deny = await waitRecord(p, id, (x) => x.type === 'exec' && x.action === 'deny', 'exec deny record');
    expect(deny.path).toBe('/usr/local/bin/tool-b');
  });

  it('a destination the workload never used is denied', async (ctx) => {
    if (!withNetwork) ctx.skip();
    const id = cid('newdst');
    const r = runFenced(id, learned, ['/bin/sh', '-c', `${WORKLOAD}\necho x | nc 127.0.0.2 7001; echo new-dst-rc=$?`]);
    expect(r.stdout).toContain('WORKLOAD-DONE');
    expect(r.stdout).toContain('new-dst-rc=1');
    expect(r.stderr).toContain('Operation not permitted');
    const deny = await waitRecord(p, id, (x) => x.type === 'net' && x.action === 'deny', 'net deny record');
    expect(deny.daddr).toBe('127.0.0.2');
    expect(deny.direction).toBe('egress');
  });

  it('a syscall the workload never made fails with EPERM', () => {
    const r = runFenced(cid('newsys'), learned, ['/bin/sh', '-c', `${WORKLOAD}\nmkdir /tmp/new-dir; echo mkdir-rc=$?`]);
    expect(r.stdout).toContain('WORKLOAD-DONE');
    expect(r.stdout).toContain('mkdir-rc=1');
    expect(r.stderr).toMatch(/mkdir: can't create directory '\/tmp\/new-dir': Operation not permitted/);
  });
});

describe('cgfence learn while the container runs', () => {
  it('answers from the daemon, folds addresses on request, and keeps learning across a daemon restart', async () => {
    const id = cid('live');
    const start = startFenced(p, id, { 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', `${WORKLOAD}\nsleep 600`]);
    expect(start.status, start.stderr).toBe(0);
    try {
      type Live = { running: boolean; exec: Array<{ path: string }>; annotations: Record<string, string> };
      const learnJson = (...extra: string[]): Live | null => {
        const r = cli(p, ['learn', id, '--json', ...extra]);
        return r.status === 0 ? (JSON.parse(r.stdout) as Live) : null;
      };
      const live = await waitFor(
        'the workload to be learned',
        () => {
          const l = learnJson();
          return l && l.annotations['cgfence.io/ingress-allow'] === '127.0.0.1/32' && l.exec.some((e) => e.path === '/usr/local/bin/tool-a')
            ? l
            : null;
        },
        30_000,
      );
      expect(live.running).toBe(true);
      expect(learnJson('--prefix-len4', '8')!.annotations['cgfence.io/egress-allow']).toBe('127.0.0.0/8');

      // A daemon killed mid-learning: the records in the kernel and the exec set on disk stay,
      // and an exec while it is down reaches the next daemon through the pinned ring buffer.
      await killDaemon(p);
      const down = ctr(p, ['task', 'exec', '--exec-id', 'down1', id, '/bin/sh', '-c', 'exec -a echo /usr/local/bin/tool-b RAN-WHILE-DOWN']);
      expect(down.stdout).toContain('RAN-WHILE-DOWN');
      await sandboxUp(dir);
      const after = await waitFor(
        'the exec made while the daemon was down',
        () => {
          const l = learnJson();
          return l?.exec.some((e) => e.path === '/usr/local/bin/tool-b') ? l : null;
        },
        30_000,
      );
      expect(after.running).toBe(true);
      expect(after.exec.map((e) => e.path)).toEqual(['/bin/busybox', '/usr/local/bin/tool-a', '/usr/local/bin/tool-b']);
      expect(after.annotations['cgfence.io/egress-allow']).toBe('127.0.0.1/32');
    } finally {
      await removeContainer(p, id);
    }
    const rec = await waitRecord(p, id, (x) => x.type === 'lifecycle' && x.action === 'learned', 'learned record');
    expect(mapField(rec.annotations)['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a,/usr/local/bin/tool-b');
    const gone = cli(p, ['learn', id]);
    expect(gone.status, gone.stderr).toBe(0);
    expect(parseLearned(gone.stdout)['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a,/usr/local/bin/tool-b');
  });

  it('says what is wrong in one sentence', () => {
    const none = cli(p, ['learn', 'no-such-container']);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/^cgfence learn: nothing learned for container "no-such-container": .*no learned record of it/);
    const bad = cli(p, ['learn', 'x', '--prefix-len4', '33']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--prefix-len4 "33": expected a whole number from 0 to 32/);
  });

  it('after every learner is gone, the syscall program is detached again', async () => {
    type St = { fences: number; kernel: { learn: { learning: number; syscallProgramAttached: boolean } } };
    const st = await waitFor(
      'no fenced containers',
      () => {
        const s = JSON.parse(cli(p, ['status', '--json']).stdout) as St;
        return s.fences === 0 ? s : null;
      },
      20_000,
    );
    expect(st.kernel.learn).toEqual(expect.objectContaining({ learning: 0, syscallProgramAttached: false }));
  });
});
