// A container whose init loops in the shell and acts on request: the test creates /out/go,
// the loop does its step, appends its results to /out/res and ends them with `done`. So the
// init itself (whose seccomp filter and notify fd the test is about) makes the syscalls, not
// a new exec process.
import fs from 'node:fs';
import path from 'node:path';
import { waitFor } from './sandbox';

export interface TriggerLoop {
  /** What the loop has written to /out/res since the last go(). */
  res(): string;
  /** Empties /out/res and asks the loop for one step. */
  go(): void;
  /** Waits for the step asked for to end (20 s at most) and gives its results. */
  result(what: string): Promise<string>;
  /** go(), then result(what). */
  trigger(what: string): Promise<string>;
}

/** The trigger side of a loop whose /out is bound to the host directory out. */
export function triggerLoop(out: string): TriggerLoop {
  const file = path.join(out, 'res');
  const res = () => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');
  const go = () => {
    fs.writeFileSync(file, '');
    fs.writeFileSync(path.join(out, 'go'), '');
  };
  const result = (what: string) => waitFor(what, () => (res().includes('done') ? res() : undefined), 20_000);
  return {
    res,
    go,
    result,
    trigger: async (what) => {
      go();
      return result(what);
    },
  };
}

/**
 * The init's script: on each go it runs step (which appends its results to /out/res), then
 * writes `done`. With tick it also counts its rounds in /out/tick, to show it runs (tick()).
 */
export function loopScript(step: string, opts: { tick?: boolean } = {}): string {
  const count = opts.tick ? 'i=$((i+1)); echo $i > /out/tick; ' : '';
  return `${opts.tick ? 'i=0; ' : ''}while :; do ${count}if [ -e /out/go ]; then rm -f /out/go; ${step}; echo done >> /out/res; fi; sleep 0.05; done`;
}

/** How many rounds a loopScript with tick has made (0 before its first). */
export function tick(out: string): number {
  try {
    return Number(fs.readFileSync(path.join(out, 'tick'), 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** The ctr option that binds the host directory out at /out, read-write. */
export function outMount(out: string): string[] {
  return ['--mount', `type=bind,src=${out},dst=/out,options=rbind:rw`];
}
