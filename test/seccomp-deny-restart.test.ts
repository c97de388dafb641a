// Enforce-mode seccomp denials outlive the daemon: kill -9 it while a container with
// cgfence.io/seccomp-deny runs, and the fd-holder answers the denied syscalls EPERM (fail
// closed: never CONTINUE, which would run them), including one the dead daemon had
// received and not answered, and counts them; the restarted daemon takes the fds back,
// records the holder's counts and records again.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { AuditRecord } from '../src/audit/audit-record';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { killDaemon, pauseDaemon } from './helpers/daemon-restart';
import { mktemp } from './helpers/kernel';
import {
  cid,
  cli,
  containerPids as pidsIn,
  ctr,
  removeContainer,
  sandboxDir,
  startFenced,
  waitFor,
  waitingInSeccomp,
} from './helpers/sandbox';
import { loopScript, outMount, triggerLoop } from './helpers/trigger-loop';

const containerPids = (id: string) => pidsIn(p, id);
const until = <T>(what: string, fn: () => Promise<T | undefined | false>) => waitFor(what, fn, 20_000);

const dir = sandboxDir('sdr');
let p: SandboxPaths;
let out = '';

beforeAll(async () => {
  p = await sandboxUp(dir);
  out = mktemp('cgft-sdr-out');
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  if (out) fs.rmSync(out, { recursive: true, force: true });
});

function seccompStatus(): { routed: number; answered: number } {
  const st = JSON.parse(cli(p, ['status', '--json']).stdout) as {
    kernel: { backends: { seccomp: { enforceDenials: { routed: number; answered: number } } } };
  };
  return st.kernel.backends.seccomp.enforceDenials;
}

describe('a daemon killed with SIGKILL', () => {
  it('never lets a denied syscall run: the fd-holder answers EPERM until the next daemon takes over and records again', async () => {
    const id = cid('sdeny');
    // On each trigger the init (whose notify fd the holder carries across the restart) makes
    // one directory: denied, so it must fail and not exist afterwards.
    const loop = loopScript('mkdir /tmp/d; echo m=$? >> /out/res; [ -e /tmp/d ] && echo EXISTS >> /out/res');
    const { go, result, trigger } = triggerLoop(out);
    const recs = async (): Promise<AuditRecord[]> => (await readRecords(p.auditLog, { container: id })).filter((r) => r.type === 'seccomp');
    const start = startFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' }, ['/bin/sh', '-c', loop], { extra: outMount(out) });
    expect(start.status, start.stderr).toBe(0);
    try {
      expect(await trigger('a denied mkdir')).toBe('m=1\ndone\n');
      await until('its record', async () => (await recs()).length === 1);

      // A daemon that stops answering: the next denied mkdir waits for it.
      const daemon = pauseDaemon(p);
      go();
      const pending = await waitFor('a mkdir waiting for the notify loop', () => containerPids(id).find(waitingInSeccomp), 20_000);
      // Killed while that mkdir waits: the holder answers it EPERM, and every later one.
      await killDaemon(p, { pid: daemon });
      await waitFor('the pending mkdir to be answered', () => !waitingInSeccomp(pending), 20_000);
      expect(await result('its result')).toBe('m=1\ndone\n');
      expect(await trigger('a denied mkdir without a daemon')).toBe('m=1\ndone\n');
      // Execs still run while no daemon does (the holder lets them on to the exec fence).
      const downOk = ctr(p, ['task', 'exec', '--exec-id', 'down1', id, '/bin/sh', '-c', 'echo DOWN-OK; mkdir /tmp/e; echo m=$?']);
      expect(downOk.stdout).toContain('DOWN-OK');
      expect(downOk.stdout).toContain('m=1');
      // Denials answered while no daemon runs are recorded only once the next one takes over.
      expect(await recs()).toHaveLength(1);

      await sandboxUp(dir);
      await waitFor('the new daemon to route the container again', () => seccompStatus().routed === 1, 20_000);
      expect(await trigger('a denied mkdir after the restart')).toBe('m=1\ndone\n');
      const after = await until('a record from the new daemon', async () => {
        const r = await recs();
        return r.some((x) => x.via === 'seccomp-notify' && x !== r[0]) ? r : undefined;
      });
      expect(after.filter((x) => x.via === 'seccomp-notify')[1]).toMatchObject({
        action: 'deny',
        container_id: id,
        syscall: 'mkdir',
        errno: 'EPERM',
      });
      // The holder's own answers, handed over at the take-over: the triggered mkdir and the
      // exec's; the one pending at the kill too, unless the daemon had received it already
      // (then the holder answers it from the in-flight table, uncounted: kind unknown).
      const held = after.filter((x) => x.via === 'fd-holder');
      expect(held.map((x) => [x.syscall, x.container_id, x.errno, x.pid, x.first_ts])).toEqual([['mkdir', id, 'EPERM', 0, undefined]]);
      expect([2, 3]).toContain(held[0].count);
    } finally {
      await removeContainer(p, id);
    }
    const all = await until('the detach record', async () => {
      const r = await readRecords(p.auditLog, { container: id });
      return r.some((x) => x.action === 'detach') ? r : undefined;
    });
    const detach = all.findIndex((x) => x.action === 'detach');
    expect(all.slice(detach + 1).filter((x) => x.type === 'seccomp')).toEqual([]);
  });
});
