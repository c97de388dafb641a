// The exec control. Each container is fenced by the scope it has (fence/fence-scope):
// its own cgroup v2 (tp_btf/sched_process_exec + cgroup ancestry) or, on cgroup v1 hosts and
// with --cgroup-mode v1, its pid namespace (tracepoint/sched/sched_process_exec). Both judge
// against the same maps (kernel/exec-fence.ts) with the same semantics. Allow-listed paths are
// resolved in the container's own root through its init pid.
import { AuditInput } from '../../audit/audit-record';
import { ExecEvent, FenceMode, formatDev, isPidnsFenceId } from '../../kernel/abi';
import { EventSink } from '../event-sink';
import { ExecRateAuditor } from './exec-rate-audit';
import { cgroupV2Root } from '../../kernel/cgroup';
import { ExecFence, ExecProgram } from '../../kernel/exec-fence';
import { PidnsError, describePidnsFenceId } from '../../kernel/pidns';
import { ResolvedEntry } from '../../policy/identity';
import { Policy } from '../../policy/policy';
import {
  CgroupMode,
  AttachContext,
  ControlSnapshot,
  ControlState,
  FenceBackend,
  FencedContainer,
  PinnedCounts,
  containerKey,
} from '../backend';
import { execDenyOf } from './exec-notify';
import { ExecAdmit, fenceCgroupExecs } from './cgroup-exec-fence';
import { DEFAULT_LIMITS, Limits, QuotaError, TableSizes, admit } from '../quota';
import { FenceScope, ScopeKind, NoScopeError, chooseScope } from '../fence-scope';
import { fencePidnsExecs } from './pidns-exec-fence';

const DESCRIBE: Record<ScopeKind, string> = {
  'cgroup-v2': 'cgroup-v2 (tp_btf/sched_process_exec, fence found by cgroup v2 ancestry)',
  'pidns-tracepoint': 'pidns-tracepoint (tracepoint/sched/sched_process_exec, fence found by pid namespace, nested namespaces included)',
};

/** The programs a daemon in `mode` needs: in auto mode both, as containers decide one by one. */
export function execPrograms(mode: CgroupMode, hasV2: boolean): ExecProgram[] {
  if (mode === 'v1' || !hasV2) return ['pidns'];
  if (mode === 'v2') return ['cgroup-v2'];
  return ['cgroup-v2', 'pidns'];
}

export class ExecBackend implements FenceBackend<'exec'> {
  readonly control = 'exec' as const;
  readonly fence: ExecFence;

  /** Exec records and the rate limiter's counts (null without a sink: events go to onEvents only). */
  private readonly rateAudit: ExecRateAuditor | null = null;
  private readonly timer: NodeJS.Timeout | null = null;

  /**
   * `kernelHook: 'lsm'`: the maps and events only, no tracepoint program (the BPF LSM program of
   * exec-lsm-backend judges); the fence scopes are the same. `lsmUnusable`: why BPF LSM
   * was not chosen, for status.
   */
  constructor(
    private readonly opts: {
      pinDir: string;
      cgroupMode: CgroupMode;
      onEvents?: (e: ExecEvent[]) => void;
      limits?: Limits;
      sizes?: TableSizes;
      /** Where exec records go; the daemon's sink. */
      sink?: EventSink;
      sweepMs?: number;
      kernelHook?: 'tracepoint' | 'lsm';
      lsmUnusable?: string;
    },
  ) {
    let rateAudit: ExecRateAuditor | null = null;
    const onEvents = (evs: ExecEvent[]) => {
      if (rateAudit && opts.sink) opts.sink.write(rateAudit.onEvents(evs));
      opts.onEvents?.(evs.filter((e) => e.kind === 'exec'));
    };
    // cgroup mode v2 without a v2 hierarchy gets the pidns program too, only so that fences an
    // earlier daemon pinned stay enforced: controlState refuses every new exec fence.
    this.fence = ExecFence.open({
      pinDir: opts.pinDir,
      onEvents,
      programs: opts.kernelHook === 'lsm' ? [] : execPrograms(opts.cgroupMode, cgroupV2Root() !== null),
      sizes: opts.sizes ? { fences: opts.sizes.exec_fences, exec_allow: opts.sizes.exec_allow } : undefined,
    });
    if (opts.sink) {
      const fence = this.fence;
      rateAudit = new ExecRateAuditor({
        rate: (id, ident) => fence.rate(id, ident),
        suppressed: (id) => fence.suppressed(id),
        forget: (id) => fence.forgetRate(id),
        sink: opts.sink,
      });
      // Fences of an earlier daemon: counted from where their totals are.
      for (const f of fence.fences())
        if (f.mode === FenceMode.Enforce || f.mode === FenceMode.Audit)
          rateAudit.track(f.fenceId, f.mode === FenceMode.Enforce ? 'deny' : 'audit');
      this.rateAudit = rateAudit;
      this.timer = setInterval(() => this.sweepRate(), opts.sweepMs ?? 1000);
      this.timer.unref();
    }
  }

  private sweepRate(opts: { final?: boolean } = {}): void {
    try {
      const out = this.rateAudit?.sweep(opts) ?? [];
      if (out.length) this.opts.sink!.write(out);
    } catch {
      // A sweep racing close() finds the maps gone; close sweeps last.
    }
  }

  controlState(policy: Policy): ControlState {
    if (policy.mode === 'off' || (policy.execAllow === null && policy.mode !== 'learn')) return 'none';
    if (this.opts.cgroupMode === 'v2' && !cgroupV2Root()) {
      return 'unenforceable: cgroup mode v2 was requested but no cgroup v2 hierarchy is mounted (use --cgroup-mode auto or v1 for the pid-namespace fallback)';
    }
    return policy.mode === 'enforce' ? 'enforced' : policy.mode === 'audit' ? 'audited' : 'learning';
  }

  /** The scope of a container: the one it was fenced by, else the one the mode picks. */
  private scopeOf(ctx: AttachContext<'exec'>): FenceScope {
    const mode: CgroupMode =
      ctx.state.backend === 'pidns-tracepoint' ? 'v1' : ctx.state.backend === 'cgroup-v2' ? 'v2' : this.opts.cgroupMode;
    return chooseScope(ctx.pid, ctx.cgroupPath, mode);
  }

  attach(ctx: AttachContext<'exec'>): ControlState | void {
    let scope: FenceScope;
    try {
      scope = this.scopeOf(ctx);
    } catch (e) {
      if (!(e instanceof PidnsError) && !(e instanceof NoScopeError)) throw e;
      const why = e instanceof PidnsError ? `the pid-namespace exec fence cannot serve this container: ${e.message}` : e.message;
      // Enforce is refused (throwing); audit and learn run, and are told they got nothing.
      if (ctx.policy.mode === 'enforce') throw new Error(`${why}; refusing to start in enforce mode`);
      ctx.state.backend = 'none';
      ctx.state.why = e.message;
      return `unenforceable: ${why}`;
    }
    const req = { mode: ctx.policy.mode, execAllow: ctx.policy.execAllow ?? [], admit: this.admitFor(ctx) };
    let resolved: ResolvedEntry[];
    let fenceId: bigint;
    if (scope.backend === 'cgroup-v2') {
      ({ fenceId, resolved } = fenceCgroupExecs(this.fence, { ...req, cgroupPath: scope.cgroupPath, rootPid: ctx.pid }));
    } else {
      ({ fenceId, resolved } = fencePidnsExecs(this.fence, {
        ...req,
        pid: ctx.pid,
        pidns: scope.pidns,
        lsm: this.opts.kernelHook === 'lsm',
      }));
      ctx.state.pidns = `pid:[${scope.pidns.inode}]`;
      ctx.state.why = scope.why;
    }
    ctx.state.fenceId = fenceId.toString();
    ctx.state.backend = scope.backend;
    if (ctx.policy.mode === 'enforce' || ctx.policy.mode === 'audit')
      this.rateAudit?.track(fenceId, ctx.policy.mode === 'enforce' ? 'deny' : 'audit');
    ctx.state.allow = resolved.map((e) => ({
      path: e.path,
      dev: formatDev(e.identity.dev),
      ino: e.identity.ino.toString(),
      ctime_ns: e.identity.ctimeNs.toString(),
      ...(e.loaderOf !== undefined ? { loader_of: e.loaderOf } : {}),
    }));
  }

  /** The quota check of one container's allow set (fence/quota.ts). */
  private admitFor(ctx: AttachContext<'exec'>): ExecAdmit {
    const limit = (this.opts.limits ?? DEFAULT_LIMITS).execAllowPerContainer;
    return (fenceId, ids) => {
      const all = this.fence.usage();
      if (all.fences.used >= all.fences.capacity && !this.fence.getFence(fenceId)) {
        throw new QuotaError(
          `container ${containerKey(ctx.namespace, ctx.id)} needs an exec fence entry, but the node's exec fences table holds ${all.fences.used} of ${all.fences.capacity}; nothing was written`,
        );
      }
      const use = all.allow;
      admit({
        container: containerKey(ctx.namespace, ctx.id),
        table: 'exec allow',
        setting: 'execAllowPerContainer',
        limit,
        asked: new Set(ids.map((i) => `${i.dev}:${i.ino}`)).size,
        adds: this.fence.newEntries(fenceId, ids),
        used: use.used,
        capacity: use.capacity,
      });
    };
  }

  /**
   * A live change, all or nothing: attach writes it (writeExecFence puts the fence back if a
   * write fails), and the undo returned puts back the exact kernel state of before, for when
   * a later control of the same change fails.
   */
  update(ctx: AttachContext<'exec'>): () => void {
    const id = typeof ctx.state.fenceId === 'string' ? BigInt(ctx.state.fenceId) : null;
    const before = id !== null ? this.fence.snapshot(id) : null;
    this.attach(ctx);
    const after = typeof ctx.state.fenceId === 'string' ? BigInt(ctx.state.fenceId) : null;
    return () => {
      if (before) this.fence.restore(before);
      if (after !== null && after !== id) this.fence.unfence(after);
    };
  }

  detach(ctx: AttachContext<'exec'>): Record<string, unknown> | void {
    if (typeof ctx.state.fenceId !== 'string') return;
    const last = this.fence.unfence(BigInt(ctx.state.fenceId));
    if (this.rateAudit) this.rateAudit.retire(BigInt(ctx.state.fenceId));
    else this.fence.forgetRate(BigInt(ctx.state.fenceId));
    if (last) return { denied: Number(last.denied), audited: Number(last.audited), allowed: Number(last.allowed) };
  }

  /**
   * ps shows the allow-list as resolved, how a denial ends (errno or kill) and the kernel
   * fence's counters. `refusedByNotify`: execs the seccomp notify loop refused before they
   * reached the fence (exec-notify-backend), counted as denials.
   */
  snapshot(f: FencedContainer, refusedByNotify = 0): ControlSnapshot | null {
    const st = f.backends.exec;
    if (!st) return null;
    const k = st.fenceId !== undefined ? this.counters(st.fenceId) : null;
    const denied = (k?.denied ?? 0) + refusedByNotify;
    return {
      backend: st.backend ?? this.control,
      ps: { execAllow: st.allow ?? [], execDeny: execDenyOf(f.mode, st), counters: k && { ...k, denied, deniedByNotify: refusedByNotify } },
      decisions: k && { deny: denied, audit: k.audited, allow: k.allowed },
    };
  }

  /** The kernel fence's own counters (what the notify loop refused is not pinned anywhere). */
  pinnedCounts(f: FencedContainer): PinnedCounts | null {
    const fenceId = f.backends.exec?.fenceId;
    const k = fenceId !== undefined ? this.counters(fenceId) : null;
    return k && fenceId !== undefined ? { key: fenceId, denied: k.denied, audited: k.audited } : null;
  }

  counters(fenceId: string): { denied: number; audited: number; allowed: number } | null {
    const k = this.fence.getFence(BigInt(fenceId));
    return k ? { denied: Number(k.denied), audited: Number(k.audited), allowed: Number(k.allowed) } : null;
  }

  /**
   * Kernel fences no container claims (a crash between the kernel write and the state file),
   * and allow entries of fence ids no container claims, with or without a fence entry.
   */
  orphans(known: Set<string>): bigint[] {
    const ids = new Set([...this.fence.fences().map((f) => f.fenceId), ...this.fence.allowOwners(), ...this.fence.rateOwners()]);
    return [...ids].filter((id) => !known.has(id.toString()));
  }

  /** Shared table use against capacity, for status and metrics. */
  usage(): Record<string, { used: number; capacity: number }> {
    const u = this.fence.usage();
    return { fences: u.fences, exec_allow: u.allow };
  }

  removeFence(fenceId: bigint): void {
    this.fence.unfence(fenceId);
    this.fence.forgetRate(fenceId);
  }

  /** `removed`: told each fence id removed (the LSM backend drops what it keeps per fence too). */
  sweepOrphans(known: Set<string>, removed?: (fenceId: bigint) => void): AuditInput[] {
    return this.orphans(known).map((id) => {
      this.removeFence(id);
      removed?.(id);
      return { type: 'agent', action: 'remove-orphan-fence', control: 'exec', cgroup_id: id.toString() };
    });
  }

  status(): Record<string, unknown> {
    // With the LSM hook the one program finds both identities; the mode picks which are used.
    const programs = this.opts.kernelHook === 'lsm' ? execPrograms(this.opts.cgroupMode, cgroupV2Root() !== null) : this.fence.programs();
    const backends: ScopeKind[] = [];
    if (programs.includes('cgroup-v2') && cgroupV2Root() && this.opts.cgroupMode !== 'v1') backends.push('cgroup-v2');
    if (programs.includes('pidns') && !(this.opts.cgroupMode === 'v2' && cgroupV2Root())) backends.push('pidns-tracepoint');
    const fences = this.fence.fences();
    const pidnsFences = fences.filter((f) => isPidnsFenceId(f.fenceId));
    return {
      backend:
        backends.length === 0
          ? 'none: cgroup mode v2 was requested but no cgroup v2 hierarchy is mounted'
          : `${backends.length > 1 ? 'per container, ' : ''}${backends.map((b) => DESCRIBE[b]).join(' or ')}; SIGKILL before the first instruction`,
      backends,
      cgroupMode: this.opts.cgroupMode,
      ...(this.opts.lsmUnusable ? { bpfLsm: `not used: ${this.opts.lsmUnusable}` } : {}),
      fences: { 'cgroup-v2': fences.length - pidnsFences.length, 'pidns-tracepoint': pidnsFences.length },
      pidnsFences: pidnsFences.map((f) => ({ fenceId: f.fenceId.toString(), ...describePidnsFenceId(f.fenceId) })),
      adopted: this.fence.adopted,
      tables: this.usage(),
      limits: { execAllowPerContainer: (this.opts.limits ?? DEFAULT_LIMITS).execAllowPerContainer },
      kernelDrops: this.fence.drops().toString(),
      objects: this.fence.objectIds(),
    };
  }

  protectedMapIds(): number[] {
    return Object.values(this.fence.objectIds().maps);
  }

  protectedProgramIds(): number[] {
    return Object.values(this.fence.objectIds().programs).map((p) => p.program);
  }

  protectedLinkIds(): number[] {
    return Object.values(this.fence.objectIds().programs)
      .map((p) => p.link)
      .filter((id) => id > 0);
  }

  close(opts: { detach: boolean }): void {
    if (this.timer) clearInterval(this.timer);
    this.sweepRate({ final: true });
    this.fence.close({ detach: opts.detach });
  }
}
