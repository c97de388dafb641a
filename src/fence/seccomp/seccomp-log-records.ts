// Turns the kernel's seccomp log (src/kernel/seccomp-audit.ts), and the counts of the
// denials the notify loop answered EPERM (onNotified), into `seccomp` audit records
// of the fenced containers, rate-limited: the first decision of a kind (container, syscall,
// ABI, action, source) is written at once, later ones are counted and written at most once per
// interval as one record with `count`, and whatever is still counted when the container goes
// is written before its detach record. A container looping on a denied syscall therefore
// costs one record a second, never one a call, and no decision goes uncounted.
import { AuditInput, formatRfc3339Ns } from '../../audit/audit-record';
import { SECCOMP_RET, SeccompLogRecord } from '../../kernel/seccomp-audit';
import { native } from '../../native';
import { KEYS } from '../../policy/annotations';
import { EventSink } from '../event-sink';

export const SECCOMP_RECORD_INTERVAL_MS = 1000;
/** A kind quiet for this many intervals is forgotten: its next decision is written at once. */
const IDLE_INTERVALS = 10;

/** A batch of denials the notify loop answered EPERM, of one kind, with wall-clock times. */
export interface NotifiedDenials {
  fenceId: string;
  arch: string;
  syscall: number;
  count: number;
  pid: number;
  comm: string;
  firstMs: number;
  lastMs: number;
  /**
   * Answered by the fd-holder while no daemon ran, handed over by the next daemon: a count
   * with no caller (pid, comm) and the take-over's time; syscall -1: kinds it did not name.
   */
  byHolder?: boolean;
}

/** Pending.code of the notify loop's EPERM answers (not a kernel action: never in the log). */
const NOTIFIED = -1;
/** Pending.code of the fd-holder's EPERM answers while no daemon ran. */
const NOTIFIED_BY_HOLDER = -2;

interface Pending {
  fenceId: string;
  arch: string;
  syscall: number;
  code: number;
  /** Decisions not written yet. */
  count: number;
  firstMs: number;
  lastMs: number;
  pid: number;
  uid: number | null;
  comm: string;
  exe: string;
  writtenAt: number;
}

/** The audit action of a seccomp action; null for those that decide nothing (notify, trace, allow). */
function actionOf(code: number): { action: string; seccompAction: string } | null {
  switch (code) {
    case NOTIFIED:
    case NOTIFIED_BY_HOLDER:
      return { action: 'deny', seccompAction: 'SCMP_ACT_NOTIFY' };
    case SECCOMP_RET.ERRNO:
      return { action: 'deny', seccompAction: 'SCMP_ACT_ERRNO' };
    case SECCOMP_RET.LOG:
      return { action: 'audit', seccompAction: 'SCMP_ACT_LOG' };
    case SECCOMP_RET.KILL_PROCESS:
      return { action: 'kill', seccompAction: 'SCMP_ACT_KILL_PROCESS' };
    case SECCOMP_RET.KILL_THREAD:
      return { action: 'kill', seccompAction: 'SCMP_ACT_KILL_THREAD' };
    case SECCOMP_RET.TRAP:
      return { action: 'deny', seccompAction: 'SCMP_ACT_TRAP' };
    default:
      return null;
  }
}

function listed(annotations: Record<string, string>, key: string, name: string): boolean | null {
  const v = annotations[key];
  return v === undefined
    ? null
    : v
        .split(',')
        .map((s) => s.trim())
        .includes(name);
}

export class SeccompLogRecords {
  /** Watched containers: cgroup v2 path (relative to the hierarchy root) -> fence id. */
  private readonly watched = new Map<string, string>();
  /** Fences whose notify-loop denials are recorded (their records need no cgroup path). */
  private readonly notifyFences = new Set<string>();
  private readonly pending = new Map<string, Pending>();
  private readonly names = new Map<string, string | null>();
  private timer: NodeJS.Timeout | null = null;
  /** Log records of no watched container (another process on the node, or a caller already gone). */
  unattributed = 0;

  constructor(
    private readonly sink: EventSink,
    private readonly intervalMs = SECCOMP_RECORD_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  watch(fenceId: string, cgroupRelative: string): void {
    this.watched.set(cgroupRelative.replace(/\/+$/, '') || '/', fenceId);
    this.startTimer();
  }

  /** Records the fence's notify-loop denials (onNotified) from now on. */
  watchFence(fenceId: string): void {
    this.notifyFences.add(fenceId);
    this.startTimer();
  }

  private startTimer(): void {
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** Writes what is still counted for the fence, then forgets it (before its detach record). */
  unwatch(fenceId: string): void {
    this.flush((p) => p.fenceId === fenceId, true);
    for (const [cg, f] of this.watched) if (f === fenceId) this.watched.delete(cg);
    this.notifyFences.delete(fenceId);
    if (this.watching() === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Containers watched, by either source. */
  watching(): number {
    return new Set([...this.watched.values(), ...this.notifyFences]).size;
  }

  /** Containers watched through the kernel log (the log reader runs while there are any). */
  watchingCgroups(): number {
    return this.watched.size;
  }

  /** Denials the notify loop answered and counted: recorded as the kernel log's are. */
  onNotified(d: NotifiedDenials): void {
    if (!this.notifyFences.has(d.fenceId)) {
      this.unattributed += d.count;
      return;
    }
    const now = this.now();
    const code = d.byHolder ? NOTIFIED_BY_HOLDER : NOTIFIED;
    const key = `${d.fenceId}|${d.arch}|${d.syscall}|${code}`;
    let p = this.pending.get(key);
    const out: AuditInput[] = [];
    if (d.byHolder) {
      // Counts of a time the daemon did not see: one record with the whole count, at once.
      this.sink.write([
        this.record(
          {
            fenceId: d.fenceId,
            arch: d.arch,
            syscall: d.syscall,
            code,
            count: d.count,
            firstMs: d.firstMs,
            lastMs: d.lastMs,
            pid: 0,
            uid: null,
            comm: '',
            exe: '',
            writtenAt: 0,
          },
          now,
        ),
      ]);
      return;
    }
    if (!p) {
      // The first of its kind written at once, alone; the rest of the batch is counted.
      p = {
        fenceId: d.fenceId,
        arch: d.arch,
        syscall: d.syscall,
        code,
        count: 1,
        firstMs: d.firstMs,
        lastMs: d.firstMs,
        pid: d.pid,
        uid: null,
        comm: d.comm,
        exe: '',
        writtenAt: 0,
      };
      this.pending.set(key, p);
      out.push(this.record(p, now));
      if (d.count === 1) {
        this.sink.write(out);
        return;
      }
      d = { ...d, count: d.count - 1 };
    }
    if (p.count === 0) p.firstMs = d.firstMs;
    p.count += d.count;
    Object.assign(p, { lastMs: d.lastMs, pid: d.pid, comm: d.comm || p.comm });
    if (now - p.writtenAt >= this.intervalMs) out.push(this.record(p, now));
    if (out.length) this.sink.write(out);
  }

  /** The fence of a cgroup: its own, or the nearest watched ancestor's (a container's sub-cgroups). */
  private fenceOf(cgroup: string): string | undefined {
    for (let cg = cgroup; cg.length > 1; cg = cg.slice(0, cg.lastIndexOf('/')) || '/') {
      const f = this.watched.get(cg);
      if (f) return f;
    }
    return undefined;
  }

  /** A caller that was gone: the container whose own cgroup it exited in. */
  private fenceOfExited(cgroupId: bigint | undefined): string | undefined {
    if (cgroupId === undefined) return undefined;
    const id = cgroupId.toString();
    for (const f of this.watched.values()) if (f === id) return f;
    return undefined;
  }

  onRecords(records: SeccompLogRecord[]): void {
    const out: AuditInput[] = [];
    const now = this.now();
    for (const r of records) {
      if (!actionOf(r.code)) continue;
      const fenceId = r.cgroup ? this.fenceOf(r.cgroup) : this.fenceOfExited(r.exitedCgroupId);
      if (!fenceId) {
        this.unattributed++;
        continue;
      }
      const key = `${fenceId}|${r.arch}|${r.syscall}|${r.code}`;
      let p = this.pending.get(key);
      if (!p) {
        // The first of its kind: written at once.
        p = {
          fenceId,
          arch: r.arch,
          syscall: r.syscall,
          code: r.code,
          count: 1,
          firstMs: r.tsMs,
          lastMs: r.tsMs,
          pid: r.pid,
          uid: r.uid,
          comm: r.comm,
          exe: r.exe,
          writtenAt: 0,
        };
        this.pending.set(key, p);
        out.push(this.record(p, now));
        continue;
      }
      if (p.count === 0) p.firstMs = r.tsMs;
      p.count++;
      Object.assign(p, { lastMs: r.tsMs, pid: r.pid, uid: r.uid, comm: r.comm, exe: r.exe });
      if (now - p.writtenAt >= this.intervalMs) out.push(this.record(p, now));
    }
    if (out.length) this.sink.write(out);
  }

  private tick(): void {
    const now = this.now();
    this.flush((p) => p.count > 0 && now - p.writtenAt >= this.intervalMs, false);
    for (const [k, p] of this.pending) if (p.count === 0 && now - p.writtenAt > IDLE_INTERVALS * this.intervalMs) this.pending.delete(k);
  }

  private flush(pred: (p: Pending) => boolean, forget: boolean): void {
    const now = this.now();
    const out: AuditInput[] = [];
    for (const [k, p] of this.pending) {
      if (!pred(p)) continue;
      if (p.count > 0) out.push(this.record(p, now));
      if (forget) this.pending.delete(k);
    }
    if (out.length) this.sink.write(out);
  }

  private syscallName(arch: string, nr: number): string | null {
    const k = `${arch}/${nr}`;
    if (!this.names.has(k)) {
      let n: string | null = null;
      try {
        n = native().syscallNames([nr], arch)[0];
      } catch {
        n = null;
      }
      this.names.set(k, n);
    }
    return this.names.get(k)!;
  }

  /** One record for what p counted; p's count starts again from 0. */
  private record(p: Pending, now: number): AuditInput {
    const owner = this.sink.owner(p.fenceId);
    const act = actionOf(p.code)!;
    const name = this.syscallName(p.arch, p.syscall);
    const annotations = owner?.annotations ?? {};
    // Whose rule decided: a name cgfence denies, one its allow-list leaves out, or else the
    // container's own profile (or the runtime's default) that the filter also holds.
    const denied = name !== null && listed(annotations, KEYS.seccompDeny, name) === true;
    const notAllowed = name !== null && listed(annotations, KEYS.seccompAllow, name) === false;
    const rec: AuditInput = {
      ts: BigInt(p.lastMs) * 1_000_000n,
      type: 'seccomp',
      action: act.action,
      // A container without cgroup v2 is keyed by namespace/id (seccomp-backend.ts): no cgroup id.
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: owner?.cgroupId ?? (/^\d+$/.test(p.fenceId) ? p.fenceId : null),
      pid: p.pid,
      comm: p.comm,
      syscall: name ?? `#${p.syscall}`,
      syscall_nr: p.syscall,
      arch: p.arch,
      seccomp_action: act.seccompAction,
      ...(p.code === NOTIFIED || p.code === NOTIFIED_BY_HOLDER ? { errno: 'EPERM' } : {}),
      rule: denied ? KEYS.seccompDeny : notAllowed ? KEYS.seccompAllow : 'container profile',
      count: p.count,
      first_ts: formatRfc3339Ns(BigInt(p.firstMs) * 1_000_000n),
      last_ts: formatRfc3339Ns(BigInt(p.lastMs) * 1_000_000n),
      exe: p.exe,
      uid: p.uid,
      mode: owner?.mode ?? null,
      via: p.code === NOTIFIED ? 'seccomp-notify' : p.code === NOTIFIED_BY_HOLDER ? 'fd-holder' : 'kernel seccomp log',
      // The holder's count has no caller and no span of its own (ts is the take-over's); past
      // the kinds it names one by one, it counts the rest together.
      ...(p.code === NOTIFIED_BY_HOLDER ? { pid: 0, comm: '', first_ts: null, last_ts: null } : {}),
      ...(p.code === NOTIFIED_BY_HOLDER && p.syscall === -1 ? { syscall: 'several', syscall_nr: null, arch: null } : {}),
    };
    p.count = 0;
    p.writtenAt = now;
    return rec;
  }
}
