// Turns the kernel exec fence's events into `exec` audit records and completes its rate
// limiter, as network-audit.ts does for the network fence: the kernel records the first
// EXEC_RATE_BURST refusals (deny, audit) of a fence and file identity per second, and at most
// EXEC_RATE_FENCE_BURST of a fence (so new identities, made by copying a file, do not get
// around it), and only counts the rest; this reports those counts as records with `count`
// and `rate_limited`.
//
// Why nothing is lost: every refusal past the burst is counted twice in the kernel, in its
// identity's entry (monotonic, in an LRU table) and in its fence's total. The first one of a
// window sends a THROTTLE event naming the identity, with the identity's count; each sweep
// reports the growth of that count. A sweep then compares the fence total it read one sweep
// earlier with what it has reported: the difference (an identity evicted from the table, or
// a THROTTLE event the full ring buffer dropped) becomes a count record without a path.
import { AuditInput } from '../../audit/audit-record';
import { exactName } from '../../audit/exact-name';
import { EXEC_RATE_WINDOW_NS, ExecAction, ExecEvent, FileIdentity, formatDev } from '../../kernel/abi';
import { EventSink } from '../event-sink';
import { execAuditRecords } from './exec-audit';

export interface ExecRateDeps {
  rate(fenceId: bigint, id: FileIdentity): { suppressed: bigint; windowStartNs: bigint } | null;
  suppressed(fenceId: bigint): bigint | null;
  forget(fenceId: bigint): void;
  sink: EventSink;
}

interface Pending {
  event: ExecEvent;
  reported: bigint;
}

interface Tally {
  action: 'deny' | 'audit';
  reported: bigint;
  /** The kernel total read by the previous sweep. */
  prev: bigint | null;
  retired?: { sweepsLeft: number };
}

const pendingId = (fenceId: bigint, dev: bigint, ino: bigint) => `${fenceId}|${dev}|${ino}`;

export class ExecRateAuditor {
  private readonly pending = new Map<string, Pending>();
  private readonly fences = new Map<bigint, Tally>();

  constructor(private readonly deps: ExecRateDeps) {}

  /** Starts counting a fence from `baseline` (its kernel total now: earlier counts are not ours to report). */
  track(fenceId: bigint, action: 'deny' | 'audit'): void {
    const t = this.fences.get(fenceId);
    if (t && !t.retired) {
      t.action = action;
      return;
    }
    const base = this.deps.suppressed(fenceId) ?? 0n;
    this.fences.set(fenceId, { action, reported: base, prev: base });
  }

  /** The fence is gone: its last counts go out in a sweep or two, then its kernel state. */
  retire(fenceId: bigint): void {
    const t = this.fences.get(fenceId);
    if (t) t.retired = { sweepsLeft: 2 };
    else this.deps.forget(fenceId);
  }

  /** Records for the events; THROTTLE events become pending counts instead. */
  onEvents(events: ExecEvent[]): AuditInput[] {
    const plain: ExecEvent[] = [];
    for (const e of events) {
      if (e.kind !== 'exec-throttle') {
        plain.push(e);
        continue;
      }
      const id = pendingId(e.fenceId, e.dev, e.ino);
      // Counts before this window were reported already (or go out without a path).
      if (!this.pending.has(id)) this.pending.set(id, { event: e, reported: (e.suppressed ?? 1n) - 1n });
    }
    return execAuditRecords(plain, this.deps.sink);
  }

  /** Count records: call about once per rate-limit window. `final` skips the lag (shutdown). */
  sweep(opts: { final?: boolean } = {}): AuditInput[] {
    const out: AuditInput[] = [];
    const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, like bpf_ktime_get_ns()
    for (const [id, p] of this.pending) {
      const e = p.event;
      const st = this.deps.rate(e.fenceId, { dev: e.dev, ino: e.ino });
      const tally = this.fences.get(e.fenceId);
      if (!st) {
        this.pending.delete(id);
        continue;
      } // evicted: the fence total has its counts
      const diff = st.suppressed >= p.reported ? st.suppressed - p.reported : st.suppressed;
      if (diff > 0n) {
        out.push(this.countRecord(e, diff));
        p.reported = st.suppressed;
        if (tally) tally.reported += diff;
      } else if (now - st.windowStartNs > 2n * EXEC_RATE_WINDOW_NS || !tally) {
        this.pending.delete(id);
      }
    }
    for (const [fenceId, t] of this.fences) {
      const cur = this.deps.suppressed(fenceId);
      if (t.retired) {
        if (--t.retired.sweepsLeft > 0 && !opts.final) continue;
        const final = cur ?? t.prev ?? t.reported;
        if (final > t.reported) out.push(this.unattributed(fenceId, t, final - t.reported));
        for (const [id, p] of this.pending) if (p.event.fenceId === fenceId) this.pending.delete(id);
        this.fences.delete(fenceId);
        try {
          this.deps.forget(fenceId);
        } catch {
          /* the object may be closing */
        }
        continue;
      }
      // One sweep of lag: THROTTLE events of this window may still be on their way.
      const settled = opts.final ? (cur ?? t.prev) : t.prev;
      if (settled !== null && settled > t.reported) {
        out.push(this.unattributed(fenceId, t, settled - t.reported));
        t.reported = settled;
      }
      t.prev = cur ?? t.prev;
    }
    return out;
  }

  private countRecord(e: ExecEvent, count: bigint): AuditInput {
    const owner = this.deps.sink.owner(e.fenceId);
    return {
      type: 'exec',
      action: e.action === ExecAction.Deny ? 'deny' : 'audit',
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: e.cgroupId.toString(),
      pid: null,
      ...(e.pathBytes ? exactName('path', e.pathBytes) : { path: e.path }),
      inode: e.ino.toString(),
      dev: formatDev(e.dev),
      mode: owner?.mode ?? null,
      count: Number(count),
      rate_limited: true,
    };
  }

  private unattributed(fenceId: bigint, t: Tally, count: bigint): AuditInput {
    const owner = this.deps.sink.owner(fenceId);
    return {
      type: 'exec',
      action: t.action,
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: owner?.cgroupId ?? fenceId.toString(),
      pid: null,
      path: null,
      count: Number(count),
      rate_limited: true,
      identity: 'unknown: the rate table entry was evicted or its THROTTLE event was dropped',
    };
  }
}
