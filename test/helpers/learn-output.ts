// What `cgfence learn` prints by default: one KEY=VALUE line per annotation.

/** The annotations of `cgfence learn` output (a value may itself hold '='). */
export function parseLearned(out: string): Record<string, string> {
  const o: Record<string, string> = {};
  for (const line of out.split('\n').filter(Boolean)) {
    const eq = line.indexOf('=');
    o[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return o;
}
