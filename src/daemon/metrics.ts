// Prometheus metrics (prom-client), served with /healthz and /readyz on a TCP address or a
// unix socket. Values that other parts already count are read at scrape time instead of
// being mirrored, so they cannot drift: decisions come from the kernel's own per-fence
// counters (counted at the decision, not per audit record, which are rate-limited), audit
// stats from the audit log, drops from the ring buffer.
import fs from 'node:fs';
import http from 'node:http';
import client from 'prom-client';
import { DecisionAction, FencedContainer, containerKey } from '../fence/backend';
import { AuditInput } from '../audit/audit-record';
import { Health } from './health';
import { parseMetricsAddress } from './config';

export type DecisionControl = 'exec' | 'network' | 'seccomp';
export type { DecisionAction } from '../fence/backend';
/** Decisions of one container so far, per control and action. */
export type Decisions = Partial<Record<DecisionControl, Partial<Record<DecisionAction, number>>>>;

export interface Workload {
  namespace: string;
  pod: string;
  container: string;
}

export interface MetricsSources {
  fenced(): FencedContainer[];
  /** The kernel's decision counters of a fenced container (exec, network). */
  kernelDecisions(f: FencedContainer): Decisions;
  kernelDrops(): number;
  audit(): { written: number; writeErrors: number; dropped: number; pending: number };
  containerdConnected(): boolean;
  /** Shared kernel tables: entries in use and max_entries, by table name. */
  tables(): Record<string, { used: number; capacity: number }>;
  health(): Health;
  build: { version: string; node: string; libbpf: string; kernel: string };
}

/** Past this many fenced containers, per-workload series stop growing (cgfence_workload_series_dropped says how many were left out). */
export const DEFAULT_MAX_WORKLOAD_SERIES = 200;
/** How often the event-loop lag is sampled (prom-client's default, 10 ms, is a timer firing 100 times a second). */
const LAG_SAMPLE_MS = 100;

const RECORD_CONTROL: Record<string, DecisionControl> = { seccomp: 'seccomp' };

/**
 * Who a container is, for labels: the pod, its Kubernetes namespace and the container name
 * when the fenced-container record carries them (CRI labels), else the containerd namespace
 * and the container id.
 */
export function workloadOf(f: FencedContainer): Workload {
  const w = (f as { workload?: Record<string, unknown> }).workload;
  const s = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  if (w && typeof w === 'object') {
    const pod = s(w.pod) ?? s(w.podName);
    if (pod)
      return { namespace: s(w.podNamespace) ?? s(w.namespace) ?? f.namespace, pod, container: s(w.container) ?? s(w.containerName) ?? '' };
  }
  return { namespace: f.namespace, pod: f.id, container: '' };
}

function add(into: Decisions, from: Decisions): void {
  for (const [c, acts] of Object.entries(from) as Array<[DecisionControl, Partial<Record<DecisionAction, number>>]>) {
    for (const [a, n] of Object.entries(acts) as Array<[DecisionAction, number]>) {
      if (!n) continue;
      const slot = (into[c] ??= {});
      slot[a] = (slot[a] ?? 0) + n;
    }
  }
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly attachSeconds: client.Histogram<'how'>;
  private readonly refusals: client.Counter<'stage'>;
  private server: http.Server | null = null;
  /** Decisions of containers no longer fenced, so the node-wide counter never goes back. */
  private readonly retired: Decisions = {};
  /** Decisions only records tell (seccomp), per container key, until it is retired. */
  private readonly fromRecords = new Map<string, Decisions>();
  /** Last value reported per node-wide series, and what lost kernel counts add: a counter never decreases. */
  private readonly reported = new Map<string, number>();
  private readonly offsets = new Map<string, number>();

  constructor(
    private readonly src: MetricsSources,
    private readonly maxWorkloadSeries = DEFAULT_MAX_WORKLOAD_SERIES,
  ) {
    const r = this.registry;
    // prom-client calls collect() with the metric as `this`; the sources are ours.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    new client.Counter({
      name: 'cgfence_decisions_total',
      help: 'Fence decisions on this node by control (exec, network, seccomp) and action (deny, audit, allow), counted where they are made',
      labelNames: ['control', 'action'],
      registers: [r],
      collect() {
        this.reset();
        for (const [c, acts] of Object.entries(self.nodeDecisions())) {
          for (const [a, n] of Object.entries(acts ?? {})) {
            const key = `${c}/${a}`;
            // A kernel counter that restarts (a fence replaced by a live policy change)
            // would take the sum back: what it had counted is carried as an offset.
            let v = (n ?? 0) + (self.offsets.get(key) ?? 0);
            const last = self.reported.get(key) ?? 0;
            if (v < last) {
              self.offsets.set(key, (self.offsets.get(key) ?? 0) + last - v);
              v = last;
            }
            self.reported.set(key, v);
            this.inc({ control: c, action: a }, v);
          }
        }
      },
    });
    new client.Counter({
      name: 'cgfence_workload_decisions_total',
      help: `Decisions per fenced container (series exist while it is fenced; at most ${maxWorkloadSeries} containers)`,
      labelNames: ['namespace', 'pod', 'container', 'control', 'action'],
      registers: [r],
      collect() {
        this.reset();
        for (const { f, d } of self.perContainer().slice(0, self.maxWorkloadSeries)) {
          const w = workloadOf(f);
          for (const [c, acts] of Object.entries(d))
            for (const [a, n] of Object.entries(acts ?? {})) this.inc({ ...w, control: c, action: a }, n ?? 0);
        }
      },
    });
    new client.Gauge({
      name: 'cgfence_workload_series_dropped',
      help: 'Fenced containers left out of cgfence_workload_decisions_total by its series cap',
      registers: [r],
      collect() {
        this.set(Math.max(0, src.fenced().length - self.maxWorkloadSeries));
      },
    });
    this.refusals = new client.Counter({
      name: 'cgfence_refusals_total',
      help: 'Requests refused: container creates (stage prepare or attach), late attaches, live policy changes (policy-set)',
      labelNames: ['stage'],
      registers: [r],
    });
    this.attachSeconds = new client.Histogram({
      name: 'cgfence_attach_duration_seconds',
      help: 'Time to attach every fence of a container',
      labelNames: ['how'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
      registers: [r],
    });
    new client.Gauge({
      name: 'cgfence_build_info',
      help: 'Always 1; the labels say what runs',
      labelNames: ['version', 'node_version', 'libbpf', 'kernel'],
      registers: [r],
      collect() {
        this.set({ version: src.build.version, node_version: src.build.node, libbpf: src.build.libbpf, kernel: src.build.kernel }, 1);
      },
    });
    new client.Gauge({
      name: 'cgfence_fenced_containers',
      help: 'Containers with at least one fence attached',
      registers: [r],
      collect() {
        this.set(src.fenced().length);
      },
    });
    const total = (name: string, help: string, read: () => number) =>
      new client.Counter({
        name,
        help,
        registers: [r],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    total('cgfence_ring_buffer_drops_total', 'Kernel events lost because the ring buffer was full (counted in the kernel)', () =>
      src.kernelDrops(),
    );
    total('cgfence_audit_records_written_total', 'Audit records written', () => src.audit().written);
    total('cgfence_audit_write_errors_total', 'Failed audit log writes (enforcement continues)', () => src.audit().writeErrors);
    total(
      'cgfence_audit_dropped_total',
      'Audit records lost after the in-memory backlog filled (each loss is also an agent record)',
      () => src.audit().dropped,
    );
    new client.Gauge({
      name: 'cgfence_audit_pending',
      help: 'Audit records waiting in memory for the log to become writable',
      registers: [r],
      collect() {
        this.set(src.audit().pending);
      },
    });
    new client.Gauge({
      name: 'cgfence_containerd_connected',
      help: '1 while the containerd event stream is connected',
      registers: [r],
      collect() {
        this.set(src.containerdConnected() ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'cgfence_kernel_table_entries',
      help: 'Entries in use in each shared kernel table (exec_fences, exec_allow, net_rules4, net_rules6)',
      labelNames: ['table'],
      registers: [r],
      collect() {
        for (const [t, u] of Object.entries(src.tables())) this.set({ table: t }, u.used);
      },
    });
    new client.Gauge({
      name: 'cgfence_kernel_table_capacity',
      help: 'Capacity (max_entries) of each shared kernel table',
      labelNames: ['table'],
      registers: [r],
      collect() {
        for (const [t, u] of Object.entries(src.tables())) this.set({ table: t }, u.capacity);
      },
    });
    new client.Gauge({
      name: 'cgfence_health_check',
      help: '1 when the named check passes (the checks of /healthz and /readyz)',
      labelNames: ['check'],
      registers: [r],
      collect() {
        this.reset();
        for (const c of src.health().checks) this.set({ check: c.name }, c.ok ? 1 : 0);
      },
    });
  }

  /**
   * prom-client's process and Node.js metrics, only once they are served: its event-loop lag
   * monitor is a timer, and at its default 10 ms it cost the daemon's main thread ~6 ms of
   * CPU per second at idle here (8–10 ms/s in all, 3.2 without it). Sampled every 100 ms:
   * ~1.5 ms/s.
   */
  private collectProcessMetrics(): void {
    const r = this.registry;
    client.collectDefaultMetrics({ register: r, prefix: 'cgfence_', eventLoopMonitoringPrecision: LAG_SAMPLE_MS });
    // prom-client names a few gauges *_total (active handles, requests, resources); a
    // dashboard would take them for counters, so they go.
    for (const m of r.getMetricsAsArray()) {
      const { name, type } = m as unknown as { name: string; type: string };
      if (name.endsWith('_total') && type !== 'counter') r.removeSingleMetric(name);
    }
  }

  /** Audit records of decisions that no kernel counter counts (seccomp): counted as they are written. */
  observeRecords(records: AuditInput[]): void {
    for (const rec of records) {
      const control = RECORD_CONTROL[rec.type];
      const action = rec.action as DecisionAction;
      if (!control || !['deny', 'audit', 'allow'].includes(action)) continue;
      // A rate-limited record stands for `count` decisions.
      const n = typeof rec.count === 'number' && rec.count > 0 ? rec.count : 1;
      const key = containerKey(String(rec.namespace ?? ''), String(rec.container_id ?? ''));
      const d = this.fromRecords.get(key) ?? {};
      add(d, { [control]: { [action]: n } });
      this.fromRecords.set(key, d);
    }
  }

  refusal(stage: 'prepare' | 'attach' | 'late-attach' | 'policy-set'): void {
    this.refusals.inc({ stage });
  }

  /** A container's fences are going: its decisions so far move into the node's retired total. */
  retire(f: FencedContainer): void {
    add(this.retired, this.decisionsOf(f));
    this.fromRecords.delete(containerKey(f.namespace, f.id));
  }

  /** Every decision of one fenced container so far (kernel counters and counted records). */
  decisionsOf(f: FencedContainer): Decisions {
    const d: Decisions = {};
    add(d, this.src.kernelDecisions(f));
    add(d, this.fromRecords.get(containerKey(f.namespace, f.id)) ?? {});
    return d;
  }

  private perContainer(): Array<{ f: FencedContainer; d: Decisions }> {
    return this.src.fenced().map((f) => ({ f, d: this.decisionsOf(f) }));
  }

  private nodeDecisions(): Decisions {
    const d: Decisions = {};
    add(d, this.retired);
    for (const c of this.perContainer()) add(d, c.d);
    // Records of containers that were never in the registry (e.g. gone before attach).
    const live = new Set(this.src.fenced().map((f) => containerKey(f.namespace, f.id)));
    for (const [k, v] of this.fromRecords) if (!live.has(k)) add(d, v);
    return d;
  }

  /**
   * address: "HOST:PORT" or an absolute unix socket path. Serves /metrics, /healthz (the
   * daemon and its kernel side work) and /readyz (also: containerd reachable, socket up).
   */
  async listen(address: string): Promise<void> {
    const target = parseMetricsAddress(address);
    if (!this.server) this.collectProcessMetrics();
    this.server = http.createServer((req, res) => {
      const url = (req.url ?? '').split('?')[0];
      if (url === '/healthz' || url === '/readyz') {
        const h = this.src.health();
        const checks = url === '/healthz' ? h.checks.filter((c) => c.live) : h.checks;
        const ok = checks.every((c) => c.ok);
        res
          .writeHead(ok ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' })
          .end(checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`).join('\n') + '\n');
        return;
      }
      if (url !== '/metrics') {
        res.writeHead(404).end('try /metrics, /healthz or /readyz\n');
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      if ('path' in target) {
        fs.rmSync(target.path, { force: true });
        this.server!.listen(target.path, () => {
          fs.chmodSync(target.path, 0o600);
          resolve();
        });
      } else {
        this.server!.listen(target.port, target.host, () => resolve());
      }
    });
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
