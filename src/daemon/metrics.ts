// Prometheus metrics (prom-client), served on a localhost TCP port or a unix socket.
// Values that other parts already count (audit stats, kernel drops) are read at scrape
// time instead of being mirrored, so they cannot drift.
import fs from 'node:fs';
import http from 'node:http';
import client from 'prom-client';

export interface MetricsSources {
  fenced(): number;
  kernelDrops(): number;
  audit(): { written: number; writeErrors: number; dropped: number; pending: number };
  containerdConnected(): boolean;
  /** Shared kernel tables: entries in use and max_entries, by table name. */
  tables(): Record<string, { used: number; capacity: number }>;
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly decisions: client.Counter<'type' | 'action'>;
  readonly attachSeconds: client.Histogram<'how'>;
  private server: http.Server | null = null;

  constructor(src: MetricsSources) {
    const r = this.registry;
    this.decisions = new client.Counter({ name: 'cgfence_decisions_total', help: 'Fence decisions by type (exec, net, seccomp) and action (deny, audit, allow)', labelNames: ['type', 'action'], registers: [r] });
    this.attachSeconds = new client.Histogram({
      name: 'cgfence_attach_duration_seconds', help: 'Time to attach every fence of a container', labelNames: ['how'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5], registers: [r],
    });
    new client.Gauge({ name: 'cgfence_fenced_containers', help: 'Containers with at least one fence attached', registers: [r], collect() { this.set(src.fenced()); } });
    new client.Gauge({ name: 'cgfence_ring_buffer_drops_total', help: 'Kernel events lost because the ring buffer was full (counted in the kernel)', registers: [r], collect() { this.set(src.kernelDrops()); } });
    new client.Gauge({ name: 'cgfence_audit_records_written_total', help: 'Audit records written', registers: [r], collect() { this.set(src.audit().written); } });
    new client.Gauge({ name: 'cgfence_audit_write_errors_total', help: 'Failed audit log writes (enforcement continues)', registers: [r], collect() { this.set(src.audit().writeErrors); } });
    new client.Gauge({ name: 'cgfence_audit_dropped_total', help: 'Audit records lost after the in-memory backlog filled (each loss is also an agent record)', registers: [r], collect() { this.set(src.audit().dropped); } });
    new client.Gauge({ name: 'cgfence_audit_pending', help: 'Audit records waiting in memory for the log to become writable', registers: [r], collect() { this.set(src.audit().pending); } });
    new client.Gauge({ name: 'cgfence_containerd_connected', help: '1 while the containerd event stream is connected', registers: [r], collect() { this.set(src.containerdConnected() ? 1 : 0); } });
    new client.Gauge({ name: 'cgfence_kernel_table_entries', help: 'Entries in use in each shared kernel table (exec_fences, exec_allow, net_rules4, net_rules6)', labelNames: ['table'], registers: [r], collect() { for (const [t, u] of Object.entries(src.tables())) this.set({ table: t }, u.used); } });
    new client.Gauge({ name: 'cgfence_kernel_table_capacity', help: 'Capacity (max_entries) of each shared kernel table', labelNames: ['table'], registers: [r], collect() { for (const [t, u] of Object.entries(src.tables())) this.set({ table: t }, u.capacity); } });
    client.collectDefaultMetrics({ register: r, prefix: 'cgfence_process_' });
  }

  decision(type: string, action: string, n = 1): void {
    this.decisions.inc({ type, action }, n);
  }

  /** address: "HOST:PORT" (keep it on localhost) or an absolute unix socket path. */
  async listen(address: string): Promise<void> {
    this.server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      if (address.startsWith('/')) {
        fs.rmSync(address, { force: true });
        this.server!.listen(address, () => { fs.chmodSync(address, 0o600); resolve(); });
      } else {
        const i = address.lastIndexOf(':');
        if (i < 0) throw new Error(`metrics address ${JSON.stringify(address)}: expected HOST:PORT or /path/to.sock`);
        this.server!.listen(Number(address.slice(i + 1)), address.slice(0, i), () => resolve());
      }
    });
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
