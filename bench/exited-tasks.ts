// The node-wide cost of bpf/exited-tasks.bpf.c (the seccomp log's attribution of callers that
// are gone): one LRU map update at every process exit on the node. A static loop forks and
// execs a static no-op, interleaved with and without the program attached.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExitedTasks } from '../src/kernel/exited-tasks';
import { projectRoot } from '../src/native';
import { BenchResult, interleave, result } from './types';

const ITERATIONS = Number(process.env.CGFENCE_BENCH_EXECS ?? 2000);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);

function build(dir: string, name: string): string {
  const out = path.join(dir, name);
  execFileSync('gcc', ['-static', '-O2', '-o', out, path.join(projectRoot(), 'bench', 'fixtures', `${name}.c`)]);
  return out;
}

function loop(bin: string, target: string): number {
  return Number(execFileSync(bin, [String(ITERATIONS), target], { encoding: 'utf8' }).trim()) / 1000;
}

export async function run(): Promise<BenchResult[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-bench-exit-'));
  try {
    const bin = build(dir, 'exec-loop');
    const noop = build(dir, 'noop');
    loop(bin, noop);
    const r = await interleave(RUNS, () => loop(bin, noop), () => {
      const t = ExitedTasks.open();
      try {
        return loop(bin, noop);
      } finally {
        t.close();
      }
    });
    return [result('process exit: exited-tasks program', 'no exited-tasks program', 'tp_btf/sched_process_exit LRU update attached', r,
      `${ITERATIONS} fork+exec+exit+wait per run, µs per iteration`)];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
