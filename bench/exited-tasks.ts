// The node-wide cost of bpf/exited-tasks.bpf.c (the seccomp log's attribution of callers that
// are gone): one LRU map update at every process exit on the node. A static loop forks and
// execs a static no-op, interleaved with and without the program attached.
import { ExitedTasks } from '../src/kernel/exited-tasks';
import { EXECS, RUNS, buildFixture, execLoopIn } from './fixture-loop';
import { BenchScratch } from './scratch';
import { BenchResult, interleave, result } from './types';

const loop = (bin: string, target: string) => execLoopIn(null, bin, target);

export async function run(): Promise<BenchResult[]> {
  const scratch = new BenchScratch('exit');
  try {
    const bin = buildFixture(scratch.dir, 'exec-loop');
    const noop = buildFixture(scratch.dir, 'noop');
    loop(bin, noop);
    const r = await interleave(
      RUNS,
      () => loop(bin, noop),
      () => {
        const t = ExitedTasks.open();
        try {
          return loop(bin, noop);
        } finally {
          t.close();
        }
      },
    );
    return [
      result(
        'process exit: exited-tasks program',
        'no exited-tasks program',
        'tp_btf/sched_process_exit LRU update attached',
        r,
        `${EXECS} fork+exec+exit+wait per run, µs per iteration`,
      ),
    ];
  } finally {
    await scratch.cleanup();
  }
}
