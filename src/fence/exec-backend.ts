// The exec control on cgroup v2: one global tp_btf/sched_process_exec program, a fence per
// container cgroup (see kernel/exec-fence.ts). Allow-listed paths are resolved in the
// container's own root through its init pid.
import { ExecEvent, formatDev } from '../kernel/abi';
import { cgroupV2Root } from '../kernel/cgroup';
import { ExecFence } from '../kernel/exec-fence';
import { Policy } from '../policy/policy';
import { CgroupMode } from '../daemon/config';
import { AttachContext, ControlState, FenceBackend } from './backend';
import { fenceCgroupExecs } from './cgroup-exec-fence';

export class ExecBackend implements FenceBackend {
  readonly control = 'exec' as const;
  readonly fence: ExecFence;

  constructor(private readonly opts: { pinDir: string; cgroupMode: CgroupMode; onEvents: (e: ExecEvent[]) => void }) {
    this.fence = ExecFence.open({ pinDir: opts.pinDir, onEvents: opts.onEvents });
  }

  private v2Usable(): boolean {
    return this.opts.cgroupMode !== 'v1' && cgroupV2Root() !== null;
  }

  controlState(policy: Policy): ControlState {
    if (policy.mode === 'off' || (policy.execAllow === null && policy.mode !== 'learn')) return 'none';
    if (!this.v2Usable()) {
      return `unenforceable: ${this.opts.cgroupMode === 'v1' ? 'cgroup mode v1 was requested and' : 'no cgroup v2 hierarchy on this host;'} the tracepoint (cgroup v1) exec backend is not implemented in this version`;
    }
    return policy.mode === 'enforce' ? 'enforced' : policy.mode === 'audit' ? 'audited' : 'learning';
  }

  attach(ctx: AttachContext): void {
    if (!ctx.cgroupPath) throw new Error(`pid ${ctx.pid} has no cgroup v2 membership`);
    const r = fenceCgroupExecs(this.fence, {
      cgroupPath: ctx.cgroupPath, rootPid: ctx.pid, mode: ctx.policy.mode, execAllow: ctx.policy.execAllow ?? [],
    });
    ctx.state.backend = 'cgroup-v2';
    ctx.state.fenceId = r.fenceId.toString();
    ctx.state.allow = r.resolved.map((e) => ({ path: e.path, dev: formatDev(e.identity.dev), ino: e.identity.ino.toString() }));
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
    return {
      backend: this.v2Usable() ? 'tp_btf/sched_process_exec + cgroup v2 ancestry (SIGKILL before the first instruction)' : 'none (cgroup v1 tracepoint backend not implemented)',
      adopted: this.fence.adopted,
      kernelDrops: this.fence.drops().toString(),
      objects: this.fence.objectIds(),
    };
  }

  close(opts: { detach: boolean }): void {
    this.fence.close({ detach: opts.detach });
  }
}
