import fs from 'node:fs';
import { loadConfigFile } from '../../daemon/config';
import { KEYS, PolicyError, parseAnnotations } from '../../policy/annotations';
import { describeSelector, selectProfile } from '../../daemon/profile-selectors';
import { native } from '../../native';
import { UsageError, parseArgs } from '../args';
import { request, socketPath } from '../../daemon/daemon-client';

export const help = `usage: cgfence policy check KEY=VALUE... [--config FILE] [--pod-namespace NS] [--pod-labels K=V,...]
       cgfence policy check --file config.json [--config FILE]

Validates a set of cgfence.io/* annotations (given as KEY=VALUE arguments, or read from
an OCI bundle's config.json) against this node's profiles (--config, the daemon's config
file) and prints every error, each naming the annotation and the bad value. Exits 1 if
any. No daemon is needed. With --pod-namespace and/or --pod-labels, the node's selectors
pick the profile for annotations that name none, as the daemon would for such a pod.

usage: cgfence policy set CONTAINER KEY=VALUE... [KEY-]... [--namespace NS] [--socket PATH] [--json]

Changes the policy of a running fenced container (CONTAINER is ID or NAMESPACE/ID): each
KEY=VALUE sets a cgfence.io/* annotation, KEY- removes one. The daemon validates the result
as at create and applies it through BPF map updates; nothing restarts. Audited as a
lifecycle policy-update record with the old and new policy hash.`;

/** --pod-labels app=web,tier=front */
function podLabels(v: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of (v ?? '').split(',').filter(Boolean)) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--pod-labels: ${JSON.stringify(kv)} is not NAME=VALUE`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

/** The annotations of an OCI bundle's config.json; a missing or malformed file is the user's to fix. */
function bundleAnnotations(file: string): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--file ${file}: not JSON (${(e as Error).message})`);
  }
  const ann = (spec as { annotations?: unknown } | null)?.annotations;
  if (ann === undefined) return {};
  if (typeof ann !== 'object' || ann === null || Array.isArray(ann) || Object.values(ann).some((v) => typeof v !== 'string')) {
    throw new UsageError(`--file ${file}: "annotations" must map keys to string values, as in an OCI config.json`);
  }
  return ann as Record<string, string>;
}

async function runSet(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['namespace', 'socket'], bools: ['json'] });
  const [, target, ...kvs] = a.positionals;
  if (!target || kvs.length === 0) throw new UsageError('expected `cgfence policy set CONTAINER KEY=VALUE...`');
  const slash = target.indexOf('/');
  const namespace = a.flags.namespace ?? (slash > 0 ? target.slice(0, slash) : undefined);
  const id = slash > 0 && !a.flags.namespace ? target.slice(slash + 1) : target;
  const annotations: Record<string, string | null> = {};
  for (const kv of kvs) {
    const eq = kv.indexOf('=');
    if (eq < 0 && kv.endsWith('-') && kv.length > 1) annotations[kv.slice(0, -1)] = null;
    else if (eq <= 0) throw new UsageError(`${JSON.stringify(kv)} is neither KEY=VALUE nor KEY- (to remove KEY)`);
    else annotations[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const r = await request<{
    namespace: string;
    id: string;
    mode: string;
    controls: Record<string, string>;
    oldPolicyHash: string;
    policyHash: string;
  }>(socketPath(a.flags.socket), { op: 'policy-set', namespace, id, annotations });
  if (a.bools.has('json')) {
    console.log(JSON.stringify(r, null, 2));
    return 0;
  }
  console.log(
    `updated ${r.namespace}/${r.id}: mode ${r.mode}; ${Object.entries(r.controls)
      .map(([c, st]) => `${c} ${st}`)
      .join(', ')}`,
  );
  console.log(`  policy ${r.oldPolicyHash} -> ${r.policyHash}`);
  return 0;
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(help);
    return 0;
  }
  if (argv.find((x) => !x.startsWith('-')) === 'set' && !argv.includes('--help') && !argv.includes('-h')) return runSet(argv);
  const a = parseArgs(argv, { values: ['config', 'file', 'pod-namespace', 'pod-labels'], bools: ['json'] });
  if (a.bools.has('help') || a.positionals[0] !== 'check') {
    if (!a.bools.has('help'))
      throw new UsageError(
        `expected \`cgfence policy check KEY=VALUE...\` or \`cgfence policy set CONTAINER KEY=VALUE...\`${a.positionals[0] ? `, not \`${a.positionals[0]}\`` : ''}`,
      );
    console.log(help);
    return 0;
  }
  let annotations: Record<string, string> = {};
  if (a.flags.file) annotations = bundleAnnotations(a.flags.file);
  for (const kv of a.positionals.slice(1)) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`${JSON.stringify(kv)} is not KEY=VALUE`);
    annotations[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const cfgFile = a.flags.config ?? process.env.CGFENCE_CONFIG;
  const cfg = cfgFile ? loadConfigFile(cfgFile) : {};
  // As the daemon does for a pod that names no profile: the node's selectors choose one.
  let selected = '';
  if (annotations[KEYS.profile] === undefined && (a.flags['pod-namespace'] !== undefined || a.flags['pod-labels'] !== undefined)) {
    const chosen = selectProfile(cfg.selectors ?? [], {
      namespace: a.flags['pod-namespace'] ?? null,
      labels: podLabels(a.flags['pod-labels']),
    });
    if (chosen) {
      annotations[KEYS.profile] = chosen.profile;
      selected = ` (selector ${chosen.index}: ${describeSelector(chosen.selector)})`;
    }
  }
  try {
    const p = parseAnnotations(annotations, {
      profiles: cfg.profiles,
      defaultProfile: cfg.defaultProfile ?? null,
      resolveSyscalls: (names) => native().resolveSyscalls(names),
    });
    const show = (v: unknown) =>
      v === null
        ? '-'
        : Array.isArray(v)
          ? v.map((x) => (typeof x === 'object' && x && 'text' in x ? (x as { text: string }).text : String(x))).join(', ')
          : String(v);
    console.log(`valid: mode ${p.mode}${p.profile ? `, profile ${p.profile}${selected}` : ''}`);
    console.log(`  exec-allow     ${show(p.execAllow)}`);
    console.log(`  egress-allow   ${show(p.egressAllow)}    egress-deny   ${show(p.egressDeny)}`);
    console.log(`  ingress-allow  ${show(p.ingressAllow)}    ingress-deny  ${show(p.ingressDeny)}`);
    console.log(`  seccomp-deny   ${show(p.seccompDeny)}    seccomp-allow ${show(p.seccompAllow)}`);
    return 0;
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    for (const p of e.problems) console.error(`error: ${p}`);
    return 1;
  }
}
