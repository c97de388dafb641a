// The network control, per container: the cgroup v2 fence (CGROUP_SKB + connect/sendmsg)
// for a container with a v2 cgroup of its own; for one fenced by pid namespace (cgroup v1,
// or --cgroup-mode v1), the connect audit, which enforces nothing and says so.
import fs from 'node:fs';
import { AuditInput } from '../../audit/audit-record';
import { cgroupV2Root } from '../../kernel/cgroup';
import { Policy } from '../../policy/policy';
import { CgroupMode, AttachContext, ControlSnapshot, ControlState, FenceBackend, FencedContainer } from '../backend';
import { NETWORK_V1_BACKEND } from './network-state';
import { notOwnCgroupV2 } from '../fence-scope';
import { NetworkBackend } from './network-backend';
import { NetworkV1Audit, NetworkV1AuditOptions } from './network-v1-audit';

export class NetworkControl implements FenceBackend<'network'> {
  readonly control = 'network' as const;
  private v1: NetworkV1Audit | null = null;

  constructor(
    readonly v2: NetworkBackend,
    private readonly cgroupMode: CgroupMode,
    private readonly v1Options: NetworkV1AuditOptions,
  ) {
    // A connect audit an earlier daemon left pinned is adopted at once; otherwise it is
    // loaded on first use, since its tracepoint costs every TCP state change on the node.
    if (fs.existsSync(v1Options.pinDir)) this.audit();
  }

  private audit(): NetworkV1Audit {
    if (!this.v1) this.v1 = new NetworkV1Audit(this.v1Options);
    return this.v1;
  }

  private v2Only(): boolean {
    return this.cgroupMode !== 'v1' && cgroupV2Root() !== null;
  }

  controlState(policy: Policy): ControlState {
    // The node-level answer; attach gives the per-container one (auto mode on a host where
    // a container has no v2 cgroup of its own falls back to the audit).
    if (this.v2Only()) return this.v2.controlState(policy);
    return this.audit().controlState(policy);
  }

  attach(ctx: AttachContext<'network'>): ControlState | void {
    if (this.v2Only() && (this.cgroupMode === 'v2' || !notOwnCgroupV2(ctx.pid, ctx.cgroupPath))) return this.v2.attach(ctx);
    if (this.cgroupMode === 'v2') throw new Error(`pid ${ctx.pid} has no cgroup v2 of its own: ${notOwnCgroupV2(ctx.pid, ctx.cgroupPath)}`);
    return this.audit().attach(ctx);
  }

  private for(ctx: AttachContext<'network'>): FenceBackend {
    return ctx.state.backend === NETWORK_V1_BACKEND ? this.audit() : this.v2;
  }

  update(ctx: AttachContext<'network'>): void | (() => void) {
    return this.for(ctx).update?.(ctx);
  }

  detach(ctx: AttachContext<'network'>): Record<string, unknown> | void {
    return this.for(ctx).detach(ctx);
  }

  lastRecords(ctx: AttachContext<'network'>): Promise<void> | void {
    const b: FenceBackend = this.for(ctx);
    return b.lastRecords?.(ctx);
  }

  /** The v2 fence's counters; a container under the connect audit has none in the kernel. */
  snapshot(f: FencedContainer): ControlSnapshot | null {
    return this.v2.snapshot(f);
  }

  /** For the tamper watch: the ids of both sides' maps and programs (per-container links follow from the programs). */
  protectedMapIds(): number[] {
    return [...this.v2Ids().maps, ...(this.v1 ? Object.values(this.v1.kernel.objectIds().maps) : [])];
  }

  protectedProgramIds(): number[] {
    return [...this.v2Ids().programs, ...(this.v1 ? [this.v1.kernel.objectIds().program] : [])];
  }

  protectedLinkIds(): number[] {
    return this.v1 ? [this.v1.kernel.objectIds().link] : [];
  }

  private v2Ids(): { maps: number[]; programs: number[] } {
    try {
      const ids = this.v2.fence.objectIds();
      return { maps: Object.values(ids.maps), programs: Object.values(ids.programs) };
    } catch {
      return { maps: [], programs: [] }; // not loaded on this node
    }
  }

  sweepOrphans(known: Set<string>): AuditInput[] {
    return this.v2.sweepOrphans(known);
  }

  status(): Record<string, unknown> {
    return { ...this.v2.status(), v1Audit: this.v1 ? this.v1.status() : 'not loaded (no container fenced by pid namespace)' };
  }

  close(opts: { detach: boolean }): void {
    this.v2.close(opts);
    this.v1?.close(opts);
  }
}
