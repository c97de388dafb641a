// The start benchmark's statistics (bench/types.ts): the figures a target is judged on.
import { describe, expect, it } from 'vitest';
import { median, pairedRatio, ratioInterval } from '../bench/types';

/** Rounds whose load drifts a lot, shared by both arms of a round, plus each start's own noise. */
function rounds(n: number, extraMs: number): { b: number[]; f: number[] } {
  let s = 12345;
  const noise = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31 - 0.5;
  };
  const b: number[] = [];
  const f: number[] = [];
  for (let i = 0; i < n; i++) {
    const load = 60 * noise(); // the round's shared drift, ±30 ms
    b.push(300 + load + 4 * noise());
    f.push(300 + extraMs + load + 4 * noise());
  }
  return { b, f };
}

describe('bench statistics', () => {
  it('the paired ratio finds a fixed extra cost under a drift far larger than it', () => {
    const { b, f } = rounds(301, 12);
    const p = pairedRatio(b, f);
    expect(p.ratio).toBeCloseTo(1 + median(f.map((x, i) => x - b[i])) / median(b), 12);
    expect(p.lo).toBeLessThanOrEqual(p.ratio);
    expect(p.hi).toBeGreaterThanOrEqual(p.ratio);
    // 12 ms on ~300 ms: the interval holds the truth and is narrow, the drift having cancelled.
    expect(p.lo).toBeLessThan(1.04);
    expect(p.hi).toBeGreaterThan(1.04);
    expect(p.hi - p.lo).toBeLessThan(0.01);
  });

  it('resampling rounds as pairs gives a narrower ratio interval than resampling each arm alone', () => {
    const { b, f } = rounds(301, 12);
    const [plo, phi] = ratioInterval(b, f, 0.9, 2000, true);
    const [ulo, uhi] = ratioInterval(b, f);
    expect(phi - plo).toBeLessThan(uhi - ulo);
    expect(plo).toBeLessThanOrEqual(median(f) / median(b));
    expect(phi).toBeGreaterThanOrEqual(median(f) / median(b));
  });

  it('a figure is recomputed exactly from the same samples (fixed seed)', () => {
    const { b, f } = rounds(101, 5);
    expect(pairedRatio(b, f)).toEqual(pairedRatio(b, f));
    expect(ratioInterval(b, f, 0.9, 500, true)).toEqual(ratioInterval(b, f, 0.9, 500, true));
  });

  it('refuses pairs of unequal length, naming both', () => {
    expect(() => pairedRatio([1, 2, 3], [1, 2])).toThrow(/3 and 2/);
    expect(() => ratioInterval([1, 2, 3], [1, 2], 0.9, 100, true)).toThrow(/3 and 2/);
    // Unpaired samples may differ in length.
    expect(() => ratioInterval([1, 2, 3], [1, 2])).not.toThrow();
  });
});
