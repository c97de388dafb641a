import YAML, { Scalar, YAMLMap } from 'yaml';
import { readRecords } from '../../audit/audit-read';
import { AuditRecord } from '../../audit/audit-record';
import { containerKey } from '../../fence/backend';
import { MergedLearned, mergeLearned } from '../../fence/learn/learned-merge';
import { Learned, PodRef, annotationMeanings, learnedAnnotations, learnedWarnings, prefixProblem } from '../../fence/learn/learned-policy';
import { UsageError, parseArgs } from '../args';
import { DaemonClientError, request, socketPath } from '../../daemon/daemon-client';
import { auditLogPath } from './audit';

export const help = `usage: cgfence learn CONTAINER [CONTAINER...] [--pod NAMESPACE/NAME] [--namespace NS]
                     [--format ctr|yaml|json] [--json] [--prefix-len4 N] [--prefix-len6 N]
                     [--socket PATH] [--audit-log FILE]

Prints the annotations that fence exactly what containers started with
cgfence.io/mode=learn did: the executables they ran (exec-allow), the peers they talked to
(egress-allow, ingress-allow: each address alone, /32 and /128, unless a prefix length
folds them into networks) and the syscalls they made (seccomp-allow).

Several containers (several runs of a job, replicas) give one policy: the union of what
each did. --pod NAMESPACE/NAME takes every learning container of that Kubernetes pod.

  --format ctr    KEY=VALUE a line, for \`ctr run --annotation\` (the default)
  --format yaml   the pod annotations, ready to paste into a pod spec's metadata
  --format json   the annotations and everything learned, each item with the containers
                  it was seen in and how often (--json is the same)

An empty -allow annotation allows nothing: it is said next to it (on stderr for ctr, as a
comment in yaml, under "meanings" in json). While a container runs the daemon answers; after
it is gone, the record written to the audit log at its exit does. Anything that may be
missing (lost events, full kernel tables, files created at run time) is said on stderr.`;

type Format = 'ctr' | 'yaml' | 'json';

interface LearnReply {
  running: boolean;
  learned?: Learned;
  namespace?: string;
  mode?: string;
}

/** How long to wait for the exit record of a container that has exited but is not yet detached. */
const EXIT_RECORD_WAIT_MS = 5000;

function prefix(flag: string, v: string | undefined, family: 4 | 6): number | undefined {
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  const problem = prefixProblem(`--${flag}`, n, family);
  if (problem) throw new UsageError(problem.replace(`${n}`, JSON.stringify(v)));
  return n;
}

function parsePod(v: string | undefined): PodRef | undefined {
  if (v === undefined) return undefined;
  const m = /^([^/\s]+)\/([^/\s]+)$/.exec(v);
  if (!m) throw new UsageError(`--pod ${JSON.stringify(v)}: expected NAMESPACE/NAME (like default/web-0)`);
  return { namespace: m[1], name: m[2] };
}

function parseFormat(v: string | undefined, json: boolean): Format {
  if (v !== undefined && !['ctr', 'yaml', 'json'].includes(v))
    throw new UsageError(`--format ${JSON.stringify(v)}: expected ctr, yaml or json`);
  if (json && v !== undefined && v !== 'json') throw new UsageError(`--json and --format ${v} disagree: --json is --format json`);
  return (v as Format | undefined) ?? (json ? 'json' : 'ctr');
}

async function learnedRecords(file: string, filter: { container?: string; namespace?: string }): Promise<AuditRecord[]> {
  try {
    const records = await readRecords(file, { type: 'lifecycle', action: 'learned', ...filter });
    return records.filter((r) => typeof r.learned === 'object' && r.learned !== null);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new UsageError(`no audit log at ${file} (set --audit-log or CGFENCE_AUDIT_LOG)`);
    throw e;
  }
}

/** The last learned record of the container in the audit log (its rotated files included). */
async function fromLog(file: string, id: string, namespace: string | undefined): Promise<Learned | null> {
  // The filter matches id prefixes; only the container itself counts here.
  const mine = (await learnedRecords(file, { container: id, namespace })).filter((r) => r.container_id === id);
  const namespaces = [...new Set(mine.map((r) => r.namespace))];
  if (namespaces.length > 1)
    throw new UsageError(
      `container ${JSON.stringify(id)} learned in several namespaces (${namespaces.join(', ')}): name one with --namespace`,
    );
  const last = mine[mine.length - 1];
  return last ? (last.learned as Learned) : null;
}

class Sources {
  daemonDown: string | null = null;

  constructor(
    private readonly socket: string,
    private readonly log: string,
  ) {}

  private async ask<T>(req: Record<string, unknown>): Promise<T | null> {
    if (this.daemonDown) return null;
    try {
      return await request<T>(this.socket, req);
    } catch (e) {
      // Gone containers need no daemon: their records are in the log.
      if (!(e instanceof DaemonClientError) || !/cannot reach the cgfence daemon/.test(e.message)) throw e;
      this.daemonDown = e.message;
      return null;
    }
  }

  /**
   * One container: from the daemon while it learns, else its exit record. A container that
   * has exited but whose exit the daemon has not handled yet (the moment `ctr run` returns)
   * gets its exit record, written within moments: the record can still gain a syscall after
   * the answer (seen once in twenty runs), and it is what the policy is made of.
   */
  async container(id: string, namespace: string | undefined): Promise<Learned> {
    const reply = (await this.ask<LearnReply>({ op: 'learn', id, ...(namespace ? { namespace } : {}) })) ?? { running: false };
    if (reply.running && reply.learned?.running === false) {
      const l = reply.learned;
      const end = Date.now() + EXIT_RECORD_WAIT_MS;
      for (;;) {
        const rec = await fromLog(this.log, id, l.namespace);
        if (rec && rec.since === l.since) return rec;
        if (Date.now() > end) return l;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const learned = reply.running && reply.learned ? reply.learned : await fromLog(this.log, id, namespace ?? reply.namespace);
    if (learned) return learned;
    const why = reply.mode ? `it runs in mode ${reply.mode}, not learn` : (this.daemonDown ?? 'no container of that id learns now');
    throw new UsageError(
      `nothing learned for container ${JSON.stringify(id)}: ${why}, and ${this.log} has no learned record of it (start it with --annotation cgfence.io/mode=learn)`,
    );
  }

  /** Every container of the pod: those learning now (asked one by one), and the exit records of the others. */
  async pod(pod: PodRef): Promise<Learned[]> {
    const inPod = (l: Learned | undefined) => l?.pod?.namespace === pod.namespace && l.pod.name === pod.name;
    const out = new Map<string, Learned>();
    const ps = await this.ask<{ containers: Array<{ namespace: string; id: string; mode: string }> }>({ op: 'ps' });
    for (const c of ps?.containers.filter((x) => x.mode === 'learn') ?? []) {
      const r = await this.ask<LearnReply>({ op: 'learn', id: c.id, namespace: c.namespace });
      if (r?.running && inPod(r.learned)) out.set(containerKey(c.namespace, c.id), r.learned!);
    }
    for (const r of await learnedRecords(this.log, {})) {
      const l = r.learned as Learned;
      const key = containerKey(String(r.namespace), String(r.container_id));
      // The last record of a container wins; one learning now is newer than any record.
      if (inPod(l) && !out.get(key)?.running) out.set(key, l);
    }
    if (out.size === 0) {
      throw new UsageError(
        `nothing learned for pod ${pod.namespace}/${pod.name}: ${this.daemonDown ? `${this.daemonDown}, and ` : 'no container of it learns now, and '}${this.log} has no learned record of it (give the pod the annotation cgfence.io/mode=learn)`,
      );
    }
    return [...out.values()];
  }
}

function render(
  format: Format,
  merged: MergedLearned,
  annotations: Record<string, string>,
  meanings: Record<string, string>,
  warnings: string[],
): string {
  if (format === 'json') {
    const one = merged.sources.length === 1 ? merged.sources[0] : null;
    return JSON.stringify(
      {
        annotations,
        meanings,
        warnings,
        // One container: its own fields at the top, as before merging existed.
        ...(one
          ? { namespace: one.namespace, id: one.id, ...(one.pod ? { pod: one.pod } : {}), running: one.running, since: one.since }
          : {}),
        ...merged,
      },
      null,
      2,
    );
  }
  if (format === 'ctr')
    return Object.entries(annotations)
      .map(([k, v]) => `${k}=${v}`)
      .join('\n');
  const doc = new YAML.Document({ metadata: { annotations } });
  const names = merged.sources.map((s) => containerKey(s.namespace, s.id));
  doc.commentBefore = [
    ` cgfence learn: what ${names.length === 1 ? names[0] : `${names.length} containers (${names.join(', ')})`} did, as pod annotations`,
    ...warnings.map((w) => ` warning: ${w}`),
  ].join('\n');
  const map = doc.getIn(['metadata', 'annotations'], true) as YAMLMap<Scalar<string>, unknown>;
  for (const pair of map.items) {
    const m = meanings[pair.key.value];
    if (m) pair.key.commentBefore = ` ${m}`;
  }
  return doc.toString({ lineWidth: 0 }).trimEnd();
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, {
    values: ['namespace', 'prefix-len4', 'prefix-len6', 'socket', 'audit-log', 'pod', 'format'],
    bools: ['json'],
  });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  const pod = parsePod(a.flags.pod);
  if (a.positionals.length === 0 && !pod) throw new UsageError('expected a CONTAINER id (or several), or --pod NAMESPACE/NAME');
  const format = parseFormat(a.flags.format, a.bools.has('json'));
  const namespace = a.flags.namespace;
  const fold = {
    prefixLen4: prefix('prefix-len4', a.flags['prefix-len4'], 4),
    prefixLen6: prefix('prefix-len6', a.flags['prefix-len6'], 6),
  };

  const sources = new Sources(socketPath(a.flags.socket), auditLogPath(a.flags['audit-log']));
  const found = new Map<string, Learned>();
  for (const id of a.positionals) {
    const l = await sources.container(id, namespace);
    found.set(containerKey(l.namespace, l.id), l);
  }
  if (pod) for (const l of await sources.pod(pod)) found.set(containerKey(l.namespace, l.id), l);

  const merged = mergeLearned([...found.values()]);
  const annotations = learnedAnnotations(merged, fold);
  const meanings = annotationMeanings(annotations);
  const warnings = learnedWarnings(merged);
  console.log(render(format, merged, annotations, meanings, warnings));
  if (format === 'ctr') for (const [k, m] of Object.entries(meanings)) console.error(`cgfence learn: note: ${k} is ${m}`);
  for (const w of warnings) console.error(`cgfence learn: warning: ${w}`);
  return 0;
}
