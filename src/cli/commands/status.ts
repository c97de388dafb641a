import { parseArgs } from '../args';
import { request, socketPath } from '../../daemon/daemon-client';

export const help = `usage: cgfence status [--socket PATH] [--json]

Shows the daemon, its containerd connection, the kernel features and backends in use,
the audit log's health and how many containers are fenced.`;

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['socket'], bools: ['json'] });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  const s = await request<Record<string, Record<string, unknown>>>(socketPath(a.flags.socket), { op: 'status' });
  if (a.bools.has('json')) {
    console.log(JSON.stringify(s, null, 2));
    return 0;
  }
  const d = s.daemon, c = s.containerd, k = s.kernel, au = s.audit;
  const rows: Array<[string, unknown]> = [
    ['daemon', `pid ${d.pid}, version ${d.version}, up since ${d.startedAt}${d.adopted ? ' (adopted pinned fences)' : ''}`],
    ['socket', d.socket],
    ['fail mode', d.failMode],
    ['exec deny', d.execDeny === 'kill' ? 'kill (the kernel fence alone: SIGKILL before the first instruction, no seccomp notify)' : `${d.execDeny ?? 'errno'} (EACCES through seccomp user notification, the kernel fence behind it)`],
    ['cgroup mode', d.cgroupMode],
    ['containerd', c.error ? `UNREACHABLE at ${c.address}: ${c.error}` : `${c.version} at ${c.address} (${c.state})`],
    ['kernel', `${k.release}, BTF ${k.btf ? 'yes' : 'no'}, cgroup v2 ${k.cgroupV2 ?? 'none'}, libbpf ${k.libbpf}`],
    ...(['exec', 'network', 'seccomp'] as const).map((c): [string, unknown] => {
      const b = (k.backends as Record<string, Record<string, unknown>>)[c];
      return [`${c} fence`, b.backend];
    }),
    ...(k.learn ? [['learn mode', (() => {
      const l = k.learn as { backend: string; learning: number; error?: string };
      return `${l.backend}; ${l.learning} container(s) learning${l.error ? `; ${l.error}` : ''}`;
    })()] as [string, unknown]] : []),
    ['pins', d.pinDir],
    ['audit log', `${au.path}: ${au.written} written, ${au.writeErrors} write errors, ${au.dropped} dropped, kernel drops ${au.kernelDrops}${au.lastError ? `, last error: ${au.lastError}` : ''}`],
    ['fenced', `${s.fences} container(s)`],
    ['tamper watch', tamperRow(s.tamper)],
  ];
  for (const [k2, v] of rows) console.log(`${k2.padEnd(14)} ${v}`);
  return 0;
}

function tamperRow(t: Record<string, unknown> | null | undefined): string {
  if (!t) return 'none (not in this daemon)';
  if (t.error) return `OFF: ${t.error}`;
  const p = t.protected as { maps: number; programs: number; links: number };
  return `${(t.hooks as string[]).length} syscall tracepoints${t.pinned ? ', pinned' : ''}; protecting ${p.maps} maps, ${p.programs} programs, ${p.links} links; lost ${t.lost}, unreadable ${t.unreadable}`;
}
