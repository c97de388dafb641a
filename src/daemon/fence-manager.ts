// Decides and applies fences for containers: prepare (validate the bundle's annotations and
// the entrypoint), attach (fence the init's cgroup before the entrypoint runs), detach (at
// exit), late attach and cleanup (reconcile), and turns kernel events into audit records.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AuditLog } from '../audit/audit-log';
import { ExecAction, ExecEvent, formatDev } from '../kernel/abi';
import { cgroupId, cgroupV2PathOfPid, cgroupV2Root } from '../kernel/cgroup';
import { ExecFence } from '../kernel/exec-fence';
import { fenceCgroupExecs } from '../fence/cgroup-exec-fence';
import { KEYS, PolicyError, cgfenceAnnotations, parseAnnotations } from '../policy/annotations';
import { ResolvedEntry, identityOf, resolveAllowList, resolveInRoot } from '../policy/identity';
import { Policy, hasRules } from '../policy/policy';
import { native } from '../native';
import { DaemonConfig } from './config';
import { ControlState, Controls, FenceRegistry, FencedContainer } from './fence-registry';

export class Refusal extends Error {}

interface Prepared {
  namespace: string;
  id: string;
  bundle: string;
  annotations: Record<string, string>;
  policy: Policy;
  controls: Controls;
  at: number;
}

interface OciConfig {
  annotations?: Record<string, string>;
  root?: { path?: string };
  process?: { args?: string[]; env?: string[]; cwd?: string };
}

const PREPARED_TTL_MS = 10 * 60 * 1000;

export function namespaceOfRuncRoot(runcRoot: string | undefined): string {
  // The runc.v2 shim runs runc with --root <state>/runc/<namespace>.
  return runcRoot ? path.basename(runcRoot) : '';
}

export function policyHash(annotations: Record<string, string>): string {
  const canonical = JSON.stringify(Object.keys(annotations).sort().map((k) => [k, annotations[k]]));
  return `sha256:${crypto.createHash('sha256').update(canonical).digest('hex')}`;
}

export class FenceManager {
  private readonly prepared = new Map<string, Prepared>();
  /** Containers between prepare and attach: reconcile must leave them to their attach. */
  private readonly inFlight = new Set<string>();
  private readonly clockOffset: bigint;

  constructor(
    private readonly cfg: DaemonConfig,
    private readonly execFence: ExecFence,
    private readonly audit: AuditLog,
    readonly registry: FenceRegistry,
    private readonly log: (msg: string) => void,
  ) {
    // bpf_ktime_get_ns() and process.hrtime are both CLOCK_MONOTONIC.
    this.clockOffset = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  }

  parse(annotations: Record<string, string> | undefined): Policy {
    return parseAnnotations(annotations, {
      profiles: this.cfg.profiles,
      defaultProfile: this.cfg.defaultProfile,
      resolveSyscalls: (names) => native().resolveSyscalls(names),
    });
  }

  /** The effective annotations: the profile's merged under the container's own. */
  effectiveAnnotations(annotations: Record<string, string> | undefined, policy: Policy): Record<string, string> {
    const own = cgfenceAnnotations(annotations);
    const prof = policy.profile ? cgfenceAnnotations(this.cfg.profiles[policy.profile]) : {};
    return { ...prof, ...own };
  }

  controls(policy: Policy): Controls {
    const v2 = this.cfg.cgroupMode !== 'v1' && cgroupV2Root() !== null;
    const modeState = (): ControlState =>
      policy.mode === 'enforce' ? 'enforced' : policy.mode === 'audit' ? 'audited' : policy.mode === 'learn' ? 'learning' : 'none';
    const execWanted = policy.mode !== 'off' && (policy.execAllow !== null || policy.mode === 'learn');
    const netWanted = policy.mode !== 'off' && [policy.egressAllow, policy.egressDeny, policy.ingressAllow, policy.ingressDeny].some((x) => x !== null);
    const seccompWanted = policy.mode !== 'off' && (policy.seccompDeny !== null || policy.seccompAllow !== null);
    return {
      exec: !execWanted ? 'none' : v2 ? modeState()
        : `unenforceable: ${this.cfg.cgroupMode === 'v1' ? 'cgroup mode v1 was requested and' : 'no cgroup v2 hierarchy on this host;'} the tracepoint (cgroup v1) exec backend is not implemented in this version`,
      network: !netWanted ? 'none' : 'unenforceable: the network fence is not implemented in this version',
      seccomp: !seccompWanted ? 'none' : 'unenforceable: the seccomp fence is not implemented in this version',
    };
  }

  /** Refuses (fail-closed) an enforce policy whose controls cannot all be enforced. */
  private checkEnforceable(policy: Policy, controls: Controls, annotations: Record<string, string>): string[] {
    const problems: string[] = [];
    if (policy.mode !== 'enforce' || this.cfg.failMode === 'open') return problems;
    const keysFor: Record<keyof Controls, string[]> = {
      exec: [KEYS.execAllow],
      network: [KEYS.egressAllow, KEYS.egressDeny, KEYS.ingressAllow, KEYS.ingressDeny],
      seccomp: [KEYS.seccompDeny, KEYS.seccompAllow],
    };
    for (const c of ['exec', 'network', 'seccomp'] as const) {
      if (!controls[c].startsWith('unenforceable')) continue;
      const keys = keysFor[c].filter((k) => annotations[k] !== undefined).map((k) => `${k}=${JSON.stringify(annotations[k])}`);
      problems.push(`${keys.join(', ') || c}: ${controls[c].replace('unenforceable: ', '')}; refusing to start in enforce mode (fail-closed)`);
    }
    return problems;
  }

  private readBundle(bundle: string): OciConfig {
    try {
      return JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as OciConfig;
    } catch (e) {
      throw new Refusal(`cannot read ${path.join(bundle, 'config.json')}: ${(e as Error).message}`);
    }
  }

  /** Validates the bundle's policy before runc creates anything. */
  prepare(req: { id: string; bundle: string; runcRoot?: string }): { fence: boolean; controls?: Controls } {
    const namespace = namespaceOfRuncRoot(req.runcRoot);
    const key = `${namespace}/${req.id}`;
    const spec = this.readBundle(req.bundle);
    let policy: Policy;
    try {
      policy = this.parse(spec.annotations);
    } catch (e) {
      if (e instanceof PolicyError) {
        this.auditRefusal(namespace, req.id, e.problems);
        throw new Refusal(`invalid cgfence policy: ${e.problems.join('; ')}`);
      }
      throw e;
    }
    if (!hasRules(policy) && policy.mode !== 'learn') {
      this.prepared.delete(key);
      return { fence: false };
    }
    const annotations = this.effectiveAnnotations(spec.annotations, policy);
    const controls = this.controls(policy);
    const problems = this.checkEnforceable(policy, controls, annotations);

    // Resolve the allow-list and the entrypoint in the bundle's rootfs now, so that a typo
    // or a forbidden entrypoint is reported before runc creates anything.
    if (policy.execAllow !== null && policy.mode !== 'off') {
      const rootfs = path.resolve(req.bundle, spec.root?.path ?? 'rootfs');
      let resolved: ResolvedEntry[] = [];
      try {
        resolved = resolveAllowList(policy.execAllow, { dir: rootfs });
      } catch (e) {
        problems.push(`${KEYS.execAllow}=${JSON.stringify(annotations[KEYS.execAllow])}: ${(e as Error).message}`);
      }
      if (policy.mode === 'enforce') {
        const entry = this.entrypointProblem(rootfs, spec, resolved, annotations[KEYS.execAllow]);
        if (entry) problems.push(entry);
      }
    }
    if (problems.length) {
      this.auditRefusal(namespace, req.id, problems);
      throw new Refusal(problems.join('; '));
    }
    this.prepared.set(key, { namespace, id: req.id, bundle: req.bundle, annotations, policy, controls, at: Date.now() });
    this.inFlight.add(key);
    this.expirePrepared();
    return { fence: true, controls };
  }

  private entrypointProblem(rootfs: string, spec: OciConfig, allowed: ResolvedEntry[], value: string | undefined): string | null {
    const arg0 = spec.process?.args?.[0];
    if (!arg0) return null;
    let host: string | null = null;
    if (arg0.includes('/')) {
      const abs = arg0.startsWith('/') ? arg0 : path.posix.join(spec.process?.cwd ?? '/', arg0);
      try { host = resolveInRoot(rootfs, abs); } catch { host = null; }
    } else {
      const envPath = spec.process?.env?.find((e) => e.startsWith('PATH='))?.slice(5) ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
      for (const dir of envPath.split(':').filter((d) => d.startsWith('/'))) {
        try {
          const h = resolveInRoot(rootfs, path.posix.join(dir, arg0));
          if (fs.statSync(h).isFile()) { host = h; break; }
        } catch { /* not in this PATH entry */ }
      }
    }
    if (!host) return null; // runc reports a missing entrypoint itself, in its own words
    const id = identityOf(host);
    if (allowed.some((a) => a.identity.dev === id.dev && a.identity.ino === id.ino)) return null;
    return `${KEYS.execAllow}=${JSON.stringify(value ?? '')} does not allow the entrypoint ${JSON.stringify(arg0)}`;
  }

  private expirePrepared(): void {
    const now = Date.now();
    for (const [k, p] of this.prepared) {
      if (now - p.at > PREPARED_TTL_MS) {
        this.prepared.delete(k);
        this.inFlight.delete(k);
      }
    }
  }

  /** Fences the cgroup of a just-created container's init (blocked before its entrypoint). */
  attach(req: { id: string; bundle: string; runcRoot?: string; pid: number }, how: FencedContainer['how'] = 'create'): { fence: boolean; controls?: Controls; cgroup?: string } {
    const namespace = namespaceOfRuncRoot(req.runcRoot);
    const key = `${namespace}/${req.id}`;
    let prep = this.prepared.get(key);
    if (!prep) {
      // The daemon restarted between prepare and attach: decide again from the bundle.
      if (!this.prepare(req).fence) return { fence: false };
      prep = this.prepared.get(key)!;
    }
    try {
      return this.attachPrepared(prep, req.pid, how);
    } finally {
      this.prepared.delete(key);
      this.inFlight.delete(key);
    }
  }

  /**
   * Fences a container found running unfenced (the daemon was down when it started). Its
   * allow-list is resolved in the running container's root. Audited as a late attach.
   */
  lateAttach(a: { namespace: string; id: string; pid: number; annotations: Record<string, string> }): void {
    const policy = this.parse(a.annotations);
    if (!hasRules(policy) && policy.mode !== 'learn') return;
    const annotations = this.effectiveAnnotations(a.annotations, policy);
    const controls = this.controls(policy);
    this.attachPrepared({ namespace: a.namespace, id: a.id, bundle: '', annotations, policy, controls, at: Date.now() }, a.pid, 'late-attach');
  }

  private attachPrepared(prep: Prepared, pid: number, how: FencedContainer['how']) {
    const started = process.hrtime.bigint();
    const { namespace, id, policy, controls, annotations } = prep;
    const cgroupPath = cgroupV2PathOfPid(pid);
    if (controls.exec !== 'none' && !controls.exec.startsWith('unenforceable')) {
      if (!cgroupPath) throw new Refusal(`pid ${pid} of container ${id} has no cgroup v2 membership; cannot fence it`);
      let result;
      try {
        result = fenceCgroupExecs(this.execFence, {
          cgroupPath, rootPid: pid, mode: policy.mode, execAllow: policy.execAllow ?? [],
        });
      } catch (e) {
        throw new Refusal(`${KEYS.execAllow}=${JSON.stringify(annotations[KEYS.execAllow] ?? '')}: ${(e as Error).message}`);
      }
      const entry: FencedContainer = {
        namespace, id, bundle: prep.bundle, cgroupPath, cgroupId: result.fenceId.toString(), pid,
        annotations, mode: policy.mode, policyHash: policyHash(annotations), controls, backend: 'cgroup-v2',
        execAllow: result.resolved.map((r) => ({ path: r.path, dev: formatDev(r.identity.dev), ino: r.identity.ino.toString() })),
        attachedAt: new Date().toISOString(), how,
      };
      this.registry.put(entry);
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    this.audit.write({
      type: 'lifecycle', action: 'attach', namespace, container_id: id, pid,
      cgroup_id: cgroupPath ? cgroupId(cgroupPath).toString() : null,
      how, mode: policy.mode, controls, policy_hash: policyHash(annotations), cgroup: cgroupPath,
      fail_mode: this.cfg.failMode, attach_ms: Math.round(ms * 1000) / 1000,
    });
    if (how === 'late-attach') this.log(`late attach: ${namespace}/${id} was running unfenced; fenced now`);
    return { fence: true, controls, cgroup: cgroupPath ?? undefined };
  }

  private auditRefusal(namespace: string, id: string, problems: string[]): void {
    this.audit.write({ type: 'lifecycle', action: 'refuse', namespace, container_id: id, reason: problems.join('; ') });
  }

  /** Removes a container's fence (task exit or delete, or a container that is gone). */
  detach(namespace: string, id: string, reason: string): boolean {
    const entry = this.registry.get(namespace, id);
    if (!entry) return false;
    const last = this.execFence.unfence(BigInt(entry.cgroupId));
    this.registry.delete(namespace, id);
    this.audit.write({
      type: 'lifecycle', action: 'detach', namespace, container_id: id, cgroup_id: entry.cgroupId, pid: entry.pid,
      reason, denied: last ? Number(last.denied) : null, audited: last ? Number(last.audited) : null,
      allowed: last ? Number(last.allowed) : null,
    });
    return true;
  }

  isInFlight(namespace: string, id: string): boolean {
    return this.inFlight.has(`${namespace}/${id}`);
  }

  /** Kernel fences that no registry entry claims (a crash between the two writes). */
  removeOrphanFences(): number {
    let n = 0;
    const known = new Set(this.registry.all().map((f) => f.cgroupId));
    for (const f of this.execFence.fences()) {
      if (!known.has(f.fenceId.toString())) {
        this.execFence.unfence(f.fenceId);
        this.audit.write({ type: 'agent', action: 'remove-orphan-fence', cgroup_id: f.fenceId.toString() });
        n++;
      }
    }
    return n;
  }

  onExecEvents(events: ExecEvent[]): void {
    const records = events.map((e) => {
      const owner = this.registry.byCgroupId(e.fenceId);
      return {
        ts: e.tsMonoNs + this.clockOffset,
        type: 'exec' as const,
        action: e.action === ExecAction.Deny ? 'deny' : e.action === ExecAction.Audit ? 'audit' : 'allow',
        namespace: owner?.namespace ?? '',
        container_id: owner?.id ?? '',
        cgroup_id: e.cgroupId.toString(),
        pid: e.pid,
        comm: e.comm,
        path: e.path,
        inode: e.ino.toString(),
        dev: formatDev(e.dev),
        ppid: e.ppid,
        uid: e.uid,
        mode: owner?.mode ?? null,
      };
    });
    this.audit.writeBatch(records);
  }
}
