// A small, strict argument parser: --flag value, --flag=value, boolean flags, positionals.
// Unknown flags are a user's mistake with a one-line message, never ignored.

export class UsageError extends Error {}

export interface Parsed { flags: Record<string, string | undefined>; bools: Set<string>; positionals: string[] }

export function parseArgs(argv: string[], spec: { values?: string[]; bools?: string[] }): Parsed {
  const values = new Set(spec.values ?? []);
  const bools = new Set([...(spec.bools ?? []), 'help']);
  const out: Parsed = { flags: {}, bools: new Set(), positionals: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h') {
      out.bools.add('help');
      continue;
    }
    if (!a.startsWith('--') || a === '--') {
      out.positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (values.has(name)) {
      const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      out.flags[name] = v;
    } else if (bools.has(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      out.bools.add(name);
    } else {
      const known = [...values, ...bools].map((n) => `--${n}`).join(', ');
      throw new UsageError(`unknown flag --${name} (known here: ${known})`);
    }
  }
  return out;
}
