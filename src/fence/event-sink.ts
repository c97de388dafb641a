// Where a backend's kernel events go. The daemon builds one sink before any backend and
// hands it to each, so no backend reaches back into the code that created it.
import { AuditInput } from '../audit/audit-record';
import { FencedContainer } from './backend';

/**
 * containerd's exit event can overtake a container's last kernel events (still in a ring
 * buffer): for this long after detach they are still attributed to their container. The
 * one grace period for "exit overtakes events": the registry's owner() and whatever a
 * backend keeps past detach for the same events use it.
 */
export const RECENT_OWNER_MS = 10_000;

export interface EventSink {
  /** Writes audit records (and counts the decisions among them). Never throws. */
  write(records: AuditInput[]): void;
  /** A kernel timestamp (CLOCK_MONOTONIC, as bpf_ktime_get_ns gives) as wall-clock ns since the epoch. */
  toWallNs(mono: bigint): bigint;
  /**
   * The fenced container a kernel event key (a fence id: cgroup id or pid-namespace key)
   * belongs to, including one detached moments ago: containerd's exit event can overtake
   * the container's last events in a ring buffer.
   */
  owner(key: bigint | string): FencedContainer | undefined;
}
