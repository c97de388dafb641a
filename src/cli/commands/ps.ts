import { parseArgs } from '../args';
import { containerKey } from '../../fence/backend';
import { request, socketPath } from '../../daemon/daemon-client';
import { OUTPUT_FLAGS, outputFormat, renderTable } from '../output';
import { formatTimestamp } from '../time-format';

export const help = `usage: cgfence ps [-o table|wide|json] [--utc] [--socket PATH]

Lists fenced containers: mode, what each control gets (enforced, audited,
unenforceable and why), and DENIED: every decision that refused something, whichever
control made it (exec, including those refused by seccomp notify; network; seccomp).
-o wide adds the denials per control, the backends, the policy hash and the cgroup;
-o json (or --json) everything the daemon knows. Times are local (UTC with --utc).`;

type Decisions = Partial<Record<'exec' | 'network' | 'seccomp', Partial<Record<'deny' | 'audit' | 'allow', number>>>>;

interface Row {
  namespace: string;
  id: string;
  pid: number;
  cgroup: string | null;
  mode: string;
  backend: Record<string, string>;
  controls: Record<string, string>;
  decisions?: Decisions;
  policyHash: string;
  attachedAt: string;
  workload?: Record<string, unknown>;
  /** How a forbidden exec ends for this container: errno (EACCES), kill, or null (nothing denied). */
  execDeny?: 'errno' | 'kill' | null;
}

/** pod/container when the daemon knows the workload (CRI labels), else namespace/id. */
function nameOf(c: Row): string {
  const w = c.workload;
  const pod = typeof w?.pod === 'string' ? w.pod : typeof w?.podName === 'string' ? w.podName : null;
  if (pod) {
    const ns = w?.podNamespace ?? w?.namespace;
    const ctr = w?.container ?? w?.containerName;
    return `${typeof ns === 'string' ? `${ns}/` : ''}${pod}${typeof ctr === 'string' && ctr ? `/${ctr}` : ''}`;
  }
  return containerKey(c.namespace, c.id);
}

export function deniedOf(d: Decisions | undefined): { total: number; exec: number; network: number; seccomp: number } {
  const exec = d?.exec?.deny ?? 0,
    network = d?.network?.deny ?? 0,
    seccomp = d?.seccomp?.deny ?? 0;
  return { total: exec + network + seccomp, exec, network, seccomp };
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, {
    values: ['socket', ...OUTPUT_FLAGS.values],
    bools: ['utc', ...OUTPUT_FLAGS.bools],
    short: OUTPUT_FLAGS.short,
  });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  const format = outputFormat(a);
  const r = await request<{ containers: Row[] }>(socketPath(a.flags.socket), { op: 'ps' });
  if (format === 'json') {
    console.log(JSON.stringify(r.containers, null, 2));
    return 0;
  }
  if (r.containers.length === 0) {
    console.log('no fenced containers');
    return 0;
  }
  const utc = a.bools.has('utc');
  const header = ['CONTAINER', 'PID', 'MODE', 'EXEC', 'EXEC-DENY', 'NETWORK', 'SECCOMP', 'DENIED', 'ATTACHED'];
  if (format === 'wide') header.push('DENIED BY', 'BACKEND', 'POLICY', 'CGROUP');
  const rows = r.containers.map((c) => {
    const d = deniedOf(c.decisions);
    const row = [
      nameOf(c),
      String(c.pid),
      c.mode,
      c.controls.exec,
      c.execDeny ?? '-',
      c.controls.network,
      c.controls.seccomp,
      String(d.total),
      formatTimestamp(c.attachedAt, { utc }),
    ];
    if (format === 'wide')
      row.push(
        `exec=${d.exec} net=${d.network} seccomp=${d.seccomp}`,
        Object.values(c.backend).join(',') || '-',
        c.policyHash,
        c.cgroup ?? '- (no cgroup v2)',
      );
    return row;
  });
  for (const line of renderTable(header, rows, format, 32)) console.log(line);
  return 0;
}
