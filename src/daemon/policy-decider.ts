// The node's policy decisions, apart from when and how they are applied: a container's
// annotations (with the node's profiles) parsed into a Policy, what each control will be
// for it here, what fail-closed refuses, and whether the allow-list lets its entrypoint run.
import fs from 'node:fs';
import path from 'node:path';
import { BackendName, ControlName, Controls, FenceBackend, isControl } from '../fence/backend';
import { KEYS, cgfenceAnnotations, parseAnnotations } from '../policy/annotations';
import { ResolveError, ResolvedEntry, identityOf, isUnder, resolveInRootDetailed } from '../policy/identity';
import { Policy } from '../policy/policy';
import { native } from '../native';
import { DaemonConfig } from './config';

export interface OciConfig {
  annotations?: Record<string, string>;
  root?: { path?: string };
  process?: { args?: string[]; env?: string[]; cwd?: string };
  mounts?: Array<{ destination?: string; type?: string; source?: string; options?: string[] }>;
}

/** The container paths config.json mounts something on (bind mounts, tmpfs, proc...). */
export function mountPointsOf(spec: OciConfig): string[] {
  return (spec.mounts ?? [])
    .map((m) => m.destination)
    .filter((d): d is string => typeof d === 'string' && d.startsWith('/'))
    .map((d) => path.posix.normalize(d));
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
   * Whether the allow-list lets the entrypoint run, judged in `root` (the bundle's rootfs at
   * prepare, /proc/<init>/root at attach). An entrypoint that lies under one of `mountPoints`
   * (or is searched for in a PATH directory under one) cannot be judged from the rootfs:
   * 'deferred', to be judged again at attach in the container's own mount namespace.
   */
  entrypointProblem(
    root: string,
    spec: OciConfig,
    allowed: ResolvedEntry[],
    value: string | undefined,
    mountPoints: string[] = [],
  ): string | null | 'deferred' {
    const arg0 = spec.process?.args?.[0];
    if (!arg0) return null;
    const mounted = (p: string) => mountPoints.some((m) => isUnder(p, m));
    let host: string | null = null;
    if (arg0.includes('/')) {
      const abs = arg0.startsWith('/') ? arg0 : path.posix.join(spec.process?.cwd ?? '/', arg0);
      if (mounted(abs)) return 'deferred';
      try {
        const r = resolveInRootDetailed(root, abs);
        if (mounted(r.inside)) return 'deferred';
        host = r.host;
      } catch (e) {
        if (e instanceof ResolveError && e.at !== undefined && mounted(e.at)) return 'deferred';
        host = null;
      }
    } else {
      const envPath =
        spec.process?.env?.find((e) => e.startsWith('PATH='))?.slice(5) ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
      for (const dir of envPath.split(':').filter((d) => d.startsWith('/'))) {
        const abs = path.posix.join(dir, arg0);
        // The rootfs cannot say whether a mounted PATH directory holds it.
        if (mounted(abs)) return 'deferred';
        try {
          const r = resolveInRootDetailed(root, abs);
          if (mounted(r.inside)) return 'deferred';
          if (fs.statSync(r.host).isFile()) {
            host = r.host;
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
