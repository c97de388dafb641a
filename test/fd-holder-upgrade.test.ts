// An upgrade with an older cgfence's fd-holder still running. That holder (built here from
// the sources of commit ab82b4d, before the protocol had a version) answers every
// notification CONTINUE while no daemon runs: a denied syscall routed to it would run once
// the daemon dies. The daemon must find it (no version at GET), retire it, start a new one
// on the same sockets and hand it every fd; then a SIGKILLed daemon leaves denials EPERM.
// And when the old holder cannot be retired, no denial is routed to it (SCMP_ACT_ERRNO) and
// `cgfence status` says why.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { fdHolderBinary } from '../src/fence/exec/fd-holder';
import { notifyPaths } from '../src/fence/exec/exec-notify';
import { projectRoot } from '../src/native';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { waitRecord } from './helpers/container-records';
import { alive, killDaemon as killDaemonOf } from './helpers/daemon-restart';
import { buildFixture, mktemp, pidsByArgv } from './helpers/kernel';
import { cid, cli, removeContainer, runFenced, sandboxDir, startFenced, waitFor } from './helpers/sandbox';
import { loopScript, outMount, triggerLoop } from './helpers/trigger-loop';

/** The last commit whose fd-holder sent no protocol version and answered everything CONTINUE. */
const OLD_COMMIT = 'ab82b4d';

const dir = sandboxDir('fhu');
let p: SandboxPaths;
let tmp = '';
let oldHolder = '';
const started: number[] = [];

/** Builds the holder of OLD_COMMIT from git, as its binding.gyp did (dynamically linked here). */
function buildOldHolder(into: string): string {
  const root = projectRoot();
  const files = [
    'native/fd-holder/main.c',
    'native/fd-holder/protocol.h',
    'native/fd-holder/runc-state.c',
    'native/fd-holder/runc-state.h',
    'native/cgfence-runc/strict-json.c',
    'native/cgfence-runc/strict-json.h',
  ];
  for (const f of files) {
    const out = path.join(into, f);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, execFileSync('git', ['-C', root, 'show', `${OLD_COMMIT}:${f}`]));
  }
  // The test must not pass by testing a holder that already answers EPERM.
  expect(fs.readFileSync(path.join(into, 'native/fd-holder/main.c'), 'utf8')).not.toContain('EPERM');
  const cflags = execFileSync('pkg-config', ['--cflags', 'json-c'], { encoding: 'utf8' }).trim().split(/\s+/).filter(Boolean);
  const libs = execFileSync('pkg-config', ['--libs', 'json-c'], { encoding: 'utf8' }).trim().split(/\s+/).filter(Boolean);
  const bin = path.join(into, 'old-fd-holder');
  execFileSync(
    'gcc',
    ['-std=gnu11', '-O2', ...cflags, '-o', bin, ...files.filter((f) => f.endsWith('.c')).map((f) => path.join(into, f)), ...libs],
    { stdio: 'pipe' },
  );
  return bin;
}

/** Processes whose command line is exactly [bin, ...] with the given control socket. */
function pidsOf(bin: string, control: string): number[] {
  return pidsByArgv((argv) => argv[0] === bin && argv[1] === control);
}

/** SIGKILLs the daemon; the holder it leaves (holding nothing) exits by itself. */
const killDaemon = () => killDaemonOf(p);

/** The audit log's records, every one (agent records name no container). */
function logRecords(): Array<Record<string, unknown>> {
  return fs
    .readFileSync(p.auditLog, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function status(): { version: number; connected: boolean; denialsRouted: boolean; why?: string; replaced?: { oldVersion: number } } {
  const st = JSON.parse(cli(p, ['status', '--json']).stdout) as {
    kernel: { backends: { seccomp: { enforceDenials: { fdHolder: ReturnType<typeof status> } } } };
  };
  return st.kernel.backends.seccomp.enforceDenials.fdHolder;
}

beforeAll(async () => {
  tmp = mktemp('cgft-fhu');
  oldHolder = buildOldHolder(tmp);
  p = await sandboxUp(dir);
});

afterAll(async () => {
  for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Stops the daemon and leaves `start()`'s holder on its sockets instead of its own. */
async function swapHolder(start: () => number): Promise<number> {
  const { holder, listener } = notifyPaths(p.stateDir);
  await killDaemon();
  // (A stand-in holder the last test killed leaves its socket files: the next holder replaces them.)
  await waitFor(
    'the idle holder to exit',
    () => pidsOf(fdHolderBinary(), holder).length === 0 && started.every((pid) => !alive(pid)),
    20_000,
  );
  const pid = start();
  started.push(pid);
  expect(fs.existsSync(holder) && fs.existsSync(listener)).toBe(true);
  return pid;
}

function startOldHolder(): number {
  const { holder, listener } = notifyPaths(p.stateDir);
  execFileSync(oldHolder, [holder, listener], { stdio: 'pipe', timeout: 10_000 });
  const pids = pidsOf(oldHolder, holder);
  expect(pids).toHaveLength(1);
  return pids[0];
}

describe('an fd-holder of an older cgfence at daemon start', () => {
  it("is replaced, and a container's denied mkdir still fails EPERM after the daemon is SIGKILLed", async () => {
    const old = await swapHolder(startOldHolder);
    await sandboxUp(dir);
    const { holder } = notifyPaths(p.stateDir);

    await waitFor('the old holder to be gone', () => !alive(old), 20_000);
    const now = await waitFor('a new holder on the same socket', () => pidsOf(fdHolderBinary(), holder)[0], 20_000);
    expect(now).not.toBe(old);
    const replaced = await waitFor(
      'the replacement record',
      () =>
        logRecords()
          .filter((r) => r.type === 'agent' && r.action === 'fd-holder-replaced')
          .pop(),
      20_000,
    );
    expect(replaced).toMatchObject({ old_version: 0, version: 1, severity: 'info' });
    expect(status()).toMatchObject({ connected: true, version: 1, denialsRouted: true, replaced: { oldVersion: 0 } });
    expect(cli(p, ['status', '-o', 'wide']).stdout).toMatch(/^seccomp denials +recorded: .*protocol version 1/m);

    const out = mktemp('cgft-fhu-out');
    const id = cid('fhu');
    const { trigger } = triggerLoop(out);
    const loop = loopScript('mkdir /tmp/d; echo m=$? >> /out/res; [ -e /tmp/d ] && echo EXISTS >> /out/res');
    const start = startFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' }, ['/bin/sh', '-c', loop], { extra: outMount(out) });
    try {
      expect(start.status, start.stderr).toBe(0);
      expect(await trigger('a denied mkdir')).toBe('m=1\ndone\n');
      // Routed to the notify loop (recorded), so the holder is what answers once the daemon is gone.
      await waitRecord(p, id, (r) => r.type === 'seccomp' && r.via === 'seccomp-notify', 'the denial record');

      await killDaemon();
      // The new holder answers EPERM; the old one would have answered CONTINUE (m=0, EXISTS).
      expect(await trigger('a denied mkdir without a daemon')).toBe('m=1\ndone\n');
      expect(await trigger('another')).toBe('m=1\ndone\n');
      await sandboxUp(dir);
    } finally {
      await removeContainer(p, id);
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it("that cannot be retired gets no denial: new containers' denials stay SCMP_ACT_ERRNO, and status says why", async () => {
    // A holder of no version that ignores QUIT.
    const stubborn = buildFixture('stubborn-holder', tmp);
    const { holder, listener } = notifyPaths(p.stateDir);
    const pid = await swapHolder(() => {
      execFileSync(stubborn, [holder, listener], { stdio: 'pipe', timeout: 10_000 });
      return pidsOf(stubborn, holder)[0];
    });
    try {
      await sandboxUp(dir);
      const st = status();
      expect(st.denialsRouted).toBe(false);
      expect(st.why).toMatch(/protocol version 0.*could not be retired: the fd-holder \(pid \d+\) did not exit within 5000 ms of QUIT/);
      expect(cli(p, ['status', '-o', 'wide']).stdout).toMatch(
        /^seccomp denials +enforced \(SCMP_ACT_ERRNO\), NOT recorded for new containers: .*did not exit within 5000 ms of QUIT/m,
      );
      const failed = logRecords().filter((r) => r.action === 'fd-holder-replace-failed');
      expect(failed.pop()).toMatchObject({ type: 'agent', severity: 'warning' });

      const id = cid('fhu-errno');
      const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' }, ['/bin/sh', '-c', 'mkdir /tmp/d; echo m=$?']);
      expect(r.stdout, r.stderr).toContain('m=1');
      const attach = (await readRecords(p.auditLog, { container: id })).find((x) => x.action === 'attach');
      expect(JSON.stringify(attach)).toContain('SCMP_ACT_ERRNO, no notify route');
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });

  it('is replaced before the first denial is routed when the seccomp control opens its own notify loop (--exec-deny kill)', async () => {
    const old = await swapHolder(startOldHolder);
    // With --exec-deny kill the daemon opens no notify loop (nor touches the holder) until the
    // first container with enforce-mode seccomp rules is prepared.
    await sandboxUp(dir, () => {}, { daemonEnv: { CGFENCE_EXEC_DENY: 'kill' } });
    expect(alive(old)).toBe(true);
    const id = cid('fhu-kill');
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' }, ['/bin/sh', '-c', 'mkdir /tmp/d; echo m=$?']);
    expect(r.stdout, r.stderr).toContain('m=1');
    // (Gone, and reaped by init: a zombie still answers kill 0 for a moment.)
    await waitFor('the old holder to be gone', () => !alive(old), 20_000);
    const recs = await readRecords(p.auditLog, {});
    expect(recs.filter((x) => x.action === 'fd-holder-replaced').length).toBe(2);
    // That very container's denial went to the loop (recorded), not to SCMP_ACT_ERRNO.
    await waitRecord(p, id, (x) => x.type === 'seccomp' && x.via === 'seccomp-notify', 'the denial record');
  });
});
