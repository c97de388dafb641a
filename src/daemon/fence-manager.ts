// Decides and applies fences for containers: prepare (validate the bundle's annotations and
// the entrypoint before runc runs), attach (every backend, on the init's cgroup, before the
// entrypoint runs), detach (at exit), late attach and cleanup (reconcile), and turns kernel
// events into audit records. How each control is applied lives in its backend (fence/).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AuditInput } from '../audit/audit-record';
import { AuditLog } from '../audit/audit-log';
import { ExecAction, ExecEvent, formatDev } from '../kernel/abi';
import { cgroupId, cgroupV2PathOfPid } from '../kernel/cgroup';
import { AttachContext, BackendName, ControlName, ControlState, Controls, FenceBackend, isControl } from '../fence/backend';
import { KEYS, PolicyError, cgfenceAnnotations, parseAnnotations } from '../policy/annotations';
import { ResolvedEntry, identityOf, resolveAllowList, resolveInRoot } from '../policy/identity';
import { Policy, hasRules } from '../policy/policy';
import { native } from '../native';
import { DaemonConfig } from './config';
import type { Metrics } from './metrics';
import { FenceRegistry, FencedContainer } from './fence-registry';

/** A refusal the user sees (through ctr, or the CLI): one clear message, no stack. */
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
const RECENT_OWNER_MS = 10_000;
const CONTROLS: ControlName[] = ['exec', 'network', 'seccomp'];
const KEYS_OF: Record<ControlName, string[]> = {
  exec: [KEYS.execAllow],
  network: [KEYS.egressAllow, KEYS.egressDeny, KEYS.ingressAllow, KEYS.ingressDeny],
  seccomp: [KEYS.seccompDeny, KEYS.seccompAllow],
};

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
  /** Containers between prepare and attach: reconcile leaves them to their attach. */
  private readonly inFlight = new Set<string>();
  private readonly clockOffset: bigint;
  private readonly byControl = new Map<BackendName, FenceBackend>();
  metrics: Metrics | null = null;
  private readonly recent = new Map<string, { entry: FencedContainer; until: number }>();

  constructor(
    private readonly cfg: DaemonConfig,
    readonly backends: FenceBackend[],
    private readonly audit: AuditLog,
    readonly registry: FenceRegistry,
    private readonly log: (msg: string) => void,
  ) {
    for (const b of backends) this.byControl.set(b.control, b);
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
    const out = {} as Controls;
    for (const c of CONTROLS) {
      const b = this.byControl.get(c);
      const asked = policy.mode !== 'off' && (KEYS_OF[c].some((k) => (policyField(policy, k)) !== null) || (c === 'exec' && policy.mode === 'learn'));
      out[c] = b ? b.controlState(policy) : asked ? `unenforceable: the ${c === 'network' ? 'network' : c} fence is not implemented in this version` : 'none';
    }
    // Learn mode: a control its own backend has nothing to apply for is learned by another.
    for (const b of this.backends) for (const c of b.learns?.(policy) ?? []) if (out[c] === 'none') out[c] = 'learning';
    return out;
  }

  /** Fail-closed: an enforce policy whose controls cannot all be enforced is refused. */
  private unenforceable(policy: Policy, controls: Controls, annotations: Record<string, string>): string[] {
    if (policy.mode !== 'enforce' || this.cfg.failMode === 'open') return [];
    const problems: string[] = [];
    for (const c of CONTROLS) {
      if (!controls[c].startsWith('unenforceable')) continue;
      const keys = KEYS_OF[c].filter((k) => annotations[k] !== undefined).map((k) => `${k}=${JSON.stringify(annotations[k])}`);
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
    const problems = this.unenforceable(policy, controls, annotations);
    const rootfs = path.resolve(req.bundle, spec.root?.path ?? 'rootfs');

    // Resolve the allow-list and the entrypoint in the bundle's rootfs now, so that a typo
    // or a forbidden entrypoint is reported before runc creates anything.
    if (policy.execAllow !== null && policy.mode !== 'off') {
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
    if (problems.length === 0) {
      for (const b of this.backends) {
        const st = b.controlState(policy);
        if (st === 'none' || st.startsWith('unenforceable') || !b.prepare) continue;
        try {
          b.prepare({ namespace, id: req.id, bundle: req.bundle, rootfs, policy, annotations });
        } catch (e) {
          problems.push((e as Error).message);
        }
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

  /** Fences a just-created container whose init is blocked before its entrypoint. */
  attach(req: { id: string; bundle: string; runcRoot?: string; pid: number }): { fence: boolean; controls?: Controls; cgroup?: string } {
    const namespace = namespaceOfRuncRoot(req.runcRoot);
    const key = `${namespace}/${req.id}`;
    let prep = this.prepared.get(key);
    if (!prep) {
      // The daemon restarted between prepare and attach: decide again from the bundle.
      if (!this.prepare(req).fence) return { fence: false };
      prep = this.prepared.get(key)!;
    }
    try {
      return this.attachPrepared(prep, req.pid, 'create');
    } finally {
      this.prepared.delete(key);
      this.inFlight.delete(key);
    }
  }

  /**
   * Fences a container found running unfenced (the daemon was down when it started). Its
   * allow-list is resolved in the running container's root. Audited as a late attach.
   */
  lateAttach(a: { namespace: string; id: string; pid: number; annotations: Record<string, string>; bundle?: string }): void {
    const policy = this.parse(a.annotations);
    if (!hasRules(policy) && policy.mode !== 'learn') return;
    const annotations = this.effectiveAnnotations(a.annotations, policy);
    const controls = this.controls(policy);
    this.attachPrepared({ namespace: a.namespace, id: a.id, bundle: a.bundle ?? '', annotations, policy, controls, at: Date.now() }, a.pid, 'late-attach');
  }

  private attachPrepared(prep: Prepared, pid: number, how: FencedContainer['how']) {
    const started = process.hrtime.bigint();
    const { namespace, id, policy, controls, annotations } = prep;
    const cgroupPath = cgroupV2PathOfPid(pid);
    const cgid = cgroupPath ? cgroupId(cgroupPath) : null;
    const entry: FencedContainer = {
      namespace, id, bundle: prep.bundle, pid, cgroupPath, cgroupId: cgid?.toString() ?? null, eventKeys: [],
      annotations, mode: policy.mode, policyHash: policyHash(annotations), controls, backends: {},
      attachedAt: new Date().toISOString(), how,
    };
    const done: Array<[FenceBackend, AttachContext]> = [];
    for (const b of this.backends) {
      // The backend's own state: `controls` may report a control that another backend learns.
      const st = b.controlState(policy);
      if (st === 'none' || st.startsWith('unenforceable')) continue;
      const ctx: AttachContext = { namespace, id, bundle: prep.bundle, pid, cgroupPath, cgroupId: cgid, policy, annotations, state: {} };
      let decided: ControlState | void;
      try {
        decided = b.attach(ctx);
      } catch (e) {
        // All or nothing: a container is never left half-fenced.
        for (const [db, dctx] of done) { try { db.detach(dctx); } catch { /* best effort */ } }
        const keys = keysOf(b.control).filter((k) => annotations[k] !== undefined).map((k) => `${k}=${JSON.stringify(annotations[k])}`).join(', ');
        const msg = `${keys || b.control}: ${(e as Error).message}`;
        this.auditRefusal(namespace, id, [msg]);
        throw new Refusal(msg);
      }
      // A backend can learn per container what it can give (the cgroup v1 fallback cannot
      // fence a container in the host pid namespace): what it says replaces the node's guess.
      if (decided && isControl(b.control)) entry.controls = { ...entry.controls, [b.control]: decided };
      done.push([b, ctx]);
      entry.backends[b.control] = ctx.state;
      if (typeof ctx.state.fenceId === 'string' && !entry.eventKeys.includes(ctx.state.fenceId)) entry.eventKeys.push(ctx.state.fenceId);
    }
    this.registry.put(entry);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    this.metrics?.attachSeconds.observe({ how }, ms / 1000);
    this.audit.write({
      type: 'lifecycle', action: 'attach', namespace, container_id: id, pid, cgroup_id: cgid?.toString() ?? null,
      how, mode: policy.mode, controls: entry.controls, backends: backendsOf(entry.backends), policy_hash: entry.policyHash, cgroup: cgroupPath,
      fail_mode: this.cfg.failMode, attach_ms: Math.round(ms * 1000) / 1000,
    });
    if (how === 'late-attach') this.log(`late attach: ${namespace}/${id} was running unfenced; fenced now`);
    return { fence: true, controls: entry.controls, cgroup: cgroupPath ?? undefined };
  }

  private auditRefusal(namespace: string, id: string, problems: string[]): void {
    this.audit.write({ type: 'lifecycle', action: 'refuse', namespace, container_id: id, reason: problems.join('; ') });
  }

  private contextOf(f: FencedContainer, control: BackendName): AttachContext {
    return {
      namespace: f.namespace, id: f.id, bundle: f.bundle, pid: f.pid, cgroupPath: f.cgroupPath,
      cgroupId: f.cgroupId ? BigInt(f.cgroupId) : null, policy: this.parse(f.annotations), annotations: f.annotations,
      state: f.backends[control] ?? {},
    };
  }

  /** Removes a container's fences (task exit or delete, or a container that is gone). */
  detach(namespace: string, id: string, reason: string): boolean {
    const entry = this.registry.get(namespace, id);
    if (!entry) return false;
    const counters: Record<string, unknown> = {};
    for (const b of this.backends) {
      if (!entry.backends[b.control]) continue;
      try {
        Object.assign(counters, b.detach(this.contextOf(entry, b.control)) ?? {});
      } catch (e) {
        this.log(`detach ${b.control} of ${namespace}/${id}: ${(e as Error).message}`);
      }
    }
    this.registry.delete(namespace, id);
    this.rememberDetached(entry);
    this.audit.write({
      type: 'lifecycle', action: 'detach', namespace, container_id: id, cgroup_id: entry.cgroupId, pid: entry.pid,
      reason, ...counters,
    });
    return true;
  }

  /** The fenced container named by id, in `namespace` or, without one, in whichever holds it. */
  private findFenced(namespace: string | undefined, id: string): FencedContainer {
    if (namespace !== undefined) {
      const f = this.registry.get(namespace, id);
      if (!f) throw new Refusal(`no fenced container ${namespace}/${id} (a container started without cgfence.io/* annotations is not fenced)`);
      return f;
    }
    const all = this.registry.all().filter((f) => f.id === id);
    if (all.length === 0) throw new Refusal(`no fenced container ${JSON.stringify(id)} in any namespace (a container started without cgfence.io/* annotations is not fenced)`);
    if (all.length > 1) throw new Refusal(`container ${JSON.stringify(id)} is fenced in several namespaces (${all.map((f) => f.namespace).join(', ')}): name one`);
    return all[0];
  }

  /**
   * Live policy change of a running container: annotation changes (null removes a key) are
   * merged into its effective annotations and validated as at create; each control whose
   * annotations or mode changed is updated in place by its backend (map updates, nothing
   * restarts), attached if it is new, detached if it is gone. Audited with both hashes.
   */
  update(namespace: string | undefined, id: string, changes: Record<string, string | null>) {
    const entry = this.findFenced(namespace, id);
    const annotations = { ...entry.annotations };
    for (const [k, v] of Object.entries(changes)) {
      if (!k.startsWith('cgfence.io/')) throw new Refusal(`${k}: only cgfence.io/* annotations can be set`);
      if (v === null) delete annotations[k];
      else annotations[k] = v;
    }
    let policy: Policy;
    try {
      policy = this.parse(annotations);
    } catch (e) {
      if (e instanceof PolicyError) throw new Refusal(`invalid cgfence policy: ${e.problems.join('; ')}`);
      throw e;
    }
    const oldPolicy = this.parse(entry.annotations);
    const controls = this.controls(policy);
    const problems = this.unenforceable(policy, controls, annotations);
    if (problems.length) throw new Refusal(problems.join('; '));

    const sameFor = (c: BackendName) => policy.mode === oldPolicy.mode
      && keysOf(c).every((k) => JSON.stringify(policyField(policy, k)) === JSON.stringify(policyField(oldPolicy, k)));
    const base = {
      namespace: entry.namespace, id: entry.id, bundle: entry.bundle, pid: entry.pid, cgroupPath: entry.cgroupPath,
      cgroupId: entry.cgroupId ? BigInt(entry.cgroupId) : null, policy, annotations,
    };
    const backends = { ...entry.backends };
    const newControls: Controls = { ...controls };
    const undo: Array<() => void> = [];
    for (const b of this.backends) {
      const want = b.controlState(policy);
      const active = want !== 'none' && !want.startsWith('unenforceable');
      const had = entry.backends[b.control];
      if (had && active && sameFor(b.control)) {
        if (isControl(b.control)) newControls[b.control] = entry.controls[b.control];
        continue;
      }
      const keys = keysOf(b.control).filter((k) => annotations[k] !== undefined || entry.annotations[k] !== undefined)
        .map((k) => `${k}=${JSON.stringify(annotations[k] ?? null)}`).join(', ');
      try {
        if (had && active) {
          if (!b.update) throw new Error(`the ${b.control} fence of a running container cannot change (it is fixed when the container starts)`);
          const ctx: AttachContext = { ...base, state: { ...had } };
          b.update(ctx);
          backends[b.control] = ctx.state;
          undo.push(() => b.update!({ ...base, policy: oldPolicy, annotations: entry.annotations, state: { ...ctx.state } }));
        } else if (active) {
          const ctx: AttachContext = { ...base, state: {} };
          const decided = b.attach(ctx);
          if (decided && isControl(b.control)) newControls[b.control] = decided;
          backends[b.control] = ctx.state;
          undo.push(() => { b.detach(ctx); });
        } else if (had) {
          b.detach(this.contextOf(entry, b.control));
          delete backends[b.control];
          undo.push(() => { b.attach({ ...base, policy: oldPolicy, annotations: entry.annotations, state: { ...had } }); });
        }
      } catch (e) {
        // Put back what this update already changed: the container keeps its old policy.
        for (const u of undo.reverse()) { try { u(); } catch { /* best effort */ } }
        throw new Refusal(`${keys || b.control}: ${(e as Error).message}; the container keeps its previous policy`);
      }
    }

    const eventKeys = new Set(entry.eventKeys);
    for (const st of Object.values(backends)) if (typeof st?.fenceId === 'string') eventKeys.add(st.fenceId);
    const updated: FencedContainer = {
      ...entry, annotations, mode: policy.mode, policyHash: policyHash(annotations), controls: newControls, backends, eventKeys: [...eventKeys],
    };
    this.registry.put(updated);
    this.audit.write({
      type: 'lifecycle', action: 'policy-update', namespace: entry.namespace, container_id: entry.id, pid: entry.pid,
      cgroup_id: entry.cgroupId, mode: policy.mode, controls: newControls, old_policy_hash: entry.policyHash,
      new_policy_hash: updated.policyHash, policy_hash: updated.policyHash, changes,
    });
    return { namespace: entry.namespace, id: entry.id, mode: policy.mode, controls: newControls, oldPolicyHash: entry.policyHash, policyHash: updated.policyHash };
  }

  isInFlight(namespace: string, id: string): boolean {
    return this.inFlight.has(`${namespace}/${id}`);
  }

  /** Writes audit records; exposed for backends that have their own kernel events. */
  writeAudit(records: AuditInput[]): void {
    this.countDecisions(records);
    this.audit.writeBatch(records);
  }

  monoToWallNs(mono: bigint): bigint {
    return mono + this.clockOffset;
  }

  /**
   * containerd's exit event can overtake a container's last kernel events (still in the ring
   * buffer): for a short while after detach they are still attributed to their container.
   */
  private rememberDetached(entry: FencedContainer): void {
    const until = Date.now() + RECENT_OWNER_MS;
    for (const k of entry.eventKeys) this.recent.set(k, { entry, until });
    for (const [k, v] of this.recent) if (v.until < Date.now()) this.recent.delete(k);
  }

  private recentlyDetached(key: bigint): FencedContainer | undefined {
    const r = this.recent.get(key.toString());
    return r && r.until >= Date.now() ? r.entry : undefined;
  }

  private countDecisions(records: AuditInput[]): void {
    if (!this.metrics) return;
    for (const r of records) if (r.type === 'exec' || r.type === 'net' || r.type === 'seccomp') this.metrics.decision(r.type, r.action);
  }

  onExecEvents(events: ExecEvent[]): void {
    this.writeAudit(events.map((e) => {
      const owner = this.registry.byEvent(e.fenceId) ?? this.recentlyDetached(e.fenceId);
      return {
        ts: this.monoToWallNs(e.tsMonoNs),
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
        // Refused inside the kernel by the BPF LSM program: the caller got EACCES.
        ...(e.via === 'lsm' && e.action === ExecAction.Deny ? { errno: 'EACCES', via: 'bpf-lsm' } : {}),
        // Not an exec: an open for writing the BPF LSM judged (path is then the file's last name component).
        ...(e.op !== 'exec' ? { op: e.op } : {}),
      };
    }));
  }
}

/** Which backend (and kernel hook, where a control has a choice) serves each control of a container. */
function backendsOf(states: Partial<Record<BackendName, Record<string, unknown>>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [c, st] of Object.entries(states)) {
    if (typeof st?.backend !== 'string') continue;
    out[c] = typeof st.hook === 'string' ? `${st.backend}, ${st.hook}` : st.backend;
  }
  return out;
}

/** The annotations of a backend's control (none for a backend that is no control, like learn). */
function keysOf(b: BackendName): string[] {
  return isControl(b) ? KEYS_OF[b] : [];
}

function policyField(p: Policy, key: string): unknown {
  switch (key) {
    case KEYS.execAllow: return p.execAllow;
    case KEYS.egressAllow: return p.egressAllow;
    case KEYS.egressDeny: return p.egressDeny;
    case KEYS.ingressAllow: return p.ingressAllow;
    case KEYS.ingressDeny: return p.ingressDeny;
    case KEYS.seccompDeny: return p.seccompDeny;
    case KEYS.seccompAllow: return p.seccompAllow;
    default: return null;
  }
}
