// Issue 2's figure: the cost of the exec fence on fork+exec. A static loop forks and execs
// a static no-op program, in a fenced cgroup (both allow-listed) and in an unfenced one,
// interleaved; plus the same loop with no cgfence program loaded at all.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { projectRoot } from '../src/native';
import { BenchResult, interleave, result } from './types';

const ITERATIONS = Number(process.env.CGFENCE_BENCH_EXECS ?? 2000);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);

function build(dir: string, name: string): string {
  const out = path.join(dir, name);
  execFileSync('gcc', ['-static', '-O2', '-o', out, path.join(projectRoot(), 'bench', 'fixtures', `${name}.c`)]);
  return out;
}

function loopIn(cgroup: string, loop: string, target: string): number {
  const out = execFileSync('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, loop, String(ITERATIONS), target], { encoding: 'utf8' });
  return Number(out.trim()) / 1000;
}

export async function run(): Promise<BenchResult[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-bench-exec-'));
  const tag = `cgfence-bench-${process.pid}`;
  const pinDir = `/sys/fs/bpf/${tag}`;
  const fencedCg = createCgroup(`${tag}/fenced`);
  const plainCg = createCgroup(`${tag}/plain`);
  let fence: ExecFence | null = null;
  try {
    const loop = build(dir, 'exec-loop');
    const noop = build(dir, 'noop');
    fence = ExecFence.open({ pinDir });
    fenceCgroupExecs(fence, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop] });
    loopIn(fencedCg, loop, noop); // warm caches on both sides
    loopIn(plainCg, loop, noop);
    const withProgram = await interleave(RUNS, () => loopIn(plainCg, loop, noop), () => loopIn(fencedCg, loop, noop));
    const f = fence;
    fence.unfence(BigInt(fs.statSync(fencedCg).ino));
    f.close({ detach: true });
    fence = null;
    // Against a kernel with no cgfence program at all: load and unload around each run.
    const noProgram = await interleave(RUNS, () => loopIn(plainCg, loop, noop), () => {
      const g = ExecFence.open({ pinDir });
      try {
        fenceCgroupExecs(g, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop] });
        return loopIn(fencedCg, loop, noop);
      } finally {
        g.close({ detach: true });
      }
    });
    return [
      result('exec loop: fenced vs unfenced cgroup', 'unfenced cgroup (program loaded)', 'fenced cgroup, both programs allowed', withProgram,
        `${ITERATIONS} fork+exec per run, µs per fork+exec+wait`),
      result('exec loop: fenced vs no cgfence at all', 'no cgfence program loaded', 'fenced cgroup, both programs allowed', noProgram,
        `${ITERATIONS} fork+exec per run, µs per fork+exec+wait`),
    ];
  } finally {
    fence?.close({ detach: true });
    await removeCgroup(path.dirname(fencedCg));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
