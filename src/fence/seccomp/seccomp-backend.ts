// The syscall control: cgfence.io/seccomp-deny and cgfence.io/seccomp-allow become rules in
// the bundle's OCI seccomp section at prepare, and runc installs the filter (libseccomp) in
// the container's init before the entrypoint runs. Nothing of it lives in the daemon: the
// filter is the kernel's and ends with the container's last process. There is no update():
// a process can only install a filter on itself (or, with TSYNC, its own threads), never on
// another process, and an installed filter can only be stacked on, never loosened or
// replaced; so a live update that touches seccomp is refused (fixedAtStart).
import fs from 'node:fs';
import { KEYS } from '../../policy/annotations';
import { Policy } from '../../policy/policy';
import { native } from '../../native';
import { AttachContext, ControlState, FenceBackend, PrepareContext } from '../backend';
import { readBundleConfig, writeBundleConfig } from '../bundle-config';
import { OciSeccomp, RUNC_INIT_SYSCALLS, Verdict, libseccompArch, primaryArchitecture, withAllowedOnly, withDenied } from './seccomp-profile';

export class SeccompBackend implements FenceBackend {
  readonly control = 'seccomp' as const;
  readonly fixedAtStart = 'a running container\'s seccomp filter cannot be added, changed or removed from outside '
    + '(runc installs it in the container\'s init before the entrypoint; the kernel lets a process filter only itself, and never loosens a filter)';

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
  attach(ctx: AttachContext): void {
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
  }

  detach(): void {
    // The filter belongs to the container's processes and goes with the last of them.
  }

  status(): Record<string, unknown> {
    return {
      backend: 'OCI linux.seccomp rules merged into config.json at prepare, installed by runc (libseccomp) before the entrypoint',
      runcInitSyscalls: RUNC_INIT_SYSCALLS.length,
    };
  }

  close(): void {
    // Nothing held: filters live in the containers.
  }
}
