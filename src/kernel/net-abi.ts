// TypeScript mirror of bpf/include/net-abi.h. The addon static_asserts the C sizes; the
// sizes here are checked against the maps' key/value sizes when the object loads.
import { ExecAction, FenceMode } from './abi';

export const EVENT_NET = 2;
export const EVENT_NET_THROTTLE = 3;

export enum NetDir {
  Egress = 0,
  Ingress = 1,
}
export enum NetVerdict {
  Allow = 1,
  Deny = 2,
}
export enum NetHook {
  Skb = 0,
  Connect = 1,
  Sendmsg = 2,
}

export const RULE_DEFAULT = 0xffffffff;
export const RATE_BURST = 5;
export const RATE_WINDOW_NS = 1_000_000_000n;
export const KEY_FIXED_BITS = 96;

export const KEY4_SIZE = 24;
export const KEY6_SIZE = 32;
export const RULE_SIZE = 8;
export const CONFIG_SIZE = 16;
export const STATS_SIZE = 48;
export const FLOW_KEY_SIZE = 32;
export const FLOW_SIZE = 24;
export const NET_EVENT_SIZE = 112;

export type Family = 4 | 6;

export interface RuleKey {
  dir: NetDir;
  gen: number;
  fenceId: bigint;
  family: Family;
  addr: Buffer;
  prefix: number;
}

export function encodeRuleKey(k: RuleKey): Buffer {
  const b = Buffer.alloc(k.family === 4 ? KEY4_SIZE : KEY6_SIZE);
  b.writeUInt32LE(KEY_FIXED_BITS + k.prefix, 0);
  b.writeUInt8(k.dir, 4);
  b.writeUInt8(k.gen, 5);
  b.writeBigUInt64LE(k.fenceId, 8);
  k.addr.copy(b, 16, 0, k.family === 4 ? 4 : 16);
  return b;
}

export function decodeRuleKey(b: Buffer): RuleKey {
  const family: Family = b.length === KEY4_SIZE ? 4 : 6;
  return {
    family,
    prefix: b.readUInt32LE(0) - KEY_FIXED_BITS,
    dir: b.readUInt8(4),
    gen: b.readUInt8(5),
    fenceId: b.readBigUInt64LE(8),
    addr: Buffer.from(b.subarray(16, 16 + (family === 4 ? 4 : 16))),
  };
}

export function encodeRule(verdict: NetVerdict, ruleId: number): Buffer {
  const b = Buffer.alloc(RULE_SIZE);
  b.writeUInt32LE(verdict, 0);
  b.writeUInt32LE(ruleId >>> 0, 4);
  return b;
}

export interface NetConfig {
  fenceId: bigint;
  mode: FenceMode;
  gen: number;
  defaultDeny: [boolean, boolean];
  /** Per direction: it has entries or is default-deny (the kernel skips the lookup otherwise). */
  active: [boolean, boolean];
}

export function encodeConfig(c: NetConfig): Buffer {
  const b = Buffer.alloc(CONFIG_SIZE);
  b.writeBigUInt64LE(c.fenceId, 0);
  b.writeUInt32LE(c.mode, 8);
  b.writeUInt8(c.gen, 12);
  b.writeUInt8(c.defaultDeny[NetDir.Egress] ? 1 : 0, 13);
  b.writeUInt8(c.defaultDeny[NetDir.Ingress] ? 1 : 0, 14);
  b.writeUInt8((c.active[NetDir.Egress] ? 1 << NetDir.Egress : 0) | (c.active[NetDir.Ingress] ? 1 << NetDir.Ingress : 0), 15);
  return b;
}

export function decodeConfig(b: Buffer): NetConfig {
  return {
    fenceId: b.readBigUInt64LE(0),
    mode: b.readUInt32LE(8),
    gen: b.readUInt8(12),
    defaultDeny: [b.readUInt8(13) !== 0, b.readUInt8(14) !== 0],
    active: [(b.readUInt8(15) & (1 << NetDir.Egress)) !== 0, (b.readUInt8(15) & (1 << NetDir.Ingress)) !== 0],
  };
}

export interface NetStats {
  denied: { egress: bigint; ingress: bigint };
  audited: { egress: bigint; ingress: bigint };
  suppressed: bigint;
  lost: bigint;
}

/** Sums the per-CPU copies of a PERCPU_CGROUP_STORAGE value (each padded to 8 bytes). */
export function decodeStats(perCpu: Buffer): NetStats {
  const s: NetStats = { denied: { egress: 0n, ingress: 0n }, audited: { egress: 0n, ingress: 0n }, suppressed: 0n, lost: 0n };
  for (let off = 0; off + STATS_SIZE <= perCpu.length; off += STATS_SIZE) {
    s.denied.egress += perCpu.readBigUInt64LE(off);
    s.denied.ingress += perCpu.readBigUInt64LE(off + 8);
    s.audited.egress += perCpu.readBigUInt64LE(off + 16);
    s.audited.ingress += perCpu.readBigUInt64LE(off + 24);
    s.suppressed += perCpu.readBigUInt64LE(off + 32);
    s.lost += perCpu.readBigUInt64LE(off + 40);
  }
  return s;
}

export interface FlowKey {
  fenceId: bigint;
  addr: Buffer;
  port: number;
  proto: number;
  dir: NetDir;
  family: Family;
}

export function encodeFlowKey(k: FlowKey): Buffer {
  const b = Buffer.alloc(FLOW_KEY_SIZE);
  b.writeBigUInt64LE(k.fenceId, 0);
  k.addr.copy(b, 8, 0, 16);
  b.writeUInt16LE(k.port, 24);
  b.writeUInt8(k.proto, 26);
  b.writeUInt8(k.dir, 27);
  b.writeUInt8(k.family, 28);
  return b;
}

export function decodeFlowKey(b: Buffer): FlowKey {
  return {
    fenceId: b.readBigUInt64LE(0),
    addr: Buffer.from(b.subarray(8, 24)),
    port: b.readUInt16LE(24),
    proto: b.readUInt8(26),
    dir: b.readUInt8(27),
    family: b.readUInt8(28) as Family,
  };
}

export interface FlowState {
  windowStartNs: bigint;
  emitted: number;
  suppressed: bigint;
}

export function decodeFlow(b: Buffer): FlowState {
  return { windowStartNs: b.readBigUInt64LE(0), emitted: b.readUInt32LE(8), suppressed: b.readBigUInt64LE(16) };
}

export interface NetEvent {
  kind: 'net' | 'net-throttle';
  action: ExecAction;
  tsMonoNs: bigint;
  fenceId: bigint;
  cgroupId: bigint;
  family: Family;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  dir: NetDir;
  hook: NetHook;
  gen: number;
  pid: number;
  ruleId: number;
  /** THROTTLE: the flow's suppressed total, this decision included. */
  suppressed: bigint;
  comm: string;
  /** The flow key the rate limiter uses for this event. */
  flow: FlowKey;
}

export function formatAddr(family: Family, b: Buffer): string {
  if (family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // RFC 5952: the longest run (of two or more) of zero groups becomes "::".
  let best = -1,
    bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function protoName(p: number): string {
  return ({ 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' } as Record<number, string>)[p] ?? String(p);
}

export function decodeNetEvent(b: Buffer): NetEvent {
  if (b.length < NET_EVENT_SIZE) throw new Error(`net event of ${b.length} bytes, want ${NET_EVENT_SIZE}`);
  const family = b.readUInt8(68) as Family;
  const saddr = Buffer.from(b.subarray(32, 48));
  const daddr = Buffer.from(b.subarray(48, 64));
  const dir: NetDir = b.readUInt8(70);
  const end = b.indexOf(0, 96);
  const fenceId = b.readBigUInt64LE(16);
  const dport = b.readUInt16LE(66);
  const proto = b.readUInt8(69);
  return {
    kind: b.readUInt32LE(0) === EVENT_NET_THROTTLE ? 'net-throttle' : 'net',
    action: b.readUInt32LE(4),
    tsMonoNs: b.readBigUInt64LE(8),
    fenceId,
    cgroupId: b.readBigUInt64LE(24),
    family,
    saddr: formatAddr(family, saddr),
    daddr: formatAddr(family, daddr),
    sport: b.readUInt16LE(64),
    dport,
    proto,
    dir,
    hook: b.readUInt8(71),
    gen: b.readUInt8(72),
    pid: b.readUInt32LE(76),
    ruleId: b.readUInt32LE(80),
    suppressed: b.readBigUInt64LE(88),
    comm: b.toString('utf8', 96, end < 0 || end > 112 ? 112 : end),
    flow: { fenceId, addr: dir === NetDir.Egress ? daddr : saddr, port: dport, proto, dir, family },
  };
}

export { FenceMode };
