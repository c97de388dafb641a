// Starts cgfence-fd-holder (native/fd-holder/main.c): runc's seccomp agent socket, and the
// process that keeps the notify fds so that containers' execs survive a daemon crash or
// upgrade. It returns once the holder listens; a holder already running on the control
// socket is kept, so a restarted daemon takes over the fds its predecessor was handling.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../../native';

/**
 * The fd-holder protocol version this build speaks (native/fd-holder/protocol.h FDH_VERSION):
 * from 1 on, a holder answers every notification but an exec EPERM while no daemon is
 * connected. A holder that reports less (0: none, an older cgfence's) answers them CONTINUE,
 * which would run a denied syscall, and is replaced.
 */
export const FD_HOLDER_VERSION = 1;

/** How long a retired holder gets to exit before its sockets are taken over by a new one. */
export const FD_HOLDER_RETIRE_TIMEOUT_MS = 5_000;

export function fdHolderBinary(): string {
  return path.join(projectRoot(), 'build', 'Release', 'cgfence-fd-holder');
}

export function startFdHolder(control: string, agent: string): void {
  const bin = fdHolderBinary();
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing (run \`npm run build\`)`);
  try {
    execFileSync(bin, [control, agent], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`cannot start the fd-holder on ${control}: ${err.stderr?.toString().trim() || err.message}`);
  }
}
