import { readRecords } from '../../audit/audit-read';
import { Learned, learnedAnnotations, learnedWarnings, prefixProblem } from '../../fence/learn/learned-policy';
import { UsageError, parseArgs } from '../args';
import { DaemonClientError, request, socketPath } from '../../daemon/daemon-client';
import { auditLogPath } from './audit';

export const help = `usage: cgfence learn CONTAINER [--namespace NS] [--prefix-len4 N] [--prefix-len6 N]
                     [--json] [--socket PATH] [--audit-log FILE]

Prints the annotations that fence exactly what a container started with
cgfence.io/mode=learn did: the executables it ran (exec-allow), the peers it talked to
(egress-allow, ingress-allow: each address alone, /32 and /128, unless a prefix length
folds them into networks) and the syscalls it made (seccomp-allow). One KEY=VALUE a line,
ready for \`ctr run --annotation\`; --json gives the annotations and everything learned.

While the container runs the daemon answers; after it is gone, the record written to the
audit log at its exit does. Anything that may be missing (lost events, full kernel tables)
is said on stderr.`;

interface LearnReply { running: boolean; learned?: Learned; namespace?: string; mode?: string }

function prefix(flag: string, v: string | undefined, family: 4 | 6): number | undefined {
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  const problem = prefixProblem(`--${flag}`, n, family);
  if (problem) throw new UsageError(problem.replace(`${n}`, JSON.stringify(v)));
  return n;
}

/** The last learned record of the container in the audit log (its rotated files included). */
async function fromLog(file: string, id: string, namespace: string | undefined): Promise<Learned | null> {
  let records;
  try {
    records = await readRecords(file, { type: 'lifecycle', action: 'learned', container: id, namespace });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`no audit log at ${file} (set --audit-log or CGFENCE_AUDIT_LOG)`);
    throw e;
  }
  // The filter matches id prefixes; only the container itself counts here.
  const mine = records.filter((r) => r.container_id === id && typeof r.learned === 'object' && r.learned !== null);
  const namespaces = [...new Set(mine.map((r) => r.namespace))];
  if (namespaces.length > 1) throw new UsageError(`container ${JSON.stringify(id)} learned in several namespaces (${namespaces.join(', ')}): name one with --namespace`);
  const last = mine[mine.length - 1];
  return last ? (last.learned as Learned) : null;
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['namespace', 'prefix-len4', 'prefix-len6', 'socket', 'audit-log'], bools: ['json'] });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  if (a.positionals.length !== 1) throw new UsageError(`expected one CONTAINER id, got ${a.positionals.length}`);
  const id = a.positionals[0];
  const namespace = a.flags.namespace;
  const fold = { prefixLen4: prefix('prefix-len4', a.flags['prefix-len4'], 4), prefixLen6: prefix('prefix-len6', a.flags['prefix-len6'], 6) };

  let reply: LearnReply = { running: false };
  let daemonDown: string | null = null;
  try {
    reply = await request<LearnReply>(socketPath(a.flags.socket), { op: 'learn', id, ...(namespace ? { namespace } : {}) });
  } catch (e) {
    // A gone container needs no daemon: its record is in the log.
    if (!(e instanceof DaemonClientError) || !/cannot reach the cgfence daemon/.test(e.message)) throw e;
    daemonDown = e.message;
  }
  const log = auditLogPath(a.flags['audit-log']);
  const learned = reply.running && reply.learned ? reply.learned : await fromLog(log, id, namespace ?? reply.namespace);
  if (!learned) {
    const why = reply.mode ? `it runs in mode ${reply.mode}, not learn` : daemonDown ? daemonDown : 'no container of that id learns now';
    throw new UsageError(`nothing learned for container ${JSON.stringify(id)}: ${why}, and ${log} has no learned record of it (start it with --annotation cgfence.io/mode=learn)`);
  }

  const annotations = learnedAnnotations(learned, fold);
  const warnings = learnedWarnings(learned);
  if (a.bools.has('json')) {
    console.log(JSON.stringify({ annotations, warnings, ...learned }, null, 2));
  } else {
    for (const [k, v] of Object.entries(annotations)) console.log(`${k}=${v}`);
  }
  for (const w of warnings) console.error(`cgfence learn: warning: ${w}`);
  return 0;
}
