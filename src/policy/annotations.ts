// Parses cgfence.io/* annotations (and profiles, which use the same keys) into a Policy.
// Every problem is collected, each naming the annotation and the bad value, so that
// `cgfence policy check` and a refused container show all of them at once.
import net from 'node:net';
import { Cidr, Mode, Policy, emptyPolicy, hasRules } from './policy';

export const PREFIX = 'cgfence.io/';

export const KEYS = {
  mode: 'cgfence.io/mode',
  execAllow: 'cgfence.io/exec-allow',
  egressAllow: 'cgfence.io/egress-allow',
  egressDeny: 'cgfence.io/egress-deny',
  ingressAllow: 'cgfence.io/ingress-allow',
  ingressDeny: 'cgfence.io/ingress-deny',
  seccompDeny: 'cgfence.io/seccomp-deny',
  seccompAllow: 'cgfence.io/seccomp-allow',
  profile: 'cgfence.io/profile',
} as const;

/** Set by containerd's CRI on every container it creates: "sandbox" or "container". */
export const CRI_CONTAINER_TYPE = 'io.kubernetes.cri.container-type';

const KNOWN = new Set<string>(Object.values(KEYS));
const MODES: Mode[] = ['enforce', 'audit', 'learn', 'off'];
const MAX_VALUE = 64 * 1024;
const MAX_ITEMS = 4096;
// A refusal travels through cgfence-runc's log and containerd's error to the user: a value
// of any size must not make it unbounded.
const MAX_QUOTED = 200;
const MAX_PROBLEMS_PER_KEY = 10;

export class PolicyError extends Error {
  constructor(public readonly problems: string[]) {
    super(problems.join('; '));
  }
}

/** Resolves syscall names for the target architecture: null for an unknown name. */
export type SyscallResolver = (names: string[]) => Array<number | null>;

export interface ParseOptions {
  profiles?: Record<string, Record<string, string>>;
  /** Profile applied to containers that name none (node default). */
  defaultProfile?: string | null;
  resolveSyscalls?: SyscallResolver;
}

export function cgfenceAnnotations(all: Record<string, string> | undefined | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(all ?? {})) if (k.startsWith(PREFIX)) out[k] = v;
  return out;
}

/** JSON-quotes a value for a message, cut short when long. */
function quote(v: string): string {
  return v.length <= MAX_QUOTED ? JSON.stringify(v) : `${JSON.stringify(v.slice(0, MAX_QUOTED))}... (${v.length} characters)`;
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  // net.isIPv6 accepts a zone index (fe80::1%eth0), which names an interface, not a network.
  if (addrText.includes('%')) return null;
  const family = net.isIPv4(addrText) ? 4 : net.isIPv6(addrText) ? 6 : 0;
  if (family === 0) return null;
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) return null;
    prefix = Number(p);
  }
  const addr = family === 4 ? Buffer.from(addrText.split('.').map(Number)) : ipv6Bytes(addrText);
  // Zero the host bits so that equal networks compare equal and the LPM key is canonical.
  for (let i = 0; i < addr.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    addr[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return { family, addr, prefix, text };
}

function ipv6Bytes(s: string): Buffer {
  let text = s;
  const out = Buffer.alloc(16);
  // An embedded dotted quad (::ffff:1.2.3.4) becomes two groups.
  const v4 = text.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const b = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + `${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail !== undefined ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** Validates and parses one annotation set. Throws PolicyError listing every problem. */
export function parseAnnotations(annotations: Record<string, string> | undefined | null, opts: ParseOptions = {}): Policy {
  const problems: string[] = [];
  const perKey = new Map<string, number>();
  // Past a few problems for one key, the rest are counted, not listed.
  const problem = (key: string, msg: string) => {
    const n = (perKey.get(key) ?? 0) + 1;
    perKey.set(key, n);
    if (n <= MAX_PROBLEMS_PER_KEY) problems.push(msg);
  };

  // Annotations come from a config.json that anyone may have written by hand: values that
  // are not strings, or too long to be a policy, are reported and go no further.
  const usable = (all: Record<string, unknown>, where: string): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(all)) {
      const shown = k.length <= MAX_QUOTED ? k : `${k.slice(0, MAX_QUOTED)}...`;
      // Unknown keys share one count: thousands of them must not make thousands of lines.
      if (!KNOWN.has(k))
        problem(
          `${PREFIX}*`,
          `unknown annotation ${shown}=${typeof v === 'string' ? quote(v) : `(${v === null ? 'null' : typeof v})`}${where} (known: ${[...KNOWN].join(', ')})`,
        );
      else if (typeof v !== 'string') problem(k, `${k}${where} must be a string, not ${v === null ? 'null' : typeof v}`);
      else if (v.length > MAX_VALUE) problem(k, `${k}${where} is ${v.length} bytes long (at most ${MAX_VALUE})`);
      else out[k] = v;
    }
    return out;
  };
  const own = usable(cgfenceAnnotations(annotations), '');

  // A profile supplies defaults; the container's own annotations win key by key.
  const named = own[KEYS.profile];
  const profileName = named ?? opts.defaultProfile ?? null;
  let merged = own;
  if (profileName !== null) {
    const profiles = opts.profiles ?? {};
    // Own keys only: "constructor" or "__proto__" is no profile.
    const prof = Object.hasOwn(profiles, profileName) ? profiles[profileName] : undefined;
    if (!prof || typeof prof !== 'object') {
      const whence = named === undefined ? ' (the node default)' : '';
      problem(
        KEYS.profile,
        `${KEYS.profile}=${quote(profileName)}${whence}: no such profile on this node (known: ${Object.keys(profiles).join(', ') || 'none'})`,
      );
    } else {
      const fromProfile = usable(cgfenceAnnotations(prof), ` in profile ${quote(profileName)}`);
      delete fromProfile[KEYS.profile];
      merged = { ...fromProfile, ...own };
    }
  }

  const p = emptyPolicy();
  p.profile = profileName;

  // Every list feeds a bounded kernel map or filter.
  const items_ = (key: string): string[] => {
    const items = list(merged[key]);
    if (items.length > MAX_ITEMS) problem(key, `${key} has ${items.length} entries (at most ${MAX_ITEMS})`);
    return items;
  };
  const paths = (key: string): string[] | null => {
    if (merged[key] === undefined) return null;
    const items = items_(key);
    for (const it of items) {
      const bare = it.endsWith('/*') ? it.slice(0, -2) || '/' : it;
      if (!bare.startsWith('/')) problem(key, `${key}: ${quote(it)} is not an absolute path`);
      else if (bare.split('/').some((c) => c === '..' || c === '.')) problem(key, `${key}: ${quote(it)} contains . or .. components`);
      // Only a final /* is a pattern; ?, [ and ] are ordinary file-name bytes (busybox has a
      // `[` applet). A * elsewhere would read as a glob nobody expands, so it is refused.
      else if (/[*\0]/.test(bare)) problem(key, `${key}: ${quote(it)} has a wildcard other than a final /*`);
    }
    return items;
  };
  const cidrs = (key: string): Cidr[] | null => {
    if (merged[key] === undefined) return null;
    const out: Cidr[] = [];
    for (const it of items_(key)) {
      const c = parseCidr(it);
      if (!c) problem(key, `${key}: ${quote(it)} is not an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or ::1/128)`);
      else out.push(c);
    }
    return out;
  };
  const syscalls = (key: string): string[] | null => {
    if (merged[key] === undefined) return null;
    const names = items_(key);
    const wellFormed = names.filter((n) => /^[a-z0-9_]{1,64}$/.test(n));
    for (const n of names) if (!/^[a-z0-9_]{1,64}$/.test(n)) problem(key, `${key}: ${quote(n)} is not a syscall name`);
    // Only well-formed names reach the resolver (native code): junk is already reported.
    if (opts.resolveSyscalls && wellFormed.length) {
      const nrs = opts.resolveSyscalls(wellFormed);
      wellFormed.forEach((n, i) => {
        if (nrs[i] === null || nrs[i] === undefined) problem(key, `${key}: unknown syscall ${quote(n)}`);
      });
    }
    return names;
  };

  p.execAllow = paths(KEYS.execAllow);
  p.egressAllow = cidrs(KEYS.egressAllow);
  p.egressDeny = cidrs(KEYS.egressDeny);
  p.ingressAllow = cidrs(KEYS.ingressAllow);
  p.ingressDeny = cidrs(KEYS.ingressDeny);
  p.seccompDeny = syscalls(KEYS.seccompDeny);
  p.seccompAllow = syscalls(KEYS.seccompAllow);

  const mode = merged[KEYS.mode];
  if (mode !== undefined) {
    if (!MODES.includes(mode as Mode)) problem(KEYS.mode, `${KEYS.mode}=${quote(mode)} is not one of ${MODES.join(', ')}`);
    else p.mode = mode as Mode;
  } else {
    p.mode = hasRules(p) ? 'enforce' : 'off';
  }

  for (const [key, n] of perKey) if (n > MAX_PROBLEMS_PER_KEY) problems.push(`${key}: ${n - MAX_PROBLEMS_PER_KEY} more problems not shown`);
  if (problems.length) throw new PolicyError(problems);
  // CRI's pod_annotations passthrough gives a pod's sandbox ("pause") container the pod's
  // annotations too. It runs none of the pod's programs and its image has none of their
  // files, so fencing it by them would only refuse the pod. Still validated above, so a
  // bad pod annotation fails the pod at its first step, with the message.
  if (annotations?.[CRI_CONTAINER_TYPE] === 'sandbox') return { ...emptyPolicy(), profile: p.profile };
  return p;
}
