// The daemon's side of tamper detection: runs the kernel watch (kernel/tamper-watch.ts),
// keeps its protected set equal to what the fence backends own, and turns what it reports
// into `tamper` audit records. A watch that cannot start does not stop the daemon (the fences
// matter more), but it is said: in an `agent` record, the daemon log and `cgfence status`.
import { AuditInput } from '../audit/audit-record';
import { AuditLog } from '../audit/audit-log';
import { FenceBackend } from '../fence/backend';
import { EventSink } from '../fence/event-sink';
import { TamperEvent } from '../kernel/tamper-abi';
import { TamperWatch } from '../kernel/tamper-watch';

export interface TamperReporterOptions {
  pinDir: string;
  audit: AuditLog;
  backends: () => FenceBackend[];
  /** The container a cgroup belongs to, when it is a fenced one. */
  /** Owners of cgroups and clock conversion, as every backend gets them. */
  sink: EventSink;
  log: (m: string) => void;
}

/** The daemon calls check() every 2 s: a full refresh every 20 s. */
const FULL_REFRESH_CHECKS = 10;

export class TamperReporter {
  private watch: TamperWatch | null = null;
  private error: string | null = null;
  private lastLost = 0n;
  private lastUnreadable = 0n;
  private checks = 0;

  constructor(private readonly opts: TamperReporterOptions) {}

  start(): void {
    try {
      this.watch = TamperWatch.open({ pinDir: this.opts.pinDir, onEvents: (evs) => this.onEvents(evs) });
      const s = this.watch.stats();
      this.lastLost = s.lost;
      this.lastUnreadable = s.unreadable;
      this.refresh();
    } catch (e) {
      this.error = (e as Error).message;
      this.opts.audit.write({ type: 'agent', action: 'tamper-watch-unavailable', pid: process.pid, reason: this.error });
      this.opts.log(`tamper detection is off: ${this.error}`);
    }
  }

  /**
   * Protects what the backends own now; call after anything that creates kernel objects.
   * `incremental` (after an attach): only what changed since the last refresh is written.
   */
  refresh(opts: { incremental?: boolean } = {}): void {
    if (!this.watch) return;
    const maps: number[] = [];
    const programs: number[] = [];
    const links: number[] = [];
    for (const b of this.opts.backends()) {
      maps.push(...(b.protectedMapIds?.() ?? []));
      programs.push(...(b.protectedProgramIds?.() ?? []));
      links.push(...(b.protectedLinkIds?.() ?? []));
    }
    try {
      this.watch.protect({ maps, programs, links }, opts);
    } catch (e) {
      this.opts.log(`cannot update the tamper watch's protected ids: ${(e as Error).message}`);
    }
  }

  private onEvents(events: TamperEvent[]): void {
    this.opts.audit.writeBatch(events.map((e) => this.record(e)));
  }

  private record(e: TamperEvent): AuditInput {
    const owner = this.opts.sink.owner(e.cgroupId);
    const r: AuditInput = {
      ts: this.opts.sink.toWallNs(e.tsMonoNs),
      type: 'tamper',
      action: e.action,
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: e.cgroupId.toString(),
      pid: e.pid,
      comm: e.comm,
      tid: e.tid,
      uid: e.uid,
    };
    if (e.bpfCmd) r.bpf_cmd = e.bpfCmd;
    if (e.object === 'map') Object.assign(r, { map_id: e.objectId, map_name: e.objectName });
    else if (e.object === 'link') Object.assign(r, { link_id: e.objectId, prog_id: e.progId, prog_name: e.objectName });
    else if (e.object === 'prog') Object.assign(r, { prog_id: e.objectId, prog_name: e.objectName });
    else Object.assign(r, { path: e.path, pin_dir: this.opts.pinDir });
    // Seen by the pinned watch while no daemon was reading (or before this one started).
    if (this.watch && e.tsMonoNs < this.watch.openedAtMonoNs) r.before_daemon_start = true;
    return r;
  }

  /**
   * Turns the kernel's lost and unreadable counts into audit records; nothing is silent. Every
   * FULL_REFRESH_CHECKS-th call also rewrites the whole protected set, putting back any entry
   * that went missing (attaches write only what they change).
   */
  check(): void {
    if (!this.watch) return;
    if (++this.checks % FULL_REFRESH_CHECKS === 0) this.refresh();
    const s = this.watch.stats();
    if (s.lost > this.lastLost) {
      this.opts.audit.write({
        type: 'agent',
        action: 'ring-buffer-drops',
        ring: 'tamper_events',
        count: Number(s.lost - this.lastLost),
        pid: process.pid,
        comm: 'cgfence',
      });
      this.lastLost = s.lost;
    }
    if (s.unreadable > this.lastUnreadable) {
      this.opts.audit.write({
        type: 'agent',
        action: 'tamper-unreadable',
        count: Number(s.unreadable - this.lastUnreadable),
        pid: process.pid,
        comm: 'cgfence',
        reason: 'bpf() or path arguments the tamper watch could not read at syscall entry (page not present); those calls were not checked',
      });
      this.lastUnreadable = s.unreadable;
    }
  }

  status(): Record<string, unknown> {
    if (!this.watch) return { error: this.error ?? 'not started' };
    try {
      return this.watch.status();
    } catch (e) {
      return { error: (e as Error).message };
    }
  }

  close(opts: { detach: boolean }): void {
    this.check();
    this.watch?.close({ detach: opts.detach });
    this.watch = null;
  }
}
