// The daemon's EventSink: kernel events of every backend become audit records here, with
// the owner from the registry, wall-clock times, and decision metrics. Built before the
// backends and handed to them (fence/event-sink.ts).
import { AuditInput } from '../audit/audit-record';
import { AuditLog } from '../audit/audit-log';
import { FencedContainer } from '../fence/backend';
import { EventSink } from '../fence/event-sink';
import { FenceRegistry } from './fence-registry';
import type { Metrics } from './metrics';

export class AuditSink implements EventSink {
  private readonly clockOffset: bigint;
  /** The daemon's metrics, which count what records say (seccomp decisions, refusals). */
  metrics: Metrics | null = null;

  constructor(
    private readonly audit: AuditLog,
    private readonly registry: FenceRegistry,
  ) {
    // bpf_ktime_get_ns() and process.hrtime are both CLOCK_MONOTONIC.
    this.clockOffset = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  }

  write(records: AuditInput[]): void {
    this.metrics?.observeRecords(records);
    this.audit.writeBatch(records);
  }

  toWallNs(mono: bigint): bigint {
    return mono + this.clockOffset;
  }

  owner(key: bigint | string): FencedContainer | undefined {
    return this.registry.ownerOf(key);
  }
}
