// Issue 2's figure: the cost of the exec fence on fork+exec. A static loop forks and execs
// a static no-op program, in a fenced cgroup (both allow-listed) and in an unfenced one,
// interleaved; plus the same loop with no cgfence program loaded at all.
// Issue 12's figure: the exec integrity checks (ctime stamp of the file, and the ELF loader
// found at the entry point) against the same fence judging the identity alone
// (FLAG_IDENTITY_ONLY), for a static and for a dynamic no-op program.
import fs from 'node:fs';
import { FLAG_IDENTITY_ONLY, FenceMode } from '../src/kernel/abi';
import { ExecFence } from '../src/kernel/exec-fence';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { EXECS, RUNS, buildFixture, execLoopIn as loopIn } from './fixture-loop';
import { BenchScratch } from './scratch';
import { BenchResult, interleave, result } from './types';

export async function run(): Promise<BenchResult[]> {
  const scratch = new BenchScratch('exec');
  const { pinDir } = scratch;
  let fence: ExecFence | null = null;
  try {
    const fencedCg = scratch.cgroup('fenced');
    const plainCg = scratch.cgroup('plain');
    const identityCg = scratch.cgroup('identity-only');
    const loop = buildFixture(scratch.dir, 'exec-loop');
    const noop = buildFixture(scratch.dir, 'noop');
    const dynNoop = buildFixture(scratch.dir, 'noop', { dynamic: true });
    fence = ExecFence.open({ pinDir });
    fenceCgroupExecs(fence, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop, dynNoop] });
    const { fenceId: identityId } = fenceCgroupExecs(fence, {
      cgroupPath: identityCg,
      rootPid: process.pid,
      mode: 'enforce',
      execAllow: [loop, noop, dynNoop],
    });
    fence.setFence(identityId, FenceMode.Enforce, FLAG_IDENTITY_ONLY);
    loopIn(fencedCg, loop, noop); // warm caches on both sides
    loopIn(plainCg, loop, noop);
    loopIn(identityCg, loop, dynNoop);
    loopIn(fencedCg, loop, dynNoop);
    const withProgram = await interleave(
      RUNS,
      () => loopIn(plainCg, loop, noop),
      () => loopIn(fencedCg, loop, noop),
    );
    const integrityStatic = await interleave(
      RUNS,
      () => loopIn(identityCg, loop, noop),
      () => loopIn(fencedCg, loop, noop),
    );
    const integrityDynamic = await interleave(
      RUNS,
      () => loopIn(identityCg, loop, dynNoop),
      () => loopIn(fencedCg, loop, dynNoop),
    );
    const f = fence;
    fence.unfence(BigInt(fs.statSync(fencedCg).ino));
    fence.unfence(identityId);
    f.close({ detach: true });
    fence = null;
    // Against a kernel with no cgfence program at all: load and unload around each run.
    const noProgram = await interleave(
      RUNS,
      () => loopIn(plainCg, loop, noop),
      () => {
        const g = ExecFence.open({ pinDir });
        try {
          fenceCgroupExecs(g, { cgroupPath: fencedCg, rootPid: process.pid, mode: 'enforce', execAllow: [loop, noop] });
          return loopIn(fencedCg, loop, noop);
        } finally {
          g.close({ detach: true });
        }
      },
    );
    return [
      result(
        'exec loop: fenced vs unfenced cgroup',
        'unfenced cgroup (program loaded)',
        'fenced cgroup, both programs allowed',
        withProgram,
        `${EXECS} fork+exec per run, µs per fork+exec+wait`,
      ),
      result(
        'exec loop: fenced vs no cgfence at all',
        'no cgfence program loaded',
        'fenced cgroup, both programs allowed',
        noProgram,
        `${EXECS} fork+exec per run, µs per fork+exec+wait`,
      ),
      result(
        'exec loop: integrity checks, static program',
        'fence judging the identity alone',
        'fence with stamp + loader checks',
        integrityStatic,
        `${EXECS} fork+exec of a static no-op per run, µs per fork+exec+wait`,
      ),
      result(
        'exec loop: integrity checks, dynamic program',
        'fence judging the identity alone',
        'fence with stamp + loader checks',
        integrityDynamic,
        `${EXECS} fork+exec of a dynamic no-op (glibc, ld.so) per run, µs per fork+exec+wait`,
      ),
    ];
  } finally {
    fence?.close({ detach: true });
    await scratch.cleanup();
  }
}
