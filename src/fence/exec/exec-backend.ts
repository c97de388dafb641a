// The exec control. Each container is fenced by the identity it has (fence/container-identity):
// its own cgroup v2 (tp_btf/sched_process_exec + cgroup ancestry) or, on cgroup v1 hosts and
// with --cgroup-mode v1, its pid namespace (tracepoint/sched/sched_process_exec). Both judge
// against the same maps (kernel/exec-fence.ts) with the same semantics. Allow-listed paths are
// resolved in the container's own root through its init pid.
import { ExecEvent, formatDev, isPidnsFenceId } from '../../kernel/abi';
import { cgroupV2Root } from '../../kernel/cgroup';
import { ExecFence, ExecProgram } from '../../kernel/exec-fence';
import { PidnsError, describePidnsFenceId } from '../../kernel/pidns';
import { ResolvedEntry } from '../../policy/identity';
import { Policy } from '../../policy/policy';
import { CgroupMode, AttachContext, ControlState, FenceBackend } from '../backend';
import { fenceCgroupExecs } from './cgroup-exec-fence';
import { ContainerIdentity, IdentityBackend, NoIdentityError, chooseIdentity } from '../container-identity';
import { fencePidnsExecs } from './pidns-exec-fence';

const DESCRIBE: Record<IdentityBackend, string> = {
  'cgroup-v2': 'cgroup-v2 (tp_btf/sched_process_exec, fence found by cgroup v2 ancestry)',
  'pidns-tracepoint': 'pidns-tracepoint (tracepoint/sched/sched_process_exec, fence found by pid namespace, nested namespaces included)',
};

/** The programs a daemon in `mode` needs: in auto mode both, as containers decide one by one. */
export function execPrograms(mode: CgroupMode, hasV2: boolean): ExecProgram[] {
  if (mode === 'v1' || !hasV2) return ['pidns'];
  if (mode === 'v2') return ['cgroup-v2'];
  return ['cgroup-v2', 'pidns'];
}

export class ExecBackend implements FenceBackend {
  readonly control = 'exec' as const;
  readonly fence: ExecFence;

  /**
   * `kernelHook: 'lsm'`: the maps and events only, no tracepoint program (the BPF LSM program of
   * exec-lsm-backend judges); the fence identities are the same. `lsmUnusable`: why BPF LSM
   * was not chosen, for status.
   */
  constructor(private readonly opts: { pinDir: string; cgroupMode: CgroupMode; onEvents: (e: ExecEvent[]) => void; kernelHook?: 'tracepoint' | 'lsm'; lsmUnusable?: string }) {
    // cgroup mode v2 without a v2 hierarchy gets the pidns program too, only so that fences an
    // earlier daemon pinned stay enforced: controlState refuses every new exec fence.
    const programs = opts.kernelHook === 'lsm' ? [] : execPrograms(opts.cgroupMode, cgroupV2Root() !== null);
    this.fence = ExecFence.open({ pinDir: opts.pinDir, onEvents: opts.onEvents, programs });
  }

  controlState(policy: Policy): ControlState {
    if (policy.mode === 'off' || (policy.execAllow === null && policy.mode !== 'learn')) return 'none';
    if (this.opts.cgroupMode === 'v2' && !cgroupV2Root()) {
      return 'unenforceable: cgroup mode v2 was requested but no cgroup v2 hierarchy is mounted (use --cgroup-mode auto or v1 for the pid-namespace fallback)';
    }
    return policy.mode === 'enforce' ? 'enforced' : policy.mode === 'audit' ? 'audited' : 'learning';
  }

  /** The identity of a container: the one it was fenced by, else the one the mode picks. */
  private identify(ctx: AttachContext): ContainerIdentity {
    const mode: CgroupMode = ctx.state.backend === 'pidns-tracepoint' ? 'v1' : ctx.state.backend === 'cgroup-v2' ? 'v2' : this.opts.cgroupMode;
    return chooseIdentity(ctx.pid, ctx.cgroupPath, mode);
  }

  attach(ctx: AttachContext): ControlState | void {
    let identity: ContainerIdentity;
    try {
      identity = this.identify(ctx);
    } catch (e) {
      if (!(e instanceof PidnsError) && !(e instanceof NoIdentityError)) throw e;
      const why = e instanceof PidnsError ? `the pid-namespace exec fence cannot serve this container: ${e.message}` : e.message;
      // Enforce is refused (throwing); audit and learn run, and are told they got nothing.
      if (ctx.policy.mode === 'enforce') throw new Error(`${why}; refusing to start in enforce mode`);
      ctx.state.backend = 'none';
      ctx.state.why = e.message;
      return `unenforceable: ${why}`;
    }
    const req = { mode: ctx.policy.mode, execAllow: ctx.policy.execAllow ?? [] };
    let resolved: ResolvedEntry[];
    if (identity.backend === 'cgroup-v2') {
      const r = fenceCgroupExecs(this.fence, { ...req, cgroupPath: identity.cgroupPath, rootPid: ctx.pid });
      ctx.state.fenceId = r.fenceId.toString();
      resolved = r.resolved;
    } else {
      const r = fencePidnsExecs(this.fence, { ...req, pid: ctx.pid, pidns: identity.pidns, lsm: this.opts.kernelHook === 'lsm' });
      ctx.state.fenceId = r.fenceId.toString();
      ctx.state.pidns = `pid:[${identity.pidns.inode}]`;
      ctx.state.why = identity.why;
      resolved = r.resolved;
    }
    ctx.state.backend = identity.backend;
    ctx.state.allow = resolved.map((e) => ({ path: e.path, dev: formatDev(e.identity.dev), ino: e.identity.ino.toString() }));
  }

  update(ctx: AttachContext): void {
    this.attach(ctx);
  }

  detach(ctx: AttachContext): Record<string, unknown> | void {
    if (typeof ctx.state.fenceId !== 'string') return;
    const last = this.fence.unfence(BigInt(ctx.state.fenceId));
    if (last) return { denied: Number(last.denied), audited: Number(last.audited), allowed: Number(last.allowed) };
  }

  counters(fenceId: string): { denied: number; audited: number; allowed: number } | null {
    const k = this.fence.getFence(BigInt(fenceId));
    return k ? { denied: Number(k.denied), audited: Number(k.audited), allowed: Number(k.allowed) } : null;
  }

  /** Kernel fences no container claims (a crash between the kernel write and the state file). */
  orphans(known: Set<string>): bigint[] {
    return this.fence.fences().map((f) => f.fenceId).filter((id) => !known.has(id.toString()));
  }

  removeFence(fenceId: bigint): void {
    this.fence.unfence(fenceId);
  }

  status(): Record<string, unknown> {
    // With the LSM hook the one program finds both identities; the mode picks which are used.
    const programs = this.opts.kernelHook === 'lsm' ? execPrograms(this.opts.cgroupMode, cgroupV2Root() !== null) : this.fence.programs();
    const backends: IdentityBackend[] = [];
    if (programs.includes('cgroup-v2') && cgroupV2Root() && this.opts.cgroupMode !== 'v1') backends.push('cgroup-v2');
    if (programs.includes('pidns') && !(this.opts.cgroupMode === 'v2' && cgroupV2Root())) backends.push('pidns-tracepoint');
    const fences = this.fence.fences();
    const pidnsFences = fences.filter((f) => isPidnsFenceId(f.fenceId));
    return {
      backend: backends.length === 0
        ? 'none: cgroup mode v2 was requested but no cgroup v2 hierarchy is mounted'
        : `${backends.length > 1 ? 'per container, ' : ''}${backends.map((b) => DESCRIBE[b]).join(' or ')}; SIGKILL before the first instruction`,
      backends,
      cgroupMode: this.opts.cgroupMode,
      ...(this.opts.lsmUnusable ? { bpfLsm: `not used: ${this.opts.lsmUnusable}` } : {}),
      fences: { 'cgroup-v2': fences.length - pidnsFences.length, 'pidns-tracepoint': pidnsFences.length },
      pidnsFences: pidnsFences.map((f) => ({ fenceId: f.fenceId.toString(), ...describePidnsFenceId(f.fenceId) })),
      adopted: this.fence.adopted,
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
    return Object.values(this.fence.objectIds().programs).map((p) => p.link).filter((id) => id > 0);
  }

  close(opts: { detach: boolean }): void {
    this.fence.close({ detach: opts.detach });
  }
}
