// The lifecycle transactions of fencing a container: prepare (validate the bundle's
// annotations before runc runs), attach (every backend, on the init's cgroup, and the
// entrypoint against the allow-list, before the entrypoint runs; all or nothing), detach
// (at exit), late attach and live policy updates. What the policy means is PolicyDecider's;
// how each control is applied is its backend's (fence/); kernel events go through the
// EventSink.
import crypto from 'node:crypto';
import { AllowedFile } from '../kernel/abi';
import fs from 'node:fs';
import path from 'node:path';
import { AuditInput, nowNs } from '../audit/audit-record';
import { AuditLog } from '../audit/audit-log';
import { cgroupId, cgroupV2PathOfPid } from '../kernel/cgroup';
import { AttachContext, BackendName, ControlState, Controls, FenceBackend, Workload, containerKey, isControl } from '../fence/backend';
import { setBackendState } from '../fence/backend-states';
import { workloadFromAnnotations } from '../containerd/workload';
import { LookupError, findContainer } from './container-lookup';
import { KEYS, PolicyError } from '../policy/annotations';
import { Policy, emptyPolicy, hasRules } from '../policy/policy';
import { execDenyOf } from '../fence/exec/exec-notify';
import { DaemonConfig } from './config';
import type { Metrics } from './metrics';
import { FenceRegistry, FencedContainer } from './fence-registry';
import { OciSpec, writeBundleConfig } from '../fence/bundle-config';
import { OciConfig, PolicyDecider, keysOf, policyField } from './policy-decider';

/** A refusal the user sees (through ctr, or the CLI): one clear message, no stack. */
export class Refusal extends Error {}

interface Prepared {
  namespace: string;
  id: string;
  bundle: string;
  /** How long prepare took, ms (in the attach record beside attach_ms). */
  prepareMs?: number;
  annotations: Record<string, string>;
  policy: Policy;
  controls: Controls;
  at: number;
  /** The config whose entrypoint attach judges against the allow-list (enforce mode with one). */
  entrypoint?: OciConfig;
  /** A promise while containerd has not yet answered prepare's lookup (attach waits for it). */
  workload: WorkloadSource;
  /**
   * Set when the attach began before runc create returned (attachOnHandOff): the init pid it
   * used, and its outcome, which the launcher's attach request then answers with.
   */
  early?: { pid: number; result: Promise<AttachReply> };
  /** Where the early attach's outcome goes unasked (the launcher's connection), if anywhere. */
  push?: (pid: number, result: Promise<AttachReply>) => void;
}

type AttachReply = { fence: boolean; controls?: Controls; cgroup?: string };

/**
 * Who a container is, for its records: known, or still being asked of containerd. The lookup
 * is a gRPC round trip (2–6 ms here), which prepare does not wait for: only a refusal's
 * record and the attach need the answer, and by attach (after runc create) it is long in.
 * The promise never rejects (a failed lookup is null).
 */
export type WorkloadSource = Workload | null | Promise<Workload | null>;

const PREPARED_TTL_MS = 10 * 60 * 1000;
/** The longest a detach record waits for a backend's last records of the container. */
const LAST_RECORDS_MAX_MS = 5000;

export function namespaceOfRuncRoot(runcRoot: string | undefined): string {
  // The runc.v2 shim runs runc with --root <state>/runc/<namespace>.
  return runcRoot ? path.basename(runcRoot) : '';
}

/** An allow entry as the exec backend's state keeps it ({ dev: "MAJ:MIN", ino, ctime_ns, loader_of }). */
function parseIdentity(a: { dev: string; ino: string; ctime_ns?: string; loader_of?: unknown }): AllowedFile {
  const [maj, min] = a.dev.split(':').map((x) => BigInt(x));
  return { dev: (maj << 20n) | min, ino: BigInt(a.ino), ctimeNs: BigInt(a.ctime_ns ?? '0'), interpOnly: a.loader_of !== undefined };
}

export function policyHash(annotations: Record<string, string>): string {
  const canonical = JSON.stringify(
    Object.keys(annotations)
      .sort()
      .map((k) => [k, annotations[k]]),
  );
  return `sha256:${crypto.hash('sha256', canonical, 'hex')}`;
}

export class FenceManager {
  private deferred: AuditInput[] = [];
  /** Refusal records waiting for containerd's answer to a workload lookup. */
  private readonly owedRefusals = new Set<Promise<void>>();
  private readonly prepared = new Map<string, Prepared>();
  private readonly owedDetaches = new Set<Promise<void>>();
  /** Set once metrics are served: attach times are observed from then on. */
  metrics: Metrics | null = null;

  constructor(
    private readonly cfg: DaemonConfig,
    readonly backends: FenceBackend[],
    readonly policy: PolicyDecider,
    private readonly audit: AuditLog,
    readonly registry: FenceRegistry,
    private readonly log: (msg: string) => void,
  ) {}

  private readBundle(bundle: string): OciSpec {
    try {
      return JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as OciSpec;
    } catch (e) {
      throw new Refusal(`cannot read ${path.join(bundle, 'config.json')}: ${(e as Error).message}`);
    }
  }

  /** Validates the bundle's policy before runc creates anything. */
  prepare(req: { id: string; bundle: string; runcRoot?: string; workload?: WorkloadSource; spec?: OciSpec | null }): {
    fence: boolean;
    controls?: Controls;
    /** runc will hand the init over with the seccomp listener: the attach begins there. */
    handOff?: boolean;
  } {
    const started = process.hrtime.bigint();
    const namespace = namespaceOfRuncRoot(req.runcRoot);
    const key = containerKey(namespace, req.id);
    // As the preflight read it (and perhaps gave it a profile), else read here.
    const read: OciSpec = req.spec ?? this.readBundle(req.bundle);
    const spec = read as OciConfig; // the fields prepare reads
    // containerd's labels when the daemon could ask for them, else the CRI's own annotations.
    const workload = orAnnotations(req.workload, spec);
    let policy: Policy;
    try {
      policy = this.policy.parse(spec.annotations);
    } catch (e) {
      if (e instanceof PolicyError) {
        this.auditRefusal(namespace, req.id, e.problems, workload);
        throw new Refusal(`invalid cgfence policy: ${e.problems.join('; ')}`);
      }
      throw e;
    }
    if (!hasRules(policy) && policy.mode !== 'learn') {
      this.prepared.delete(key);
      return { fence: false };
    }
    const annotations = this.policy.effectiveAnnotations(spec.annotations, policy);
    const controls = this.policy.controls(policy);
    const problems = this.policy.unenforceable(policy, controls, annotations);
    const rootfs = path.resolve(req.bundle, spec.root?.path ?? 'rootfs');

    // The allow-list and the entrypoint are judged at attach, in the container's own root
    // (its mounts included), where the exec backend resolves the list anyway: once per
    // container, not twice, and not on the way to runc (~0.3 ms of prepare). A typo or a
    // forbidden entrypoint is still refused before anything in the container runs: runc has
    // created it by then, and the launcher removes it (docs/exec-performance.md).
    const judgeEntrypoint = policy.execAllow !== null && policy.mode === 'enforce';
    let handOff = false;
    if (problems.length === 0) {
      let changed = false;
      const specChanged = () => (changed = true);
      for (const b of this.backends) {
        const st = b.controlState(policy);
        if (st === 'none' || st.startsWith('unenforceable') || !b.prepare) continue;
        try {
          b.prepare({
            namespace,
            id: req.id,
            bundle: req.bundle,
            rootfs,
            policy,
            annotations,
            spec: read,
            specChanged,
            handOff: () => (handOff = true),
          });
        } catch (e) {
          problems.push((e as Error).message);
        }
      }
      // One write for every backend's edits, and none for a create that is refused.
      if (changed && problems.length === 0) {
        try {
          writeBundleConfig(req.bundle, read);
        } catch (e) {
          problems.push((e as Error).message);
        }
      }
    }
    if (problems.length) {
      this.auditRefusal(namespace, req.id, problems, workload);
      throw new Refusal(problems.join('; '));
    }
    const prepareMs = Math.round(Number(process.hrtime.bigint() - started) / 1000) / 1000;
    this.prepared.set(key, {
      namespace,
      id: req.id,
      bundle: req.bundle,
      annotations,
      policy,
      controls,
      at: Date.now(),
      entrypoint: judgeEntrypoint ? spec : undefined,
      prepareMs,
      workload,
    });
    this.registry.setInFlight(namespace, req.id, true);
    this.expirePrepared();
    return { fence: true, controls, ...(handOff ? { handOff } : {}) };
  }

  /**
   * Sends the outcome of this container's attach at the hand-off to `push` (the launcher's
   * connection) as soon as it is known, so the launcher need not ask for it. Until the
   * launcher is gone (launcherGone) the container stays prepared: a launcher whose pid file
   * names another init still asks, and is refused (confirmEarly).
   */
  pushTo(namespace: string, id: string, push: (pid: number, result: Promise<AttachReply>) => void): void {
    const prep = this.prepared.get(containerKey(namespace, id));
    if (!prep) return;
    prep.push = push;
    if (prep.early) push(prep.early.pid, prep.early.result);
  }

  /**
   * The launcher's connection is gone: a container whose attach began at the hand-off is done
   * with (what its attach request would have finished). One that never got that far stays
   * prepared until its attach, or PREPARED_TTL_MS.
   */
  launcherGone(namespace: string, id: string): void {
    const key = containerKey(namespace, id);
    const prep = this.prepared.get(key);
    if (!prep?.early) return;
    const done = () => {
      if (this.prepared.get(key) !== prep) return;
      this.prepared.delete(key);
      this.registry.setInFlight(namespace, id, false);
    };
    prep.early.result.then(done, done);
  }

  private expirePrepared(): void {
    const now = Date.now();
    for (const [k, p] of this.prepared) {
      if (now - p.at > PREPARED_TTL_MS) {
        this.prepared.delete(k);
        this.registry.setInFlight(p.namespace, p.id, false);
      }
    }
  }

  /** True when prepare has kept this container for its attach (no lookup needed then). */
  isPrepared(runcRoot: string | undefined, id: string): boolean {
    return this.prepared.has(containerKey(namespaceOfRuncRoot(runcRoot), id));
  }

  /**
   * Fences a just-created container whose init is blocked before its entrypoint. Waits only
   * for prepare's workload lookup, which containerd has normally answered by now.
   */
  async attach(req: { id: string; bundle: string; runcRoot?: string; pid: number; workload?: WorkloadSource }): Promise<AttachReply> {
    const namespace = namespaceOfRuncRoot(req.runcRoot);
    const key = containerKey(namespace, req.id);
    let prep = this.prepared.get(key);
    if (!prep) {
      // The daemon restarted between prepare and attach: decide again from the bundle.
      if (!this.prepare(req).fence) return { fence: false };
      prep = this.prepared.get(key)!;
    }
    try {
      if (prep.early) return await this.confirmEarly(prep, prep.early, req.pid);
      // Claimed before the lookup's await: a hand-off that arrives meanwhile (a slow fd-holder)
      // must not begin a second attach of the same container.
      const p = prep;
      const result = Promise.resolve(p.workload).then((workload) => this.attachPrepared({ ...p, workload }, req.pid, 'create'));
      p.early = { pid: req.pid, result };
      return await result;
    } finally {
      this.prepared.delete(key);
      this.registry.setInFlight(namespace, req.id, false);
    }
  }

  /**
   * runc has handed the container's seccomp listener over (errno mode routes its execs to the
   * notify loop), with its init's pid: the init exists, in its cgroup, and waits before its
   * entrypoint until `runc start`, which comes only after cgfence-runc's attach is answered.
   * So the attach can begin now, while runc create finishes, instead of after it; the
   * launcher's attach request is then answered with its outcome (confirmEarly). A container
   * that is not between prepare and attach here is left alone (its attach decides, as before).
   */
  attachOnHandOff(namespace: string, id: string, pid: number): void {
    const prep = this.prepared.get(containerKey(namespace, id));
    if (!prep || prep.early || !(pid > 0)) return;
    const result = Promise.resolve(prep.workload).then((workload) => this.attachPrepared({ ...prep, workload }, pid, 'create'));
    // Observed by the launcher's attach; unobserved (no attach comes), it must not end the daemon.
    result.catch(() => undefined);
    prep.early = { pid, result };
    prep.push?.(pid, result);
  }

  /**
   * The launcher's attach of a container whose attach began at the hand-off: its outcome
   * (a refusal stays a refusal: the launcher removes the container). runc reports the same
   * init pid both times; if the pid file names another process, the fence made for the first
   * is undone and the create refused rather than either pid guessed at.
   */
  private async confirmEarly(prep: Prepared, early: NonNullable<Prepared['early']>, pid: number): Promise<AttachReply> {
    const reply = await early.result;
    if (early.pid === pid) return reply;
    this.detach(
      prep.namespace,
      prep.id,
      `init pid ${pid} from runc's pid file is not the pid ${early.pid} runc handed its seccomp listener over with`,
    );
    const problem = `runc reported init pid ${early.pid} with the seccomp listener but ${pid} in its pid file; refusing to start ${containerKey(prep.namespace, prep.id)}`;
    this.auditRefusal(prep.namespace, prep.id, [problem], prep.workload);
    throw new Refusal(problem);
  }

  /**
   * Fences a container found running unfenced (the daemon was down when it started). Its
   * allow-list is resolved in the running container's root. Audited as a late attach.
   */
  lateAttach(a: {
    namespace: string;
    id: string;
    pid: number;
    annotations: Record<string, string>;
    bundle?: string;
    workload?: Workload | null;
  }): void {
    const policy = this.policy.parse(a.annotations);
    if (!hasRules(policy) && policy.mode !== 'learn') return;
    const annotations = this.policy.effectiveAnnotations(a.annotations, policy);
    const controls = this.policy.controls(policy);
    this.attachPrepared(
      {
        namespace: a.namespace,
        id: a.id,
        bundle: a.bundle ?? '',
        annotations,
        policy,
        controls,
        at: Date.now(),
        workload: a.workload ?? null,
      },
      a.pid,
      'late-attach',
    );
  }

  private attachPrepared(prep: Prepared & { workload: Workload | null }, pid: number, how: FencedContainer['how']) {
    const started = process.hrtime.bigint();
    const { namespace, id, policy, controls, annotations } = prep;
    const cgroupPath = cgroupV2PathOfPid(pid);
    const cgid = cgroupPath ? cgroupId(cgroupPath) : null;
    const entry: FencedContainer = {
      namespace,
      id,
      bundle: prep.bundle,
      pid,
      cgroupPath,
      cgroupId: cgid?.toString() ?? null,
      eventKeys: [],
      annotations,
      mode: policy.mode,
      policyHash: policyHash(annotations),
      controls,
      backends: {},
      attachedAt: new Date().toISOString(),
      how,
      workload: prep.workload,
    };
    const done: Array<[FenceBackend, AttachContext]> = [];
    const undoAll = () => {
      for (const [db, dctx] of done.reverse()) {
        try {
          db.detach(dctx);
        } catch {
          /* best effort */
        }
      }
    };
    for (const b of this.backends) {
      // The backend's own state: `controls` may report a control that another backend learns.
      const st = b.controlState(policy);
      if (st === 'none' || st.startsWith('unenforceable')) continue;
      const ctx: AttachContext = { namespace, id, bundle: prep.bundle, pid, cgroupPath, cgroupId: cgid, policy, annotations, state: {} };
      let decided: ControlState | void;
      try {
        decided = b.attach(ctx);
      } catch (e) {
        // All or nothing: a container is never left half-fenced. The failing backend too,
        // if it had got as far as saying what it holds.
        if (Object.keys(ctx.state).length > 0) done.push([b, ctx]);
        undoAll();
        const keys = keysOf(b.control)
          .filter((k) => annotations[k] !== undefined)
          .map((k) => `${k}=${JSON.stringify(annotations[k])}`)
          .join(', ');
        const msg = `${keys || b.control}: ${(e as Error).message}`;
        this.auditRefusal(namespace, id, [msg], prep.workload);
        throw new Refusal(msg);
      }
      // A backend can learn per container what it can give (the cgroup v1 fallback cannot
      // fence a container in the host pid namespace): what it says replaces the node's guess.
      if (decided && isControl(b.control)) entry.controls = { ...entry.controls, [b.control]: decided };
      done.push([b, ctx]);
      setBackendState(entry.backends, b.control, ctx.state);
      if (typeof ctx.state.fenceId === 'string' && !entry.eventKeys.includes(ctx.state.fenceId)) entry.eventKeys.push(ctx.state.fenceId);
    }
    if (prep.entrypoint) {
      // Judged in the container's own root, against the allow-list just resolved there.
      const allow = (entry.backends.exec?.allow ?? []) as Array<{
        path: string;
        dev: string;
        ino: string;
        ctime_ns?: string;
        loader_of?: unknown;
      }>;
      const allowed = allow.map((a) => ({ path: a.path, identity: parseIdentity(a) }));
      const problem = this.policy.entrypointProblem(`/proc/${pid}/root`, prep.entrypoint, allowed, annotations[KEYS.execAllow]);
      if (problem) {
        undoAll();
        this.auditRefusal(namespace, id, [problem], prep.workload);
        throw new Refusal(problem);
      }
    }
    this.registry.put(entry);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    this.metrics?.attachSeconds.observe({ how }, ms / 1000);
    this.afterReply({
      ts: nowNs(),
      type: 'lifecycle',
      action: 'attach',
      namespace,
      container_id: id,
      pid,
      cgroup_id: cgid?.toString() ?? null,
      how,
      mode: policy.mode,
      controls: entry.controls,
      backends: backendsOf(entry.backends),
      policy_hash: entry.policyHash,
      cgroup: cgroupPath,
      fail_mode: this.cfg.failMode,
      exec_deny: execDenyOf(policy.mode, entry.backends.exec),
      attach_ms: Math.round(ms * 1000) / 1000,
      ...(prep.prepareMs !== undefined ? { prepare_ms: prep.prepareMs } : {}),
    });
    if (how === 'late-attach') this.log(`late attach: ${namespace}/${id} was running unfenced; fenced now`);
    return { fence: true, controls: entry.controls, cgroup: cgroupPath ?? undefined };
  }

  /** A refused live change; update() audits every refusal once, as lifecycle/policy-refuse. */
  private refuseUpdate(_entry: FencedContainer, _changes: Record<string, string | null>, reason: string): Refusal {
    return new Refusal(reason);
  }

  private auditRefusal(namespace: string, id: string, problems: string[], workload: WorkloadSource): void {
    const write = (w: Workload | null) =>
      this.audit.write({ type: 'lifecycle', action: 'refuse', namespace, container_id: id, workload: w, reason: problems.join('; ') });
    if (!(workload instanceof Promise)) return write(workload);
    const written: Promise<void> = workload.then(write).finally(() => this.owedRefusals.delete(written));
    // A failed write reaches the daemon through refusalsWritten; never as an unhandled rejection.
    written.catch(() => undefined);
    this.owedRefusals.add(written);
  }

  /** Settles once every refusal record still waiting for a workload lookup is written (before the refusal is answered). */
  async refusalsWritten(): Promise<void> {
    await Promise.all([...this.owedRefusals]);
  }

  /** A fenced container's context for one backend; `policy` parsed once by the caller for all of them. */
  private contextOf(f: FencedContainer, control: BackendName, policy: Policy): AttachContext {
    return {
      namespace: f.namespace,
      id: f.id,
      bundle: f.bundle,
      pid: f.pid,
      cgroupPath: f.cgroupPath,
      cgroupId: f.cgroupId ? BigInt(f.cgroupId) : null,
      policy,
      annotations: f.annotations,
      state: f.backends[control] ?? {},
    };
  }

  /**
   * The policy a fenced container runs under, from the annotations stored at its attach. A
   * reload may have removed the profile the container named since; its stored annotations
   * already hold that profile's keys (effectiveAnnotations), so they are then read without
   * the name: its detach and a live change still know its rules. Undefined only when even
   * that fails.
   */
  private storedPolicy(entry: FencedContainer): Policy | undefined {
    try {
      return this.policy.parse(entry.annotations);
    } catch {
      const { [KEYS.profile]: _gone, ...own } = entry.annotations;
      try {
        return this.policy.parse(own);
      } catch {
        return undefined;
      }
    }
  }

  /** Removes a container's fences (task exit or delete, or a container that is gone). */
  detach(namespace: string, id: string, reason: string): boolean {
    const entry = this.registry.get(namespace, id);
    if (!entry) return false;
    // Before the kernel counters go with the fences. Bookkeeping: a failure to read them must
    // not keep the fences in place.
    try {
      this.metrics?.retire(entry);
    } catch (e) {
      this.log(`detach of ${namespace}/${id}: its decision counts were not retired: ${(e as Error).message}`);
    }
    // A backend lets go of what it holds (its state), whatever the rules were: a container
    // whose stored rules no longer parse at all is detached too.
    const policy = this.storedPolicy(entry) ?? emptyPolicy();
    const counters: Record<string, unknown> = {};
    for (const b of this.backends) {
      if (!entry.backends[b.control]) continue;
      try {
        Object.assign(counters, b.detach(this.contextOf(entry, b.control, policy)) ?? {});
      } catch (e) {
        this.log(`detach ${b.control} of ${namespace}/${id}: ${(e as Error).message}`);
      }
    }
    this.registry.delete(namespace, id);
    const record = {
      type: 'lifecycle' as const,
      action: 'detach',
      namespace,
      container_id: id,
      cgroup_id: entry.cgroupId,
      pid: entry.pid,
      reason,
      ...counters,
    };
    // The detach record is the container's last: it waits for the records backends still owe
    // it (network counts, a learned policy), at most LAST_RECORDS_MAX_MS.
    const owed: Array<Promise<void>> = [];
    for (const b of this.backends) {
      if (!entry.backends[b.control] || !b.lastRecords) continue;
      try {
        const w = b.lastRecords(this.contextOf(entry, b.control, policy));
        if (w) owed.push(w);
      } catch {
        /* nothing owed then */
      }
    }
    if (owed.length === 0) {
      this.audit.write(record);
      return true;
    }
    let timer: NodeJS.Timeout | undefined;
    const written = Promise.race([
      Promise.all(owed),
      new Promise((r) => {
        timer = setTimeout(r, LAST_RECORDS_MAX_MS);
      }),
    ])
      .catch(() => undefined)
      .then(() => {
        clearTimeout(timer);
        this.audit.write(record);
      })
      .finally(() => this.owedDetaches.delete(written));
    this.owedDetaches.add(written);
    return true;
  }

  /** Settles once every detach record still waiting for a backend's last records is written. */
  async detachesWritten(): Promise<void> {
    await Promise.all([...this.owedDetaches]);
  }

  /** The fenced container named by id or a unique id prefix, in `namespace` or in whichever holds it. */
  findFenced(namespace: string | undefined, id: string): FencedContainer {
    try {
      return findContainer(this.registry.all(), namespace, id);
    } catch (e) {
      if (e instanceof LookupError) throw new Refusal(e.message);
      throw e;
    }
  }

  /**
   * Live policy change of a running container: annotation changes (null removes a key) are
   * merged into its effective annotations and validated as at create; each control whose
   * annotations or mode changed is updated in place by its backend (map updates, nothing
   * restarts), attached if it is new, detached if it is gone. Audited with both hashes.
   */
  update(namespace: string | undefined, id: string, changes: Record<string, string | null>, actor: Record<string, unknown> = {}) {
    try {
      return this.applyUpdate(namespace, id, changes, actor);
    } catch (e) {
      // A refused update is audited too: who asked for what, and that nothing changed.
      if (e instanceof Refusal) {
        let f: FencedContainer | undefined;
        try {
          f = findContainer(this.registry.all(), namespace, id);
        } catch {
          f = undefined;
        }
        this.audit.write({
          type: 'lifecycle',
          action: 'policy-refuse',
          namespace: f?.namespace ?? namespace ?? '',
          container_id: f?.id ?? id,
          pid: f?.pid ?? null,
          cgroup_id: f?.cgroupId ?? null,
          policy_hash: f?.policyHash ?? null,
          changes,
          reason: e.message,
          ...actor,
        });
      }
      throw e;
    }
  }

  private applyUpdate(namespace: string | undefined, id: string, changes: Record<string, string | null>, actor: Record<string, unknown>) {
    const entry = this.findFenced(namespace, id);
    const annotations = { ...entry.annotations };
    for (const [k, v] of Object.entries(changes)) {
      if (!k.startsWith('cgfence.io/')) throw new Refusal(`${k}: only cgfence.io/* annotations can be set`);
      if (v === null) delete annotations[k];
      else annotations[k] = v;
    }
    let policy: Policy;
    try {
      policy = this.policy.parse(annotations);
    } catch (e) {
      if (e instanceof PolicyError) throw this.refuseUpdate(entry, changes, `invalid cgfence policy: ${e.problems.join('; ')}`);
      throw e;
    }
    const oldPolicy = this.storedPolicy(entry);
    if (!oldPolicy) throw this.refuseUpdate(entry, changes, 'the policy the container runs under no longer parses on this node');
    const controls = this.policy.controls(policy);
    const problems = this.policy.unenforceable(policy, controls, annotations);
    if (problems.length) throw this.refuseUpdate(entry, changes, problems.join('; '));

    // A control whose key the request names is applied again even when its value is the same:
    // that is how an operator re-allows legitimately updated files (the exec allow-list is
    // re-resolved and re-stamped); changing another control never re-stamps them.
    const sameFor = (c: BackendName) =>
      policy.mode === oldPolicy.mode &&
      keysOf(c).every((k) => JSON.stringify(policyField(policy, k)) === JSON.stringify(policyField(oldPolicy, k)));
    // A control whose key the change names is applied again even with the same value: that is
    // how an operator re-allows a file updated on purpose (new stamps, docs/exec-integrity.md).
    const untouched = (c: BackendName) => sameFor(c) && keysOf(c).every((k) => !(k in changes));
    // A control fixed at start (seccomp) is never touched live: refuse before anything changes,
    // so the container keeps its state in the registry and the kernel alike.
    for (const b of this.backends) {
      if (!b.fixedAtStart) continue;
      const want = b.controlState(policy);
      const active = want !== 'none' && !want.startsWith('unenforceable');
      const had = entry.backends[b.control] !== undefined;
      if ((!had && !active) || (had && active && sameFor(b.control))) continue;
      const show = (k: string) => (k in changes ? (changes[k] === null ? `${k}- (removal)` : `${k}=${JSON.stringify(changes[k])}`) : null);
      const asked = [...keysOf(b.control), KEYS.mode, KEYS.profile].map(show).filter((x): x is string => x !== null);
      const held = keysOf(b.control)
        .filter((k) => entry.annotations[k] !== undefined)
        .map((k) => `${k}=${JSON.stringify(entry.annotations[k])}`);
      throw new Refusal(
        `${asked.join(', ') || b.control}: ${b.fixedAtStart}; nothing was changed` +
          `${held.length ? ` (the container keeps ${held.join(', ')} as it started)` : ''}. ` +
          `To apply it, recreate the container with the annotations you want (ctr run --annotation KEY=VALUE, or the pod's annotations); ` +
          `other annotations can still be changed live without this one`,
      );
    }
    const base = {
      namespace: entry.namespace,
      id: entry.id,
      bundle: entry.bundle,
      pid: entry.pid,
      cgroupPath: entry.cgroupPath,
      cgroupId: entry.cgroupId ? BigInt(entry.cgroupId) : null,
      policy,
      annotations,
    };
    const backends = { ...entry.backends };
    const newControls: Controls = { ...controls };
    const undo: Array<() => void> = [];
    for (const b of this.backends) {
      const want = b.controlState(policy);
      const active = want !== 'none' && !want.startsWith('unenforceable');
      const had = entry.backends[b.control];
      if (had && active && untouched(b.control)) {
        if (isControl(b.control)) newControls[b.control] = entry.controls[b.control];
        continue;
      }
      const keys = keysOf(b.control)
        .filter((k) => annotations[k] !== undefined || entry.annotations[k] !== undefined)
        .map((k) => `${k}=${JSON.stringify(annotations[k] ?? null)}`)
        .join(', ');
      try {
        if (had && active) {
          if (!b.update)
            throw new Error(`the ${b.control} fence of a running container cannot change (it is fixed when the container starts)`);
          const ctx: AttachContext = { ...base, state: { ...had } };
          const undoIt = b.update(ctx);
          setBackendState(backends, b.control, ctx.state);
          undo.push(
            undoIt ??
              (() => {
                b.update!({ ...base, policy: oldPolicy, annotations: entry.annotations, state: { ...ctx.state } });
              }),
          );
        } else if (active) {
          const ctx: AttachContext = { ...base, state: {} };
          const decided = b.attach(ctx);
          if (decided && isControl(b.control)) newControls[b.control] = decided;
          setBackendState(backends, b.control, ctx.state);
          undo.push(() => {
            b.detach(ctx);
          });
        } else if (had) {
          b.detach(this.contextOf(entry, b.control, oldPolicy));
          delete backends[b.control];
          undo.push(() => {
            b.attach({ ...base, policy: oldPolicy, annotations: entry.annotations, state: { ...had } });
          });
        }
      } catch (e) {
        // Put back what this update already changed: the container keeps its old policy.
        const failed: string[] = [];
        for (const u of undo.reverse()) {
          try {
            u();
          } catch (ue) {
            failed.push((ue as Error).message);
          }
        }
        const restored =
          failed.length === 0
            ? 'the container keeps its previous policy'
            : `putting back the previous policy failed too: ${failed.join('; ')}`;
        throw this.refuseUpdate(entry, changes, `${keys || b.control}: ${(e as Error).message}; ${restored}`);
      }
    }

    const eventKeys = new Set(entry.eventKeys);
    for (const st of Object.values(backends)) if (typeof st?.fenceId === 'string') eventKeys.add(st.fenceId);
    const updated: FencedContainer = {
      ...entry,
      annotations,
      mode: policy.mode,
      policyHash: policyHash(annotations),
      controls: newControls,
      backends,
      eventKeys: [...eventKeys],
    };
    this.registry.put(updated);
    this.audit.write({
      type: 'lifecycle',
      action: 'policy-update',
      namespace: entry.namespace,
      container_id: entry.id,
      pid: entry.pid,
      cgroup_id: entry.cgroupId,
      mode: policy.mode,
      controls: newControls,
      old_policy_hash: entry.policyHash,
      new_policy_hash: updated.policyHash,
      policy_hash: updated.policyHash,
      changes,
      ...actor,
    });
    return {
      namespace: entry.namespace,
      id: entry.id,
      mode: policy.mode,
      controls: newControls,
      oldPolicyHash: entry.policyHash,
      policyHash: updated.policyHash,
    };
  }

  /**
   * Audit records of a create (the attach record) are written once the reply is on its way:
   * hashing and the write(2) are not the container's to wait for. Stamped now; nothing of
   * the container can happen before them (its init waits for `runc start`).
   */
  private afterReply(r: AuditInput): void {
    if (this.deferred.length === 0) setImmediate(() => this.flushDeferred());
    this.deferred.push(r);
  }

  /** Writes the records afterReply holds (the daemon's stop calls it before closing the log). */
  flushDeferred(): void {
    if (this.deferred.length === 0) return;
    const recs = this.deferred;
    this.deferred = [];
    this.audit.writeBatch(recs);
  }
}

/** containerd's labels when they name a workload, else the CRI's annotations in the bundle; a promise stays one. */
function orAnnotations(w: WorkloadSource | undefined, spec: OciConfig): WorkloadSource {
  const fallback = () => workloadFromAnnotations(spec.annotations);
  if (w instanceof Promise)
    return w.then(
      (x) => x ?? fallback(),
      () => fallback(),
    );
  return w ?? fallback();
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
