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
