// The node agent: owns the kernel fences, answers cgfence-runc and the CLI on its socket,
// follows containerd's events to detach at exit, and writes the audit log.
import fs from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { AuditLog } from '../audit/audit-log';
import { ContainerdClient } from '../containerd/client';
import { ContainerdEvent } from '../containerd/events';
import { EventMonitor } from '../containerd/event-monitor';
import { Workload, workloadFromAnnotations, workloadFromLabels } from '../containerd/workload';
import { LookupError, findContainer } from './container-lookup';
import { cgroupV2Root } from '../kernel/cgroup';
import { ExecBackend } from '../fence/exec/exec-backend';
import { NetworkBackend } from '../fence/network/network-backend';
import { LearnBackend } from '../fence/learn/learn-backend';
import { createBackends } from './backends';
import { BackendName, ControlSnapshot, FenceBackend, containerKey, isControl } from '../fence/backend';
import { cgfenceAnnotations } from '../policy/annotations';
import { native } from '../native';
import { DaemonConfig } from './config';
import { ConfigReloader } from './config-reloader';
import { PreflightRefusal, bundlePreflight } from './bundle-preflight';
import { KEYS } from '../policy/annotations';
import { FenceManager, Refusal, namespaceOfRuncRoot } from './fence-manager';
import { FenceRegistry, FencedContainer } from './fence-registry';
import { AuditSink } from './audit-sink';
import { PolicyDecider, policyParser } from './policy-decider';
import { Reply, Request, ok, refuse } from './protocol';
import { Connection, Peer, SocketServer } from './socket-server';
import { TamperReporter } from './tamper-reporter';
import { Decisions, Metrics } from './metrics';
import { Health, checkHealth } from './health';
import { CounterSnapshots } from './counter-snapshots';
import { takeSpooled } from './spool';
import { writeLauncherHint } from './launcher-hint';

const VERSION = '0.1.0';
/** How long container start waits for containerd to say whose pod a container is. */
const WORKLOAD_LOOKUP_MS = 500;
/** The containerd topics whose events onEvent acts on (a fence is detached at each). */
const DETACH_TOPICS = ['/tasks/exit', '/tasks/delete', '/containers/delete'];

/** The node's name in records: the Kubernetes node name (NODE_NAME from the downward API), else the host name. */
export function nodeName(): string {
  return process.env.CGFENCE_NODE_NAME || process.env.NODE_NAME || os.hostname();
}

function ensureBpffs(dir: string): void {
  const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
  if (mounts.split('\n').some((l) => l.split(' ')[1] === '/sys/fs/bpf' && l.split(' ')[2] === 'bpf')) return;
  if (!dir.startsWith('/sys/fs/bpf/')) return;
  // Pins need bpffs; hosts that do not mount it at boot get it mounted here.
  execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
}

/**
 * Who asked, for the audit log: the peer's uid and pid from the socket, and what the pid was
 * running (read at once: it may exit right after asking). The socket is root-only, so the uid
 * is 0 unless the mode was changed; the pid and its command line tell people apart.
 */
export function actorOf(peer: Peer | null): Record<string, unknown> {
  if (!peer) return { actor_uid: -1, actor_pid: 0, actor_comm: '', actor_cmdline: '' };
  const read = (f: string) => {
    try {
      return fs.readFileSync(`/proc/${peer.pid}/${f}`, 'utf8');
    } catch {
      return '';
    }
  };
  return {
    actor_uid: peer.uid,
    actor_gid: peer.gid,
    actor_pid: peer.pid,
    actor_comm: read('comm').trim(),
    actor_cmdline: read('cmdline').split('\0').filter(Boolean).join(' ').slice(0, 512),
  };
}

export class Daemon {
  private audit!: AuditLog;
  private exec!: ExecBackend;
  private network!: NetworkBackend;
  private learn!: LearnBackend;
  private backends: FenceBackend[] = [];
  private manager!: FenceManager;
  private policy!: PolicyDecider;
  private sink!: AuditSink;
  private tamper: TamperReporter | null = null;
  private server!: SocketServer;
  private client!: ContainerdClient;
  private monitor!: EventMonitor;
  private dropTimer?: NodeJS.Timeout;
  private metrics!: Metrics;
  private snapshots!: CounterSnapshots;
  private lastDrops = 0n;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | null = null;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  private reloader: ConfigReloader | null = null;

  /**
   * `reloadConfig` re-reads the settings as at start (flags, environment, `configFile`); with
   * it the daemon reloads profiles and selectors on SIGHUP (reload()) and when the file changes.
   */
  constructor(
    private readonly cfg: DaemonConfig,
    private readonly log: (m: string) => void = (m) => console.error(`cgfence daemon: ${m}`),
    private readonly reloading: { configFile: string | null; reloadConfig: () => DaemonConfig } | null = null,
  ) {}

  async start(): Promise<void> {
    const cfg = this.cfg;
    ensureBpffs(cfg.pinDir);
    const registry = new FenceRegistry(cfg.stateDir, this.log);
    writeLauncherHint(cfg.stateDir, cfg.defaultProfile, cfg.selectors.length > 0);
    // Every record names the node, and a container by its workload too when it has one.
    this.audit = new AuditLog({
      path: cfg.auditLog,
      maxBytes: cfg.auditMaxBytes,
      keep: cfg.auditKeep,
      context: { node: nodeName(), hostname: os.hostname(), workloadOf: (ns, id) => registry.lastKnown(ns, id)?.workload },
    });
    // Built before the backends and handed to them: nothing reaches back for the manager.
    this.sink = new AuditSink(this.audit, registry);
    const parse = policyParser(cfg);
    const backends = createBackends(cfg, {
      sink: this.sink,
      policyOf: parse,
      log: this.log,
      lookup: (ns, id) => registry.get(ns, id),
      inFlight: (ns, id) => registry.isInFlight(ns, id),
      // The manager is made from the backends, so it is reached through this, once it exists.
      initReady: (ns, id, pid) => this.manager?.attachOnHandOff(ns, id, pid),
    });
    this.exec = backends.exec;
    this.network = backends.network;
    this.learn = backends.learn;
    this.backends = backends.all;
    for (const f of registry.all()) for (const b of this.backends) b.adopt?.(f);
    this.policy = new PolicyDecider(cfg, this.backends);
    this.manager = new FenceManager(cfg, this.backends, this.policy, this.audit, registry, this.log);
    this.lastDrops = this.exec.fence.drops();
    this.snapshots = new CounterSnapshots(cfg.stateDir);
    this.audit.write({
      type: 'agent',
      action: 'start',
      pid: process.pid,
      version: VERSION,
      pin_dir: cfg.pinDir,
      adopted: this.exec.fence.adopted,
      fences: registry.all().length,
      cgroup_mode: cfg.cgroupMode,
      fail_mode: cfg.failMode,
      exec_deny: cfg.execDeny,
    });
    if (this.reloading?.configFile) {
      this.reloader = new ConfigReloader({
        cfg,
        configFile: this.reloading.configFile,
        reloadConfig: this.reloading.reloadConfig,
        audit: this.audit,
        log: this.log,
        applied: (c) => writeLauncherHint(c.stateDir, c.defaultProfile, c.selectors.length > 0),
        // Each profile checked as a container naming it would be: a bad value is refused now.
        validate: (next) => {
          for (const name of Object.keys(next.profiles)) policyParser(next)({ [KEYS.profile]: name });
        },
      });
    }
    this.log(
      `started (pid ${process.pid}); ${this.exec.fence.adopted ? `adopted pinned fences in ${cfg.pinDir}` : `pins in ${cfg.pinDir}`}; audit log ${cfg.auditLog}`,
    );
    // After the backends: it protects the ids of what they loaded.
    this.tamper = new TamperReporter({
      pinDir: cfg.pinDir,
      audit: this.audit,
      backends: () => this.backends,
      log: this.log,
      sink: this.sink,
    });
    this.tamper.start();

    // What the kernel counted while no daemon was there to log it.
    // Only the exec fence keeps pinned counts, hence the wording.
    for (const f of registry.all()) {
      for (const b of this.backends) {
        const now = b.pinnedCounts?.(f);
        if (!now) continue;
        const missed = this.snapshots.missed(now.key, now);
        if (missed.denied === 0 && missed.audited === 0) continue;
        this.audit.write({
          type: 'agent',
          action: 'while-down',
          namespace: f.namespace,
          container_id: f.id,
          cgroup_id: f.cgroupId,
          denied: missed.denied,
          audited: missed.audited,
          message: `while the daemon was down: ${missed.denied} denials, ${missed.audited} audited execs (individual events follow where the ring buffer kept them)`,
        });
      }
    }
    this.snapshotCounters();
    this.ingestSpool();

    // Always counted (ps shows every denial from it); served only with --metrics-address.
    this.metrics = new Metrics({
      fenced: () => this.manager.registry.all(),
      kernelDecisions: (f) => this.kernelDecisions(f),
      kernelDrops: () => Number(this.exec.fence.drops()),
      audit: () => this.audit.stats,
      containerdConnected: () => this.monitor?.status().connected ?? false,
      health: () => this.health(),
      tables: () => this.tables(),
      build: {
        version: VERSION,
        node: process.version,
        libbpf: native().libbpfVersion,
        kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      },
    });
    this.manager.metrics = this.metrics;
    this.sink.metrics = this.metrics;
    if (cfg.metricsAddress) {
      await this.metrics.listen(cfg.metricsAddress);
      this.log(`metrics, /healthz and /readyz on ${cfg.metricsAddress}`);
    }

    this.server = new SocketServer(cfg.socket, (req, peer, conn) => this.handle(req, peer, conn), this.log);
    await this.server.listen();
    this.log(`listening on ${cfg.socket}`);

    this.reloader?.watch();

    // Lost kernel events are never silent: the drop counter is turned into audit records.
    this.dropTimer = setInterval(() => this.checkDrops(), 2000);
    this.dropTimer.unref();

    this.client = new ContainerdClient(`unix://${cfg.containerdSocket}`);
    this.monitor = new EventMonitor({
      client: this.client,
      handler: (ev) => this.onEvent(ev),
      reconcile: () => this.reconcile(),
      // Only what onEvent acts on: containerd publishes ~8 events per container (snapshots,
      // creates, starts), and decoding the rest cost the daemon ~1.5 ms of CPU per start.
      filters: DETACH_TOPICS.map((t) => `topic==${JSON.stringify(t)}`),
      log: (m) => this.log(`containerd: ${m}`),
    });
    this.monitor.start();
  }

  /** Counters as last seen, so a restarted daemon can say what happened while it was down. */
  private snapshotCounters(): void {
    const cur: Record<string, { denied: number; audited: number }> = {};
    for (const f of this.manager.registry.all()) {
      for (const b of this.backends) {
        const c = b.pinnedCounts?.(f);
        if (c) cur[c.key] = { denied: c.denied, audited: c.audited };
      }
    }
    this.snapshots.save(cur);
  }

  /** What each backend holds for a fenced container, by backend: the daemon reads no backend's state. */
  private snapshotsOf(f: FencedContainer): Map<BackendName, ControlSnapshot> {
    const out = new Map<BackendName, ControlSnapshot>();
    for (const b of this.backends) {
      const s = b.snapshot?.(f);
      if (s) out.set(b.control, s);
    }
    return out;
  }

  private ingestSpool(): void {
    try {
      const recs = takeSpooled(this.cfg.spoolDir);
      if (recs.length) {
        this.audit.writeBatch(recs);
        this.log(`${recs.length} fail-open container(s) were created while the daemon was unreachable; reconcile fences them`);
      }
    } catch (e) {
      this.log(`cannot read the spool in ${this.cfg.spoolDir}: ${(e as Error).message}`);
    }
  }

  private checkDrops(): void {
    this.ingestSpool();
    this.snapshotCounters();
    this.tamper?.check();
    const d = this.exec.fence.drops();
    if (d > this.lastDrops) {
      this.audit.noteKernelDrops(d - this.lastDrops);
      this.lastDrops = d;
    }
  }

  private async handle(req: Request, peer: Peer | null = null, conn?: Connection): Promise<Reply> {
    try {
      switch (req.op) {
        case 'prepare': {
          // containerd's labels name the workload in records only: asked when a refusal's record
          // needs them (before the refusal is answered), or once the reply is out for the attach
          // (fence-manager.ts); never for a container that gets no fence, nor for one whose
          // config.json names it already (the CRI plugin writes the same names there).
          let ask!: () => void;
          const lookup = new Promise<Workload | null>((resolve) => {
            ask = () => resolve(this.workloadOf(namespaceOfRuncRoot(req.runcRoot), req.id));
          });
          const spec = await bundlePreflight(
            {
              cfg: this.cfg,
              audit: this.audit,
              getContainer: (ns, id) => this.client.getContainer(ns, id),
              configHash: () => this.reloader?.hash ?? null,
            },
            namespaceOfRuncRoot(req.runcRoot),
            req.id,
            req.bundle,
          );
          const named = workloadFromAnnotations(spec?.annotations);
          const workload = named ?? lookup;
          let r: ReturnType<FenceManager['prepare']>;
          try {
            r = this.manager.prepare({ ...req, workload, spec });
          } catch (e) {
            if (!named) ask();
            throw e;
          }
          if (r.fence && !named) setImmediate(ask);
          const { handOff, ...reply } = r;
          if (handOff && req.push === true && conn) {
            const ns = namespaceOfRuncRoot(req.runcRoot);
            this.manager.pushTo(ns, req.id, (pid, result) => this.pushAttach(conn, pid, result));
            conn.onClose(() => this.manager.launcherGone(ns, req.id));
            return ok({ ...reply, push: true });
          }
          return ok(reply);
        }
        case 'attach': {
          // Prepare's lookup serves the attach; only an attach this daemon did not prepare asks.
          const workload = this.manager.isPrepared(req.runcRoot, req.id)
            ? undefined
            : this.workloadOf(namespaceOfRuncRoot(req.runcRoot), req.id);
          const r = await this.manager.attach({ ...req, workload });
          // After the reply: the new container's objects are protected a turn later, before
          // its init can run (it waits for `runc start`, which follows this reply).
          setImmediate(() => this.tamper?.refresh({ incremental: true }));
          return ok(r);
        }
        case 'status':
          return ok(await this.status());
        case 'ps':
          return ok({ containers: this.ps() });
        case 'policy-check':
          try {
            const policy = this.policy.parse(req.annotations);
            return ok({ controls: this.policy.controls(policy), mode: policy.mode });
          } catch (e) {
            return refuse((e as Error).message);
          }
        case 'policy-set':
          return ok(this.manager.update(req.namespace, req.id, req.annotations, actorOf(peer)));
        case 'learn':
          return this.learned(req.namespace, req.id);
        case 'resolve': {
          const f = findContainer(this.manager.registry.all(), req.namespace, req.id);
          return ok({ namespace: f.namespace, id: f.id, workload: f.workload ?? null });
        }
        case 'shutdown':
          setImmediate(() => void this.stop({ detach: !!req.detach }));
          return ok({ detach: !!req.detach });
      }
    } catch (e) {
      if (e instanceof Refusal || e instanceof PreflightRefusal || e instanceof LookupError) {
        if (req.op === 'prepare' || req.op === 'attach' || req.op === 'policy-set') this.metrics.refusal(req.op);
        // The refusal record is written before the refusal is answered, as it always was.
        await this.manager.refusalsWritten();
        return refuse(e.message);
      }
      throw e;
    }
  }

  /**
   * The outcome of an attach that began at the hand-off, on the launcher's connection: what its
   * attach request would have been answered, marked as pushed, with the pid that was fenced.
   */
  private pushAttach(conn: Connection, pid: number, result: Promise<{ fence: boolean }>): void {
    result.then(
      (r) => {
        conn.push({ ...ok(r), pushed: 'attach', pid });
        // As after an attach's reply: its objects are protected a turn later, before `runc start`.
        setImmediate(() => this.tamper?.refresh({ incremental: true }));
      },
      async (e: unknown) => {
        if (e instanceof Refusal) {
          this.metrics.refusal('attach');
          await this.manager.refusalsWritten();
          conn.push({ ...refuse(e.message), pushed: 'attach' });
        } else {
          this.log(`attach at the hand-off failed: ${(e as Error).stack ?? e}`);
          conn.push({ ...refuse(`internal error: ${(e as Error).message}`), pushed: 'attach' });
        }
      },
    );
  }

  /** SIGHUP: reload the config file (false when there is none or it is refused). */
  reload(trigger: 'sighup' | 'file-change'): boolean {
    if (!this.reloader) {
      this.log('reload: no config file (--config or CGFENCE_CONFIG); nothing to reload');
      return false;
    }
    return this.reloader.reload(trigger);
  }

  /**
   * The pod, pod namespace and container name containerd's labels give a container; null when
   * it has none, or containerd does not answer in time (the manager then reads the CRI's
   * annotations in the bundle). Never delays a container start by more than WORKLOAD_LOOKUP_MS.
   */
  private async workloadOf(namespace: string, id: string): Promise<Workload | null> {
    if (!this.client || !namespace) return null;
    let timer: NodeJS.Timeout | undefined;
    try {
      const labels = await Promise.race([
        this.client.containerLabels(namespace, id),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), WORKLOAD_LOOKUP_MS);
        }),
      ]);
      return workloadFromLabels(labels);
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  private async onEvent(ev: ContainerdEvent): Promise<void> {
    // The kernel's seccomp log of a container that just exited may still be on its way: let
    // it arrive, so that its records are written before the detach record.
    const detaching = ev.kind === 'container-delete' || ((ev.kind === 'task-exit' || ev.kind === 'task-delete') && ev.isInit);
    const fenced = detaching ? this.manager.registry.get(ev.namespace, ev.containerId) : undefined;
    if (fenced) await Promise.all(this.backends.map((b) => b.settle?.(fenced)));
    switch (ev.kind) {
      case 'task-exit':
        if (ev.isInit) this.manager.detach(ev.namespace, ev.containerId, `task exited with status ${ev.exitStatus}`);
        break;
      case 'task-delete':
        if (ev.isInit) this.manager.detach(ev.namespace, ev.containerId, 'task deleted');
        break;
      case 'container-delete':
        this.manager.detach(ev.namespace, ev.containerId, 'container deleted');
        break;
      default:
        break;
    }
  }

  /** Brings fences in line with what containerd runs: late attach, and cleanup of the gone. */
  private async reconcile(): Promise<void> {
    const started = Date.now();
    const live = new Set<string>();
    for (const ns of await this.client.listNamespaces()) {
      const [containers, tasks] = await Promise.all([this.client.listContainers(ns), this.client.listTasks(ns)]);
      const byId = new Map(containers.map((c) => [c.id, c]));
      for (const t of tasks) {
        if (t.status === 'stopped' || t.status === 'unknown' || t.pid <= 0) continue;
        const key = containerKey(ns, t.containerId);
        live.add(key);
        const c = byId.get(t.containerId);
        if (!c || this.manager.registry.get(ns, t.containerId) || this.manager.registry.isInFlight(ns, t.containerId)) continue;
        const annotations = c.spec?.annotations;
        if (Object.keys(cgfenceAnnotations(annotations)).length === 0 && !this.cfg.defaultProfile) continue;
        // It runs unfenced: the daemon was down when it started (or it started fail-open).
        try {
          this.manager.lateAttach({
            namespace: ns,
            id: t.containerId,
            pid: t.pid,
            annotations: annotations ?? {},
            workload: workloadFromLabels(c.labels),
          });
        } catch (e) {
          this.audit.write({
            type: 'lifecycle',
            action: 'late-attach-failed',
            namespace: ns,
            container_id: t.containerId,
            pid: t.pid,
            reason: (e as Error).message,
          });
          this.metrics.refusal('late-attach');
          this.log(`late attach of ${key} failed: ${(e as Error).message}`);
        }
      }
    }
    for (const f of this.manager.registry.all()) {
      // Attached while we were listing: the listing predates it, so it proves nothing.
      if (Date.parse(f.attachedAt) >= started - 1000) continue;
      if (!live.has(containerKey(f.namespace, f.id))) this.manager.detach(f.namespace, f.id, 'container gone (reconcile)');
    }
    const known = new Set(this.manager.registry.all().flatMap((f) => f.eventKeys));
    for (const b of this.backends) {
      const removed = b.sweepOrphans?.(known) ?? [];
      if (removed.length) this.audit.writeBatch(removed);
    }
    this.tamper?.refresh();
  }

  /** The learn op: a running learner's record, or running: false and the CLI reads the exit record. */
  private learned(namespace: string | undefined, query: string): Reply {
    // A unique prefix of a fenced container's id names it, as everywhere an id is taken.
    let id = query;
    try {
      const f = findContainer(this.manager.registry.all(), namespace, query);
      id = f.id;
      namespace = f.namespace;
    } catch {
      /* not fenced (any more): the CLI looks for its exit record by the id given */
    }
    const found = this.learn.learnedOf(namespace, id);
    if (found.length > 1)
      return refuse(
        `container ${JSON.stringify(id)} learns in several namespaces (${found.map((l) => l.namespace).join(', ')}): name one with --namespace`,
      );
    if (found.length === 1) return ok({ running: true, learned: found[0] });
    // Not learning (any more): what it learned, if anything, is in the audit log's exit record.
    const fenced = this.manager.registry.all().find((f) => f.id === id && (namespace === undefined || f.namespace === namespace));
    return ok({ running: false, ...(fenced ? { namespace: fenced.namespace, mode: fenced.mode } : {}) });
  }

  private async status(): Promise<Record<string, unknown>> {
    let containerd: Record<string, unknown>;
    try {
      const v = await this.client.version();
      containerd = { address: this.cfg.containerdSocket, version: v.version, ...this.monitor.status() };
    } catch (e) {
      containerd = { address: this.cfg.containerdSocket, error: (e as Error).message, ...this.monitor.status() };
    }
    const fences = this.ps();
    return {
      daemon: {
        pid: process.pid,
        version: VERSION,
        startedAt: this.startedAt.toISOString(),
        socket: this.cfg.socket,
        stateDir: this.cfg.stateDir,
        pinDir: this.cfg.pinDir,
        adopted: this.exec.fence.adopted,
        failMode: this.cfg.failMode,
        execDeny: this.cfg.execDeny,
        cgroupMode: this.cfg.cgroupMode,
      },
      containerd,
      kernel: {
        release: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
        btf: fs.existsSync('/sys/kernel/btf/vmlinux'),
        cgroupV2: cgroupV2Root(),
        libbpf: native().libbpfVersion,
        backends: Object.fromEntries(
          ['exec', 'network', 'seccomp'].map((c) => {
            const b = this.backends.find((x) => x.control === c);
            return [c, b ? b.status() : { backend: 'none (not implemented in this version)' }];
          }),
        ),
        learn: this.learn.status(),
      },
      audit: { path: this.cfg.auditLog, ...this.audit.stats, kernelDrops: this.exec.fence.drops().toString() },
      health: this.health(),
      config: {
        file: this.reloading?.configFile ?? null,
        hash: this.reloader?.hash ?? null,
        lastReload: this.reloader?.last ?? null,
        profiles: Object.keys(this.cfg.profiles),
        selectors: this.cfg.selectors.length,
        defaultProfile: this.cfg.defaultProfile,
      },
      fences: fences.length,
      tables: this.tables(),
      limits: this.cfg.limits,
      // What the node config asks; a table pinned earlier keeps its size (tables.*.capacity).
      tableSizes: this.cfg.tableSizes,
      tamper: this.tamper?.status() ?? null,
    };
  }

  /** The shared kernel tables' use against their capacity (quotas: fence/quota.ts). */
  private tables(): Record<string, { used: number; capacity: number }> {
    const exec = this.exec.usage();
    return { exec_fences: exec.fences, exec_allow: exec.exec_allow, ...(this.network.usage() ?? {}) };
  }

  private ps(): Array<Record<string, unknown>> {
    return this.manager.registry.all().map((f) => {
      const snaps = this.snapshotsOf(f);
      // The fields every entry has, in this order; a control's snapshot fills in its own.
      const entry: Record<string, unknown> = {
        namespace: f.namespace,
        id: f.id,
        workload: f.workload ?? null,
        pid: f.pid,
        cgroup: f.cgroupPath,
        cgroupId: f.cgroupId,
        mode: f.mode,
        backend: Object.fromEntries([...snaps].map(([c, s]) => [c, s.backend])),
        controls: f.controls,
        policyHash: f.policyHash,
        annotations: f.annotations,
        execAllow: [],
        attachedAt: f.attachedAt,
        how: f.how,
        execDeny: null,
        counters: null,
        networkCounters: null,
        decisions: this.metrics.decisionsOf(f),
      };
      for (const s of snaps.values()) Object.assign(entry, s.ps);
      return entry;
    });
  }

  /** What the kernel counted for a container, per control and action (the source of decision metrics). */
  private kernelDecisions(f: FencedContainer): Decisions {
    const d: Decisions = {};
    for (const [c, s] of this.snapshotsOf(f)) if (isControl(c) && s.decisions) d[c] = s.decisions;
    return d;
  }

  private health(): Health {
    const m = this.monitor?.status();
    return checkHealth({
      execStatus: this.exec.status(),
      pinDir: this.cfg.pinDir,
      socket: this.cfg.socket,
      containerd: { connected: m?.connected ?? false, lastError: m?.lastError ?? null, address: this.cfg.containerdSocket },
      audit: { ...this.audit.stats, path: this.cfg.auditLog },
    });
  }

  /** Stops the daemon. Fences stay pinned and enforcing unless `detach` is set. */
  stop(opts: { detach?: boolean } = {}): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      clearInterval(this.dropTimer);
      this.reloader?.close();
      await this.monitor?.stop();
      this.client?.close();
      await this.server?.close();
      if (opts.detach) {
        for (const f of this.manager.registry.all()) this.manager.detach(f.namespace, f.id, 'daemon shutdown with detach');
      }
      // Detach records still waiting for a backend's last records are written before the log closes.
      await this.manager.detachesWritten();
      this.checkDrops();
      await this.metrics.close();
      for (const b of this.backends) b.close({ detach: !!opts.detach });
      this.tamper?.close({ detach: !!opts.detach });
      this.manager.flushDeferred();
      this.manager.registry.flush({ compact: !opts.detach });
      this.audit.write({ type: 'agent', action: 'stop', pid: process.pid, detach: !!opts.detach });
      this.audit.close();
      this.log(`stopped${opts.detach ? '; every fence detached and unpinned' : '; fences stay pinned and enforcing'}`);
      this.resolveDone();
    })();
    return this.stopping;
  }
}
