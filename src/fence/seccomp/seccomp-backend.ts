// The syscall control: cgfence.io/seccomp-deny and cgfence.io/seccomp-allow become rules in
// the bundle's OCI seccomp section at prepare, and runc installs the filter (libseccomp) in
// the container's init before the entrypoint runs. Nothing of it lives in the daemon: the
// filter is the kernel's and ends with the container's last process. There is no update():
// a process can only install a filter on itself (or, with TSYNC, its own threads), never on
// another process, and an installed filter can only be stacked on, never loosened or
// replaced; so a live update that touches seccomp is refused (fixedAtStart).
//
// Its decisions reach the audit log two ways (seccomp-log-records.ts). Audit mode
// (SCMP_ACT_LOG) and the profile's kills: the kernel's seccomp log. Enforce mode: the denied
// names are SCMP_ACT_NOTIFY to the exec control's notify listener (the fd-holder), whose
// native loop answers them EPERM on its own thread and counts them for us; the fd-holder
// answers EPERM while no daemon runs. The kernel would not log SCMP_ACT_ERRNO (ERRNO_UNLOGGED),
// so where that route is not available (no notify loop: BPF-LSM exec backend, --exec-deny
// kill, or it did not start; a profile with another agent) denials stay SCMP_ACT_ERRNO:
// enforced, not recorded, and the attach state's `log` says so.
import fs from 'node:fs';
import path from 'node:path';
import { cgroupV2Root } from '../../kernel/cgroup';
import { SeccompLogReader, actionsLogged, archName } from '../../kernel/seccomp-audit';
import { KEYS } from '../../policy/annotations';
import { Policy } from '../../policy/policy';
import { native } from '../../native';
import { AttachContext, ControlSnapshot, ControlState, FenceBackend, FencedContainer, PrepareContext } from '../backend';
import { readBundleConfig } from '../bundle-config';
import { EventSink } from '../event-sink';
import { ExecNotifier, SeccompDenials, notifyKey } from '../exec/exec-notify';
import { SeccompLogRecords } from './seccomp-log-records';
import {
  DenyListener,
  OciSeccomp,
  RUNC_INIT_SYSCALLS,
  Verdict,
  denyRouteRefusal,
  libseccompArch,
  notifiable,
  primaryArchitecture,
  withAllowedOnly,
  withDenied,
} from './seccomp-profile';

/**
 * Why enforce-mode denials are not in the audit log (measured on runc 1.1.5): the kernel logs
 * SCMP_ACT_ERRNO only for a filter loaded with SECCOMP_FILTER_FLAG_LOG, and runc 1.1 refuses
 * `linux.seccomp.flags` ("seccomp flags are not yet supported by runc").
 */
export const ERRNO_UNLOGGED =
  'the kernel logs SCMP_ACT_ERRNO only for filters loaded with SECCOMP_FILTER_FLAG_LOG, which runc 1.1 cannot set';

/** The highest syscall number looked up when naming every syscall of an architecture. */
const MAX_SYSCALL_NR = 1024;

const SETTLE_QUIET_MS = 50;
const SETTLE_MAX_MS = 1000;

export class SeccompBackend implements FenceBackend<'seccomp'> {
  readonly control = 'seccomp' as const;
  readonly fixedAtStart =
    "a running container's seccomp filter cannot be added, changed or removed from outside " +
    "(runc installs it in the container's init before the entrypoint; the kernel lets a process filter only itself, and never loosens a filter)";

  private readonly records: SeccompLogRecords | null;
  private reader: SeccompLogReader | null = null;
  private readerError: string | null = null;

  /** Containers whose denials are routed to the notify loop: key (namespace/id) -> fence id. */
  private readonly routed = new Map<string, string>();
  private readonly allNames = new Map<string, string[]>();

  private notifierValue: ExecNotifier | null = null;
  /** The notifier is this backend's own (openNotifier), to close with it. */
  private ownsNotifier = false;
  private notifierError: string | null = null;

  /**
   * notifier: the exec control's notify loop and fd-holder, which also answer this control's
   * enforce-mode denials. openNotifier: where the exec control has none, opens one for the
   * denials alone, the first time a container needs it. With neither (or if it cannot open)
   * denials stay SCMP_ACT_ERRNO: enforced, not recorded.
   */
  constructor(
    private readonly deps: {
      sink?: EventSink;
      log?: (m: string) => void;
      notifier?: ExecNotifier | null;
      openNotifier?: () => ExecNotifier;
    } = {},
  ) {
    this.records = deps.sink ? new SeccompLogRecords(deps.sink) : null;
    if (deps.notifier) this.useNotifier(deps.notifier);
  }

  private useNotifier(n: ExecNotifier): void {
    this.notifierValue = n;
    n.onSeccompDenials((evs) => this.onDenials(evs));
  }

  /** The notify loop for denials, opened on first need when it is ours to open. */
  private notifier(): ExecNotifier | null {
    if (this.notifierValue || this.notifierError || !this.deps.openNotifier) return this.notifierValue;
    try {
      this.useNotifier(this.deps.openNotifier());
      this.ownsNotifier = true;
    } catch (e) {
      this.notifierError = (e as Error).message;
      this.deps.log?.(`seccomp denials will be enforced but not recorded: the seccomp notify loop did not start: ${this.notifierError}`);
    }
    return this.notifierValue;
  }

  /** Every syscall name libseccomp knows for the architecture (seccomp-allow's notified set). */
  private namesOf(arch: string): string[] {
    let names = this.allNames.get(arch);
    if (!names) {
      const nrs = Array.from({ length: MAX_SYSCALL_NR }, (_, i) => i);
      names = [
        ...new Set(
          native()
            .syscallNames(nrs, arch)
            .filter((n): n is string => n !== null),
        ),
      ];
      this.allNames.set(arch, names);
    }
    return names;
  }

  private onDenials(evs: SeccompDenials[]): void {
    for (const e of evs) {
      const fenceId = this.routed.get(e.key);
      if (!fenceId || !this.records) {
        if (this.records) this.records.unattributed += e.count;
        continue;
      }
      this.records.onNotified({
        fenceId,
        arch: e.arch ? archName(e.arch) : '',
        syscall: e.nr,
        count: e.count,
        pid: e.pid,
        comm: e.comm,
        byHolder: e.byHolder,
        firstMs: Number(this.deps.sink!.toWallNs(e.firstMonoNs) / 1_000_000n),
        lastMs: Number(this.deps.sink!.toWallNs(e.tsMonoNs) / 1_000_000n),
      });
    }
  }

  /** The listener enforce-mode denials of this container go to, or why there is none. */
  private listenerFor(ctx: { namespace: string; id: string }, existing: OciSeccomp | undefined): DenyListener | string {
    const n = this.notifier();
    if (!n) return `no seccomp notify loop runs${this.notifierError ? ` (${this.notifierError})` : ''}`;
    return (
      n.denialRouteProblem() ??
      denyRouteRefusal(existing, n.listenerPath) ?? { path: n.listenerPath, metadata: notifyKey(ctx.namespace, ctx.id) }
    );
  }

  /**
   * The kernel log reader runs while some container has seccomp rules: otherwise the node pays
   * nothing for it (its exit program runs at every process exit).
   */
  private ensureReader(): void {
    const records = this.records;
    if (this.reader || this.readerError || !records) return;
    try {
      this.reader = new SeccompLogReader((recs) => records.onRecords(recs));
    } catch (e) {
      this.readerError = (e as Error).message;
      this.deps.log?.(`seccomp decisions will not reach the audit log: ${this.readerError}`);
    }
  }

  controlState(policy: Policy): ControlState {
    if (policy.mode === 'off' || (policy.seccompDeny === null && policy.seccompAllow === null)) return 'none';
    // audit and learn both get SCMP_ACT_LOG: the kernel logs, nothing is blocked.
    return policy.mode === 'enforce' ? 'enforced' : 'audited';
  }

  prepare(ctx: PrepareContext): void {
    const spec = ctx.spec;
    const existing = spec.linux?.seccomp;
    this.validate(ctx, existing);
    const v: Verdict = ctx.policy.mode === 'enforce' ? 'errno' : 'log';
    const rules = !!ctx.policy.seccompDeny?.length || ctx.policy.seccompAllow !== null;
    const l = v === 'errno' && rules ? this.listenerFor(ctx, existing) : undefined;
    const listener = typeof l === 'object' ? l : undefined;
    if (typeof l === 'string') this.deps.log?.(`${ctx.namespace}/${ctx.id}: seccomp denials enforced (EPERM) but not recorded: ${l}`);
    let profile: OciSeccomp | undefined = existing;
    if (ctx.policy.seccompDeny?.length) profile = withDenied(profile, ctx.policy.seccompDeny, v, listener);
    if (ctx.policy.seccompAllow !== null) {
      const route = listener ? { listener, allNames: this.namesOf(libseccompArch(primaryArchitecture(existing))) } : undefined;
      profile = withAllowedOnly(profile, ctx.policy.seccompAllow, v, route);
    }
    if (!profile) return;
    spec.linux = { ...(spec.linux ?? {}), seccomp: profile };
    ctx.specChanged();
  }

  /**
   * The annotations were checked against this node's architecture when parsed; a container
   * whose profile names another primary architecture is checked against that one too.
   */
  private validate(ctx: PrepareContext, existing: OciSeccomp | undefined): void {
    let arch: string;
    try {
      arch = libseccompArch(primaryArchitecture(existing));
    } catch (e) {
      throw new Error(`the container's seccomp profile: ${(e as Error).message}`);
    }
    const problems: string[] = [];
    for (const [key, names] of [
      [KEYS.seccompDeny, ctx.policy.seccompDeny],
      [KEYS.seccompAllow, ctx.policy.seccompAllow],
    ] as const) {
      if (!names?.length) continue;
      let nrs: Array<number | null>;
      try {
        nrs = native().resolveSyscalls([...names], arch);
      } catch (e) {
        throw new Error(`${key}: ${(e as Error).message} (from the container's seccomp profile)`);
      }
      // libseccomp gives a negative pseudo-number to a name that exists on other architectures only.
      names.forEach((n, i) => {
        const nr = nrs[i];
        if (nr === null || nr < 0) problems.push(`${key}: unknown syscall ${JSON.stringify(n)} for the container's architecture ${arch}`);
      });
    }
    if (problems.length) throw new Error(problems.join('; '));
  }

  /** runc installed the filter before create returned: a container without one is refused. */
  attach(ctx: AttachContext<'seccomp'>): void {
    let status: string;
    try {
      status = fs.readFileSync(`/proc/${ctx.pid}/status`, 'utf8');
    } catch (e) {
      throw new Error(`cannot read /proc/${ctx.pid}/status to check the seccomp filter: ${(e as Error).message}`);
    }
    const mode = /^Seccomp:\s+(\d+)/m.exec(status)?.[1];
    const filters = Number(/^Seccomp_filters:\s+(\d+)/m.exec(status)?.[1] ?? '0');
    if (mode !== '2') {
      throw new Error(
        `the container's init (pid ${ctx.pid}) runs without a seccomp filter (Seccomp: ${mode ?? 'unknown'}); was config.json rewritten after prepare?`,
      );
    }
    const enforce = ctx.policy.mode === 'enforce';
    const notify = enforce && this.routedToLoop(ctx);
    // backend (ps) and hook (the attach record's `backends`) say whether decisions are recorded.
    ctx.state.backend = enforce && !notify ? 'oci-seccomp (denials enforced, not recorded)' : 'oci-seccomp';
    // The kernel log's records are attributed by cgroup v2 path: without one they name no container.
    const logged = ctx.cgroupPath ? 'kernel seccomp log' : 'kernel seccomp log, not attributed (no cgroup v2)';
    ctx.state.hook = !enforce ? logged : notify ? 'seccomp notify, recorded' : 'SCMP_ACT_ERRNO, no notify route';
    ctx.state.action = ctx.policy.mode !== 'enforce' ? 'SCMP_ACT_LOG' : notify ? 'SCMP_ACT_NOTIFY(EPERM)' : 'SCMP_ACT_ERRNO(EPERM)';
    ctx.state.filters = filters;
    if (ctx.policy.seccompDeny) ctx.state.deny = ctx.policy.seccompDeny;
    if (ctx.policy.seccompAllow) ctx.state.allow = ctx.policy.seccompAllow;
    this.ensureReader();
    ctx.state.log = this.logState(ctx.policy, notify, ctx);
    // The key of the container's records (and of its kernel events: the manager indexes it):
    // its cgroup v2 id. Without cgroup v2 the kernel log cannot be attributed, but the notify
    // loop's denials come keyed by container, so they are recorded under that key instead.
    const fenceId = ctx.cgroupId !== null ? ctx.cgroupId.toString() : notify ? notifyKey(ctx.namespace, ctx.id) : null;
    if (fenceId !== null) {
      ctx.state.fenceId = fenceId;
      if (ctx.cgroupPath) this.watch(fenceId, ctx.cgroupPath);
      if (notify) this.routeDenials(ctx.namespace, ctx.id, fenceId);
    }
  }

  /** True when the bundle runc started sends this container's denials to our listener. */
  private routedToLoop(ctx: { namespace: string; id: string; bundle: string }): boolean {
    const n = this.notifierValue;
    if (!n || !ctx.bundle) return false;
    try {
      const sc = readBundleConfig(ctx.bundle).linux?.seccomp;
      return (
        sc?.listenerPath === n.listenerPath &&
        sc.listenerMetadata === notifyKey(ctx.namespace, ctx.id) &&
        (sc.syscalls ?? []).some((r) => r.action === 'SCMP_ACT_NOTIFY' && r.names.some(notifiable))
      );
    } catch {
      return false;
    }
  }

  /** The loop answers the container's denials from now on (its fds wait for nothing). */
  private routeDenials(namespace: string, id: string, fenceId: string): void {
    const key = notifyKey(namespace, id);
    this.routed.set(key, fenceId);
    this.records?.watchFence(fenceId);
    this.notifierValue!.ensureActive(key);
  }

  /** Whether this container's decisions reach the audit log, and if not, why. */
  private logState(policy: Policy, notify: boolean, ctx: { namespace: string; id: string; cgroupPath: string | null }): string {
    if (!this.records) return 'off: no audit sink';
    if (policy.mode === 'enforce') {
      if (notify)
        return "seccomp notify: denials answered EPERM by the daemon's notify loop (by the fd-holder, unrecorded, while no daemon runs)";
      const why = this.notifierValue
        ? (this.notifierValue.denialRouteProblem() ??
          "the container's seccomp profile has another listener, or config.json was not routed at prepare")
        : (this.listenerFor(ctx, undefined) as string);
      return `off: denials enforced (EPERM), not recorded: ${why}; ${ERRNO_UNLOGGED}`;
    }
    if (!this.reader) return `off: ${this.readerError}`;
    if (!ctx.cgroupPath || !cgroupV2Root())
      return 'off: the kernel seccomp log is attributed by cgroup v2 path, and this container has no cgroup v2';
    if (!actionsLogged().includes('log')) return 'off: "log" is not in /proc/sys/kernel/seccomp/actions_logged';
    return 'kernel seccomp log';
  }

  private watch(fenceId: string, cgroupPath: string): void {
    const root = cgroupV2Root();
    if (!this.records || !root) return;
    this.records.watch(fenceId, `/${path.relative(root, cgroupPath)}`);
  }

  /**
   * Waits until the kernel's log has gone quiet (nothing received for SETTLE_QUIET_MS, at most
   * SETTLE_MAX_MS): called between a container's exit and its detach, so that the decisions the
   * kernel still had queued (kauditd hands them over in batches, later under load) are written
   * before the detach record rather than lost.
   */
  async settle(f?: FencedContainer): Promise<void> {
    if (!this.reader || (f && !f.backends.seccomp)) return;
    const end = Date.now() + SETTLE_MAX_MS;
    let last = this.reader.stats().received;
    while (Date.now() < end) {
      await new Promise((r) => setTimeout(r, SETTLE_QUIET_MS));
      const now = this.reader.stats().received;
      if (now === last) return;
      last = now;
    }
  }

  /** A container fenced by an earlier daemon: its records are attributed again. */
  adopt(f: FencedContainer): void {
    const st = f.backends.seccomp;
    if (st?.fenceId === undefined) return;
    // Its notify fds come back from the fd-holder; the loop asks for them ('need') and the
    // exec control lets them through; the denials are ours to record again.
    if (st.action === 'SCMP_ACT_NOTIFY(EPERM)' && this.notifier()) {
      this.routed.set(notifyKey(f.namespace, f.id), st.fenceId);
      this.records?.watchFence(st.fenceId);
    }
    if (!f.cgroupPath) return;
    this.ensureReader();
    this.watch(st.fenceId, f.cgroupPath);
  }

  /** The filter belongs to the container's processes and goes with the last of them; what
   * the log still counted for it is written now, before the detach record. */
  detach(ctx: AttachContext<'seccomp'>): void {
    if (typeof ctx.state.fenceId !== 'string') return;
    // The kernel logged the container's last decisions long before containerd said it exited;
    // take them from the reader now, so they are written before the detach record.
    this.reader?.drain();
    const key = notifyKey(ctx.namespace, ctx.id);
    if (this.routed.has(key)) {
      // Likewise what the notify loop counted and has not handed over yet (exact: the
      // container's processes are gone, every denial of theirs was answered and counted).
      this.onDenials(this.notifierValue!.takeSeccompDenials());
      this.routed.delete(key);
      this.notifierValue!.remove(key);
    }
    this.records?.unwatch(ctx.state.fenceId);
    // With the last such container gone, so is the reader: nothing of it stays in the kernel.
    if (this.reader && this.records?.watchingCgroups() === 0) {
      this.reader.close();
      this.reader = null;
    }
  }

  /** The filter is the container's; the kernel counts nothing per container for it. */
  snapshot(f: FencedContainer): ControlSnapshot | null {
    const st = f.backends.seccomp;
    return st ? { backend: st.backend ?? this.control, ps: {}, decisions: null } : null;
  }

  status(): Record<string, unknown> {
    return {
      backend: 'OCI linux.seccomp rules merged into config.json at prepare, installed by runc (libseccomp) before the entrypoint',
      runcInitSyscalls: RUNC_INIT_SYSCALLS.length,
      enforceDenials: this.notifierValue
        ? {
            source: 'seccomp notify (EPERM answered by the native loop)',
            routed: this.routed.size,
            answered: this.notifierValue.stats().seccompDenied,
            ownLoop: this.ownsNotifier,
            fdHolder: this.notifierValue.holderStatus(),
          }
        : {
            source: 'none yet: SCMP_ACT_ERRNO, not recorded, until a notify loop runs',
            routed: 0,
            error: this.notifierError ?? (this.deps.openNotifier ? 'opened when a container first needs it' : 'no seccomp notify loop'),
          },
      decisions: this.reader
        ? {
            source: 'kernel seccomp log (audit multicast group, AUDIT_SECCOMP)',
            actionsLogged: actionsLogged().join(' '),
            watching: this.records?.watching() ?? 0,
            unattributed: this.records?.unattributed ?? 0,
            ...this.reader.stats(),
          }
        : { source: 'none', error: this.readerError ?? (this.records ? 'not running: no container has seccomp rules' : 'no audit sink') },
    };
  }

  /** The attribution program and its map (a write there would misattribute decisions). */
  protectedMapIds(): number[] {
    return this.reader?.objectIds().maps ?? [];
  }

  protectedProgramIds(): number[] {
    return this.reader ? [this.reader.objectIds().program] : [];
  }

  close(opts: { detach: boolean } = { detach: false }): void {
    // Filters live in the containers; only the log reader is ours, and a notify loop we opened
    // (its fd-holder keeps answering EPERM unless the daemon detaches everything).
    this.reader?.close();
    if (this.ownsNotifier) this.notifierValue?.close({ release: opts.detach });
  }
}
