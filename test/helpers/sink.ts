// An EventSink for kernel-level tests that run a backend without a daemon: records are
// collected, times stay monotonic, and no container owns an event key.
import { AuditInput } from '../../src/audit/audit-record';
import { EventSink } from '../../src/fence/event-sink';

export function collectingSink(records: AuditInput[] = []): EventSink & { records: AuditInput[] } {
  return {
    records,
    write: (r) => {
      records.push(...r);
    },
    toWallNs: (n) => n,
    owner: () => undefined,
  };
}
