// The exec control with denials a caller can see: the kernel exec fence (ExecBackend) does
// everything it did, and in enforce mode the container's execve/execveat also go through
// the seccomp notify loop (exec-notify.ts), which answers EACCES for a forbidden file
// before the kernel ever loads it. The fence stays the authority on what runs; the loop
// only turns most of its kills into errors.
//
// A container whose config routes its execs to the loop must get an allow set, or its
// execs wait forever: attach sets it, a restarted daemon sets it again from the registry
// when the loop asks ('need'), and a container found only by reconcile (late attach) is set
// when the loop has asked for it.
import { AuditInput } from '../../audit/audit-record';
import { EventSink } from '../event-sink';
import { AllowedFile } from '../../kernel/abi';
import { Policy } from '../../policy/policy';
import { AttachContext, ControlSnapshot, ControlState, FenceBackend, FencedContainer, PinnedCounts, PrepareContext } from '../backend';
import { ExecState } from './exec-state';
import { ExecBackend } from './exec-backend';
import { DenyEvent, ExecNotifier, denyRecord, notifyKey } from './exec-notify';
import { NotifyRateLimiter } from './notify-rate-limit';

export interface ExecNotifyHooks {
  /** The registry entry of a container, for allow sets after a restart and for audit records. */
  lookup: (namespace: string, id: string) => FencedContainer | undefined;
  inFlight: (namespace: string, id: string) => boolean;
  sink: EventSink;
  log: (m: string) => void;
  /**
   * runc handed over the listener of a container between prepare and attach, with its init's
   * pid: the init exists and waits before its entrypoint (the manager may attach it now).
   */
  initReady?: (namespace: string, id: string, pid: number) => void;
}

/**
 * The allow-list entries ExecBackend keeps in its state: { path, dev: "MAJ:MIN", ino, ctime_ns,
 * loader_of? }. null when there are none, or when they come from a daemon that kept no stamps:
 * the container is then left to the kernel fence until it is attached again.
 */
function identitiesOf(state: ExecState | undefined): AllowedFile[] | null {
  if (!Array.isArray(state?.allow)) return null;
  const entries = state.allow;
  if (entries.some((a) => typeof a.ctime_ns !== 'string')) return null;
  return entries.map((a) => {
    const [maj, min] = a.dev.split(':').map((x) => BigInt(x));
    return { dev: (maj << 20n) | min, ino: BigInt(a.ino), ctimeNs: BigInt(a.ctime_ns!), interpOnly: a.loader_of !== undefined };
  });
}

export class ExecNotifyBackend implements FenceBackend<'exec'> {
  readonly control = 'exec' as const;
  readonly notify: ExecNotifier;
  /** Keys whose notify fds wait for an allow set nobody has given yet. */
  private readonly waiting = new Set<string>();
  /** Execs refused by the loop, per container: they never reach the kernel fence's counters. */
  private readonly refused = new Map<string, number>();

  private readonly limiter = new NotifyRateLimiter<DenyEvent>();
  private readonly rateTimer: NodeJS.Timeout;

  constructor(
    readonly inner: ExecBackend,
    stateDir: string,
    private readonly hooks: ExecNotifyHooks,
  ) {
    this.rateTimer = setInterval(() => this.sweepRate(), 1000);
    this.rateTimer.unref();
    this.notify = ExecNotifier.open({
      stateDir,
      onDenied: (evs) => this.onDenied(evs),
      onNeed: (key, pid) => this.onNeed(key, pid),
      audit: (r) => hooks.sink.write([r]),
      log: hooks.log,
    });
  }

  controlState(policy: Policy): ControlState {
    return this.inner.controlState(policy);
  }

  prepare(ctx: PrepareContext): void {
    (this.inner as FenceBackend).prepare?.(ctx);
    if (ctx.policy.mode !== 'enforce') return;
    const merge = this.notify.prepare(ctx);
    if (merge.notified.length) ctx.handOff?.();
    if (merge.skipped.length)
      this.hooks.log(
        `${ctx.namespace}/${ctx.id}: execs not routed to the notify loop (the kernel fence alone decides): ${merge.skipped.join('; ')}`,
      );
  }

  attach(ctx: AttachContext<'exec'>): ControlState | void {
    const st = this.inner.attach(ctx);
    this.route(ctx);
    return st;
  }

  update(ctx: AttachContext<'exec'>): () => void {
    const prev = Array.isArray(ctx.state.allow) ? { ...ctx.state } : null;
    const undoKernel = this.inner.update(ctx);
    this.route(ctx);
    return () => {
      undoKernel();
      // The loop's allow set goes back with the kernel's: the old one, or none.
      const key = notifyKey(ctx.namespace, ctx.id);
      if (prev?.notify === 'seccomp-notify') this.notify.set(key, identitiesOf(prev)!);
      else if (ctx.state.notify === 'seccomp-notify') this.notify.passThrough(key);
    };
  }

  private route(ctx: AttachContext<'exec'>): void {
    const key = notifyKey(ctx.namespace, ctx.id);
    if (ctx.policy.mode !== 'enforce' || !Array.isArray(ctx.state.allow)) return;
    if (!this.notify.routed(ctx.bundle, key) && !this.waiting.has(key)) return;
    this.notify.set(key, identitiesOf(ctx.state)!);
    this.waiting.delete(key);
    ctx.state.notify = 'seccomp-notify';
  }

  private onNeed(key: string, pid: number): void {
    const i = key.indexOf('/');
    const namespace = key.slice(0, i);
    const id = key.slice(i + 1);
    // In flight: its attach sets it, and can begin now that the init exists.
    if (this.hooks.inFlight(namespace, id)) {
      this.hooks.initReady?.(namespace, id, pid);
      return;
    }
    const f = this.hooks.lookup(namespace, id);
    const ids = f?.mode === 'enforce' ? identitiesOf(f.backends.exec) : null;
    if (ids) {
      this.notify.set(key, ids);
      return;
    }
    if (f?.backends.seccomp?.action === 'SCMP_ACT_NOTIFY(EPERM)' && !Array.isArray(f.backends.exec?.allow)) {
      // Routed for its seccomp denials only: no allow set to wait for, its execs were never
      // the loop's (the seccomp control records its denials again).
      this.notify.passThrough(key);
      return;
    }
    // Nothing known about it (a lost state file, or a policy that no longer enforces): its
    // execs go on to the kernel fence instead of waiting; a late attach sets it properly.
    this.notify.passThrough(key);
    this.waiting.add(key);
    this.hooks.log(`${key}: notify fd without a known allow set; its execs are left to the kernel fence until it is attached`);
  }

  private onDenied(evs: DenyEvent[]): void {
    for (const e of evs) this.refused.set(e.key, (this.refused.get(e.key) ?? 0) + 1);
    const now = process.hrtime.bigint();
    const recorded = evs.filter((e) => this.limiter.admit(e.key, `${e.dev}:${e.ino}`, e, now));
    this.hooks.sink.write(recorded.map((e) => this.record(e)));
  }

  private record(e: DenyEvent): AuditInput {
    const i = e.key.indexOf('/');
    const f = this.hooks.lookup(e.key.slice(0, i), e.key.slice(i + 1));
    return denyRecord(e, f ? { cgroupId: f.cgroupId } : undefined, this.hooks.sink.toWallNs(e.tsMonoNs));
  }

  /** Count records for the denials the limiter held back (about once a window). */
  private sweepRate(): void {
    const held = this.limiter.drain(process.hrtime.bigint());
    if (held.length === 0) return;
    this.hooks.sink.write(
      held.map((h) => {
        const r = this.record(h.sample);
        const base = { ...r, ts: undefined, pid: null, comm: null, count: h.count, rate_limited: true };
        if (h.identity) return base;
        return {
          ...base,
          path: null,
          path_raw: undefined,
          inode: null,
          dev: null,
          identity: "several: the container's record budget for the window was spent",
        };
      }),
    );
  }

  /** Execs of a running container refused by the loop so far (for `cgfence ps`). */
  refusedBy(namespace: string, id: string): number {
    const key = notifyKey(namespace, id);
    return Math.max(this.refused.get(key) ?? 0, this.notify.refused(key));
  }

  detach(ctx: AttachContext<'exec'>): Record<string, unknown> | void {
    // Counts held for the container go out before its detach record.
    this.sweepRate();
    const key = notifyKey(ctx.namespace, ctx.id);
    // The native count, read before the container is removed: its last denials' events may
    // still be on their way here when containerd's exit event arrives first.
    const refused = Math.max(this.refused.get(key) ?? 0, this.notify.refused(key));
    this.notify.remove(key);
    this.waiting.delete(key);
    this.refused.delete(key);
    const counters = this.inner.detach(ctx);
    // `denied` counts every exec that did not run, whichever of the two stopped it.
    if (counters && typeof counters.denied === 'number')
      return { ...counters, denied: counters.denied + refused, denied_by_notify: refused };
    return counters;
  }

  /** The kernel fence's, with the execs the loop refused before they reached it counted as denials. */
  snapshot(f: FencedContainer): ControlSnapshot | null {
    return this.inner.snapshot(f, this.refusedBy(f.namespace, f.id));
  }

  pinnedCounts(f: FencedContainer): PinnedCounts | null {
    return this.inner.pinnedCounts(f);
  }

  sweepOrphans(known: Set<string>): AuditInput[] {
    return this.inner.sweepOrphans(known);
  }

  status(): Record<string, unknown> {
    return {
      ...this.inner.status(),
      notify: {
        backend: 'seccomp user notification (execve, execveat) answered EACCES by a native loop; the kernel fence stays the backstop',
        listener: this.notify.listenerPath,
        waiting: [...this.waiting],
        ...this.notify.stats(),
      },
    };
  }

  protectedMapIds(): number[] {
    return this.inner.protectedMapIds();
  }

  protectedProgramIds(): number[] {
    return this.inner.protectedProgramIds();
  }

  protectedLinkIds(): number[] {
    return this.inner.protectedLinkIds();
  }

  close(opts: { detach: boolean }): void {
    clearInterval(this.rateTimer);
    this.sweepRate();
    this.notify.close({ release: opts.detach });
    this.inner.close(opts);
  }
}
