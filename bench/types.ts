/** One side-by-side comparison: medians over interleaved runs, and their ratio. */
export interface BenchResult {
  name: string;
  baseline: string;
  fenced: string;
  medianBaselineUs: number;
  medianFencedUs: number;
  ratio: number;
  runs: number;
  note?: string;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs baseline and fenced alternately (which one goes first alternates too), so that the
 * machine's drift and noise fall on both sides alike.
 */
export async function interleave(
  runs: number,
  baseline: () => Promise<number> | number,
  fenced: () => Promise<number> | number,
): Promise<{ b: number[]; f: number[] }> {
  const b: number[] = [];
  const f: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (i % 2 === 0) {
      b.push(await baseline());
      f.push(await fenced());
    } else {
      f.push(await fenced());
      b.push(await baseline());
    }
  }
  return { b, f };
}

export function result(name: string, baseline: string, fenced: string, r: { b: number[]; f: number[] }, note?: string): BenchResult {
  const mb = median(r.b);
  const mf = median(r.f);
  return { name, baseline, fenced, medianBaselineUs: mb, medianFencedUs: mf, ratio: mf / mb, runs: r.b.length, note };
}

/**
 * The middle `level` of a statistic over `iterations` bootstrap resamples, `pick(n)` drawing n
 * indices below n (xorshift32 from a fixed seed, so a run's figure can be recomputed from its
 * samples).
 */
function bootstrap(stat: (pick: (n: number) => number[]) => number, level: number, iterations: number): [number, number] {
  let seed = 0x9e3779b9;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const pick = (n: number) => Array.from({ length: n }, () => Math.floor(rand() * n));
  const out: number[] = [];
  for (let i = 0; i < iterations; i++) out.push(stat(pick));
  out.sort((x, y) => x - y);
  const cut = Math.floor(((1 - level) / 2) * iterations);
  return [out[cut], out[iterations - 1 - cut]];
}

/**
 * A bootstrap interval of median(f) / median(b). On this noisy 2-core VM it says how far one
 * run's ratio can be trusted.
 *
 * `paired`: b[i] and f[i] ran in the same round, seconds apart, so rounds are resampled whole
 * (the design the samples come from: the machine's drift between rounds falls on both arms
 * alike and is not counted twice). Otherwise each sample is resampled on its own, as if the
 * two had been measured at unrelated times: wider, and right only for unpaired samples.
 */
export function ratioInterval(b: number[], f: number[], level = 0.9, iterations = 2000, paired = false): [number, number] {
  if (paired && b.length !== f.length) throw new Error(`paired samples differ in length: ${b.length} and ${f.length}`);
  return bootstrap(
    (pick) => {
      const ib = pick(b.length);
      const jf = paired ? ib : pick(f.length);
      return median(jf.map((j) => f[j])) / median(ib.map((j) => b[j]));
    },
    level,
    iterations,
  );
}

/**
 * The paired estimate of the same ratio: 1 + median(f[i] − b[i]) / median(b), each round's own
 * difference (both arms ran in it, seconds apart), and its bootstrap interval over rounds. The
 * load that one round shares between its two starts cancels in the difference, which a ratio of
 * two medians keeps: on the start benchmark the two arms' times correlate ~0.8 within a round.
 */
export function pairedRatio(b: number[], f: number[], level = 0.9, iterations = 2000): { ratio: number; lo: number; hi: number } {
  if (b.length !== f.length) throw new Error(`paired samples differ in length: ${b.length} and ${f.length}`);
  const d = f.map((x, i) => x - b[i]);
  const est = (ix: number[]) => 1 + median(ix.map((j) => d[j])) / median(ix.map((j) => b[j]));
  const [lo, hi] = bootstrap((pick) => est(pick(b.length)), level, iterations);
  return { ratio: est(d.map((_, i) => i)), lo, hi };
}
