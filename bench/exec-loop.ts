// Issue 2's figure: the cost of the exec fence on fork+exec. A static loop forks and execs
// a static no-op program, in a fenced cgroup (both allow-listed) and in an unfenced one,
// interleaved; plus the same loop with no cgfence program loaded at all.
// Issue 12's figure: the exec integrity checks (ctime stamp of the file, and the ELF loader
// found at the entry point) against the same fence judging the identity alone
// (FLAG_IDENTITY_ONLY), for a static and for a dynamic no-op program.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FLAG_IDENTITY_ONLY, FenceMode } from '../src/kernel/abi';
import { createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { projectRoot } from '../src/native';
import { BenchResult, interleave, result } from './types';

const ITERATIONS = Number(process.env.CGFENCE_BENCH_EXECS ?? 2000);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);

function build(dir: string, name: string, dynamic = false): string {
  const out = path.join(dir, dynamic ? `${name}-dynamic` : name);
  execFileSync('gcc', [...(dynamic ? [] : ['-static']), '-O2', '-o', out, path.join(projectRoot(), 'bench', 'fixtures', `${name}.c`)]);
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
  const identityCg = createCgroup(`${tag}/identity-only`);
  let fence: ExecFence | null = null;
  try {
    const loop = build(dir, 'exec-loop');
    const noop = build(dir, 'noop');
    const dynNoop = build(dir, 'noop', true);
    fence = ExecFence.open({ pinDir });
    fenceCgroupExecs(fence, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop, dynNoop] });
    const { fenceId: identityId } = fenceCgroupExecs(fence, { cgroupPath: identityCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop, dynNoop] });
    fence.setFence(identityId, FenceMode.Enforce, FLAG_IDENTITY_ONLY);
    loopIn(fencedCg, loop, noop); // warm caches on both sides
    loopIn(plainCg, loop, noop);
    loopIn(identityCg, loop, dynNoop);
    loopIn(fencedCg, loop, dynNoop);
    const withProgram = await interleave(RUNS, () => loopIn(plainCg, loop, noop), () => loopIn(fencedCg, loop, noop));
    const integrityStatic = await interleave(RUNS, () => loopIn(identityCg, loop, noop), () => loopIn(fencedCg, loop, noop));
    const integrityDynamic = await interleave(RUNS, () => loopIn(identityCg, loop, dynNoop), () => loopIn(fencedCg, loop, dynNoop));
    const f = fence;
    fence.unfence(BigInt(fs.statSync(fencedCg).ino));
    fence.unfence(identityId);
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
      result('exec loop: integrity checks, static program', 'fence judging the identity alone', 'fence with stamp + loader checks', integrityStatic,
        `${ITERATIONS} fork+exec of a static no-op per run, µs per fork+exec+wait`),
      result('exec loop: integrity checks, dynamic program', 'fence judging the identity alone', 'fence with stamp + loader checks', integrityDynamic,
        `${ITERATIONS} fork+exec of a dynamic no-op (glibc, ld.so) per run, µs per fork+exec+wait`),
    ];
  } finally {
    fence?.close({ detach: true });
    await removeCgroup(path.dirname(fencedCg));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
