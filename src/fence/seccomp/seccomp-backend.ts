// The syscall control: cgfence.io/seccomp-deny and cgfence.io/seccomp-allow become rules in
// the bundle's OCI seccomp section at prepare, and runc installs the filter (libseccomp) in
// the container's init before the entrypoint runs. Nothing of it lives in the daemon: the
// filter is the kernel's and ends with the container's last process. There is no update():
// a process can only install a filter on itself (or, with TSYNC, its own threads), never on
// another process, and an installed filter can only be stacked on, never loosened or
// replaced; so a live update that touches seccomp is refused (fixedAtStart).
//
// Its decisions reach the audit log through the kernel's seccomp log (seccomp-log-records.ts):
// SCMP_ACT_LOG (audit mode) and kills are always logged; SCMP_ACT_ERRNO (enforce mode) is
// not (ERRNO_UNLOGGED).
import fs from 'node:fs';
import path from 'node:path';
import { cgroupV2Root } from '../../kernel/cgroup';
import { SeccompLogReader, actionsLogged } from '../../kernel/seccomp-audit';
import { KEYS } from '../../policy/annotations';
import { Policy } from '../../policy/policy';
import { native } from '../../native';
import { AttachContext, ControlSnapshot, ControlState, FenceBackend, FencedContainer, PrepareContext } from '../backend';
import { readBundleConfig, writeBundleConfig } from '../bundle-config';
import { EventSink } from '../event-sink';
import { SeccompLogRecords } from './seccomp-log-records';
import { OciSeccomp, RUNC_INIT_SYSCALLS, Verdict, libseccompArch, primaryArchitecture, withAllowedOnly, withDenied } from './seccomp-profile';

/**
 * Why enforce-mode denials are not in the audit log (measured on runc 1.1.5): the kernel logs
 * SCMP_ACT_ERRNO only for a filter loaded with SECCOMP_FILTER_FLAG_LOG, and runc 1.1 refuses
 * `linux.seccomp.flags` ("seccomp flags are not yet supported by runc").
 */
export const ERRNO_UNLOGGED = 'the kernel logs SCMP_ACT_ERRNO only for filters loaded with SECCOMP_FILTER_FLAG_LOG, which runc 1.1 cannot set';

const SETTLE_QUIET_MS = 50;
const SETTLE_MAX_MS = 1000;

export class SeccompBackend implements FenceBackend<'seccomp'> {
  readonly control = 'seccomp' as const;
  readonly fixedAtStart = 'a running container\'s seccomp filter cannot be added, changed or removed from outside '
    + '(runc installs it in the container\'s init before the entrypoint; the kernel lets a process filter only itself, and never loosens a filter)';

  private readonly records: SeccompLogRecords | null;
  private reader: SeccompLogReader | null = null;
  private readerError: string | null = null;

  constructor(private readonly deps: { sink?: EventSink; log?: (m: string) => void } = {}) {
    this.records = deps.sink ? new SeccompLogRecords(deps.sink) : null;
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
    const spec = readBundleConfig(ctx.bundle);
    const existing = spec.linux?.seccomp;
    this.validate(ctx, existing);
    const v: Verdict = ctx.policy.mode === 'enforce' ? 'errno' : 'log';
    let profile: OciSeccomp | undefined = existing;
    if (ctx.policy.seccompDeny?.length) profile = withDenied(profile, ctx.policy.seccompDeny, v);
    if (ctx.policy.seccompAllow !== null) profile = withAllowedOnly(profile, ctx.policy.seccompAllow, v);
    if (!profile) return;
    spec.linux = { ...(spec.linux ?? {}), seccomp: profile };
    writeBundleConfig(ctx.bundle, spec);
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
    for (const [key, names] of [[KEYS.seccompDeny, ctx.policy.seccompDeny], [KEYS.seccompAllow, ctx.policy.seccompAllow]] as const) {
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
      throw new Error(`the container's init (pid ${ctx.pid}) runs without a seccomp filter (Seccomp: ${mode ?? 'unknown'}); was config.json rewritten after prepare?`);
    }
    ctx.state.backend = 'oci-seccomp';
    ctx.state.action = ctx.policy.mode === 'enforce' ? 'SCMP_ACT_ERRNO(EPERM)' : 'SCMP_ACT_LOG';
    ctx.state.filters = filters;
    if (ctx.policy.seccompDeny) ctx.state.deny = ctx.policy.seccompDeny;
    if (ctx.policy.seccompAllow) ctx.state.allow = ctx.policy.seccompAllow;
    this.ensureReader();
    ctx.state.log = this.logState(ctx.policy);
    if (ctx.cgroupId !== null && ctx.cgroupPath) {
      // The key of the container's records (and of its kernel events: the manager indexes it).
      ctx.state.fenceId = ctx.cgroupId.toString();
      this.watch(ctx.state.fenceId, ctx.cgroupPath);
    }
  }

  /** Whether this container's decisions reach the audit log, and if not, why. */
  private logState(policy: Policy): string {
    if (!this.records) return 'off: no audit sink';
    if (!this.reader) return `off: ${this.readerError}`;
    if (policy.mode === 'enforce') return `off: ${ERRNO_UNLOGGED}`;
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
    if (st?.fenceId === undefined || !f.cgroupPath) return;
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
    this.records?.unwatch(ctx.state.fenceId);
    // With the last such container gone, so is the reader: nothing of it stays in the kernel.
    if (this.reader && this.records?.watching() === 0) {
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
      decisions: this.reader
        ? { source: 'kernel seccomp log (audit multicast group, AUDIT_SECCOMP)', actionsLogged: actionsLogged().join(' '), watching: this.records?.watching() ?? 0, unattributed: this.records?.unattributed ?? 0, ...this.reader.stats() }
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

  close(): void {
    // Filters live in the containers; only the log reader is ours.
    this.reader?.close();
  }
}
