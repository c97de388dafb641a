// Reading back what the daemon itself wrote as JSON (its state files): each field is checked
// for the type the code relies on, and a wrong one is an error naming where it is, instead
// of a cast that lets a hand-edited or truncated file fail later somewhere else.

/** A persisted value that is not what the code wrote: `where` names the field. */
export class StateFieldError extends Error {}

export class JsonFields {
  private constructor(
    private readonly value: Record<string, unknown>,
    readonly where: string,
  ) {}

  static of(v: unknown, where: string): JsonFields {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StateFieldError(`${where}: not an object`);
    return new JsonFields(v as Record<string, unknown>, where);
  }

  has(key: string): boolean {
    return this.value[key] !== undefined;
  }

  keys(): string[] {
    return Object.keys(this.value);
  }

  raw(key: string): unknown {
    return this.value[key];
  }

  at(key: string): string {
    return `${this.where}.${key}`;
  }

  private wrong(key: string, want: string): StateFieldError {
    return new StateFieldError(`${this.at(key)}: ${want} expected, found ${JSON.stringify(this.value[key]) ?? 'nothing'}`);
  }

  str(key: string): string {
    const v = this.value[key];
    if (typeof v !== 'string') throw this.wrong(key, 'a string');
    return v;
  }

  optStr(key: string): string | undefined {
    return this.has(key) ? this.str(key) : undefined;
  }

  strOrNull(key: string): string | null {
    return this.value[key] === null ? null : this.str(key);
  }

  /** A u64 kept as a decimal string (JSON has no 64-bit integers). */
  decimal(key: string): string {
    const v = this.str(key);
    if (!/^\d+$/.test(v)) throw this.wrong(key, 'a decimal integer string');
    return v;
  }

  optDecimal(key: string): string | undefined {
    return this.has(key) ? this.decimal(key) : undefined;
  }

  oneOf<T extends string>(key: string, values: readonly T[]): T {
    const v = this.value[key];
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v))
      throw this.wrong(key, `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`);
    return v as T;
  }

  optOneOf<T extends string>(key: string, values: readonly T[]): T | undefined {
    return this.has(key) ? this.oneOf(key, values) : undefined;
  }

  num(key: string): number {
    const v = this.value[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.wrong(key, 'a number');
    return v;
  }

  optNum(key: string): number | undefined {
    return this.has(key) ? this.num(key) : undefined;
  }

  bool(key: string): boolean {
    const v = this.value[key];
    if (typeof v !== 'boolean') throw this.wrong(key, 'true or false');
    return v;
  }

  strings(key: string): string[] {
    const v = this.value[key];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw this.wrong(key, 'a list of strings');
    return v as string[];
  }

  optStrings(key: string): string[] | undefined {
    return this.has(key) ? this.strings(key) : undefined;
  }

  /** An object of string values (annotations). */
  stringMap(key: string): Record<string, string> {
    const f = this.obj(key);
    const out: Record<string, string> = {};
    for (const k of f.keys()) out[k] = f.str(k);
    return out;
  }

  obj(key: string): JsonFields {
    return JsonFields.of(this.value[key], this.at(key));
  }

  optObj(key: string): JsonFields | undefined {
    return this.has(key) ? this.obj(key) : undefined;
  }

  /** Each element of a list, read by `read` with its index in `where`. */
  list<T>(key: string, read: (f: JsonFields) => T): T[] {
    const v = this.value[key];
    if (!Array.isArray(v)) throw this.wrong(key, 'a list');
    return v.map((x, i) => read(JsonFields.of(x, `${this.at(key)}[${i}]`)));
  }

  optList<T>(key: string, read: (f: JsonFields) => T): T[] | undefined {
    return this.has(key) ? this.list(key, read) : undefined;
  }
}

/** Copies the fields that are set: a state read back has the same keys as the one written. */
export function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
