// TypeScript mirror of bpf/include/learn-abi.h. The addon static_asserts the C sizes; the
// sizes here are checked against the maps' key/value sizes when an object loads.

export const MAX_SYSCALL = 1024;
export enum SyscallAbi {
  Native = 0,
  Compat = 1,
}
export const ABIS = 2;

export const SYSCALLS_SIZE = ABIS * MAX_SYSCALL + 8;
export const CGROUP_CACHE_SIZE = 16;
export const NET_CONFIG_SIZE = 24;
export const PEER_KEY_SIZE = 32;
export const PORT_KEY_SIZE = 32;
export const EXEC_KEY_SIZE = 24;
const PATH_LEN = 256;
const PATH_DEPTH = 16;
const NAME_LEN = 64;
const PATH_WHOLE = 1;
const EXEC_INTERP = 24;
const EXEC_PARTS = EXEC_INTERP + PATH_LEN;
export const EXEC_VALUE_SIZE = EXEC_PARTS + PATH_DEPTH * NAME_LEN;

export enum LearnDir {
  Egress = 0,
  Ingress = 1,
}

export interface LearnedSyscallNumbers {
  /** Syscall numbers seen, per ABI (SyscallAbi index), ascending. */
  numbers: [number[], number[]];
  outOfRange: bigint;
}

export function decodeSyscalls(b: Buffer): LearnedSyscallNumbers {
  const numbers: [number[], number[]] = [[], []];
  for (let abi = 0; abi < ABIS; abi++) {
    for (let nr = 0; nr < MAX_SYSCALL; nr++) if (b[abi * MAX_SYSCALL + nr]) numbers[abi].push(nr);
  }
  return { numbers, outOfRange: b.readBigUInt64LE(ABIS * MAX_SYSCALL) };
}

export interface LearnNetConfig {
  fenceId: bigint;
  peerDrops: bigint;
  portDrops: bigint;
}

export function encodeNetConfig(c: LearnNetConfig): Buffer {
  const b = Buffer.alloc(NET_CONFIG_SIZE);
  b.writeBigUInt64LE(c.fenceId, 0);
  b.writeBigUInt64LE(c.peerDrops, 8);
  b.writeBigUInt64LE(c.portDrops, 16);
  return b;
}

export function decodeNetConfig(b: Buffer): LearnNetConfig {
  return { fenceId: b.readBigUInt64LE(0), peerDrops: b.readBigUInt64LE(8), portDrops: b.readBigUInt64LE(16) };
}

export interface PeerKey {
  fenceId: bigint;
  family: 4 | 6;
  dir: LearnDir;
  addr: Buffer;
}

export function decodePeerKey(b: Buffer): PeerKey {
  const family = b.readUInt8(8) === 4 ? 4 : 6;
  return { fenceId: b.readBigUInt64LE(0), family, dir: b.readUInt8(9), addr: Buffer.from(b.subarray(16, family === 4 ? 20 : 32)) };
}

export interface PortKey extends PeerKey {
  proto: number;
  port: number;
}

export function decodePortKey(b: Buffer): PortKey {
  const family = b.readUInt8(8) === 4 ? 4 : 6;
  return {
    fenceId: b.readBigUInt64LE(0),
    family,
    dir: b.readUInt8(9),
    proto: b.readUInt8(10),
    port: b.readUInt16LE(12),
    addr: Buffer.from(b.subarray(16, family === 4 ? 20 : 32)),
  };
}

/**
 * One executable a learning container ran (learn_exec): its identity, how often, bprm->interp,
 * and its path in its own filesystem as the kernel saw it at the exec (null when deeper than
 * the record holds, or a name was too long to be whole).
 */
export interface LearnedExecRecord {
  fenceId: bigint;
  dev: bigint;
  ino: bigint;
  count: bigint;
  interp: string;
  kernelPath: string | null;
  /** CLOCK_MONOTONIC ns of the first exec. */
  firstNs: bigint;
}

function cString(b: Buffer): { text: string; whole: boolean } {
  const nul = b.indexOf(0);
  return { text: b.subarray(0, nul < 0 ? b.length : nul).toString('utf8'), whole: nul >= 0 && nul < b.length - 1 };
}

export function encodeExecKey(fenceId: bigint, dev: bigint, ino: bigint): Buffer {
  const b = Buffer.alloc(EXEC_KEY_SIZE);
  b.writeBigUInt64LE(fenceId, 0);
  b.writeBigUInt64LE(dev, 8);
  b.writeBigUInt64LE(ino, 16);
  return b;
}

export function decodeExecRecord(key: Buffer, value: Buffer): LearnedExecRecord {
  const depth = Math.min(value.readUInt32LE(8), PATH_DEPTH);
  const flags = value.readUInt32LE(12);
  const parts: string[] = [];
  // A name that filled its slot may be cut short: the path is then not trusted.
  let whole = (flags & PATH_WHOLE) !== 0 && depth > 0;
  for (let i = depth - 1; i >= 0; i--) {
    const off = EXEC_PARTS + i * NAME_LEN;
    const part = cString(value.subarray(off, off + NAME_LEN));
    whole &&= part.whole && part.text.length > 0;
    parts.push(part.text);
  }
  return {
    fenceId: key.readBigUInt64LE(0),
    dev: key.readBigUInt64LE(8),
    ino: key.readBigUInt64LE(16),
    count: value.readBigUInt64LE(0),
    interp: cString(value.subarray(EXEC_INTERP, EXEC_INTERP + PATH_LEN)).text,
    kernelPath: whole ? `/${parts.join('/')}` : null,
    firstNs: value.readBigUInt64LE(16),
  };
}
