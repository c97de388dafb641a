// The node's policy decisions, apart from when and how they are applied: a container's
// annotations (with the node's profiles) parsed into a Policy, what each control will be
// for it here, what fail-closed refuses, and whether the allow-list lets its entrypoint run.
import fs from 'node:fs';
import path from 'node:path';
import { BackendName, ControlName, Controls, FenceBackend, isControl } from '../fence/backend';
import { KEYS, cgfenceAnnotations, parseAnnotations } from '../policy/annotations';
import { ResolvedEntry, identityOf, resolveInRoot } from '../policy/identity';
import { Policy } from '../policy/policy';
import { native } from '../native';
import { DaemonConfig } from './config';

export interface OciConfig {
  annotations?: Record<string, string>;
  root?: { path?: string };
  process?: { args?: string[]; env?: string[]; cwd?: string };
}

const CONTROLS: ControlName[] = ['exec', 'network', 'seccomp'];
export const KEYS_OF: Record<ControlName, string[]> = {
  exec: [KEYS.execAllow],
  network: [KEYS.egressAllow, KEYS.egressDeny, KEYS.ingressAllow, KEYS.ingressDeny],
  seccomp: [KEYS.seccompDeny, KEYS.seccompAllow],
};

/**
 * Parses a container's annotations with a config's profiles (no backend needed). The
 * profiles are read at each call, so a reloaded config applies to the next container.
 */
export function policyParser(
  cfg: Pick<DaemonConfig, 'profiles' | 'defaultProfile'>,
): (annotations: Record<string, string> | undefined) => Policy {
  return (annotations) =>
    parseAnnotations(annotations, {
      profiles: cfg.profiles,
      defaultProfile: cfg.defaultProfile,
      resolveSyscalls: (names) => native().resolveSyscalls(names),
    });
}

export class PolicyDecider {
  readonly parse: (annotations: Record<string, string> | undefined) => Policy;

  private readonly byControl = new Map<BackendName, FenceBackend>();

  constructor(
    private readonly cfg: DaemonConfig,
    private readonly backends: FenceBackend[],
  ) {
    for (const b of backends) this.byControl.set(b.control, b);
    this.parse = policyParser(cfg);
  }

  /** The effective annotations: the profile's merged under the container's own. */
  effectiveAnnotations(annotations: Record<string, string> | undefined, policy: Policy): Record<string, string> {
    const own = cgfenceAnnotations(annotations);
    const prof = policy.profile ? cgfenceAnnotations(this.cfg.profiles[policy.profile]) : {};
    return { ...prof, ...own };
  }

  controls(policy: Policy): Controls {
    const out = {} as Controls;
    for (const c of CONTROLS) {
      const b = this.byControl.get(c);
      const asked =
        policy.mode !== 'off' && (KEYS_OF[c].some((k) => policyField(policy, k) !== null) || (c === 'exec' && policy.mode === 'learn'));
      out[c] = b
        ? b.controlState(policy)
        : asked
          ? `unenforceable: the ${c === 'network' ? 'network' : c} fence is not implemented in this version`
          : 'none';
    }
    // Learn mode: a control its own backend has nothing to apply for is learned by another.
    for (const b of this.backends) for (const c of b.learns?.(policy) ?? []) if (out[c] === 'none') out[c] = 'learning';
    return out;
  }

  /** Fail-closed: an enforce policy whose controls cannot all be enforced is refused. */
  unenforceable(policy: Policy, controls: Controls, annotations: Record<string, string>): string[] {
    if (policy.mode !== 'enforce' || this.cfg.failMode === 'open') return [];
    const problems: string[] = [];
    for (const c of CONTROLS) {
      if (!controls[c].startsWith('unenforceable')) continue;
      const keys = KEYS_OF[c].filter((k) => annotations[k] !== undefined).map((k) => `${k}=${JSON.stringify(annotations[k])}`);
      problems.push(
        `${keys.join(', ') || c}: ${controls[c].replace('unenforceable: ', '')}; refusing to start in enforce mode (fail-closed)`,
      );
    }
    return problems;
  }

  /**
   * Whether the allow-list lets the entrypoint run, judged in `root` (/proc/<init>/root at
   * attach: the container's own view, its mounts included); null when it does, or when there
   * is no entrypoint to find (runc reports that itself).
   */
  entrypointProblem(root: string, spec: OciConfig, allowed: ResolvedEntry[], value: string | undefined): string | null {
    const arg0 = spec.process?.args?.[0];
    if (!arg0) return null;
    let host: string | null = null;
    if (arg0.includes('/')) {
      const abs = arg0.startsWith('/') ? arg0 : path.posix.join(spec.process?.cwd ?? '/', arg0);
      try {
        host = resolveInRoot(root, abs);
      } catch {
        host = null;
      }
    } else {
      const envPath =
        spec.process?.env?.find((e) => e.startsWith('PATH='))?.slice(5) ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
      for (const dir of envPath.split(':').filter((d) => d.startsWith('/'))) {
        try {
          const found = resolveInRoot(root, path.posix.join(dir, arg0));
          if (fs.statSync(found).isFile()) {
            host = found;
            break;
          }
        } catch {
          /* not in this PATH entry */
        }
      }
    }
    if (!host) return null; // runc reports a missing entrypoint itself, in its own words
    const id = identityOf(host);
    if (allowed.some((a) => a.identity.dev === id.dev && a.identity.ino === id.ino)) return null;
    return `${KEYS.execAllow}=${JSON.stringify(value ?? '')} does not allow the entrypoint ${JSON.stringify(arg0)}`;
  }
}

/** The annotations of a backend's control (none for a backend that is no control, like learn). */
export function keysOf(b: BackendName): string[] {
  return isControl(b) ? KEYS_OF[b] : [];
}

export function policyField(p: Policy, key: string): unknown {
  switch (key) {
    case KEYS.execAllow:
      return p.execAllow;
    case KEYS.egressAllow:
      return p.egressAllow;
    case KEYS.egressDeny:
      return p.egressDeny;
    case KEYS.ingressAllow:
      return p.ingressAllow;
    case KEYS.ingressDeny:
      return p.ingressDeny;
    case KEYS.seccompDeny:
      return p.seccompDeny;
    case KEYS.seccompAllow:
      return p.seccompAllow;
    default:
      return null;
  }
}
