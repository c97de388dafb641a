// Pid namespaces as a container's fence scope (the cgroup v1 fallback): a process's namespace,
// whether it is the container's own, and the fence id the kernel programs compute for it
// (bpf/include/pidns.bpf.h). All of it read from /proc as the daemon sees it, which must be
// the initial pid and time namespaces.
import fs from 'node:fs';
import { FENCE_ID_PIDNS, PIDNS_START_MASK } from './abi';

/** The initial pid namespace's inode number (the kernel's PROC_PID_INIT_INO). */
export const INITIAL_PIDNS_INODE = 0xeffffffcn;

export class PidnsError extends Error {}

export interface PidNamespace {
  /** The namespace's inode number (`readlink /proc/<pid>/ns/pid` shows pid:[inode]). */
  inode: bigint;
  /** The process's pid in each namespace from ours down to its own (NSpid). */
  nsPids: number[];
}

export function pidNamespaceOf(pid: number): PidNamespace {
  let inode: bigint;
  let status: string;
  try {
    inode = fs.statSync(`/proc/${pid}/ns/pid`, { bigint: true }).ino;
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch (e) {
    throw new PidnsError(`cannot read the pid namespace of pid ${pid}: ${(e as Error).message}`);
  }
  const line = status.split('\n').find((l) => l.startsWith('NSpid:'));
  if (!line) throw new PidnsError(`/proc/${pid}/status has no NSpid line (kernel older than 4.1)`);
  return { inode, nsPids: line.slice(6).trim().split(/\s+/).map(Number) };
}

/**
 * Start time of a process in USER_HZ ticks since boot (/proc/<pid>/stat field 22). USER_HZ is
 * 100 on every architecture; the kernel side divides start_boottime by the same unit.
 */
export function startTicks(pid: number): bigint {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (e) {
    throw new PidnsError(`cannot read the start time of pid ${pid}: ${(e as Error).message}`);
  }
  // comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return BigInt(rest[22 - 3]);
}

export function pidnsFenceId(inode: bigint, initStartTicks: bigint): bigint {
  return FENCE_ID_PIDNS | ((initStartTicks & PIDNS_START_MASK) << 32n) | (inode & 0xffffffffn);
}

let checkedDaemonNamespaces: string | null | undefined;

/**
 * Null when the daemon sees pids and start times as the kernel programs do; else why not.
 * In a child pid namespace it could neither see containers' inits nor tell the host's
 * namespace from its own; with a boottime offset (a time namespace) its /proc start times
 * would not match the kernel's and every fence id would be wrong, so fences would never match.
 */
export function daemonNamespaceProblem(): string | null {
  if (checkedDaemonNamespaces !== undefined) return checkedDaemonNamespaces;
  checkedDaemonNamespaces = null;
  const self = pidNamespaceOf(process.pid);
  if (self.inode !== INITIAL_PIDNS_INODE || self.nsPids.length !== 1) {
    checkedDaemonNamespaces = `the daemon runs in pid namespace ${self.inode}, not the initial one (run it with the host pid namespace, e.g. hostPID)`;
    return checkedDaemonNamespaces;
  }
  try {
    const offsets = fs.readFileSync('/proc/self/timens_offsets', 'utf8');
    const boot = offsets.split('\n').find((l) => l.startsWith('boottime'));
    if (
      boot &&
      boot
        .split(/\s+/)
        .slice(1)
        .some((v) => v !== '0')
    ) {
      checkedDaemonNamespaces = `the daemon runs in a time namespace with a boottime offset (${boot.trim()}): its /proc start times would not match the kernel's`;
    }
  } catch {
    // No time namespaces in this kernel: no offsets either.
  }
  return checkedDaemonNamespaces;
}

export interface ContainerPidns {
  inode: bigint;
  fenceId: bigint;
  /** Host pid of the namespace's init. */
  initPid: number;
  /** How deep the namespace is (1: a child of the initial namespace). */
  level: number;
}

/**
 * The pid namespace a container owns, found through its init `pid`. Refused (PidnsError,
 * naming the reason) when keying a fence on it would also cover processes that are not the
 * container's: the host's namespace, the daemon's, or a namespace whose init is another
 * process (a pod sharing one namespace, `ctr run --with-ns pid:...`).
 */
export function containerPidns(pid: number): ContainerPidns {
  const daemon = daemonNamespaceProblem();
  if (daemon) throw new PidnsError(daemon);
  const ns = pidNamespaceOf(pid);
  if (ns.inode === INITIAL_PIDNS_INODE || ns.nsPids.length === 1) {
    throw new PidnsError(
      `pid ${pid} shares the host pid namespace (pid:[${ns.inode}]): a fence keyed on it would cover every process on the host`,
    );
  }
  const inner = ns.nsPids[ns.nsPids.length - 1];
  if (inner !== 1) {
    throw new PidnsError(
      `pid ${pid} is pid ${inner}, not the init, of pid namespace pid:[${ns.inode}]: the namespace is shared with other processes (a pod's shared pid namespace, or a joined one), so a fence keyed on it would cover them too`,
    );
  }
  const ticks = startTicks(pid);
  // The pid could have died and been reused between the reads: the namespace must still match.
  if (pidNamespaceOf(pid).inode !== ns.inode) throw new PidnsError(`pid ${pid} exited while its pid namespace was read`);
  return { inode: ns.inode, fenceId: pidnsFenceId(ns.inode, ticks), initPid: pid, level: ns.nsPids.length - 1 };
}

/** Decomposes a pidns fence id for status output and logs. */
export function describePidnsFenceId(fenceId: bigint): { inode: string; initStartTicks: string } {
  return { inode: (fenceId & 0xffffffffn).toString(), initStartTicks: ((fenceId >> 32n) & PIDNS_START_MASK).toString() };
}
