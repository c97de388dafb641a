// The notify fds outlive the daemon: kill -9 it while a fenced container runs, and the
// fd-holder keeps the fds and lets execs on to the kernel fence (nothing waits, nothing gets
// ENOSYS); the restarted daemon takes the fds back and refuses forbidden execs again.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { notifyPaths } from '../src/fence/exec/exec-notify';
import { holderPids as holderPidsOf, killDaemon, pauseDaemon } from './helpers/daemon-restart';
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
import { loopScript, outMount, tick, triggerLoop } from './helpers/trigger-loop';

const containerPids = (id: string) => pidsIn(p, id);
const holderPids = () => holderPidsOf(p);

const dir = sandboxDir('nr');
let p: SandboxPaths;
let out = '';

const ALLOW = { 'cgfence.io/exec-allow': '/bin/sh,/usr/local/bin/tool-a' };

function notifyStats(): Record<string, number> {
  const st = JSON.parse(cli(p, ['status', '--json']).stdout) as { kernel: { backends: { exec: { notify: Record<string, number> } } } };
  return st.kernel.backends.exec.notify;
}

beforeAll(async () => {
  p = await sandboxUp(dir);
  out = mktemp('cgft-nr-out');
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  if (out) fs.rmSync(out, { recursive: true, force: true });
});

describe('a daemon killed with SIGKILL', () => {
  it('never leaves an exec waiting: the fd-holder lets execs on to the kernel fence until the next daemon takes over', async () => {
    const id = cid('restart');
    // The init itself execs (sleep, and the tools on request): its notify fd is the one the
    // fd-holder carries across the restart.
    const loop = loopScript(
      '(exec -a true /usr/local/bin/tool-a); echo a=$? >> /out/res; /usr/local/bin/tool-b true; echo b=$? >> /out/res',
      {
        tick: true,
      },
    );
    const { trigger } = triggerLoop(out);
    const start = startFenced(p, id, ALLOW, ['/bin/sh', '-c', loop], { extra: outMount(out) });
    expect(start.status, start.stderr).toBe(0);
    try {
      await waitFor('the init loop to run', () => tick(out) > 3);
      expect(holderPids()).toHaveLength(1);
      expect(await trigger('the tools to run')).toBe('a=0\nb=126\ndone\n');

      // A daemon that stops answering: the init's next exec waits for it.
      const daemon = pauseDaemon(p);
      const pending = await waitFor('an exec waiting for the notify loop', () => containerPids(id).find(waitingInSeccomp), 20_000);
      // Killed while it holds that exec: the holder answers it, and every later one.
      await killDaemon(p, { pid: daemon });
      await waitFor('the pending exec to complete', () => !waitingInSeccomp(pending), 20_000);
      expect(holderPids()).toHaveLength(1);
      // No daemon: the kernel fence alone decides, so the forbidden program is killed (137).
      expect(await trigger('the tools to run without a daemon')).toBe('a=0\nb=137\ndone\n');
      // What the exec wrote into the shared directory, not ctr's copy of its stdout: ctr can
      // drop the output of an exec that exits at once (seen once in CI: status 0, stdout '').
      const downOk = ctr(p, ['task', 'exec', '--exec-id', 'down1', id, '/bin/sh', '-c', 'echo DOWN-OK > /out/down-ok']);
      expect(downOk.status, downOk.stderr).toBe(0);
      expect(fs.readFileSync(path.join(out, 'down-ok'), 'utf8')).toBe('DOWN-OK\n');
      const downBad = ctr(p, ['task', 'exec', '--exec-id', 'down2', id, '/usr/local/bin/tool-b', 'echo', 'DOWN-RAN']);
      expect(downBad.status).not.toBe(0);
      expect(downBad.stdout).not.toContain('DOWN-RAN');

      await sandboxUp(dir);
      await waitFor('the new daemon to take the fds over', () => notifyStats().fdsAdopted >= 1, 20_000);
      // Through the init's own filter, whose fd the holder kept: EACCES again.
      expect(await trigger('the tools to run after the restart')).toBe('a=0\nb=126\ndone\n');
      // Through new exec processes.
      const ok = ctr(p, [
        'task',
        'exec',
        '--exec-id',
        'up1',
        id,
        '/bin/sh',
        '-c',
        '(exec -a echo /usr/local/bin/tool-a UP-OK) > /out/up-ok',
      ]);
      expect(ok.status, ok.stderr).toBe(0);
      expect(fs.readFileSync(path.join(out, 'up-ok'), 'utf8')).toBe('UP-OK\n');
      const bad = ctr(p, ['task', 'exec', '--exec-id', 'up2', id, '/usr/local/bin/tool-b', 'echo', 'UP-RAN']);
      expect(bad.status).not.toBe(0);
      expect(bad.stdout).not.toContain('UP-RAN');
      expect(bad.stderr).toMatch(/permission denied/i);
    } finally {
      await removeContainer(p, id);
    }
    // The container is gone: its fds go from the loop and from the holder.
    await waitFor('notify fds closed', () => notifyStats().openFds === 0, 20_000);
  });

  it('sandbox down lets the fd-holder go', async () => {
    await sandboxDown(dir);
    await waitFor('the fd-holder to exit', () => holderPids().length === 0);
    expect(fs.existsSync(notifyPaths(p.stateDir).holder)).toBe(false);
  });
});
