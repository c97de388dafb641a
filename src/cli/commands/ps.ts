import { parseArgs } from '../args';
import { request, socketPath } from '../../daemon/daemon-client';

export const help = `usage: cgfence ps [--socket PATH] [--json]

Lists fenced containers: mode, what each control gets (enforced, audited,
unenforceable and why), the backend, the cgroup and the kernel's decision counters.`;

interface Row {
  namespace: string; id: string; pid: number; /** null: no cgroup v2 (a v1-only host) */ cgroup: string | null; mode: string; backend: Record<string, string>;
  controls: Record<string, string>; counters: { denied: number; audited: number; allowed: number } | null;
  execAllow: Array<{ path: string }>; policyHash: string;
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['socket'], bools: ['json'] });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  const r = await request<{ containers: Row[] }>(socketPath(a.flags.socket), { op: 'ps' });
  if (a.bools.has('json')) {
    console.log(JSON.stringify(r.containers, null, 2));
    return 0;
  }
  if (r.containers.length === 0) {
    console.log('no fenced containers');
    return 0;
  }
  const header = ['NAMESPACE/ID', 'PID', 'MODE', 'EXEC', 'NETWORK', 'SECCOMP', 'BACKEND', 'DENIED', 'CGROUP'];
  const rows = r.containers.map((c) => [
    `${c.namespace}/${c.id}`, String(c.pid), c.mode, c.controls.exec, c.controls.network, c.controls.seccomp, Object.values(c.backend).join(',') || '-',
    String(c.counters?.denied ?? '-'), c.cgroup ?? '- (no cgroup v2)',
  ]);
  const widths = header.map((h, i) => Math.min(48, Math.max(h.length, ...rows.map((row) => row[i].length))));
  for (const row of [header, ...rows]) console.log(row.map((v, i) => (i === row.length - 1 ? v : v.padEnd(widths[i]))).join('  '));
  return 0;
}
