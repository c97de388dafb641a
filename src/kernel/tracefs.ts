// Classic tracepoints are attached by the id tracefs gives each event, so tracefs must be
// mounted; hosts that do not mount it at boot get it mounted here.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const CANDIDATES = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

export function ensureTracefs(): void {
  const mounts = fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '));
  if (mounts.some(([, mnt, type]) => CANDIDATES.includes(mnt) && type === 'tracefs')) return;
  try {
    execFileSync('mount', ['-t', 'tracefs', 'tracefs', CANDIDATES[0]], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(
      `tracefs is not mounted and mounting it at ${CANDIDATES[0]} failed (tracepoint programs need it): ${(e as Error).message}`,
    );
  }
}
