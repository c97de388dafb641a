// How listings print: `-o table` (default; fits a terminal), `-o wide` (every column, nothing
// cut), `-o json`. `--json` stays as an alias of `-o json`.
import { Parsed, UsageError, oneOf } from './args';

export type OutputFormat = 'table' | 'wide' | 'json';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'wide', 'json'];

/** The flags every listing takes; spread into parseArgs' spec. */
export const OUTPUT_FLAGS = { values: ['output'], bools: ['json'], short: { o: 'output' } };

export function outputFormat(a: Parsed): OutputFormat {
  const o = oneOf('output', a.flags.output, OUTPUT_FORMATS);
  if (a.bools.has('json') && o !== undefined && o !== 'json') throw new UsageError(`--json and -o ${o} contradict each other`);
  return a.bools.has('json') ? 'json' : (o ?? 'table');
}

/** The widest a table line gets: the terminal, or 120 columns when not a terminal. */
export function lineWidth(): number {
  return Math.max(60, process.stdout.columns || 120);
}

/** Cuts a value to `max` characters, marking the cut. */
export function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(1, max - 1))}…`;
}

/**
 * Aligned columns. In table form each column is at most `maxCol` wide and a line at most
 * lineWidth(); wide keeps every value whole.
 */
export function renderTable(header: string[], rows: string[][], format: 'table' | 'wide', maxCol = 40): string[] {
  const capped = format === 'wide' ? rows : rows.map((r) => r.map((v) => cut(v, maxCol)));
  const widths = header.map((h, i) => Math.max(h.length, ...capped.map((r) => r[i].length)));
  const lines = [header, ...capped].map((r) =>
    r
      .map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
  return format === 'wide' ? lines : lines.map((l) => cut(l, lineWidth()));
}
