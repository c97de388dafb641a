// Exec denials a caller can see, through seccomp user notification: the part of the exec
// control that turns a kill into an error. At prepare, execve and execveat of an
// enforce-mode exec-fenced container are routed to SCMP_ACT_NOTIFY, with runc's
// listenerPath pointing at the fd-holder (native/fd-holder/main.c), which passes each notify
// fd to the native notify loop (native/seccomp-notify.h); the loop decides every exec
// without JavaScript from the allow set pushed here at attach. The kernel exec
// fence (tp_btf/sched_process_exec) stays on behind it: the loop's answer is a check of the
// path at one instant, and CONTINUE lets the kernel resolve the path again (time of check vs
// time of use); whatever the kernel then really executes is judged by the fence, which
// kills a forbidden program before its first instruction.
//
// Execs through an fd are judged by the file behind the fd, read through the magic link
// /proc/<pid>/fd/N: fexecve(3) or execveat(fd, "", AT_EMPTY_PATH) of a memfd, or of any
// file that is not allow-listed, fails with the denial errno; of an allow-listed file it
// runs. execve("/proc/self/fd/N") is resolved the same way: "self" is the caller, and procfs
// links are followed by the kernel, not by their text.
//
// Anything the loop cannot resolve (no such file, not a regular file, a caller that
// vanished) is answered CONTINUE: the kernel then fails the exec with its own errno (so a
// shell's PATH search still says "not found"), or the fence decides.
//
// While no daemon is running, the fd-holder keeps the fds and answers CONTINUE: execs go on
// under the kernel fence alone (a forbidden one is killed, not refused) and nothing waits
// for the daemon; the next daemon takes the fds back. Any other notification (a seccomp
// denial) it answers EPERM, if it is of this protocol version or later: an older cgfence's
// holder, still running after an upgrade, answers everything CONTINUE, so it is replaced
// (checkHolder), and until a holder that answers EPERM is connected, no container's
// denials are routed here (denialRouteProblem).
import fs from 'node:fs';
import path from 'node:path';
import { AuditInput } from '../../audit/audit-record';
import { exactName } from '../../audit/exact-name';
import { AllowedFile, formatDev } from '../../kernel/abi';
import { NotifyEvent, NotifyStats, SeccompNotify, native } from '../../native';
import { PrepareContext, containerKey } from '../backend';
import { readBundleConfig } from '../bundle-config';
import { EXEC_SYSCALLS, NotifyMerge, withExecNotify } from '../seccomp/seccomp-profile';
import { verdictFields } from './exec-verdict';
import { FD_HOLDER_RETIRE_TIMEOUT_MS, FD_HOLDER_VERSION, startFdHolder } from './fd-holder';

/**
 * The errno of a denied exec: EACCES, the kernel's own answer to an exec it will not do
 * (noexec mount, no x bit, an LSM's denial), so that shells report it as they report those:
 * sh prints "Permission denied" and returns 126. (EPERM would read "Operation not permitted".)
 */
export const EXEC_DENY_ERRNO = 13;
export const EXEC_DENY_ERRNO_NAME = 'EACCES';

/** How long prepare's routing is remembered for the attach that follows it (runc create's time, with room). */
const ROUTED_MEMORY_MS = 60_000;

export type DenyEvent = Extract<NotifyEvent, { kind: 'deny' }>;
export type SeccompDenials = Extract<NotifyEvent, { kind: 'seccomp' }>;

export interface ExecNotifierOptions {
  stateDir: string;
  onDenied: (events: DenyEvent[]) => void;
  /**
   * A notify fd arrived (or came back from the fd-holder) for a container with no allow set,
   * with the pid runc handed it over with (its init's).
   */
  onNeed: (key: string, pid: number) => void;
  audit: (r: AuditInput) => void;
  log: (m: string) => void;
}

/** listener: runc's seccomp agent socket (config.json); holder: the daemon's control socket. */
export function notifyPaths(stateDir: string): { listener: string; holder: string } {
  return { listener: path.join(stateDir, 'seccomp-agent.sock'), holder: path.join(stateDir, 'fd-holder.sock') };
}

/** The container key the loop routes by; runc hands it back as listenerMetadata. */
export function notifyKey(namespace: string, id: string): string {
  return containerKey(namespace, id);
}

export function splitNotifyKey(key: string): { namespace: string; id: string } {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), id: key.slice(i + 1) };
}

export class ExecNotifier {
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelayMs = 0;
  private closed = false;
  /** Keys whose config.json prepare routed, with when: attach need not read the file again. */
  private readonly routedAtPrepare = new Map<string, number>();
  /** Keys the loop has been given a verdict state for (set or passThrough) and not removed. */
  private readonly active = new Set<string>();
  /** Who takes the seccomp denials the loop answered (the seccomp control). */
  private seccompListener: ((evs: SeccompDenials[]) => void) | null = null;
  /** The fd-holder the loop takes fds from: connected, its protocol version. */
  private holder = { connected: false, version: 0 };
  /** An older holder was retired: what the record of its replacement says once the new one is connected. */
  private replacing: { oldVersion: number; fds: number } | null = null;
  /** Why denials are not routed to the holder (its replacement failed), or null. */
  private holderProblem: string | null = null;
  /** The last replacement: when, of which version, and how many fds went to the new holder. */
  private replaced: { at: string; oldVersion: number; fds: number } | null = null;

  private constructor(
    private readonly loop: SeccompNotify,
    readonly listenerPath: string,
    private readonly holderPath: string,
    private readonly opts: ExecNotifierOptions,
  ) {}

  static open(opts: ExecNotifierOptions): ExecNotifier {
    fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    const p = notifyPaths(opts.stateDir);
    startFdHolder(p.holder, p.listener);
    let self: ExecNotifier | undefined;
    const loop = new (native().SeccompNotify)({ holderPath: p.holder }, (evs) => self?.onBatch(evs));
    self = new ExecNotifier(loop, p.listener, p.holder, opts);
    const st = loop.stats();
    self.checkHolder(st.holderConnected, st.holderVersion, st.openFds);
    return self;
  }

  private onBatch(events: NotifyEvent[]): void {
    const denied: DenyEvent[] = [];
    const seccomp: SeccompDenials[] = [];
    for (const e of events) {
      switch (e.kind) {
        case 'deny':
          denied.push(e);
          break;
        case 'seccomp':
          seccomp.push(e);
          break;
        case 'need':
          this.opts.onNeed(e.key, e.pid);
          break;
        case 'holder-lost':
          this.holder = { connected: false, version: 0 };
          this.opts.audit({ type: 'agent', action: 'fd-holder-lost', reason: e.detail });
          this.opts.log(`fd-holder: ${e.detail}; starting a new one`);
          this.scheduleReconnect();
          break;
        case 'holder-connected':
          this.reconnectDelayMs = 0;
          this.opts.log(`fd-holder: connected on ${e.detail}, ${e.count} notify fds held, protocol version ${e.version}`);
          this.checkHolder(true, e.version, e.count);
          break;
      }
    }
    if (denied.length) this.opts.onDenied(denied);
    if (seccomp.length) this.seccompListener?.(seccomp);
  }

  /** The seccomp control's handler for the denials the loop answers EPERM (one, the last set). */
  onSeccompDenials(fn: (evs: SeccompDenials[]) => void): void {
    this.seccompListener = fn;
  }

  /** What the loop counted and has not delivered yet (at a container's detach). */
  takeSeccompDenials(): SeccompDenials[] {
    return this.loop.takeSeccompDenials();
  }

  /**
   * A container routed here only for its seccomp denials (no exec allow set): its fds must
   * not stay parked waiting for one, or its denied syscalls would wait too. Its execs go on
   * to the kernel fence, as they would without the route.
   */
  ensureActive(key: string): void {
    if (!this.active.has(key)) this.passThrough(key);
  }

  /**
   * A holder of before FD_HOLDER_VERSION answers a denied syscall CONTINUE (runs it) while no
   * daemon is connected. The loop has every fd it kept (GET), so it is told to go, a new
   * holder starts on the same sockets and the loop hands it every fd (connectHolder: PUT),
   * all before this returns; then this comes back here with the new holder and writes the
   * record. If that fails, denialRouteProblem() keeps new containers' denials off the notify
   * route (SCMP_ACT_ERRNO). Execs need nothing: every holder lets them on.
   */
  private checkHolder(connected: boolean, version: number, fds: number): void {
    this.holder = { connected, version };
    if (!connected) return;
    if (version >= FD_HOLDER_VERSION) {
      this.holderProblem = null;
      if (this.replacing) {
        const r = this.replacing;
        this.replacing = null;
        this.replaced = { at: new Date().toISOString(), oldVersion: r.oldVersion, fds };
        this.opts.audit({
          type: 'agent',
          action: 'fd-holder-replaced',
          old_version: r.oldVersion,
          version,
          fds,
          reason: oldHolderReason(r.oldVersion),
        });
        this.opts.log(
          `fd-holder: replaced one of protocol version ${r.oldVersion} (${oldHolderReason(r.oldVersion)}) by version ${version}, ${fds} notify fds handed over`,
        );
      }
      return;
    }
    const old = `the fd-holder on ${this.holderPath} speaks protocol version ${version}: ${oldHolderReason(version)}`;
    if (this.replacing) {
      // The holder started in its place is old too (an old binary at fdHolderBinary()): keep
      // it, since it lets execs on, but route no denial to it.
      this.fail(`${old}; the holder started to replace it is no newer`);
      this.replacing = null;
      return;
    }
    try {
      this.loop.retireHolder(FD_HOLDER_RETIRE_TIMEOUT_MS);
    } catch (e) {
      // It may still run with our fds: denials stay off it, execs are unaffected.
      this.fail(`${old}; it could not be retired: ${(e as Error).message}`);
      return;
    }
    this.holder = { connected: false, version: 0 };
    this.replacing = { oldVersion: version, fds };
    this.holderProblem = `${old}; it was retired and its replacement is not connected yet`;
    try {
      startFdHolder(this.holderPath, this.listenerPath);
      // Waited for, so that the prepare that follows (or that opened this notifier) already
      // routes its denials here.
      this.loop.connectHolder(this.holderPath, true);
    } catch (e) {
      // No holder is connected now: retried with back-off, and the record is written once one is.
      this.fail(`${old}; it was retired, and its replacement is not connected: ${(e as Error).message}`);
      this.scheduleReconnect();
      return;
    }
    const st = this.loop.stats();
    this.checkHolder(st.holderConnected, st.holderVersion, st.openFds);
  }

  private fail(why: string): void {
    this.holderProblem = why;
    this.opts.audit({ type: 'agent', action: 'fd-holder-replace-failed', reason: why });
    this.opts.log(`fd-holder: ${why}; new containers' seccomp denials are enforced with SCMP_ACT_ERRNO, not recorded`);
  }

  /**
   * Why a container's enforce-mode seccomp denials must not be routed to this listener now
   * (the holder would not answer them EPERM were the daemon to die), or null when they can be.
   */
  denialRouteProblem(): string | null {
    if (this.holderProblem) return this.holderProblem;
    if (!this.holder.connected)
      return 'no fd-holder is connected (it is being restarted), and a denial must never reach a holder that has not said it answers denials EPERM';
    if (this.holder.version < FD_HOLDER_VERSION)
      return `the fd-holder speaks protocol version ${this.holder.version}: ${oldHolderReason(this.holder.version)}`;
    return null;
  }

  /** For status: the holder, and whether denials may be routed to it. */
  holderStatus(): Record<string, unknown> {
    const problem = this.denialRouteProblem();
    return {
      connected: this.holder.connected,
      version: this.holder.version,
      answersDenialsEperm: this.holder.version >= FD_HOLDER_VERSION,
      denialsRouted: problem === null,
      ...(problem ? { why: problem } : {}),
      ...(this.replaced ? { replaced: this.replaced } : {}),
    };
  }

  /** Backs off (up to 30 s) while a new holder keeps failing, rather than spinning. */
  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.closed) return;
    const delay = this.reconnectDelayMs;
    this.reconnectDelayMs = Math.min(30_000, Math.max(500, delay * 2));
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      try {
        startFdHolder(this.holderPath, this.listenerPath);
        this.loop.connectHolder(this.holderPath);
      } catch (e) {
        // The loop keeps deciding with its own copies; until a holder runs again, `runc exec`
        // finds no agent, and a daemon crash would close the fds (ENOSYS for every exec).
        this.opts.log(`fd-holder: ${(e as Error).message}`);
        this.scheduleReconnect();
      }
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Routes the bundle's exec syscalls to the loop (an enforce-mode exec fence only). */
  prepare(ctx: PrepareContext): NotifyMerge {
    const spec = ctx.spec;
    const merge = withExecNotify(spec.linux?.seccomp, this.listenerPath, notifyKey(ctx.namespace, ctx.id));
    const key = notifyKey(ctx.namespace, ctx.id);
    this.routedAtPrepare.delete(key);
    if (merge.notified.length) {
      spec.linux = { ...(spec.linux ?? {}), seccomp: merge.profile };
      ctx.specChanged();
      const now = Date.now();
      for (const [k, at] of this.routedAtPrepare) if (now - at > ROUTED_MEMORY_MS) this.routedAtPrepare.delete(k);
      this.routedAtPrepare.set(key, now);
    }
    return merge;
  }

  /** True when runc got a config that routes this container's execs to us. */
  routed(bundle: string, key: string): boolean {
    // Routed by this daemon's own prepare moments ago: the common case at attach, answered
    // without reading config.json again. Otherwise (a restart in between, a late attach) the
    // file says. A later backend's rewrite keeps the route (seccomp rules merge over it).
    const at = this.routedAtPrepare.get(key);
    this.routedAtPrepare.delete(key);
    if (at !== undefined && Date.now() - at <= ROUTED_MEMORY_MS) return true;
    if (!bundle) return false;
    try {
      const sc = readBundleConfig(bundle).linux?.seccomp;
      return (
        sc?.listenerPath === this.listenerPath &&
        sc.listenerMetadata === key &&
        // An exec rule: the seccomp control routes its denials to the same listener.
        (sc.syscalls ?? []).some(
          (r) => r.action === 'SCMP_ACT_NOTIFY' && r.names.some((n) => (EXEC_SYSCALLS as readonly string[]).includes(n)),
        )
      );
    } catch {
      return false;
    }
  }

  set(key: string, files: AllowedFile[]): void {
    this.active.add(key);
    this.loop.setContainer(
      key,
      files.map((f) => [f.dev, f.ino, f.ctimeNs, f.interpOnly]),
      EXEC_DENY_ERRNO,
    );
  }

  /** No allow set is known for the container: let its execs on to the kernel fence rather than wait. */
  passThrough(key: string): void {
    this.active.add(key);
    this.loop.setContainer(key, [], 0);
  }

  remove(key: string): void {
    this.routedAtPrepare.delete(key);
    this.active.delete(key);
    this.loop.removeContainer(key);
  }

  /** Execs of the container refused so far, counted natively as they are answered. */
  refused(key: string): number {
    return this.loop.refused(key);
  }

  stats(): NotifyStats {
    return this.loop.stats();
  }

  /** With release (daemon stop with detach), the fd-holder lets go of everything. */
  close(opts: { release: boolean }): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.loop.close({ release: opts.release });
  }
}

function oldHolderReason(version: number): string {
  return (
    `${version === 0 ? "it sent no version (an older cgfence's)" : `below ${FD_HOLDER_VERSION}`}, so it is not known to answer denied syscalls EPERM ` +
    'while no daemon runs (the holders of cgfence before seccomp denials were notified answer every notification CONTINUE, which would run them)'
  );
}

/**
 * How a forbidden exec of this container ends: 'errno' when its execs are routed to the
 * notify loop (EACCES), 'kill' when the kernel fence alone stops them (SIGKILL, exit 137:
 * --exec-deny kill, a config the notify route could not be added to, or no notify loop),
 * null when nothing is denied (no exec fence, or not in enforce mode).
 */
export function execDenyOf(mode: string, execState: Record<string, unknown> | undefined): 'errno' | 'kill' | null {
  if (mode !== 'enforce' || !execState) return null;
  return execState.notify === 'seccomp-notify' ? 'errno' : 'kill';
}

/** The audit record of an exec the loop denied. */
export function denyRecord(e: DenyEvent, owner: { cgroupId: string | null } | undefined, wallNs: bigint): AuditInput {
  const { namespace, id } = splitNotifyKey(e.key);
  return {
    ts: wallNs,
    type: 'exec',
    action: 'deny',
    namespace,
    container_id: id,
    cgroup_id: owner?.cgroupId ?? null,
    pid: e.pid,
    ...(e.commBytes ? exactName('comm', e.commBytes) : { comm: e.comm }),
    ...(e.pathBytes ? exactName('path', e.pathBytes) : { path: e.path }),
    inode: e.ino.toString(),
    dev: formatDev(e.dev),
    syscall: e.syscall,
    errno: e.errno === EXEC_DENY_ERRNO ? EXEC_DENY_ERRNO_NAME : e.errno,
    via: 'seccomp-notify',
    mode: 'enforce',
    ...verdictFields(e),
  };
}
