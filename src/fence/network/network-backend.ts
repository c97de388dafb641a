// The network control on cgroup v2: six programs linked to the container's cgroup (connect
// and sendmsg refuse with EPERM, cgroup_skb drops packets), CIDR rules in shared LPM tries
// (kernel/net-fence.ts, semantics in bpf/net-fence.bpf.c and docs/network-fence.md), and the
// audit of refusals with its rate limiter (net-audit.ts). Pins live in <pinDir>/net.
import { FenceMode } from '../../kernel/abi';
import { cgroupId as cgroupIdOf, cgroupV2Root } from '../../kernel/cgroup';
import { NetDir, NetStats } from '../../kernel/net-abi';
import { NetFence } from '../../kernel/net-fence';
import { Policy } from '../../policy/policy';
import { CgroupMode, AttachContext, ControlSnapshot, ControlState, FenceBackend, FencedContainer } from '../backend';
import { NETWORK_V2_BACKEND } from './network-state';
import { NetAuditor, NetOwner } from './network-audit';
import { EventSink, RECENT_OWNER_MS } from '../event-sink';
import { AuditInput } from '../../audit/audit-record';
import { compileNetRules, describeRule } from './network-rules';
import { DEFAULT_LIMITS, Limits, TableSizes, admit } from '../quota';
import { NetRuleSet } from '../../kernel/net-fence';
import { containerKey } from '../backend';

export interface NetworkBackendOptions {
  /** The backend's own bpffs directory (the daemon passes <pinDir>/net). */
  pinDir: string;
  cgroupMode: CgroupMode;
  sink: EventSink;
  /** How often counts of rate-limited flows and kernel drops are reported. */
  sweepMs?: number;
  limits?: Limits;
  sizes?: TableSizes;
}

function hasNetworkRules(p: Policy): boolean {
  return p.egressAllow !== null || p.egressDeny !== null || p.ingressAllow !== null || p.ingressDeny !== null;
}

function counters(s: NetStats | null): Record<string, number> {
  if (!s) return {};
  return {
    net_denied_egress: Number(s.denied.egress),
    net_denied_ingress: Number(s.denied.ingress),
    net_audited_egress: Number(s.audited.egress),
    net_audited_ingress: Number(s.audited.ingress),
    net_rate_limited: Number(s.suppressed),
    net_records_lost: Number(s.lost),
  };
}

export class NetworkBackend implements FenceBackend<'network'> {
  readonly control = 'network' as const;
  /** Null when the BPF object did not load: the control is then unenforceable, and says why. */
  private readonly kernel: NetFence | null;
  private readonly loadError: string | null = null;
  private readonly auditor: NetAuditor;
  /** Rule descriptions per fence and generation, for the `rule` field of records. */
  private readonly tables = new Map<bigint, Map<number, string[]>>();
  /**
   * Whose fence it is, kept a while past detach: a short container's last events can reach
   * us after containerd's exit event has already removed it from the registry.
   */
  private readonly owners = new Map<bigint, NetOwner>();
  private readonly timer: NodeJS.Timeout;
  private lastDrops: bigint;

  constructor(private readonly opts: NetworkBackendOptions) {
    let auditor: NetAuditor | undefined;
    let kernel: NetFence | null = null;
    try {
      kernel = NetFence.open({
        pinDir: opts.pinDir,
        onEvents: (evs) => auditor?.onEvents(evs),
        sizes: opts.sizes ? { net_rules4: opts.sizes.net_rules4, net_rules6: opts.sizes.net_rules6 } : undefined,
      });
    } catch (e) {
      // The daemon still runs the other controls; this one reports itself unenforceable.
      this.loadError = (e as Error).message;
    }
    this.kernel = kernel;
    auditor = new NetAuditor({
      flow: (k) => kernel?.flow(k) ?? null,
      stats: (cg) => kernel?.stats(cg) ?? null,
      deleteFlows: (id) => kernel?.deleteFlows(id),
      write: (r) => opts.sink.write(r),
      owner: (id) => this.owners.get(id) ?? opts.sink.owner(id),
      toWallNs: (ns) => opts.sink.toWallNs(ns),
      rule: (id, gen, dir, ruleId) => describeRule(this.tables.get(id)?.get(gen), dir, ruleId),
    });
    this.auditor = auditor;
    // Fences pinned by an earlier daemon: their counts so far were that daemon's to report.
    for (const f of kernel?.fences() ?? []) {
      const action = f.config.mode === FenceMode.Enforce ? 'deny' : 'audit';
      this.auditor.track(f.fenceId, f.cgroupId, action, kernel!.stats(f.cgroupId)?.suppressed ?? 0n);
    }
    this.lastDrops = kernel?.drops() ?? 0n;
    this.timer = setInterval(() => this.sweep(), opts.sweepMs ?? 1000);
    this.timer.unref();
  }

  /** The kernel side; only reached when controlState() said the control can be applied. */
  get fence(): NetFence {
    if (!this.kernel) throw new Error(`the network fence's BPF programs did not load: ${this.loadError}`);
    return this.kernel;
  }

  private v2Usable(): boolean {
    return this.opts.cgroupMode !== 'v1' && cgroupV2Root() !== null;
  }

  controlState(policy: Policy): ControlState {
    if (policy.mode === 'off' || !hasNetworkRules(policy)) return 'none';
    if (this.loadError !== null) return `unenforceable: the network fence's BPF programs did not load on this kernel: ${this.loadError}`;
    if (!this.v2Usable()) {
      return `unenforceable: ${this.opts.cgroupMode === 'v1' ? 'cgroup mode v1 was requested and' : 'no cgroup v2 hierarchy on this host;'} the network fence needs cgroup v2 (cgroup_skb and sock_addr programs attach to v2 cgroups only)`;
    }
    // learn records execs; network rules it has are audited, never enforced.
    return policy.mode === 'enforce' ? 'enforced' : 'audited';
  }

  private ruleSet(policy: Policy) {
    const c = compileNetRules(policy);
    const mode = policy.mode === 'enforce' ? (FenceMode.Enforce as const) : (FenceMode.Audit as const);
    return { compiled: c, set: { mode, defaultDeny: c.defaultDeny, entries: c.entries } };
  }

  attach(ctx: AttachContext<'network'>): void {
    if (!ctx.cgroupPath) throw new Error(`pid ${ctx.pid} has no cgroup v2 membership`);
    const cgid = ctx.cgroupId ?? cgroupIdOf(ctx.cgroupPath);
    const fenceId = cgid;
    const { compiled, set } = this.ruleSet(ctx.policy);
    const wasAttached = this.fence.isAttached(fenceId);
    this.admit(ctx, fenceId, set, wasAttached);
    this.fence.attach(ctx.cgroupPath, set, fenceId);
    this.remember(fenceId, cgid, compiled.table);
    this.owners.set(fenceId, { namespace: ctx.namespace, id: ctx.id });
    const action = set.mode === FenceMode.Enforce ? 'deny' : 'audit';
    // A cgroup fenced before keeps its old counters: count from where they are.
    if (!wasAttached || !this.auditor.isTracked(fenceId))
      this.auditor.track(fenceId, cgid, action, this.fence.stats(cgid)?.suppressed ?? 0n);
    else this.auditor.setAction(fenceId, action);
    this.describe(ctx, fenceId, cgid, compiled.entries.length, set.defaultDeny);
  }

  update(ctx: AttachContext<'network'>): void {
    const id = typeof ctx.state.fenceId === 'string' ? BigInt(ctx.state.fenceId) : null;
    if (id === null || !this.fence.isAttached(id)) {
      this.attach(ctx);
      return;
    }
    const cgid = BigInt(ctx.state.cgroupId ?? id);
    const { compiled, set } = this.ruleSet(ctx.policy);
    this.admit(ctx, id, set, true);
    this.fence.setRules(id, set, cgid);
    this.remember(id, cgid, compiled.table);
    this.owners.set(id, { namespace: ctx.namespace, id: ctx.id });
    this.auditor.setAction(id, set.mode === FenceMode.Enforce ? 'deny' : 'audit');
    this.describe(ctx, id, cgid, compiled.entries.length, set.defaultDeny);
  }

  /**
   * The quota check, before anything is written. A new rule set goes in beside the fence's
   * current one (the other generation) before that goes, so at its peak the trie holds both;
   * an attach over no fence first deletes whatever entries the id had.
   */
  private admit(ctx: AttachContext<'network'>, fenceId: bigint, set: NetRuleSet, keepsOld: boolean): void {
    const use = this.fence.usage();
    const mine = this.fence.ruleCount(fenceId);
    for (const family of [4, 6] as const) {
      const adds = set.entries.filter((e) => e.family === family).length;
      admit({
        container: containerKey(ctx.namespace, ctx.id),
        table: `network rules (IPv${family})`,
        setting: 'netRulesPerContainer',
        limit: (this.opts.limits ?? DEFAULT_LIMITS).netRulesPerContainer,
        asked: set.entries.length,
        adds,
        used: keepsOld ? use[family].used : use[family].used - mine[family],
        capacity: use[family].capacity,
      });
    }
  }

  /** Rule trie use against capacity, for status and metrics. */
  usage(): Record<string, { used: number; capacity: number }> | null {
    if (!this.kernel) return null;
    const u = this.kernel.usage();
    return { net_rules4: u[4], net_rules6: u[6] };
  }

  private remember(fenceId: bigint, cgid: bigint, table: string[]): void {
    const gen = this.fence.config(cgid)?.gen ?? 0;
    const t = this.tables.get(fenceId) ?? new Map<number, string[]>();
    t.set(gen, table);
    this.tables.set(fenceId, t);
  }

  private describe(ctx: AttachContext<'network'>, fenceId: bigint, cgid: bigint, entries: number, defaultDeny: [boolean, boolean]): void {
    ctx.state.backend = NETWORK_V2_BACKEND;
    ctx.state.fenceId = fenceId.toString();
    ctx.state.cgroupId = cgid.toString();
    ctx.state.entries = entries;
    ctx.state.defaultDeny = { egress: defaultDeny[NetDir.Egress], ingress: defaultDeny[NetDir.Ingress] };
  }

  detach(ctx: AttachContext<'network'>): Record<string, unknown> | void {
    if (typeof ctx.state.fenceId !== 'string') return;
    const id = BigInt(ctx.state.fenceId);
    const last = this.fence.detach(id);
    this.auditor.retire(id, last);
    // Events already in the ring buffer still name their rule and container.
    setTimeout(() => {
      if (this.kernel?.isAttached(id)) return; // fenced again meanwhile
      this.tables.delete(id);
      this.owners.delete(id);
    }, RECENT_OWNER_MS).unref();
    return counters(last);
  }

  /** The retired fence's last count records: two sweeps after detach (see NetAuditor.sweep). */
  lastRecords(ctx: AttachContext<'network'>): Promise<void> | void {
    if (typeof ctx.state.fenceId === 'string') return this.auditor.retiredReported(BigInt(ctx.state.fenceId));
  }

  /** ps shows the kernel's per-cgroup counters; they are the network decisions of the metrics. */
  snapshot(f: FencedContainer): ControlSnapshot | null {
    const st = f.backends.network;
    if (!st) return null;
    const n = st.fenceId !== undefined ? this.counters(st.fenceId, st.cgroupId ?? st.fenceId) : null;
    return {
      backend: st.backend ?? this.control,
      ps: { networkCounters: n },
      decisions: n && {
        deny: (n.net_denied_egress ?? 0) + (n.net_denied_ingress ?? 0),
        audit: (n.net_audited_egress ?? 0) + (n.net_audited_ingress ?? 0),
      },
    };
  }

  counters(fenceId: string, cgroupId?: string): Record<string, number> | null {
    const s = this.kernel?.stats(BigInt(cgroupId ?? fenceId)) ?? null;
    return s ? counters(s) : null;
  }

  /** Kernel fences no container claims (a crash between the kernel write and the state file). */
  orphans(known: Set<string>): bigint[] {
    if (!this.kernel) return [];
    // Rule entries count too: a crash between writing them and attaching leaves them ownerless.
    const ids = new Set([...this.kernel.pinnedFences(), ...this.kernel.fences().map((f) => f.fenceId), ...this.kernel.ruleOwners()]);
    return [...ids].filter((id) => !known.has(id.toString()));
  }

  removeFence(fenceId: bigint): void {
    this.auditor.retire(fenceId, this.fence.detach(fenceId));
  }

  sweepOrphans(known: Set<string>): AuditInput[] {
    return this.orphans(known).map((id) => {
      this.removeFence(id);
      return { type: 'agent', action: 'remove-orphan-fence', control: 'network', cgroup_id: id.toString() };
    });
  }

  private sweep(): void {
    try {
      this.auditor.sweep();
      if (!this.kernel) return;
      const d = this.kernel.drops();
      if (d > this.lastDrops) {
        this.opts.sink.write([
          {
            type: 'agent',
            action: 'ring-buffer-drops',
            count: Number(d - this.lastDrops),
            source: 'net-fence',
            pid: process.pid,
            comm: 'cgfence',
          },
        ]);
        this.lastDrops = d;
      }
    } catch {
      // A sweep racing close() finds the maps gone; the next sweep (or close) reports.
    }
  }

  status(): Record<string, unknown> {
    if (!this.kernel) return { backend: 'none', error: `the BPF programs did not load: ${this.loadError}`, fences: 0 };
    return {
      backend: this.v2Usable()
        ? 'cgroup v2 bpf_links per container: cgroup/connect4|6 and sendmsg4|6 (EPERM), cgroup_skb/egress|ingress (drop); CIDRs in LPM tries'
        : 'none (the network fence needs cgroup v2)',
      fences: this.kernel.fences().length,
      tables: this.usage(),
      limits: { netRulesPerContainer: (this.opts.limits ?? DEFAULT_LIMITS).netRulesPerContainer },
      kernelDrops: this.kernel.drops().toString(),
      objects: this.kernel.objectIds(),
    };
  }

  close(opts: { detach: boolean }): void {
    clearInterval(this.timer);
    try {
      this.sweep();
      this.auditor.sweep({ final: true });
    } catch {
      /* best effort at shutdown */
    }
    this.kernel?.close({ detach: opts.detach });
  }
}
