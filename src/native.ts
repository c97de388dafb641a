// The one loader of the native addon, and the typed interface of what it exports.
// Keys and values are Buffers laid out per bpf/include/cgfence-abi.h (see kernel/abi.ts).
import path from 'node:path';

export interface MapInfo {
  id: number;
  fd: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}
export interface LinkInfo {
  id: number;
  progId: number;
  fd: number;
  pinPath?: string;
}

export interface BpfLink {
  pin(path: string): void;
  unpin(): void;
  /** Detaches unless still pinned; idempotent. */
  destroy(): void;
  info(): LinkInfo | null;
}

export interface BpfObject {
  mapUpdate(map: string, key: Buffer, value: Buffer, flags?: number): void;
  mapLookup(map: string, key: Buffer): Buffer | null;
  mapDelete(map: string, key: Buffer): boolean;
  mapKeys(map: string): Buffer[];
  mapInfo(map: string): MapInfo;
  programInfo(program: string): { id: number; fd: number };
  attachTracing(program: string): BpfLink;
  attachCgroup(program: string, cgroupPath: string): BpfLink;
  close(opts?: { unpin?: boolean }): void;
}

export interface RingBuffer {
  close(): void;
  ref(): void;
  unref(): void;
}

/** What the notify loop hands to JavaScript, in batches (native/seccomp-notify.h). */
export type NotifyEvent =
  | {
      kind: 'deny';
      key: string;
      tsMonoNs: bigint;
      pid: number;
      syscall: 'execve' | 'execveat';
      path: string;
      dev: bigint;
      ino: bigint;
      errno: number;
      comm: string;
      /** enum cgfence_exec_reason (ExecReason); the file's stamp now, its entry's for a modified file. */
      reason: number;
      nowCtimeNs: bigint;
      wantCtimeNs: bigint | null;
      /** The exact bytes of path and comm (names need not be UTF-8). */
      pathBytes?: Buffer;
      commBytes?: Buffer;
    }
  /**
   * Seccomp denials the loop answered EPERM (a cgfence seccomp-deny name, or one seccomp-allow
   * leaves out), counted per container, audit arch and syscall number since the last take.
   */
  | {
      kind: 'seccomp';
      key: string;
      arch: number;
      nr: number;
      count: number;
      pid: number;
      comm: string;
      firstMonoNs: bigint;
      tsMonoNs: bigint;
      /** Answered by the fd-holder while no daemon was connected: a count only (no pid, comm or times of its own); nr -1: kinds it did not name. */
      byHolder: boolean;
    }
  /** A notify fd arrived for a container with no allow set yet: until one is set, its execs wait. */
  | { kind: 'need'; key: string; tsMonoNs: bigint; pid: number }
  | { kind: 'holder-lost'; key: string; tsMonoNs: bigint; detail: string; count: number }
  /** version: the holder's protocol version (native/fd-holder/protocol.h FDH_VERSION; 0: a holder of before versions). */
  | { kind: 'holder-connected'; key: string; tsMonoNs: bigint; detail: string; count: number; version: number };

export interface NotifyStats {
  notifications: number;
  continued: number;
  denied: number;
  unresolved: number;
  gone: number;
  /** Seccomp denials answered EPERM by the loop (not execs). */
  seccompDenied: number;
  fdsReceived: number;
  fdsAdopted: number;
  fdsClosed: number;
  rejected: number;
  eventsDropped: number;
  openFds: number;
  holderConnected: boolean;
  /** The connected fd-holder's protocol version (FDH_VERSION); 0 when none is connected or it is of before versions. */
  holderVersion: number;
  /** Allowed verdicts answered from the per-container path cache; listeners with sync wake-up set; fd threads. */
  cacheHits: number;
  syncWakeUp: number;
  threadFailures: number;
  threads: number;
  /** Decision time (receive returned .. answer sent), cumulative ns per stage: docs/exec-performance.md. */
  profileNs: Record<'table' | 'read' | 'lookup' | 'resolve' | 'valid' | 'send' | 'total', number>;
  decisionUs: { count: number; p50: number; p90: number; p99: number; max: number };
  /** { "<bucket's upper bound, µs>": count }, nonzero buckets only. */
  decisionHistogram: Record<string, number>;
}

export interface SeccompNotify {
  /**
   * Sets or replaces a container's allow entries ([kernel dev, ino, ctime stamp in ns, allowed
   * only as a PT_INTERP loader]) and the errno of a denial; denyErrno 0 answers CONTINUE to
   * every exec (the kernel fence alone decides).
   */
  setContainer(key: string, entries: Array<[bigint, bigint, bigint, boolean]>, denyErrno: number): void;
  /** Closes the container's notify fds (here and in the fd-holder). */
  removeContainer(key: string): void;
  /** Takes over from a (new) fd-holder: takes what it holds, hands it copies of what it lacks. With wait, returns once done (throws why not). */
  connectHolder(path: string, wait?: boolean): void;
  /** Tells the connected fd-holder to quit and waits (at most timeoutMs) until it has exited; the loop keeps the fds. Throws why not. */
  retireHolder(timeoutMs: number): void;
  stats(): NotifyStats;
  /** Execs of the container answered with its errno so far (counted as they are answered). */
  refused(key: string): number;
  /** The seccomp denials counted since the last take (of every container); counts restart from 0. */
  takeSeccompDenials(): Array<Extract<NotifyEvent, { kind: 'seccomp' }>>;
  /** With release, the fd-holder lets go of every fd and exits. */
  close(opts?: { release?: boolean }): void;
  ref(): void;
  unref(): void;
}

export interface NativeAddon {
  /** `programs`: load only these programs of the object (default: all). */
  BpfObject: new (
    name: string,
    opts?: {
      pinDir?: string;
      programs?: string[];
      rodata?: Record<string, Buffer>;
      /** Map sizes; a map already pinned keeps its own. */ maxEntries?: Record<string, number>;
    },
  ) => BpfObject;
  BpfLink: { open(pinPath: string): BpfLink };
  RingBuffer: new (obj: BpfObject, map: string, onBatch: (records: Buffer[]) => void) => RingBuffer;
  resolveSyscalls(names: string[], arch?: string): Array<number | null>;
  /** Takes over the fds the fd-holder at holderPath keeps, then receives the new ones runc delivers to it. */
  SeccompNotify: new (opts: { holderPath: string }, onBatch: (events: NotifyEvent[]) => void) => SeccompNotify;
  /** The reverse: libseccomp's name of each syscall number (null: none on that architecture). */
  syscallNames(numbers: number[], arch?: string): Array<string | null>;
  libbpfVersion: string;
  /** Reads the kernel's seccomp log records (AUDIT_SECCOMP) from the audit multicast group; onReady: records wait for take(). */
  AuditNetlink: new (onReady: () => void) => AuditNetlink;
  /** SO_PEERCRED of a connected unix socket: who is at the other end. */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  /** Swaps two paths atomically (renameat2 RENAME_EXCHANGE); false when `to` is missing or the filesystem cannot. */
  renameExchange(from: string, to: string): boolean;
}

export interface AuditNetlinkRecord {
  /** As the kernel formatted it: `audit(SECS.MS:SERIAL): key=value ...`. */
  text: string;
  /** The caller's cgroup v2 path, read when the record arrived; '' when the caller was gone. */
  cgroup: string;
  tsMonoNs: bigint;
}

export interface AuditNetlink {
  /** The records received so far, at once. */
  take(): AuditNetlinkRecord[];
  stats(): { received: number; overruns: number; dropped: number };
  close(): void;
  unref(): void;
}

/** Errors thrown by the addon: Node's SystemError shape, plus the verifier log of a failed load. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
  verifierLog?: string;
}

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

let addon: NativeAddon | undefined;

export function projectRoot(): string {
  // dist/src/native.js and src/native.ts (under vitest) both sit two levels below the root
  // or one; walk up to the directory holding package.json.
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (require('node:fs').existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`cannot find the cgfence project root above ${__dirname}`);
}

export function native(): NativeAddon {
  if (!addon) {
    const file = path.join(projectRoot(), 'build', 'Release', 'cgfence.node');
    try {
      addon = require(file) as NativeAddon;
    } catch (e) {
      throw new Error(`cannot load the cgfence addon at ${file} (run \`npm run build\`): ${(e as Error).message}`);
    }
  }
  return addon;
}
