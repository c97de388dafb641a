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

const KNOWN = new Set<string>(Object.values(KEYS));
const MODES: Mode[] = ['enforce', 'audit', 'learn', 'off'];
const MAX_VALUE = 64 * 1024;
const MAX_ITEMS = 4096;

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

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
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
  const own = cgfenceAnnotations(annotations);
  const problems: string[] = [];

  for (const k of Object.keys(own)) {
    if (!KNOWN.has(k)) problems.push(`unknown annotation ${k}=${JSON.stringify(own[k])} (known: ${[...KNOWN].join(', ')})`);
    else if (own[k].length > MAX_VALUE) problems.push(`${k} is ${own[k].length} bytes long (at most ${MAX_VALUE})`);
  }

  // A profile supplies defaults; the container's own annotations win key by key.
  const profileName = own[KEYS.profile] ?? opts.defaultProfile ?? null;
  let merged = own;
  if (profileName !== null) {
    const prof = opts.profiles?.[profileName];
    if (!prof) {
      problems.push(`${KEYS.profile}=${JSON.stringify(profileName)}: no such profile on this node (known: ${Object.keys(opts.profiles ?? {}).join(', ') || 'none'})`);
    } else {
      merged = { ...cgfenceAnnotations(prof), ...own };
    }
  }

  const p = emptyPolicy();
  p.profile = profileName;

  const paths = (key: string): string[] | null => {
    if (merged[key] === undefined) return null;
    const items = list(merged[key]);
    if (items.length > MAX_ITEMS) problems.push(`${key} has ${items.length} entries (at most ${MAX_ITEMS})`);
    for (const it of items) {
      const bare = it.endsWith('/*') ? it.slice(0, -2) || '/' : it;
      if (!bare.startsWith('/')) problems.push(`${key}: ${JSON.stringify(it)} is not an absolute path`);
      else if (bare.split('/').some((c) => c === '..' || c === '.')) problems.push(`${key}: ${JSON.stringify(it)} contains . or .. components`);
      else if (/[*?[\]\0]/.test(bare)) problems.push(`${key}: ${JSON.stringify(it)} has a wildcard other than a final /*`);
    }
    return items;
  };
  const cidrs = (key: string): Cidr[] | null => {
    if (merged[key] === undefined) return null;
    const out: Cidr[] = [];
    for (const it of list(merged[key])) {
      const c = parseCidr(it);
      if (!c) problems.push(`${key}: ${JSON.stringify(it)} is not an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or ::1/128)`);
      else out.push(c);
    }
    return out;
  };
  const syscalls = (key: string): string[] | null => {
    if (merged[key] === undefined) return null;
    const names = list(merged[key]);
    for (const n of names) if (!/^[a-z0-9_]+$/.test(n)) problems.push(`${key}: ${JSON.stringify(n)} is not a syscall name`);
    if (opts.resolveSyscalls) {
      const nrs = opts.resolveSyscalls(names);
      names.forEach((n, i) => {
        if (nrs[i] === null && /^[a-z0-9_]+$/.test(n)) problems.push(`${key}: unknown syscall ${JSON.stringify(n)}`);
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
    if (!MODES.includes(mode as Mode)) problems.push(`${KEYS.mode}=${JSON.stringify(mode)} is not one of ${MODES.join(', ')}`);
    else p.mode = mode as Mode;
  } else {
    p.mode = hasRules(p) ? 'enforce' : 'off';
  }

  if (problems.length) throw new PolicyError(problems);
  return p;
}
