// What an enforce-mode seccomp denial costs the container and the daemon now that it is
// answered by the notify loop (SCMP_ACT_NOTIFY, EPERM from the loop's thread, counted for
// the audit log) rather than by the filter itself. The same loop of mkdir("/") calls runs in
// a container without a policy (each fails EEXIST in the kernel: the syscall's own cost)
// and in one with cgfence.io/seccomp-deny=mkdir,mkdirat (each fails EPERM from the loop).
// Interleaved runs, medians, ratio; also the daemon's CPU time per 1,000 denials. Then what
// an allowed syscall (getppid) costs under a seccomp-allow filter, which names every other
// syscall for the notify route, against a short seccomp-deny filter.
import { BenchResult, interleave, result } from './types';
import { FX, benchSandbox, daemonCpuMs, execAsync, startContainer } from './container-exec';

const CALLS = Number(process.env.CGFENCE_BENCH_DENIALS ?? 20000);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);
const ALLOWED_CALLS = 1_000_000;
/** What busybox sh, sleep and the static loops need besides RUNC_INIT_SYSCALLS. */
const ALLOW_LIST =
  'write,brk,mprotect,getuid,rt_sigaction,arch_prctl,set_tid_address,set_robust_list,prlimit64,getrandom,rseq,wait4,uname,readlink,readlinkat,ioctl,vfork,fork,clone,clock_nanosleep';

function parse(out: string, want: 'eperm' | 'eexist'): number {
  const m = /ns=(\d+) eperm=(\d+) other=(\d+)/.exec(out);
  if (!m) throw new Error(`deny-loop printed ${JSON.stringify(out)}`);
  const eperm = Number(m[2]);
  if (Number(m[3]) !== 0 || (want === 'eperm' ? eperm !== CALLS : eperm !== 0))
    throw new Error(`deny-loop: expected every call to fail ${want}: ${out.trim()}`);
  return Number(m[1]) / 1000; // µs per call
}

export async function run(): Promise<BenchResult[]> {
  const sb = await benchSandbox({ CGFENCE_EXEC_DENY: 'errno' });
  try {
    startContainer(sb, 'bench-deny', true, ['cgfence.io/seccomp-deny=mkdir,mkdirat']);
    startContainer(sb, 'bench-plain', false);
    let cpu = 0;
    let denials = 0;
    const loop = async (id: string, want: 'eperm' | 'eexist') => {
      const c0 = daemonCpuMs(sb.daemonPid);
      const us = parse(await execAsync(sb.p, id, [`${FX}/deny-loop`, String(CALLS)]), want);
      if (want === 'eperm') {
        cpu += daemonCpuMs(sb.daemonPid) - c0;
        denials += CALLS;
      }
      return us;
    };
    await loop('bench-deny', 'eperm'); // warm both sides
    await loop('bench-plain', 'eexist');
    cpu = denials = 0;
    const r = await interleave(
      RUNS,
      () => loop('bench-plain', 'eexist'),
      () => loop('bench-deny', 'eperm'),
    );
    const note = `${CALLS} mkdir("/") per run, mean µs per call; daemon CPU ${((cpu * 1000) / denials).toFixed(1)} ms per 1000 denials (all its threads, the loop's answers and the records)`;
    const res = result(
      'a denied syscall: seccomp-deny answered by the notify loop vs the syscall unfenced',
      'unfenced container (EEXIST)',
      'seccomp-deny=mkdir (EPERM from the notify loop)',
      r,
      note,
    );
    console.log(
      `  ${res.name}: ${res.medianBaselineUs.toFixed(2)} -> ${res.medianFencedUs.toFixed(2)} µs, ratio ${res.ratio.toFixed(1)}; ${note}`,
    );

    // An allowed syscall under a seccomp-allow filter, which names every other syscall of the
    // ABI for the notify route (a long filter), vs under a seccomp-deny one (a short filter).
    startContainer(sb, 'bench-allow', true, [`cgfence.io/seccomp-allow=${ALLOW_LIST}`]);
    const ns = async (id: string) => Number((await execAsync(sb.p, id, [`${FX}/syscall-loop`, String(ALLOWED_CALLS)])).trim()) / 1e6; // µs per call
    await ns('bench-allow');
    await ns('bench-deny');
    const a = await interleave(
      RUNS,
      () => ns('bench-deny'),
      () => ns('bench-allow'),
    );
    const res2 = result(
      'an allowed getppid: seccomp-allow filter (every other syscall named) vs seccomp-deny=mkdir filter',
      'seccomp-deny=mkdir,mkdirat',
      'seccomp-allow (notify route)',
      a,
      `${ALLOWED_CALLS} getppid per run, mean µs per call`,
    );
    console.log(
      `  ${res2.name}: ${res2.medianBaselineUs.toFixed(3)} -> ${res2.medianFencedUs.toFixed(3)} µs, ratio ${res2.ratio.toFixed(2)}`,
    );
    return [res, res2];
  } finally {
    await sb.down();
  }
}
