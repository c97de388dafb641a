// The exec control where the kernel has BPF LSM (Debian 12, COS, AL2023, RHEL 9, ...):
// lsm/bprm_check_security refuses a forbidden exec with EACCES inside the kernel. Everything
// else is the exec fence's: ExecBackend finds the container's fence scope, resolves its
// allow-list and writes the same maps (opened without its tracepoint programs), and reads the
// same events. No seccomp notify route goes into the container's config and no fd-holder runs:
// prepare does nothing here.
import { AuditInput } from '../../audit/audit-record';
import { ExecLsm } from '../../kernel/exec-lsm';
import { Policy } from '../../policy/policy';
import { AttachContext, ControlSnapshot, ControlState, FenceBackend, FencedContainer, PinnedCounts } from '../backend';
import { ExecBackend } from './exec-backend';

export const LSM_HOOK = 'lsm/bprm_check_security';

export class ExecLsmBackend implements FenceBackend<'exec'> {
  readonly control = 'exec' as const;

  constructor(
    readonly inner: ExecBackend,
    private readonly lsm: ExecLsm,
  ) {}

  controlState(policy: Policy): ControlState {
    return this.inner.controlState(policy);
  }

  attach(ctx: AttachContext<'exec'>): ControlState | void {
    const st = this.inner.attach(ctx);
    if (typeof ctx.state.fenceId === 'string') {
      ctx.state.hook = LSM_HOOK;
      this.lsm.setSince(BigInt(ctx.state.fenceId));
    }
    return st;
  }

  update(ctx: AttachContext<'exec'>): void {
    this.attach(ctx);
  }

  detach(ctx: AttachContext<'exec'>): Record<string, unknown> | void {
    if (typeof ctx.state.fenceId === 'string') this.lsm.clearSince(BigInt(ctx.state.fenceId));
    return this.inner.detach(ctx);
  }

  /** The exec fence's orphans, with the fence-set times the LSM program keeps for them. */
  sweepOrphans(known: Set<string>): AuditInput[] {
    return this.inner.sweepOrphans(known, (id) => this.lsm.clearSince(id));
  }

  snapshot(f: FencedContainer): ControlSnapshot | null {
    return this.inner.snapshot(f);
  }

  pinnedCounts(f: FencedContainer): PinnedCounts | null {
    return this.inner.pinnedCounts(f);
  }

  status(): Record<string, unknown> {
    const inner = this.inner.status();
    const ids = inner.backends as string[];
    const found =
      ids.length === 0
        ? 'no fence scope available'
        : ids.map((b) => (b === 'cgroup-v2' ? 'cgroup v2 ancestry' : 'pid namespace')).join(' or ');
    const objects = inner.objects as { programs: Record<string, unknown>; maps: Record<string, number> };
    return {
      ...inner,
      backend: `bpf-lsm (${LSM_HOOK}, fence found by ${found}); EACCES inside the kernel, no seccomp notify`,
      hook: LSM_HOOK,
      lsmAdopted: this.lsm.adopted,
      alsoRefused:
        'opening an allow-listed file or a /proc/PID/mem for writing (lsm/file_open); mapping executable a file changed after the fence was set and not allow-listed (lsm/mmap_file, lsm/file_mprotect)',
      objects: { ...objects, programs: { ...objects.programs, ...this.lsm.objectIds() } },
    };
  }

  protectedMapIds(): number[] {
    return this.inner.protectedMapIds();
  }

  protectedProgramIds(): number[] {
    return [...this.inner.protectedProgramIds(), ...Object.values(this.lsm.objectIds()).map((p) => p.program)];
  }

  protectedLinkIds(): number[] {
    return [...this.inner.protectedLinkIds(), ...Object.values(this.lsm.objectIds()).map((p) => p.link)].filter((id) => id > 0);
  }

  close(opts: { detach: boolean }): void {
    this.lsm.close(opts);
    this.inner.close(opts);
  }
}
