// The steps of the tests that take the sandbox's daemon away while containers run: its pid,
// stopping it (it stops answering), SIGKILLing it, and the fd-holder that outlives it.
import fs from 'node:fs';
import { notifyPaths } from '../../src/fence/exec/exec-notify';
import { SandboxPaths } from '../../src/sandbox/sandbox';
import { pidsByArgv } from './kernel';
import { waitFor } from './sandbox';

export function daemonPid(p: SandboxPaths): number {
  return Number(fs.readFileSync(p.daemonPid, 'utf8'));
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGSTOPs the daemon, so that what waits for its answer (a notification) keeps waiting; gives its pid. */
export function pauseDaemon(p: SandboxPaths): number {
  const pid = daemonPid(p);
  process.kill(pid, 'SIGSTOP');
  return pid;
}

/**
 * Sends the daemon (pid, or the one in the sandbox's pid file) signal, SIGKILL unless told
 * (SIGTERM: a clean stop that writes the state file), and waits until it is gone (20 s at most).
 */
export async function killDaemon(p: SandboxPaths, opts: { signal?: NodeJS.Signals; pid?: number } = {}): Promise<void> {
  const pid = opts.pid ?? daemonPid(p);
  const signal = opts.signal ?? 'SIGKILL';
  process.kill(pid, signal);
  await waitFor(`the daemon to be gone after ${signal}`, () => !alive(pid), 20_000);
}

/** Pids of the sandbox's fd-holder (its command line names its control socket). */
export function holderPids(p: SandboxPaths): number[] {
  const sock = notifyPaths(p.stateDir).holder;
  return pidsByArgv((argv) => argv.includes(sock));
}
