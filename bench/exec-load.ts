// Issue 13, item 6: the notify path under load. 50 exec-fenced containers (--exec-deny
// errno) exec-loop at once for 30 s, one forbidden exec in ten, against 50 unfenced
// containers doing the same in the same sandbox; the two phases alternate (RUNS each).
//
// Every fenced exec must be decided as the allow-list says: the allowed no-op ran, the
// forbidden one was refused with EACCES (none killed, none let through, none failed
// otherwise), and every loop came back (a notification left unanswered would hold its
// exec, and its loop, past the timeout). A miss fails the bench. Reported: node-wide µs per
// exec (wall time / all execs of the phase) and their ratio, each fork+execve+wait's
// p50/p99, the notify loop's decision p50/p99 and the daemon's CPU per 1,000 fenced execs.
// (The correctness test with 20 containers is test/exec-notify-load.test.ts.)
import { BenchResult, interleave, result } from './types';
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

const CONTAINERS = Number(process.env.CGFENCE_BENCH_LOAD_CONTAINERS ?? 50);
const SECONDS = Number(process.env.CGFENCE_BENCH_LOAD_SECONDS ?? 30);
const RUNS = Number(process.env.CGFENCE_BENCH_LOAD_RUNS ?? 2);
const EVERY = 10;

export async function run(): Promise<BenchResult[]> {
  const sb = await benchSandbox({ CGFENCE_EXEC_DENY: 'errno' });
  try {
    const { fenced, plain } = startSides(sb, CONTAINERS, 'load');
    const all: SideRuns = { b: [], f: [] };
    const cpu = { b: 0, f: 0 };
    const n0 = notifyStats(sb.p);
    const phase = async (ids: string[], side: 'b' | 'f') => {
      const cpu0 = daemonCpuMs(sb.daemonPid);
      const t0 = process.hrtime.bigint();
      const outs = await Promise.all(
        ids.map((id) =>
          execAsync(sb.p, id, [`${FX}/exec-mix`, String(SECONDS), `${FX}/noop`, `${FX}/forbidden`, String(EVERY)], (SECONDS + 120) * 1000),
        ),
      );
      const wallUs = Number(process.hrtime.bigint() - t0) / 1000;
      cpu[side] += daemonCpuMs(sb.daemonPid) - cpu0;
      const runs = outs.map(parseMix);
      if (side === 'f') {
        for (const [i, r] of runs.entries()) {
          const forbidden = Math.floor(r.execs / EVERY);
          if (r.denied !== forbidden || r.allowed !== r.execs - forbidden || r.killed || r.bypass || r.other) {
            throw new Error(`${ids[i]}: an exec decided wrong: ${JSON.stringify({ ...r, hist: undefined })}`);
          }
        }
      }
      all[side].push(...runs);
      const execs = runs.reduce((s, r) => s + r.execs, 0);
      return wallUs / execs;
    };
    const r = await interleave(
      RUNS,
      () => phase(plain, 'b'),
      () => phase(fenced, 'f'),
    );
    const n1 = notifyStats(sb.p);
    const fencedExecs = all.f.reduce((s, x) => s + x.execs, 0);
    const refused = all.f.reduce((s, x) => s + x.denied, 0);
    const notes = [
      `${CONTAINERS} containers exec-looping at once for ${SECONDS} s per phase, one forbidden exec in ${EVERY}; µs of wall time per exec node-wide`,
      `every fenced exec decided as the allow-list says: ${fencedExecs - refused} allowed ran, ${refused} forbidden refused with EACCES, 0 killed, 0 let through, 0 other, no loop left waiting`,
      `per exec p50/p99: ${sidePercentiles(all)}`,
      `daemon CPU ${((cpu.f * 1000) / fencedExecs).toFixed(1)} ms per 1000 fenced execs (${cpu.b.toFixed(0)} ms in all over the unfenced phases: its idle work)`,
    ];
    if (n0 && n1) {
      const d = histDelta(n1.decisionHistogram, n0.decisionHistogram);
      notes.push(
        `notify decision p50/p99/max ${percentile([d], 0.5)}/${percentile([d], 0.99)}/${percentile([d], 1)} µs, ${n1.cacheHits - n0.cacheHits} cache hits, ${n1.threads} notify threads`,
        `decision profile, mean ns per notification: ${profile(n0, n1)}`,
      );
    }
    return [
      result(
        `${CONTAINERS} containers exec-looping at once (--exec-deny errno)`,
        `${CONTAINERS} unfenced containers`,
        `${CONTAINERS} exec-fenced containers`,
        r,
        notes.join('; '),
      ),
    ];
  } finally {
    await sb.down();
  }
}
