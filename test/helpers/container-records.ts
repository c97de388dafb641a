// A container's audit records, read back from the sandbox's audit log while the daemon writes it.
import { readRecords } from '../../src/audit/audit-read';
import { SandboxPaths } from '../../src/sandbox/sandbox';
import { waitFor } from './sandbox';

export type Rec = Awaited<ReturnType<typeof readRecords>>[number];

/** The records of container id (only its own: not those of a container it is named in). */
export async function recordsOf(p: SandboxPaths, id: string): Promise<Rec[]> {
  return (await readRecords(p.auditLog, { container: id })).filter((r) => r.container_id === id);
}

/** The first record of container id that pred accepts, once it is written (20 s at most unless told). */
export async function waitRecord(p: SandboxPaths, id: string, pred: (r: Rec) => boolean, what: string, timeoutMs = 20_000): Promise<Rec> {
  return waitFor(what, async () => (await recordsOf(p, id)).find(pred), timeoutMs);
}

/**
 * The records the audit log's container filter gives for id (as `cgfence audit --container`
 * would: ids it starts too, so a test can check each names id), once one that pred accepts is
 * written (20 s at most unless told).
 */
export async function waitRecords(
  p: SandboxPaths,
  id: string,
  pred: (r: Rec) => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<Rec[]> {
  return waitFor(
    what,
    async () => {
      const recs = await readRecords(p.auditLog, { container: id });
      return recs.some(pred) && recs;
    },
    timeoutMs,
  );
}

/** The whole audit log, once pred accepts it (20 s at most): for records of several containers, or of none. */
export async function waitLog(p: SandboxPaths, pred: (recs: Rec[]) => boolean, what: string, timeoutMs = 20_000): Promise<Rec[]> {
  return waitFor(
    what,
    async () => {
      const recs = await readRecords(p.auditLog);
      return pred(recs) && recs;
    },
    timeoutMs,
  );
}
