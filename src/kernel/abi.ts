// TypeScript mirror of bpf/include/cgfence-abi.h. The addon static_asserts the C sizes;
// the sizes here are checked against the maps' key/value sizes when an object loads.

export enum FenceMode {
  Off = 0,
  Enforce = 1,
  Audit = 2,
  Learn = 3,
}
export const FLAG_REPORT_ALLOWED = 1;
/** Identity alone, no stamp or loader check: for bench/exec-loop.ts only, never set by the daemon. */
export const FLAG_IDENTITY_ONLY = 2;

export enum ExecAction {
  Allow = 0,
  Deny = 1,
  Audit = 2,
}

/** enum cgfence_exec_reason: why an exec was denied (or audited). */
export enum ExecReason {
  None = 0,
  NotAllowed = 1,
  Modified = 2,
  InterpOnly = 3,
  InterpNotAllowed = 4,
  InterpModified = 5,
  InterpUnknown = 6,
}

/** The audit `reason` of each ExecReason. */
export const EXEC_REASON_NAMES: Record<ExecReason, string> = {
  [ExecReason.None]: 'allowed',
  [ExecReason.NotAllowed]: 'not-allowed',
  [ExecReason.Modified]: 'modified-since-allowed',
  [ExecReason.InterpOnly]: 'loader-run-directly',
  [ExecReason.InterpNotAllowed]: 'loader-not-allowed',
  [ExecReason.InterpModified]: 'loader-modified-since-allowed',
  [ExecReason.InterpUnknown]: 'loader-unknown',
};

/** enum cgfence_allow_flags */
export const ALLOW_INTERP_ONLY = 1;
export const EVENT_EXEC = 1;

export const FENCE_SIZE = 32;
export const EXEC_KEY_SIZE = 24;
export const EXEC_ALLOW_SIZE = 16;
export const EXEC_EVENT_SIZE = 384;
/** struct cgfence_exec_throttle: an exec event and the identity's suppressed count. */
export const EXEC_THROTTLE_SIZE = 392;
export const EVENT_EXEC_THROTTLE = 2;
export const EXEC_RATE_SIZE = 24;
/** The kernel's exec rate limiter (bpf/include/cgfence-abi.h). */
export const EXEC_RATE_BURST = 5;
export const EXEC_RATE_FENCE_BURST = 50;
export const EXEC_RATE_WINDOW_NS = 1_000_000_000n;
const COMM_LEN = 16;
const PATH_LEN = 256;

/** A file identity as the kernel sees it: dev in the kernel's MAJOR<<20|MINOR encoding. */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
}

/**
 * An allow entry: a file identity, its change stamp when it was allowed (the inode's ctime in
 * nanoseconds since the epoch, as stat reports it) and whether it is allowed only as the ELF
 * loader of allowed programs.
 */
export interface AllowedFile extends FileIdentity {
  ctimeNs: bigint;
  interpOnly: boolean;
}

const NS = 1_000_000_000n;

/** A stamp as audit records show it: seconds.nanoseconds, the nanoseconds zero-padded. */
export function formatStamp(ctimeNs: bigint): string {
  return `${ctimeNs / NS}.${(ctimeNs % NS).toString().padStart(9, '0')}`;
}

export function encodeExecAllow(a: Pick<AllowedFile, 'ctimeNs' | 'interpOnly'>): Buffer {
  const b = Buffer.alloc(EXEC_ALLOW_SIZE);
  b.writeBigInt64LE(a.ctimeNs / NS, 0);
  b.writeUInt32LE(Number(a.ctimeNs % NS), 8);
  b.writeUInt32LE(a.interpOnly ? ALLOW_INTERP_ONLY : 0, 12);
  return b;
}

export function decodeExecAllow(b: Buffer): Pick<AllowedFile, 'ctimeNs' | 'interpOnly'> {
  return { ctimeNs: b.readBigInt64LE(0) * NS + BigInt(b.readUInt32LE(8)), interpOnly: (b.readUInt32LE(12) & ALLOW_INTERP_ONLY) !== 0 };
}

export interface FenceState {
  mode: FenceMode;
  flags: number;
  denied: bigint;
  audited: bigint;
  allowed: bigint;
}

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
export const EVENT_EXEC_LSM = 3;
/** CGFENCE_EVENT_WRITE_ALLOWED, CGFENCE_EVENT_PROC_MEM_WRITE: from lsm/file_open. */
export const EVENT_WRITE_ALLOWED = 4;
export const EVENT_PROC_MEM_WRITE = 5;
/** CGFENCE_EVENT_MAP_EXEC: from lsm/mmap_file or lsm/file_mprotect. */
export const EVENT_MAP_EXEC = 6;

export interface ExecEvent {
  /** exec-throttle: the first refusal of an identity past the rate limit (not recorded itself). */
  kind: 'exec' | 'exec-throttle';
  /** exec-throttle only: the identity's count of refusals not recorded, this one included. */
  suppressed?: bigint;
  /** Which program decided: 'lsm' (a denial failed the exec with EACCES) or 'tracepoint' (SIGKILL). */
  via: 'lsm' | 'tracepoint';
  /** What was judged: an exec, or (BPF LSM only) an open for writing of an allow-listed file or of a /proc/PID/mem, or an executable mapping. */
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
  /** comm and path as the kernel has them (not necessarily UTF-8). */
  commBytes?: Buffer;
  pathBytes?: Buffer;
  reason: ExecReason;
  /** The judged file's stamp now: the program's, or its loader's for the Interp* reasons. */
  nowCtimeNs: bigint;
  /** The stamp its allow entry holds (Modified, InterpModified), else null. */
  wantCtimeNs: bigint | null;
  /** The ELF loader of the program when the loader was judged, else null. */
  interp: FileIdentity | null;
}

/** The bytes of a NUL-terminated C string in `b[off, off+len)`. */
export function cBytes(b: Buffer, off: number, len: number): Buffer {
  const end = b.indexOf(0, off);
  return b.subarray(off, end < 0 || end > off + len ? off + len : end);
}

function cstr(b: Buffer, off: number, len: number): string {
  return cBytes(b, off, len).toString('utf8');
}

export function decodeExecEvent(b: Buffer): ExecEvent {
  if (b.length < EXEC_EVENT_SIZE) throw new Error(`exec event of ${b.length} bytes, want ${EXEC_EVENT_SIZE}`);
  const throttle = b.readUInt32LE(0) === EVENT_EXEC_THROTTLE && b.length >= EXEC_THROTTLE_SIZE;
  return {
    kind: throttle ? 'exec-throttle' : 'exec',
    ...(throttle ? { suppressed: b.readBigUInt64LE(EXEC_EVENT_SIZE) } : {}),
    via: b.readUInt32LE(0) === EVENT_EXEC || b.readUInt32LE(0) === EVENT_EXEC_THROTTLE ? 'tracepoint' : 'lsm',
    op:
      b.readUInt32LE(0) === EVENT_WRITE_ALLOWED
        ? 'write-allow-listed'
        : b.readUInt32LE(0) === EVENT_PROC_MEM_WRITE
          ? 'write-proc-mem'
          : b.readUInt32LE(0) === EVENT_MAP_EXEC
            ? 'map-exec'
            : 'exec',
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
    // The exact bytes: names need not be UTF-8 (audit/exact-name.ts).
    commBytes: Buffer.from(cBytes(b, 64, COMM_LEN)),
    pathBytes: Buffer.from(cBytes(b, 64 + COMM_LEN, PATH_LEN)),
    ...decodeExecVerdict(b, 64 + COMM_LEN + PATH_LEN),
  };
}

function decodeExecVerdict(b: Buffer, off: number): Pick<ExecEvent, 'reason' | 'nowCtimeNs' | 'wantCtimeNs' | 'interp'> {
  const reason = b.readUInt32LE(off) as ExecReason;
  const nowCtimeNs = b.readBigInt64LE(off + 8) * NS + BigInt(b.readUInt32LE(off + 4));
  const wantSec = b.readBigInt64LE(off + 16);
  const wantNsec = b.readUInt32LE(off + 24);
  const interpDev = b.readBigUInt64LE(off + 32);
  const interpIno = b.readBigUInt64LE(off + 40);
  const modified = reason === ExecReason.Modified || reason === ExecReason.InterpModified;
  return {
    reason,
    nowCtimeNs,
    wantCtimeNs: modified ? wantSec * NS + BigInt(wantNsec) : null,
    interp: interpDev || interpIno ? { dev: interpDev, ino: interpIno } : null,
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

export interface ExecRate {
  windowStartNs: bigint;
  emitted: number;
  suppressed: bigint;
}

export function decodeExecRate(b: Buffer): ExecRate {
  return { windowStartNs: b.readBigUInt64LE(0), emitted: b.readUInt32LE(8), suppressed: b.readBigUInt64LE(16) };
}
