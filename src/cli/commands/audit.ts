import { AuditFilter, compileFilter, followRecords, formatRecord, readRecords } from '../../audit/audit-read';
import { AUDIT_TYPES, listLogFiles } from '../../audit/audit-record';
import { verifyAuditLog } from '../../audit/audit-verify';
import { UsageError, parseArgs } from '../args';
import { OUTPUT_FLAGS, outputFormat } from '../output';
import { formatTimestamp } from '../time-format';

export const help = `usage: cgfence audit [--follow] [--container ID] [--namespace NS] [--type TYPE]
                     [--action ACTION] [--since 10m] [--tail N] [-o table|wide|json] [--utc]
                     [--audit-log FILE]
       cgfence audit verify [FILE]

Shows the node's audit log, one readable line per record: local date, time and zone (UTC
with --utc); -o wide also shows whole container ids; -o json (or --json) prints the raw
records. --container takes an id or a prefix of one; --type is one of
${AUDIT_TYPES.join(', ')}; --action one that records of the log have; --since takes a duration (90s, 10m, 2h, 1d) or an RFC 3339 time.
The log is $CGFENCE_AUDIT_LOG, or /var/log/cgfence/audit.log.

verify checks the log's hash chain (across rotated files) and names the first record
that was altered, removed or inserted; it exits 1 when the chain is broken.`;

export function auditLogPath(flag?: string): string {
  return flag ?? process.env.CGFENCE_AUDIT_LOG ?? '/var/log/cgfence/audit.log';
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, {
    values: ['container', 'namespace', 'type', 'action', 'since', 'tail', 'audit-log', ...OUTPUT_FLAGS.values],
    bools: ['follow', 'utc', ...OUTPUT_FLAGS.bools],
    short: OUTPUT_FLAGS.short,
  });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  if (a.positionals[0] === 'verify') {
    const file = a.positionals[1] ?? auditLogPath(a.flags['audit-log']);
    const r = verifyAuditLog(file);
    if (r.ok) {
      console.log(
        `${file}: hash chain intact, ${r.records} record(s) in ${r.files.length} file(s), seq ${r.firstSeq}..${r.lastSeq} (${r.anchor === 'genesis' ? 'from the first record ever written' : r.anchor === 'rotated' ? 'older files rotated away' : 'empty'})`,
      );
      return 0;
    }
    console.error(`${r.file}:${r.line}: ${r.reason}${r.seq !== undefined && r.seq !== null ? ` (seq ${r.seq})` : ''}`);
    return 1;
  }
  if (a.positionals.length)
    throw new UsageError(`unexpected argument ${JSON.stringify(a.positionals[0])} (did you mean \`cgfence audit verify\`?)`);
  const file = auditLogPath(a.flags['audit-log']);
  const tail = a.flags.tail !== undefined ? Number(a.flags.tail) : undefined;
  if (tail !== undefined && (!Number.isInteger(tail) || tail < 0)) throw new UsageError(`--tail ${a.flags.tail}: expected a whole number`);
  if (a.flags.type !== undefined && !(AUDIT_TYPES as readonly string[]).includes(a.flags.type)) {
    throw new UsageError(`--type ${JSON.stringify(a.flags.type)}: expected one of ${AUDIT_TYPES.join(', ')}`);
  }
  const filter: AuditFilter = {
    container: a.flags.container,
    namespace: a.flags.namespace,
    type: a.flags.type,
    action: a.flags.action,
    since: a.flags.since,
    tail,
  };
  try {
    compileFilter(filter); // a bad --since is the user's, said before any reading
  } catch (e) {
    if (e instanceof RangeError)
      throw new UsageError(`--since ${JSON.stringify(a.flags.since)}: expected a duration like 90s, 10m, 2h, 1d or an RFC 3339 time`);
    throw e;
  }
  const format = outputFormat(a);
  const utc = a.bools.has('utc');
  const print = (r: Parameters<typeof formatRecord>[0]) =>
    console.log(
      format === 'json' ? JSON.stringify(r) : formatRecord(r, { time: (ts) => formatTimestamp(ts, { utc }), fullIds: format === 'wide' }),
    );
  if (a.bools.has('follow')) {
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    process.once('SIGTERM', () => ac.abort());
    await followRecords(file, filter, print, ac.signal, { fromStart: tail === undefined });
    return 0;
  }
  if (listLogFiles(file).length === 0) throw new UsageError(`no audit log at ${file} (set --audit-log or CGFENCE_AUDIT_LOG)`);
  // Actions are open-ended (each record type has its own), so an unknown --action is one
  // that no record in the log has: the error lists the ones that are there.
  const action = filter.action;
  const actions = new Set<string>();
  let records;
  try {
    records = await readRecords(file, {
      ...filter,
      action: undefined,
      where: (r) => {
        actions.add(r.action);
        return action === undefined || r.action === action;
      },
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new UsageError(`no audit log at ${file} (set --audit-log or CGFENCE_AUDIT_LOG)`);
    throw e;
  }
  if (typeof action === 'string' && !actions.has(action)) {
    throw new UsageError(
      `--action ${JSON.stringify(action)}: no ${filter.type ?? ''}${filter.type ? ' ' : ''}record in ${file} has it (there: ${[...actions].sort().join(', ') || 'none'})`,
    );
  }
  for (const r of records) print(r);
  return 0;
}
