// TypeScript mirror of bpf/include/cgfence-abi.h. The addon static_asserts the C sizes;
// the sizes here are checked against the maps' key/value sizes when an object loads.

export enum FenceMode { Off = 0, Enforce = 1, Audit = 2, Learn = 3 }
export const FLAG_REPORT_ALLOWED = 1;

export enum ExecAction { Allow = 0, Deny = 1, Audit = 2 }
export const EVENT_EXEC = 1;

export const FENCE_SIZE = 32;
export const EXEC_KEY_SIZE = 24;
export const EXEC_EVENT_SIZE = 336;
const COMM_LEN = 16;
const PATH_LEN = 256;

/** A file identity as the kernel sees it: dev in the kernel's MAJOR<<20|MINOR encoding. */
export interface FileIdentity { dev: bigint; ino: bigint }

export interface FenceState { mode: FenceMode; flags: number; denied: bigint; audited: bigint; allowed: bigint }

export function u64Key(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

export function encodeFence(f: Pick<FenceState, 'mode' | 'flags'> & Partial<FenceState>): Buffer {
  const b = Buffer.alloc(FENCE_SIZE);
  b.writeUInt32LE(f.mode, 0);
  b.writeUInt32LE(f.flags, 4);
  b.writeBigUInt64LE(f.denied ?? 0n, 8);
  b.writeBigUInt64LE(f.audited ?? 0n, 16);
  b.writeBigUInt64LE(f.allowed ?? 0n, 24);
  return b;
}

export function decodeFence(b: Buffer): FenceState {
  return {
    mode: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    denied: b.readBigUInt64LE(8),
    audited: b.readBigUInt64LE(16),
    allowed: b.readBigUInt64LE(24),
  };
}

export function encodeExecKey(fenceId: bigint, id: FileIdentity): Buffer {
  const b = Buffer.alloc(EXEC_KEY_SIZE);
  b.writeBigUInt64LE(fenceId, 0);
  b.writeBigUInt64LE(id.dev, 8);
  b.writeBigUInt64LE(id.ino, 16);
  return b;
}

export function decodeExecKey(b: Buffer): { fenceId: bigint } & FileIdentity {
  return { fenceId: b.readBigUInt64LE(0), dev: b.readBigUInt64LE(8), ino: b.readBigUInt64LE(16) };
}

/** CGFENCE_EVENT_EXEC_LSM: the event came from lsm/bprm_check_security. */
export const EVENT_EXEC_LSM = 2;
/** CGFENCE_EVENT_WRITE_ALLOWED, CGFENCE_EVENT_PROC_MEM_WRITE: from lsm/file_open. */
export const EVENT_WRITE_ALLOWED = 3;
export const EVENT_PROC_MEM_WRITE = 4;
/** CGFENCE_EVENT_MAP_EXEC: from lsm/mmap_file or lsm/file_mprotect. */
export const EVENT_MAP_EXEC = 5;

export interface ExecEvent {
  kind: 'exec';
  /** Which program decided: 'lsm' (a denial failed the exec with EACCES) or 'tracepoint' (SIGKILL). */
  via: 'lsm' | 'tracepoint';
  /** What was judged: an exec, or (BPF LSM only) an open for writing of an allow-listed file or of a /proc/PID/mem. */
  op: 'exec' | 'write-allow-listed' | 'write-proc-mem' | 'map-exec';
  action: ExecAction;
  tsMonoNs: bigint;
  cgroupId: bigint;
  fenceId: bigint;
  dev: bigint;
  ino: bigint;
  pid: number;
  ppid: number;
  uid: number;
  mode: FenceMode;
  comm: string;
  path: string;
}

function cstr(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

export function decodeExecEvent(b: Buffer): ExecEvent {
  if (b.length < EXEC_EVENT_SIZE) throw new Error(`exec event of ${b.length} bytes, want ${EXEC_EVENT_SIZE}`);
  return {
    kind: 'exec',
    via: b.readUInt32LE(0) === 1 ? 'tracepoint' : 'lsm',
    op: b.readUInt32LE(0) === EVENT_WRITE_ALLOWED ? 'write-allow-listed' : b.readUInt32LE(0) === EVENT_PROC_MEM_WRITE ? 'write-proc-mem' : b.readUInt32LE(0) === EVENT_MAP_EXEC ? 'map-exec' : 'exec',
    action: b.readUInt32LE(4),
    tsMonoNs: b.readBigUInt64LE(8),
    cgroupId: b.readBigUInt64LE(16),
    fenceId: b.readBigUInt64LE(24),
    dev: b.readBigUInt64LE(32),
    ino: b.readBigUInt64LE(40),
    pid: b.readUInt32LE(48),
    ppid: b.readUInt32LE(52),
    uid: b.readUInt32LE(56),
    mode: b.readUInt32LE(60),
    comm: cstr(b, 64, COMM_LEN),
    path: cstr(b, 64 + COMM_LEN, PATH_LEN),
  };
}

/** Converts glibc's user-space st_dev encoding to the kernel's (MAJOR << 20 | MINOR). */
export function kernelDev(stDev: bigint): bigint {
  const major = ((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn);
  const minor = (stDev & 0xffn) | ((stDev >> 12n) & ~0xffn);
  return (major << 20n) | minor;
}

export function formatDev(kdev: bigint): string {
  return `${(kdev >> 20n).toString()}:${(kdev & 0xfffffn).toString()}`;
}

/** Bit 63 of a fence id: the fence is keyed by pid namespace (CGFENCE_FENCE_ID_PIDNS). */
export const FENCE_ID_PIDNS = 1n << 63n;
export const PIDNS_START_MASK = 0x7fffffffn;
/** The kernel's MAX_PID_NS_LEVEL, the depth the pidns walk covers. */
export const MAX_PIDNS_DEPTH = 32;

export function isPidnsFenceId(fenceId: bigint): boolean {
  return (fenceId & FENCE_ID_PIDNS) !== 0n;
}
