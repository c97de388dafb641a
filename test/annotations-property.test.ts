// Property-based tests of the annotation parser: whatever a config.json or a pod carries,
// the parser answers with a Policy or a PolicyError whose every line names a cgfence.io/ key,
// and well-formed CIDRs and paths come back as they went in.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KEYS, PREFIX, PolicyError, parseAnnotations, parseCidr } from '../src/policy/annotations';
import { Policy } from '../src/policy/policy';
import { native } from '../src/native';

const RUNS = 400;
const KNOWN_KEYS = Object.values(KEYS);
const resolveSyscalls = (names: string[]) => native().resolveSyscalls(names);

// Values shaped like what each key expects, broken in the ways people and fuzzers break them.
const piece = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'grapheme' }),
  fc.constantFrom(
    '',
    ',',
    ',,',
    ' , ',
    '/',
    '/*',
    '/bin/*',
    '*',
    '..',
    '/../etc',
    '/./x',
    '\0',
    '\u2028',
    '%eth0',
    '/08',
    '/33',
    '/129',
    '/-1',
    '::',
    ':::',
    '1.2.3',
    'fe80::1%eth0',
  ),
  fc.ipV4(),
  fc.ipV6(),
  fc.ipV4Extended(),
  fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: -2, max: 200 })).map(([a, n]) => `${a}/${n}`),
  fc.stringMatching(/^(\/[a-z.*]{0,5}){1,4}$/),
  fc.constantFrom('enforce', 'audit', 'learn', 'off', 'ENFORCE', 'default', 'constructor', '__proto__', 'toString', 'hasOwnProperty'),
  fc.constantFrom('mkdir', 'openat', 'notasyscall', 'MKDIR', 'mk-dir', 'x'.repeat(300)),
);
const value = fc.oneof(
  { weight: 6, arbitrary: fc.array(piece, { maxLength: 8 }).chain((ps) => fc.constantFrom(',', ', ', ' ,').map((sep) => ps.join(sep))) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 1, max: 200_000 })
      .chain((n) => fc.constantFrom('/bin/sh,', '10.0.0.0/8,', 'x', ',', '\u00e9').map((s) => s.repeat(Math.ceil(n / s.length)))),
  },
);
const key = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...KNOWN_KEYS) },
  { weight: 2, arbitrary: fc.string().map((s) => PREFIX + s) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('cgfence.io', 'CGFENCE.IO/mode', 'io.kubernetes.cri.sandbox-id', 'cgfence.io//mode', `${PREFIX}exec-alow`),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme' }) },
  { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString') },
);
const annotations = fc.dictionary(key, value, { maxKeys: 10 });
// Values that a hand-written config.json may hold where strings belong.
const jsonish = fc.oneof(
  value,
  fc.constant(null),
  fc.integer(),
  fc.boolean(),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string(), fc.string(), { maxKeys: 2 }),
);
const looseAnnotations = fc.dictionary(key, jsonish, { maxKeys: 10 });
const profiles = fc.dictionary(fc.oneof(fc.string(), fc.constantFrom('web', 'db', 'default')), fc.dictionary(key, value, { maxKeys: 4 }), {
  maxKeys: 3,
});

/** The parser's contract, whatever went in. */
function checkOutcome(run: () => Policy): void {
  let policy: Policy;
  try {
    policy = run();
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
    const problems = (e as PolicyError).problems;
    expect(problems.length).toBeGreaterThan(0);
    for (const p of problems) {
      expect(p).toMatch(/cgfence\.io\//);
      // A refusal travels through runc's log into containerd's error: it stays bounded.
      expect(p.length).toBeLessThan(2000);
    }
    expect(problems.length).toBeLessThanOrEqual(10 * (KNOWN_KEYS.length + 1) + KNOWN_KEYS.length + 1);
    return;
  }
  expect(['enforce', 'audit', 'learn', 'off']).toContain(policy.mode);
  for (const l of [policy.execAllow, policy.seccompAllow, policy.seccompDeny]) {
    if (l !== null) for (const x of l) expect(typeof x).toBe('string');
  }
  for (const l of [policy.egressAllow, policy.egressDeny, policy.ingressAllow, policy.ingressDeny]) {
    if (l === null) continue;
    for (const c of l) {
      expect([4, 6]).toContain(c.family);
      expect(c.addr.length).toBe(c.family === 4 ? 4 : 16);
      expect(c.prefix).toBeGreaterThanOrEqual(0);
      expect(c.prefix).toBeLessThanOrEqual(c.family === 4 ? 32 : 128);
    }
  }
  for (const p of policy.execAllow ?? []) expect(p.replace(/\/\*$/, '') || '/').toMatch(/^\//);
  for (const n of [...(policy.seccompAllow ?? []), ...(policy.seccompDeny ?? [])]) expect(n).toMatch(/^[a-z0-9_]+$/);
}

describe('annotation parser: random input never crashes', () => {
  it('any string map gives a Policy or a PolicyError naming cgfence.io/ keys', () => {
    fc.assert(
      fc.property(annotations, (a) => checkOutcome(() => parseAnnotations(a))),
      { numRuns: RUNS },
    );
  });

  it('the same, with libseccomp resolving syscall names', () => {
    fc.assert(
      fc.property(annotations, (a) => checkOutcome(() => parseAnnotations(a, { resolveSyscalls }))),
      { numRuns: RUNS },
    );
  });

  it('values that are not strings (a hand-written config.json) are errors, not crashes', () => {
    fc.assert(
      fc.property(looseAnnotations, (a) => checkOutcome(() => parseAnnotations(a as Record<string, string>))),
      { numRuns: RUNS },
    );
    expect(() => parseAnnotations({ [KEYS.execAllow]: 5 } as unknown as Record<string, string>)).toThrow(
      /cgfence\.io\/exec-allow must be a string, not number/,
    );
  });

  it('random node profiles and default profiles', () => {
    fc.assert(
      fc.property(
        annotations,
        profiles,
        fc.option(fc.oneof(fc.string(), fc.constantFrom('web', 'constructor', '__proto__'))),
        (a, profs, def) => {
          checkOutcome(() => parseAnnotations(a, { profiles: profs, defaultProfile: def, resolveSyscalls }));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('a profile name inherited from Object.prototype is no profile', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expect(() => parseAnnotations({ [KEYS.profile]: name }, { profiles: {} })).toThrow(
        new RegExp(`cgfence\\.io/profile="${name}": no such profile`),
      );
    }
    expect(() => parseAnnotations({}, { profiles: {}, defaultProfile: 'constructor' })).toThrow(/\(the node default\): no such profile/);
  });

  it('a huge or many-valued annotation is refused with a bounded message', () => {
    const huge = '/bin/sh,'.repeat(20_000);
    expect(() => parseAnnotations({ [KEYS.execAllow]: huge })).toThrow(/cgfence\.io\/exec-allow is 160000 bytes long \(at most 65536\)/);
    const many = Array.from({ length: 5000 }, (_, i) => `::${(i & 0xfff).toString(16)}/128`).join(',');
    expect(many.length).toBeLessThan(65536);
    expect(() => parseAnnotations({ [KEYS.egressDeny]: many })).toThrow(/cgfence\.io\/egress-deny has 5000 entries \(at most 4096\)/);
    try {
      parseAnnotations({ [KEYS.execAllow]: Array.from({ length: 3000 }, (_, i) => `rel${i}`).join(',') });
      expect.unreachable();
    } catch (e) {
      const problems = (e as PolicyError).problems;
      expect(problems).toHaveLength(11);
      expect(problems[10]).toBe('cgfence.io/exec-allow: 2990 more problems not shown');
    }
    const unknown = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`${PREFIX}k${i}`, 'x'.repeat(1000)]));
    try {
      parseAnnotations(unknown);
      expect.unreachable();
    } catch (e) {
      const msg = (e as PolicyError).message;
      expect(msg.length).toBeLessThan(10_000);
      expect(msg).toContain('cgfence.io/*: 490 more problems not shown');
    }
  });

  it('a CRI pod sandbox gets no fence from the pod annotations, but they are still validated', () => {
    const sandbox = { 'io.kubernetes.cri.container-type': 'sandbox', [KEYS.execAllow]: '/bin/sh', [KEYS.egressDeny]: '10.0.0.0/8' };
    expect(parseAnnotations(sandbox)).toMatchObject({ mode: 'off', execAllow: null, egressDeny: null });
    expect(parseAnnotations({ ...sandbox, 'io.kubernetes.cri.container-type': 'container' })).toMatchObject({
      mode: 'enforce',
      execAllow: ['/bin/sh'],
    });
    expect(() => parseAnnotations({ ...sandbox, [KEYS.execAllow]: 'bin/sh' })).toThrow(
      /cgfence\.io\/exec-allow: "bin\/sh" is not an absolute path/,
    );
  });

  it('annotations without the cgfence.io/ prefix are ignored', () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string().filter((k) => !k.startsWith(PREFIX)),
          fc.string(),
          { maxKeys: 8 },
        ),
        (a) => {
          expect(parseAnnotations(a).mode).toBe('off');
        },
      ),
      { numRuns: RUNS },
    );
  });
});

// ---- round trips ----

function maskBytes(bytes: number[], prefix: number): Buffer {
  return Buffer.from(bytes.map((b, i) => b & ((0xff << (8 - Math.max(0, Math.min(8, prefix - i * 8)))) & 0xff)));
}

function groupsOf(bytes: number[]): number[] {
  return Array.from({ length: 8 }, (_, i) => (bytes[2 * i] << 8) | bytes[2 * i + 1]);
}

/** Writes 16 bytes in one of the textual forms RFC 4291 and RFC 5952 allow. */
function ipv6Text(bytes: number[], form: 'full' | 'padded' | 'compressed' | 'upper' | 'dotted'): string {
  const g = groupsOf(bytes);
  if (form === 'full') return g.map((x) => x.toString(16)).join(':');
  if (form === 'padded') return g.map((x) => x.toString(16).padStart(4, '0')).join(':');
  const dotted = form === 'dotted';
  const hex = (dotted ? g.slice(0, 6) : g).map((x) => x.toString(16));
  // Compress the longest run of zero groups (of at least two) into ::.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < hex.length; i++) {
    let j = i;
    while (j < hex.length && hex[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
  }
  let text: string;
  const tail = dotted ? `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}` : null;
  if (best < 0) {
    text = [...hex, ...(tail ? [tail] : [])].join(':');
  } else {
    const head = hex.slice(0, best).join(':');
    const rest = [...hex.slice(best + bestLen), ...(tail ? [tail] : [])].join(':');
    text = `${head}::${rest}`;
  }
  return form === 'upper' ? text.toUpperCase() : text;
}

/** An independent reading of an IPv6 address: WHATWG URL's host parser canonicalises it. */
function canonical6(text: string): string {
  return new URL(`http://[${text}]/`).hostname;
}

const bytes16 = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 16, maxLength: 16 });
// Zero runs make :: forms likely; pure random bytes almost never have them.
const sparse16 = fc.array(fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }), {
  minLength: 16,
  maxLength: 16,
});

describe('round trips: valid CIDRs and paths parse to what they say', () => {
  it('IPv4 CIDRs, with and without a prefix length', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
        fc.option(fc.integer({ min: 0, max: 32 })),
        (b, prefix) => {
          const text = `${b.join('.')}${prefix === null ? '' : `/${prefix}`}`;
          const c = parseCidr(text);
          expect(c).not.toBeNull();
          expect(c!.family).toBe(4);
          expect(c!.prefix).toBe(prefix ?? 32);
          expect(c!.addr).toEqual(maskBytes(b, prefix ?? 32));
          expect(c!.text).toBe(text);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('IPv6 CIDRs in every textual form give the same bytes', () => {
    const form = fc.constantFrom('full', 'padded', 'compressed', 'upper', 'dotted') as fc.Arbitrary<
      'full' | 'padded' | 'compressed' | 'upper' | 'dotted'
    >;
    fc.assert(
      fc.property(fc.oneof(bytes16, sparse16), form, fc.option(fc.integer({ min: 0, max: 128 })), (b, f, prefix) => {
        const addr = ipv6Text(b, f);
        expect(canonical6(addr)).toBe(canonical6(ipv6Text(b, 'full')));
        const c = parseCidr(prefix === null ? addr : `${addr}/${prefix}`);
        expect(c, addr).not.toBeNull();
        expect(c!.family).toBe(6);
        expect(c!.prefix).toBe(prefix ?? 128);
        expect(c!.addr).toEqual(maskBytes(b, prefix ?? 128));
      }),
      { numRuns: RUNS },
    );
  });

  it("fast-check's own IPv6 addresses agree with the URL parser", () => {
    fc.assert(
      fc.property(fc.ipV6(), (addr) => {
        const c = parseCidr(addr);
        expect(c, addr).not.toBeNull();
        const full = groupsOf([...c!.addr])
          .map((x) => x.toString(16))
          .join(':');
        expect(canonical6(full)).toBe(canonical6(addr));
      }),
      { numRuns: RUNS },
    );
  });

  it('IPv4-mapped and -compatible IPv6 forms', () => {
    const mapped = (a: number[]) => Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...a]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), (a) => {
        const q = a.join('.');
        for (const text of [`::ffff:${q}`, `::FFFF:${q}`, `0:0:0:0:0:ffff:${q}`, `::ffff:${q}/128`]) {
          const c = parseCidr(text);
          expect(c, text).not.toBeNull();
          expect(c!.addr).toEqual(mapped(a));
        }
        expect(parseCidr(`::${q}`)!.addr).toEqual(Buffer.from([...Array(12).fill(0), ...a]));
        expect(parseCidr(`::ffff:${q}/96`)!.addr).toEqual(mapped([0, 0, 0, 0]));
      }),
      { numRuns: 100 },
    );
    expect(parseCidr('::ffff:1.2.3.4')!.addr.toString('hex')).toBe('00000000000000000000ffff01020304');
  });

  it('refuses what only looks like a CIDR', () => {
    for (const bad of [
      '10.0.0.0/33',
      '::1/129',
      '10.0.0.0/',
      '10.0.0.0/-1',
      '10.0.0.0/8/8',
      '10.0.0',
      '01.2.3.4',
      '1.2.3.4 /8',
      'fe80::1%eth0',
      'fe80::1%eth0/64',
      '1:2:3:4:5:6:7:8:9',
      '1::2::3',
      '::ffff:1.2.3',
      '::ffff:256.1.1.1',
      ':::1',
      'localhost',
      '',
    ]) {
      expect(parseCidr(bad), bad).toBeNull();
    }
  });

  it('CIDR lists in annotations, with spaces around the commas', () => {
    const cidr = fc.oneof(
      fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([a, n]) => `${a}/${n}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, n]) => `${a}/${n}`),
    );
    fc.assert(
      fc.property(
        fc.array(cidr, { minLength: 1, maxLength: 20 }),
        fc.constantFrom(',', ', ', ' , '),
        fc.constantFrom(...[KEYS.egressAllow, KEYS.egressDeny, KEYS.ingressAllow, KEYS.ingressDeny]),
        (list, sep, k) => {
          const p = parseAnnotations({ [k]: list.join(sep) });
          expect(p.mode).toBe('enforce');
          const field = {
            [KEYS.egressAllow]: p.egressAllow,
            [KEYS.egressDeny]: p.egressDeny,
            [KEYS.ingressAllow]: p.ingressAllow,
            [KEYS.ingressDeny]: p.ingressDeny,
          }[k]!;
          expect(field.map((c) => c.text)).toEqual(list);
        },
      ),
      { numRuns: RUNS },
    );
  });

  // A path component: anything but a separator, a comma (the list separator), a wildcard,
  // NUL, whitespace at either end (the list trims) and . or ..
  const component = fc
    .oneof(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }), fc.stringMatching(/^[a-z0-9._-]{1,12}$/))
    .filter((s) => !/[/,*?[\]\0]/.test(s) && s.trim() === s && s !== '.' && s !== '..' && s.length > 0);
  const absPath = fc.array(component, { minLength: 1, maxLength: 6 }).map((cs) => `/${cs.join('/')}`);

  it('absolute paths (unicode included) and DIR/* come back as given', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            absPath,
            absPath.map((p) => `${p}/*`),
            fc.constant('/*'),
          ),
          { minLength: 1, maxLength: 16 },
        ),
        fc.constantFrom(',', ', ', ' ,\t'),
        (paths, sep) => {
          const p = parseAnnotations({ [KEYS.execAllow]: paths.join(sep) });
          expect(p.execAllow).toEqual(paths);
          expect(p.mode).toBe('enforce');
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('paths with . or .., relative paths and inner wildcards are refused by name', () => {
    const bad = fc.oneof(
      absPath.map((p) => `${p}/..`),
      absPath.map((p) => `${p}/./x`),
      absPath.map((p) => p.slice(1) || 'x'),
      absPath.map((p) => `${p}*`),
      absPath.map((p) => `${p}/*/x`),
      absPath.map((p) => `${p}*x`),
    );
    fc.assert(
      fc.property(absPath, bad, (good, b) => {
        expect(() => parseAnnotations({ [KEYS.execAllow]: `${good},${b}` })).toThrow(
          /cgfence\.io\/exec-allow: ".*" (is not an absolute path|contains \. or \.\. components|has a wildcard other than a final \/\*)/s,
        );
      }),
      { numRuns: RUNS },
    );
  });

  it('syscall names libseccomp knows parse; others are named', () => {
    const real = ['read', 'write', 'openat', 'mkdir', 'mkdirat', 'unlinkat', 'ptrace', 'bpf', 'clone3', 'io_uring_setup'];
    fc.assert(
      fc.property(fc.subarray(real, { minLength: 1 }), fc.stringMatching(/^[a-z_]{3,20}$/), (names, junk) => {
        const p = parseAnnotations({ [KEYS.seccompDeny]: names.join(',') }, { resolveSyscalls });
        expect(p.seccompDeny).toEqual(names);
        const known = resolveSyscalls([junk])[0] !== null;
        if (!known)
          expect(() => parseAnnotations({ [KEYS.seccompAllow]: `${names.join(',')},${junk}` }, { resolveSyscalls })).toThrow(
            `cgfence.io/seccomp-allow: unknown syscall ${JSON.stringify(junk)}`,
          );
      }),
      { numRuns: 200 },
    );
  });
});
