// A container's fence scope: what the kernel programs find its fence by, and so what the fence
// covers. Its own cgroup v2 and everything below it ('cgroup-v2') or, where it has none or
// cgroup mode v1 is forced, its own pid namespace and those nested in it ('pidns-tracepoint').
// Decided per container, so that one node can run both kinds. (Not to be confused with a
// file identity, policy/identity.ts: what an allow-list entry is.)
import fs from 'node:fs';
import path from 'node:path';
import { cgroupV2PathOfPid, cgroupV2Root } from '../kernel/cgroup';
import { ContainerPidns, containerPidns } from '../kernel/pidns';
import { CgroupMode } from './backend';

export type ScopeKind = 'cgroup-v2' | 'pidns-tracepoint';

/** The container has no scope the cgroup mode allows: it cannot be fenced. */
export class NoScopeError extends Error {}

export type FenceScope = { backend: 'cgroup-v2'; cgroupPath: string } | { backend: 'pidns-tracepoint'; pidns: ContainerPidns; why: string };

function parentPid(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

/**
 * Null when `cgroupPath` is the container's own v2 cgroup; else why it is not. A container
 * that runc did not place in the v2 hierarchy (a v1-only runc on a hybrid host) still has a
 * v2 cgroup: the root or its shim's. Fencing that would fence the shim, containerd or the host.
 */
export function notOwnCgroupV2(pid: number, cgroupPath: string | null): string | null {
  const root = cgroupV2Root();
  if (!root || !cgroupPath) return 'it has no cgroup v2 membership (no cgroup v2 hierarchy is mounted)';
  if (path.resolve(cgroupPath) === path.resolve(root)) return `its cgroup v2 is the root of the hierarchy (${root})`;
  const ppid = parentPid(pid);
  if (ppid !== null && ppid > 0) {
    let parent: string | null = null;
    try {
      parent = cgroupV2PathOfPid(ppid);
    } catch {
      /* the parent is gone: nothing to compare */
    }
    if (parent !== null && path.resolve(parent) === path.resolve(cgroupPath)) {
      return `it shares its cgroup v2 ${cgroupPath} with its parent pid ${ppid}`;
    }
  }
  return null;
}

/**
 * The scope to fence a container's init `pid` by. auto: its own v2 cgroup when it has one,
 * else its pid namespace; v2: only the cgroup; v1: only the pid namespace. Throws, naming the
 * reason (NoScopeError, or PidnsError from kernel/pidns), when the mode's scope does
 * not exist for this container.
 */
export function chooseScope(pid: number, cgroupPath: string | null, mode: CgroupMode): FenceScope {
  if (mode !== 'v1') {
    const notOwn = notOwnCgroupV2(pid, cgroupPath);
    if (!notOwn) return { backend: 'cgroup-v2', cgroupPath: cgroupPath! };
    if (mode === 'v2')
      throw new NoScopeError(
        `cgroup mode v2: pid ${pid} cannot be fenced by cgroup: ${notOwn} (run the daemon with --cgroup-mode auto or v1)`,
      );
    return { backend: 'pidns-tracepoint', pidns: containerPidns(pid), why: notOwn };
  }
  return { backend: 'pidns-tracepoint', pidns: containerPidns(pid), why: 'cgroup mode v1 was requested' };
}
