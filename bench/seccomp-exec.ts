// Issue 13's figures: what an exec in a fenced container costs under each --exec-deny
// setting. The same static loop (exec-mix: fork, execve of a static no-op, wait; nothing
// forbidden) runs inside two containers of one sandbox: one exec-fenced in enforce mode and
// one without a policy. Interleaved runs, medians, ratios; once with a daemon started with
// --exec-deny errno (every execve goes through the native notify loop, then the kernel
// fence) and once with a daemon started with --exec-deny kill (the kernel fence alone).
//
// Also reported: each fork+execve+wait's p50/p99 on both sides (the loop's own histogram),
// the notify loop's decision time p50/p99 (receive returned .. answer sent, its native
// histogram) and the daemon's CPU time per 1,000 fenced execs (/proc/<daemon>/stat, all
// threads, during the fenced runs; and during as many unfenced ones, which is its idle work).
import { BenchResult, interleave, median, result } from './types';
import {
  FX,
  benchSandbox,
  daemonCpuMs,
  execAsync,
  histDelta,
  notifyStats,
  parseMix,
  percentile,
  profile,
  sidePercentiles,
  startSides,
  SideRuns,
} from './container-exec';

const ITERATIONS = Number(process.env.CGFENCE_BENCH_EXECS ?? 2000);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);

async function oneMode(mode: 'errno' | 'kill'): Promise<BenchResult> {
  const sb = await benchSandbox({ CGFENCE_EXEC_DENY: mode });
  try {
    const sides = startSides(sb, 1, 'bench');
    const [fencedId, plainId] = [sides.fenced[0], sides.plain[0]];
    const runs: SideRuns = { b: [], f: [] };
    const cpu = { b: 0, f: 0 };
    // A run's figure is the median of its execs: the machine is shared, and another
    // process's burst lands in a few execs' tails, which a mean would carry (means: the note).
    const loop = async (id: string, side: 'b' | 'f') => {
      const c0 = daemonCpuMs(sb.daemonPid);
      const r = parseMix(
        await execAsync(sb.p, id, [`${FX}/exec-mix`, `n${ITERATIONS}`, `${FX}/noop`, `${FX}/noop`, String(ITERATIONS + 1)]),
      );
      cpu[side] += daemonCpuMs(sb.daemonPid) - c0;
      if (r.allowed !== r.execs) throw new Error(`exec-mix in ${id}: ${r.execs - r.allowed} of ${r.execs} execs failed`);
      runs[side].push(r);
      return percentile([r.hist], 0.5);
    };
    await loop(fencedId, 'f'); // warm both sides
    await loop(plainId, 'b');
    runs.b.length = runs.f.length = 0;
    cpu.b = cpu.f = 0;
    const n0 = notifyStats(sb.p);
    const r = await interleave(
      RUNS,
      () => loop(plainId, 'b'),
      () => loop(fencedId, 'f'),
    );
    const n1 = notifyStats(sb.p);
    const fencedExecs = runs.f.reduce((s, x) => s + x.execs, 0);
    const mean = (side: 'b' | 'f') => median(runs[side].map((x) => (x.seconds * 1e6) / x.execs));
    const notes = [
      `${ITERATIONS} fork+execve+wait per run; a run's figure is the median exec, µs`,
      `all execs p50/p99: ${sidePercentiles(runs)}`,
      `run means (median of runs): ${mean('b').toFixed(0)} -> ${mean('f').toFixed(0)} µs, ratio ${(mean('f') / mean('b')).toFixed(3)}`,
      `daemon CPU ${((cpu.f * 1000) / fencedExecs).toFixed(1)} ms per 1000 fenced execs (${((cpu.b * 1000) / fencedExecs).toFixed(1)} ms over the same number of unfenced ones: the daemon's idle work)`,
    ];
    if (n0 && n1) {
      const d = histDelta(n1.decisionHistogram, n0.decisionHistogram);
      notes.push(
        `${((n1.notifications - n0.notifications) / RUNS).toFixed(0)} notifications per run, ${n1.cacheHits - n0.cacheHits} answered from the allowed-path cache`,
        `notify decision p50/p99 ${percentile([d], 0.5)}/${percentile([d], 0.99)} µs (receive .. answer sent)`,
        `sync wake-up on ${n1.syncWakeUp} listener(s)`,
        `decision profile, mean ns per notification: ${profile(n0, n1)}`,
      );
    } else {
      notes.push('no notify loop (0 notifications)');
    }
    const fenced =
      mode === 'errno'
        ? 'exec-fenced container, --exec-deny errno (seccomp notify + kernel fence)'
        : 'exec-fenced container, --exec-deny kill (kernel fence alone)';
    return result(`exec loop in a container: --exec-deny ${mode} vs unfenced`, 'unfenced container', fenced, r, notes.join('; '));
  } finally {
    await sb.down();
  }
}

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  for (const mode of ['errno', 'kill'] as const) {
    const r = await oneMode(mode);
    console.log(
      `  ${r.name}: ${r.medianBaselineUs.toFixed(1)} -> ${r.medianFencedUs.toFixed(1)} µs, ratio ${r.ratio.toFixed(3)}; ${r.note}`,
    );
    out.push(r);
  }
  return out;
}
