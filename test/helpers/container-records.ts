// A container's audit records, read back from the sandbox's audit log while the daemon writes it.
import { readRecords } from '../../src/audit/audit-read';
import { SandboxPaths } from '../../src/sandbox/sandbox';
import { waitFor } from './sandbox';

export type Rec = Awaited<ReturnType<typeof readRecords>>[number];

/** The records of container id (only its own: not those of a container it is named in). */
export async function recordsOf(p: SandboxPaths, id: string): Promise<Rec[]> {
  return (await readRecords(p.auditLog, { container: id })).filter((r) => r.container_id === id);
}

/** The first record of container id that pred accepts, once it is written (20 s at most). */
export async function waitRecord(p: SandboxPaths, id: string, pred: (r: Rec) => boolean, what: string): Promise<Rec> {
  let last: Rec[] = [];
  return waitFor(
    what,
    () => {
      void recordsOf(p, id).then((x) => (last = x));
      return last.find(pred);
    },
    20_000,
  );
}
