// The cost of the BPF-LSM exec fence on fork+exec: a static loop forks and execs a static
// no-op, in a cgroup fenced through lsm/bprm_check_security (both allow-listed) and in an
// unfenced cgroup, interleaved; plus the same loop against no cgfence program at all. Needs a
// kernel with BPF LSM active: run it in the VM (bench/vm-exec-lsm.ts) where the host has none.
import { ExecFence } from '../src/kernel/exec-fence';
import { ExecLsm, probeExecLsm } from '../src/kernel/exec-lsm';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { EXECS, RUNS, buildFixture, execLoopIn as loopIn } from './fixture-loop';
import { BenchScratch } from './scratch';
import { BenchResult, interleave, result } from './types';

export async function run(): Promise<BenchResult[]> {
  const probe = probeExecLsm();
  if (!probe.usable) throw new Error(`exec-lsm needs BPF LSM (${probe.why}); on such a host run \`npm run bench vm-exec-lsm\``);
  // /tmp: in the VM it is a tmpfs, where user-space identities match the kernel's.
  const scratch = new BenchScratch('lsm');
  const { pinDir } = scratch;
  let fencedCg = '';
  const open = () => {
    const fence = ExecFence.open({ pinDir, programs: [] });
    const lsm = ExecLsm.attach({ pinDir });
    fenceCgroupExecs(fence, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop] });
    return {
      close: () => {
        lsm.close({ detach: true });
        fence.close({ detach: true });
      },
    };
  };
  let loop = '',
    noop = '';
  let cur: { close(): void } | null = null;
  try {
    fencedCg = scratch.cgroup('fenced');
    const plainCg = scratch.cgroup('plain');
    loop = buildFixture(scratch.dir, 'exec-loop');
    noop = buildFixture(scratch.dir, 'noop');
    cur = open();
    loopIn(fencedCg, loop, noop); // warm caches on both sides
    loopIn(plainCg, loop, noop);
    const withProgram = await interleave(
      RUNS,
      () => loopIn(plainCg, loop, noop),
      () => loopIn(fencedCg, loop, noop),
    );
    cur.close();
    cur = null;
    const noProgram = await interleave(
      RUNS,
      () => loopIn(plainCg, loop, noop),
      () => {
        const g = open();
        try {
          return loopIn(fencedCg, loop, noop);
        } finally {
          g.close();
        }
      },
    );
    return [
      result(
        'exec loop, BPF LSM: fenced vs unfenced cgroup',
        'unfenced cgroup (LSM program attached)',
        'LSM-fenced cgroup, both programs allowed',
        withProgram,
        `${EXECS} fork+exec per run, µs per fork+exec+wait`,
      ),
      result(
        'exec loop, BPF LSM: fenced vs no cgfence at all',
        'no cgfence program loaded',
        'LSM-fenced cgroup, both programs allowed',
        noProgram,
        `${EXECS} fork+exec per run, µs per fork+exec+wait`,
      ),
    ];
  } finally {
    cur?.close();
    await scratch.cleanup();
  }
}
