// Records that cgfence-runc could only spool because the daemon was unreachable (a
// fail-open create). The daemon moves them into the audit log, so a fail-open container
// is never silent; reconcile then fences it (late attach).
import fs from 'node:fs';
import path from 'node:path';
import { AuditInput } from '../audit/audit-record';

const FILE = 'fail-open.jsonl';

/** Takes every spooled record (rename first: the launcher appends with O_APPEND at any time). */
export function takeSpooled(spoolDir: string): AuditInput[] {
  const src = path.join(spoolDir, FILE);
  const taking = path.join(spoolDir, `${FILE}.${process.pid}.taking`);
  try {
    fs.renameSync(src, taking);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: AuditInput[] = [];
  for (const line of fs.readFileSync(taking, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as Record<string, unknown>;
      out.push({
        ...r,
        type: 'agent',
        action: 'fail-open',
        ts: typeof r.ts === 'string' ? r.ts : undefined,
        container_id: String(r.container_id ?? ''),
        namespace: String(r.namespace ?? ''),
      });
    } catch {
      out.push({ type: 'agent', action: 'fail-open', reason: 'unparseable spooled record', raw: line.slice(0, 1000) });
    }
  }
  fs.rmSync(taking, { force: true });
  return out;
}
