// A small, strict argument parser: --flag value, --flag=value, boolean flags, positionals,
// and the one-letter aliases a spec names (-o json). Unknown flags are a user's mistake
// with a one-line message, never ignored.

export class UsageError extends Error {}

export interface Parsed {
  flags: Record<string, string | undefined>;
  bools: Set<string>;
  positionals: string[];
}

export interface ArgSpec {
  values?: string[];
  bools?: string[];
  /** One-letter aliases: { o: 'output' } makes `-o json` and `-ojson` mean `--output json`. */
  short?: Record<string, string>;
}

export function parseArgs(argv: string[], spec: ArgSpec): Parsed {
  const values = new Set(spec.values ?? []);
  const bools = new Set([...(spec.bools ?? []), 'help']);
  const short: Record<string, string> = { h: 'help', ...(spec.short ?? {}) };
  const out: Parsed = { flags: {}, bools: new Set(), positionals: [] };
  const known = () =>
    [...values, ...bools]
      .map((n) => `--${n}`)
      .concat(Object.keys(spec.short ?? {}).map((s) => `-${s}`))
      .join(', ');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (/^-[A-Za-z]/.test(a)) {
      const name = short[a[1]];
      if (!name) throw new UsageError(`unknown flag ${a.slice(0, 2)} (known here: ${known()})`);
      if (values.has(name)) {
        const v = a.length > 2 ? a.slice(2).replace(/^=/, '') : argv[++i];
        if (v === undefined) throw new UsageError(`${a.slice(0, 2)} needs a value`);
        out.flags[name] = v;
      } else {
        if (a.length > 2) throw new UsageError(`${a.slice(0, 2)} takes no value`);
        out.bools.add(name);
      }
      continue;
    }
    if (!a.startsWith('--')) {
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
      throw new UsageError(`unknown flag --${name} (known here: ${known()})`);
    }
  }
  return out;
}

/** A flag whose value must be one of `allowed`: anything else is named in the error. */
export function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value))
    throw new UsageError(
      `--${flag} ${JSON.stringify(value)}: expected ${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}`,
    );
  return value as T;
}
