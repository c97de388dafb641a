// The cost of the BPF-LSM exec fence on fork+exec: a static loop forks and execs a static
// no-op, in a cgroup fenced through lsm/bprm_check_security (both allow-listed) and in an
// unfenced cgroup, interleaved; plus the same loop against no cgfence program at all. Needs a
// kernel with BPF LSM active: run it in the VM (bench/vm-exec-lsm.ts) where the host has none.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { ExecLsm, probeExecLsm } from '../src/kernel/exec-lsm';
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
  const probe = probeExecLsm();
  if (!probe.usable) throw new Error(`exec-lsm needs BPF LSM (${probe.why}); on such a host run \`npm run bench vm-exec-lsm\``);
  // /tmp: in the VM it is a tmpfs, where user-space identities match the kernel's.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-bench-lsm-'));
  const tag = `cgfence-bench-lsm-${process.pid}`;
  const pinDir = `/sys/fs/bpf/${tag}`;
  const fencedCg = createCgroup(`${tag}/fenced`);
  const plainCg = createCgroup(`${tag}/plain`);
  const open = () => {
    const fence = ExecFence.open({ pinDir, programs: [] });
    const lsm = ExecLsm.attach({ pinDir });
    fenceCgroupExecs(fence, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop] });
    return { close: () => { lsm.close({ detach: true }); fence.close({ detach: true }); } };
  };
  let loop = '', noop = '';
  let cur: { close(): void } | null = null;
  try {
    loop = build(dir, 'exec-loop');
    noop = build(dir, 'noop');
    cur = open();
    loopIn(fencedCg, loop, noop); // warm caches on both sides
    loopIn(plainCg, loop, noop);
    const withProgram = await interleave(RUNS, () => loopIn(plainCg, loop, noop), () => loopIn(fencedCg, loop, noop));
    cur.close();
    cur = null;
    const noProgram = await interleave(RUNS, () => loopIn(plainCg, loop, noop), () => {
      const g = open();
      try {
        return loopIn(fencedCg, loop, noop);
      } finally {
        g.close();
      }
    });
    return [
      result('exec loop, BPF LSM: fenced vs unfenced cgroup', 'unfenced cgroup (LSM program attached)', 'LSM-fenced cgroup, both programs allowed', withProgram,
        `${ITERATIONS} fork+exec per run, µs per fork+exec+wait`),
      result('exec loop, BPF LSM: fenced vs no cgfence at all', 'no cgfence program loaded', 'LSM-fenced cgroup, both programs allowed', noProgram,
        `${ITERATIONS} fork+exec per run, µs per fork+exec+wait`),
    ];
  } finally {
    cur?.close();
    await removeCgroup(path.dirname(fencedCg)).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
