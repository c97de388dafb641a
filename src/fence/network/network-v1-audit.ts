// The network control for containers fenced by pid namespace (cgroup v1 fallback). CGROUP_SKB
// and cgroup sock_addr programs attach to a cgroup v2 only, so nothing can be blocked here:
// this backend says so (ControlState `unenforceable`, one `agent` audit record per container)
// and audits what it can see instead, outbound TCP connection attempts, as `net` records with
// action `audit`, judged against the egress rules in user space the way the v2 fence judges
// them in the kernel (fence/network/network-rules: longest prefix, a deny entry always wins).
import { AuditInput } from '../../audit/audit-record';
import { EventSink } from '../event-sink';
import { ConnectAudit, ConnectEvent } from '../../kernel/connect-audit';
import { Family, NetDir, NetVerdict, RULE_DEFAULT, formatAddr } from '../../kernel/net-abi';
import { containerPidns } from '../../kernel/pidns';
import { Policy } from '../../policy/policy';
import { AttachContext, ControlState, FenceBackend } from '../backend';
import { CompiledNetRules, compileNetRules, describeRule } from './network-rules';
import { NETWORK_V1_BACKEND } from './network-state';

export const NETWORK_V1_REASON =
  'CGROUP_SKB and connect-time programs need the container in a cgroup v2 of its own, ' +
  'and this container is fenced by pid namespace (cgroup v1): no network rule is enforced; ' +
  'outbound TCP connection attempts are audited instead (no UDP, ICMP or ingress)';

/** Audit records per container and destination per window; the rest are counted. */
const BURST = 5;
const WINDOW_NS = 1_000_000_000n;

interface Watched {
  namespace: string;
  id: string;
  mode: Policy['mode'];
  rules: CompiledNetRules;
  wouldDeny: number;
  flows: Map<string, { start: bigint; emitted: number; suppressed: number }>;
}

export interface NetworkV1AuditOptions {
  pinDir: string;
  sink: EventSink;
  /** A container's policy from its annotations, for watches an earlier daemon left pinned. */
  policyOf?: (annotations: Record<string, string>) => Policy;
}

export function hasNetworkRules(p: Policy): boolean {
  return p.egressAllow !== null || p.egressDeny !== null || p.ingressAllow !== null || p.ingressDeny !== null;
}

/** The egress verdict of the compiled rules for one destination. */
export function egressVerdict(rules: CompiledNetRules, family: Family, addr: Buffer): { verdict: NetVerdict; ruleId: number } {
  let best: { prefix: number; verdict: NetVerdict; ruleId: number } | null = null;
  for (const e of rules.entries) {
    if (e.dir !== NetDir.Egress || e.family !== family || (best && best.prefix >= e.prefix)) continue;
    let match = true;
    for (let bit = 0; bit < e.prefix && match; bit += 8) {
      const mask = (0xff << (8 - Math.min(8, e.prefix - bit))) & 0xff;
      match = (e.addr[bit / 8] & mask) === (addr[bit / 8] & mask);
    }
    if (match) best = { prefix: e.prefix, verdict: e.verdict, ruleId: e.ruleId };
  }
  if (best) return best;
  return rules.defaultDeny[NetDir.Egress]
    ? { verdict: NetVerdict.Deny, ruleId: RULE_DEFAULT }
    : { verdict: NetVerdict.Allow, ruleId: RULE_DEFAULT };
}

const V4_MAPPED = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** The destination as the rules see it: an IPv4-mapped IPv6 address is the IPv4 address. */
function destination(e: ConnectEvent): { family: Family; addr: Buffer } {
  if (e.family === 6 && e.daddr.subarray(0, 12).equals(V4_MAPPED)) return { family: 4, addr: e.daddr.subarray(12, 16) };
  return { family: e.family, addr: e.daddr };
}

export class NetworkV1Audit implements FenceBackend<'network'> {
  readonly control = 'network' as const;
  readonly kernel: ConnectAudit;
  private readonly watching = new Map<string, Watched>();
  private lastDrops: bigint;
  private readonly dropTimer: NodeJS.Timeout;

  constructor(private readonly opts: NetworkV1AuditOptions) {
    this.kernel = ConnectAudit.open({ pinDir: opts.pinDir, onEvents: (evs) => this.onEvents(evs) });
    // Lost events are never silent: the kernel's drop counter becomes audit records.
    this.lastDrops = this.kernel.drops();
    this.dropTimer = setInterval(() => this.checkDrops(), 2000);
    this.dropTimer.unref();
  }

  private checkDrops(): void {
    const d = this.kernel.drops();
    if (d <= this.lastDrops) return;
    const n = d - this.lastDrops;
    this.lastDrops = d;
    this.opts.sink.write([
      { type: 'agent', action: 'ring-buffer-drops', count: Number(n), source: 'connect-audit', pid: process.pid, comm: 'cgfence' },
    ]);
  }

  /**
   * The node-level answer when every container is fenced by pid namespace (cgroup mode v1, or
   * no cgroup v2): enforce cannot be had (fail-closed refuses it before runc runs); audit and
   * learn are provisionally 'audited' so that attach runs, and attach gives the final word.
   */
  controlState(policy: Policy): ControlState {
    if (policy.mode === 'off' || !hasNetworkRules(policy)) return 'none';
    if (policy.mode === 'enforce') return `unenforceable: ${NETWORK_V1_REASON}`;
    return 'audited';
  }

  /**
   * Starts the connect audit of the container's pid namespace and writes the `agent` record
   * saying its network rules are not enforced. Returns the container's real ControlState,
   * always `unenforceable`. Throws in enforce mode (nothing is there to enforce), and when
   * the container does not own a pid namespace (kernel/pidns says why).
   */
  attach(ctx: AttachContext<'network'>): ControlState {
    if (ctx.policy.mode === 'enforce') throw new Error(`${NETWORK_V1_REASON}; refusing to start in enforce mode`);
    const pidns = containerPidns(ctx.pid);
    const key = pidns.fenceId.toString();
    this.watching.set(key, {
      namespace: ctx.namespace,
      id: ctx.id,
      mode: ctx.policy.mode,
      rules: compileNetRules(ctx.policy),
      wouldDeny: 0,
      flows: new Map(),
    });
    this.kernel.watch(pidns.fenceId);
    ctx.state.backend = NETWORK_V1_BACKEND;
    ctx.state.fenceId = key;
    ctx.state.pidns = `pid:[${pidns.inode}]`;
    ctx.state.audits = 'outbound TCP connection attempts';
    this.opts.sink.write([
      {
        type: 'agent',
        action: 'network-unenforceable',
        namespace: ctx.namespace,
        container_id: ctx.id,
        pid: ctx.pid,
        cgroup_id: ctx.cgroupId?.toString() ?? null,
        backend: 'pidns-tracepoint',
        pidns: `pid:[${pidns.inode}]`,
        reason: NETWORK_V1_REASON,
        audited: 'outbound TCP connection attempts (IPv4 and IPv6), as net records with action audit',
      },
    ]);
    return `unenforceable: ${NETWORK_V1_REASON}`;
  }

  update(ctx: AttachContext<'network'>): void {
    const w = typeof ctx.state.fenceId === 'string' ? this.watching.get(ctx.state.fenceId) : undefined;
    if (w) {
      w.rules = compileNetRules(ctx.policy);
      w.mode = ctx.policy.mode;
    }
  }

  detach(ctx: AttachContext<'network'>): Record<string, unknown> | void {
    if (typeof ctx.state.fenceId !== 'string') return;
    const seen = this.kernel.unwatch(BigInt(ctx.state.fenceId));
    const w = this.watching.get(ctx.state.fenceId);
    this.watching.delete(ctx.state.fenceId);
    return { net_connects_seen: seen === null ? null : Number(seen), net_connects_would_deny: w?.wouldDeny ?? null };
  }

  private watchedBy(fenceId: bigint): Watched | undefined {
    const key = fenceId.toString();
    let w = this.watching.get(key);
    if (!w && this.opts.policyOf) {
      const f = this.opts.sink.owner(fenceId);
      const o = f && { namespace: f.namespace, id: f.id, policy: this.opts.policyOf(f.annotations) };
      if (o) {
        w = { namespace: o.namespace, id: o.id, mode: o.policy.mode, rules: compileNetRules(o.policy), wouldDeny: 0, flows: new Map() };
        this.watching.set(key, w);
      }
    }
    return w;
  }

  private onEvents(events: ConnectEvent[]): void {
    const out: AuditInput[] = [];
    for (const e of events) {
      const w = this.watchedBy(e.fenceId);
      const dst = destination(e);
      const v = w ? egressVerdict(w.rules, dst.family, dst.addr) : null;
      if (w && v?.verdict === NetVerdict.Deny) w.wouldDeny++;
      // Records for what the rules would refuse; in learn mode for every attempt.
      if (!w || (v?.verdict !== NetVerdict.Deny && w.mode !== 'learn')) continue;
      const daddr = formatAddr(dst.family, dst.addr);
      const flowKey = `${daddr}|${e.dport}`;
      const flow = w.flows.get(flowKey) ?? { start: e.tsMonoNs, emitted: 0, suppressed: 0 };
      w.flows.set(flowKey, flow);
      if (e.tsMonoNs - flow.start >= WINDOW_NS) Object.assign(flow, { start: e.tsMonoNs, emitted: 0 });
      if (flow.emitted >= BURST) {
        flow.suppressed++;
        continue;
      }
      flow.emitted++;
      const suppressed = flow.suppressed;
      flow.suppressed = 0;
      out.push({
        ts: this.opts.sink.toWallNs(e.tsMonoNs),
        type: 'net',
        action: 'audit',
        namespace: w.namespace,
        container_id: w.id,
        cgroup_id: e.cgroupId.toString(),
        pid: e.pid,
        comm: e.comm,
        daddr,
        dport: e.dport,
        direction: 'egress',
        proto: 'tcp',
        hook: 'inet_sock_set_state',
        family: dst.family,
        verdict: v!.verdict === NetVerdict.Deny ? 'deny' : 'allow',
        rule: describeRule(w.rules.table, NetDir.Egress, v!.ruleId),
        enforced: false,
        backend: 'pidns-tracepoint',
        uid: e.uid,
        ...(suppressed ? { suppressed } : {}),
      });
    }
    if (out.length) this.opts.sink.write(out);
  }

  status(): Record<string, unknown> {
    return {
      backend:
        'pidns-tracepoint: not enforced (CGROUP_SKB needs cgroup v2); outbound TCP connection attempts audited (tracepoint/sock/inet_sock_set_state)',
      watched: this.kernel.watched().length,
      adopted: this.kernel.adopted,
      kernelDrops: this.kernel.drops().toString(),
      objects: this.kernel.objectIds(),
    };
  }

  close(opts: { detach: boolean }): void {
    clearInterval(this.dropTimer);
    this.checkDrops();
    this.kernel.close({ detach: opts.detach });
  }
}
