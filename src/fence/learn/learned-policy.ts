// What a learn-mode container did, as the daemon reports it (socket op `learn`, and the
// `lifecycle`/`learned` audit record written at exit), and the annotations that would fence
// exactly that. Pure: no kernel, no files; the CLI renders with it too.
import { KEYS, parseCidr } from '../../policy/annotations';

/**
 * Where an executed file came from: `image` (there when the container started: a path can
 * allow it), `runtime` (born after the container started learning: written at run time, or an
 * image file changed; a fresh container has no such file, so no path can allow it), `unknown`
 * (no file of the container's root filesystem is it any more: born at run time and removed,
 * or on a mount outside the image).
 */
export type ExecOrigin = 'image' | 'runtime' | 'unknown';

export interface LearnedExec {
  /** The file's own path inside the container, symlinks resolved; null when none was found. */
  path: string | null;
  /** Absent in records of earlier versions: a path there meant an image file. */
  origin?: ExecOrigin;
  dev: string;
  inode: string;
  /** The names it was executed by (what the process passed to exec). */
  names: string[];
  count: number;
}

export interface LearnedPeer {
  direction: 'egress' | 'ingress';
  family: 4 | 6;
  address: string;
  packets: number;
}

export interface LearnedFlow {
  direction: 'egress' | 'ingress';
  family: 4 | 6;
  address: string;
  proto: string;
  port: number;
  count: number;
}

/** The Kubernetes pod a container belongs to (from the CRI's annotations on its spec). */
export interface PodRef {
  namespace: string;
  name: string;
}

export interface Learned {
  namespace: string;
  id: string;
  pod?: PodRef;
  /** True when read from the running container; false when from the exit record. */
  running: boolean;
  since: string;
  exec: LearnedExec[];
  network: { peers: LearnedPeer[]; flows: LearnedFlow[]; flowsTruncated?: number };
  syscalls: {
    names: string[];
    /**
     * Syscalls seccomp-allow cannot name on this node's architecture: numbers libseccomp has no
     * name for (natively, or for the 32-bit ABI), or whose 32-bit name it rejects natively.
     */
    unnamed: Array<{ abi: 'native' | 'compat'; nr: number; name?: string }>;
    outOfRange: number;
  };
  /** Why the learned policy may miss something the container did (lost events, full maps). */
  incomplete: string[];
}

export interface FoldOptions {
  /** Fold IPv4 peers into networks of this prefix length (default: each address alone, /32). */
  prefixLen4?: number;
  /** Fold IPv6 peers into networks of this prefix length (default: /128). */
  prefixLen6?: number;
}

const PROTOS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'ipv6-icmp', 132: 'sctp' };

export function protoName(p: number): string {
  return PROTOS[p] ?? String(p);
}

/** RFC 5952 text of an address (IPv4: 4 bytes, IPv6: 16). */
export function formatAddress(addr: Buffer): string {
  if (addr.length === 4) return [...addr].join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(addr.readUInt16BE(i));
  // The longest run of two or more zero groups becomes "::" (the first one on a tie).
  let best = -1,
    bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function foldPeers(peers: LearnedPeer[], direction: 'egress' | 'ingress', opts: FoldOptions): string[] {
  const seen = new Map<string, { family: number; addr: Buffer; prefix: number }>();
  for (const p of peers) {
    if (p.direction !== direction) continue;
    const prefix = p.family === 4 ? (opts.prefixLen4 ?? 32) : (opts.prefixLen6 ?? 128);
    const c = parseCidr(`${p.address}/${prefix}`);
    if (!c) throw new Error(`learned ${direction} peer ${JSON.stringify(p.address)} is not an IP address`);
    const text = `${formatAddress(c.addr)}/${prefix}`;
    seen.set(text, { family: c.family, addr: c.addr, prefix });
  }
  return [...seen.entries()].sort(([, a], [, b]) => a.family - b.family || Buffer.compare(a.addr, b.addr)).map(([text]) => text);
}

/** Checks a --prefix-len value; returns an error message or null. */
export function prefixProblem(flag: string, value: number, family: 4 | 6): string | null {
  const max = family === 4 ? 32 : 128;
  return Number.isInteger(value) && value >= 0 && value <= max ? null : `${flag} ${value}: expected a whole number from 0 to ${max}`;
}

/** What the annotations are made of: one container's record, or several merged. */
export type LearnedPolicyInput = Pick<Learned, 'exec' | 'network' | 'syscalls' | 'incomplete'>;

/**
 * The annotations that fence exactly what was learned, in a stable order. An empty
 * egress/ingress list is kept: the container used no peer in that direction, and an empty
 * -allow list is what denies every one (annotationMeanings says so next to it).
 */
export function learnedAnnotations(l: LearnedPolicyInput, opts: FoldOptions = {}): Record<string, string> {
  const exec = [...new Set(l.exec.filter(fromImage).map((e) => e.path as string))].sort();
  return {
    [KEYS.execAllow]: exec.join(','),
    [KEYS.egressAllow]: foldPeers(l.network.peers, 'egress', opts).join(','),
    [KEYS.ingressAllow]: foldPeers(l.network.peers, 'ingress', opts).join(','),
    [KEYS.seccompAllow]: [...l.syscalls.names].sort().join(','),
  };
}

/** An executable an allow-list path can name: a file of the image. */
export function fromImage(e: LearnedExec): boolean {
  return e.path !== null && (e.origin ?? 'image') === 'image';
}

/**
 * What an empty annotation means once applied, for each one that is empty: an empty -allow
 * list is a rule that allows nothing (the enforce run denies every attempt), never "no rule".
 */
export function annotationMeanings(annotations: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  const empty = (k: string) => annotations[k] === '';
  if (empty(KEYS.execAllow))
    out[KEYS.execAllow] =
      'empty: no executable of the image was seen; applied, it allows no exec at all, so the container is refused at start (its entrypoint is not allowed)';
  if (empty(KEYS.egressAllow))
    out[KEYS.egressAllow] = 'empty: no egress peer was seen; applied, it denies all egress (every connect and every packet sent)';
  if (empty(KEYS.ingressAllow))
    out[KEYS.ingressAllow] = 'empty: no ingress peer was seen; applied, it denies all ingress (every packet received)';
  if (empty(KEYS.seccompAllow))
    out[KEYS.seccompAllow] = 'empty: no syscall was recorded; applied, it allows none beyond what runc needs, so the container cannot run';
  return out;
}

/** Things the user should know before applying the annotations, one sentence each. */
export function learnedWarnings(l: LearnedPolicyInput): string[] {
  const out = [...l.incomplete];
  const ran = (e: LearnedExec) => `run as ${e.names.map((n) => JSON.stringify(n)).join(', ')}`;
  for (const e of l.exec) {
    if (e.path !== null && e.origin === 'runtime') {
      out.push(
        `executable ${e.path} (${ran(e)}) was created or changed at run time, after the container started: a fresh container has no such file, so no path can allow it; it is not in ${KEYS.execAllow}`,
      );
    } else if (e.path === null) {
      out.push(
        `executable ${e.dev}:${e.inode} (${ran(e)}) is no file of the container's root filesystem: it was created at run time and removed, or lies on a mount outside the image; it is not in ${KEYS.execAllow}`,
      );
    } else if (e.origin === 'unknown') {
      out.push(
        `executable ${e.path} (${ran(e)}) was there when it ran, but no such file is in the container's root filesystem any more: it was created at run time and removed, or lies on a mount outside the image; it is not in ${KEYS.execAllow}`,
      );
    }
  }
  if (l.syscalls.unnamed.length) {
    const shown = l.syscalls.unnamed.map((u) => `${u.abi} ${u.nr}${u.name ? ` (${u.name})` : ''}`).join(', ');
    out.push(`syscalls that ${KEYS.seccompAllow} cannot name on this architecture are not in it: ${shown}`);
  }
  if (l.syscalls.outOfRange > 0)
    out.push(`${l.syscalls.outOfRange} syscalls had numbers outside the recorded range (x32?) and are not in ${KEYS.seccompAllow}`);
  return out;
}
