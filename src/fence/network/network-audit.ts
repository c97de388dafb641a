// Turns the network fence's kernel events into `net` audit records, and completes the
// kernel's rate limiter: the kernel records the first CGFENCE_NET_RATE_BURST refusals of a
// flow per second and only counts the rest; this reports those counts.
//
// Why nothing is lost: every suppressed decision is counted twice in the kernel, in its flow
// (monotonic, in an LRU table) and in its fence's total (per-CPU, exact while attached). The
// first suppressed decision of a flow's window sends a THROTTLE event naming the flow before
// anything is counted; from then on each sweep reports the growth of that flow's counter as
// a count record. A sweep then compares the fence total it read one sweep earlier with what
// it has reported: the difference (a flow evicted from the table, or a THROTTLE event the
// full ring buffer dropped) becomes a count record without a flow. The one-sweep lag leaves
// time for THROTTLE events to arrive, so a count is reported once, or — if an event arrives
// more than a sweep late — twice, never zero times. Records the ring buffer had no room for
// are in the kernel's drop counter, which the backend logs.
import { AuditInput } from '../../audit/audit-record';
import { ExecAction } from '../../kernel/abi';
import { FlowKey, NetDir, NetEvent, NetHook, NetStats, RATE_WINDOW_NS, formatAddr, protoName } from '../../kernel/net-abi';

export interface NetOwner {
  namespace: string;
  id: string;
}

export interface NetAuditDeps {
  flow(key: FlowKey): { suppressed: bigint; windowStartNs: bigint } | null;
  stats(cgroupId: bigint): NetStats | null;
  deleteFlows(fenceId: bigint): void;
  write(records: AuditInput[]): void;
  owner(fenceId: bigint): NetOwner | undefined;
  toWallNs(mono: bigint): bigint;
  /** The annotation and CIDR behind a rule id of a fence's generation, when known. */
  rule(fenceId: bigint, gen: number, dir: NetDir, ruleId: number): string | null;
}

interface PendingFlow {
  key: FlowKey;
  reported: bigint;
  action: ExecAction;
  cgroupId: bigint;
}

interface FenceTally {
  cgroupId: bigint;
  /** What the fence does with a refusal now: the action of counts without a flow. */
  action: 'deny' | 'audit';
  /** Suppressed decisions reported so far (with or without a flow). */
  reported: bigint;
  /** The kernel total read by the previous sweep. */
  prev: bigint | null;
  retired?: { final: bigint; sweepsLeft: number; reported: () => void; done: Promise<void> };
}

const HOOKS: Record<NetHook, string> = { [NetHook.Skb]: 'packet', [NetHook.Connect]: 'connect', [NetHook.Sendmsg]: 'sendmsg' };

function flowId(k: FlowKey): string {
  return `${k.fenceId}|${k.dir}|${k.family}|${k.proto}|${k.port}|${k.addr.toString('hex')}`;
}

function dirName(d: NetDir): 'egress' | 'ingress' {
  return d === NetDir.Egress ? 'egress' : 'ingress';
}

export class NetAuditor {
  private readonly pending = new Map<string, PendingFlow>();
  private readonly fences = new Map<bigint, FenceTally>();

  constructor(private readonly deps: NetAuditDeps) {}

  /**
   * Starts counting a fence. `baseline` is what was already reported: 0 for a fence attached
   * now, the current kernel total for one adopted from an earlier daemon.
   */
  track(fenceId: bigint, cgroupId: bigint, action: 'deny' | 'audit', baseline = 0n): void {
    this.fences.set(fenceId, { cgroupId, action, reported: baseline, prev: baseline });
  }

  setAction(fenceId: bigint, action: 'deny' | 'audit'): void {
    const t = this.fences.get(fenceId);
    if (t) t.action = action;
  }

  isTracked(fenceId: bigint): boolean {
    return this.fences.has(fenceId);
  }

  /** The fence was detached with these final counters: report what is left, then forget it. */
  retire(fenceId: bigint, last: NetStats | null): void {
    const t = this.fences.get(fenceId);
    if (!t) return;
    let reported = () => {};
    const done = new Promise<void>((r) => (reported = r));
    t.retired = { final: last?.suppressed ?? t.prev ?? t.reported, sweepsLeft: 2, reported, done };
  }

  /** Settles once a retired fence's last count records are written (at once when there is none). */
  retiredReported(fenceId: bigint): Promise<void> {
    return this.fences.get(fenceId)?.retired?.done ?? Promise.resolve();
  }

  onEvents(events: NetEvent[]): void {
    const out: AuditInput[] = [];
    for (const e of events) {
      if (e.kind === 'net-throttle') {
        const id = flowId(e.flow);
        // Everything before this window was reported already (or goes out without a flow).
        if (!this.pending.has(id))
          this.pending.set(id, { key: e.flow, reported: e.suppressed - 1n, action: e.action, cgroupId: e.cgroupId });
        continue;
      }
      const owner = this.deps.owner(e.fenceId);
      out.push({
        ts: this.deps.toWallNs(e.tsMonoNs),
        type: 'net',
        action: e.action === ExecAction.Deny ? 'deny' : 'audit',
        namespace: owner?.namespace ?? '',
        container_id: owner?.id ?? '',
        cgroup_id: e.cgroupId.toString(),
        pid: e.pid || null,
        comm: e.comm || null,
        daddr: e.daddr,
        dport: e.dport,
        saddr: e.hook === NetHook.Skb ? e.saddr : null,
        sport: e.hook === NetHook.Skb ? e.sport : null,
        direction: dirName(e.dir),
        proto: protoName(e.proto),
        hook: HOOKS[e.hook as NetHook] ?? String(e.hook),
        rule: this.deps.rule(e.fenceId, e.gen, e.dir, e.ruleId),
        count: 1,
      });
    }
    if (out.length) this.deps.write(out);
  }

  /** Reports counts: call about once per rate-limit window. `final` skips the lag (shutdown). */
  sweep(opts: { final?: boolean } = {}): void {
    const out: AuditInput[] = [];
    const retiredNow: Array<() => void> = [];
    const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, like bpf_ktime_get_ns()
    for (const [id, p] of this.pending) {
      const st = this.deps.flow(p.key);
      const tally = this.fences.get(p.key.fenceId);
      if (!st) {
        // Evicted: the fence total still has its counts.
        this.pending.delete(id);
        continue;
      }
      // A smaller counter is a new entry for the same flow (the old one was evicted).
      const diff = st.suppressed >= p.reported ? st.suppressed - p.reported : st.suppressed;
      if (diff > 0n) {
        out.push(this.countRecord(p.key, p.action, diff, p.cgroupId));
        p.reported = st.suppressed;
        if (tally) tally.reported += diff;
      } else if (now - st.windowStartNs > 2n * RATE_WINDOW_NS || !tally) {
        this.pending.delete(id);
      }
    }
    for (const [fenceId, t] of this.fences) {
      if (t.retired) {
        if (--t.retired.sweepsLeft > 0 && !opts.final) continue;
        if (t.retired.final > t.reported) out.push(this.unattributed(fenceId, t, t.retired.final - t.reported));
        for (const [id, p] of this.pending) if (p.key.fenceId === fenceId) this.pending.delete(id);
        this.fences.delete(fenceId);
        try {
          this.deps.deleteFlows(fenceId);
        } catch {
          /* the object may be closing */
        }
        retiredNow.push(t.retired.reported);
        continue;
      }
      const cur = this.deps.stats(t.cgroupId)?.suppressed ?? null;
      const settled = opts.final ? (cur ?? t.prev) : t.prev;
      if (settled !== null && settled > t.reported) {
        out.push(this.unattributed(fenceId, t, settled - t.reported));
        t.reported = settled;
      }
      t.prev = cur ?? t.prev;
    }
    if (out.length) this.deps.write(out);
    // Written: the containers' detach records may follow.
    for (const r of retiredNow) r();
  }

  private countRecord(k: FlowKey, action: ExecAction, count: bigint, cgroupId: bigint): AuditInput {
    const owner = this.deps.owner(k.fenceId);
    const addr = formatAddr(k.family, k.addr);
    return {
      type: 'net',
      action: action === ExecAction.Deny ? 'deny' : 'audit',
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: cgroupId.toString(),
      pid: null,
      daddr: k.dir === NetDir.Egress ? addr : null,
      dport: k.port,
      saddr: k.dir === NetDir.Ingress ? addr : null,
      direction: dirName(k.dir),
      proto: protoName(k.proto),
      count: Number(count),
      rate_limited: true,
    };
  }

  private unattributed(fenceId: bigint, t: FenceTally, count: bigint): AuditInput {
    const owner = this.deps.owner(fenceId);
    return {
      type: 'net',
      action: t.action,
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: t.cgroupId.toString(),
      pid: null,
      daddr: null,
      dport: null,
      direction: null,
      proto: null,
      count: Number(count),
      rate_limited: true,
      flow: 'unknown: the flow table entry was evicted or its THROTTLE event was dropped',
    };
  }
}
