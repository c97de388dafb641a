import { parseArgs } from '../args';
import { request, socketPath } from '../../daemon/daemon-client';
import type { Health } from '../../daemon/health';
import { OUTPUT_FLAGS, cut, lineWidth, outputFormat } from '../output';
import { formatTimestamp } from '../time-format';

export const help = `usage: cgfence status [-o table|wide|json] [--utc] [--socket PATH]

The first line is the verdict: healthy, or UNHEALTHY and the checks that fail (the same
checks as the daemon's /healthz and /readyz). Then the daemon, its containerd connection,
the kernel features and backends in use, the audit log's health and how many containers
are fenced. -o table (default) cuts lines to the terminal; -o wide does not; -o json (or
--json) is everything the daemon reports.

Exits 0 when healthy, 3 when a check fails, 1 when the daemon cannot be reached.`;

export const UNHEALTHY_EXIT = 3;

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
  const s = await request<Record<string, Record<string, unknown>> & { health: Health }>(socketPath(a.flags.socket), { op: 'status' });
  const health = s.health;
  const healthy = health.ready;
  if (format === 'json') {
    console.log(JSON.stringify(s, null, 2));
    return healthy ? 0 : UNHEALTHY_EXIT;
  }
  const d = s.daemon,
    c = s.containerd,
    k = s.kernel,
    au = s.audit;
  const failing = health.checks.filter((x) => !x.ok);
  const verdict = healthy
    ? `healthy: ${s.fences} container(s) fenced; containerd ${c.version ?? '?'} connected; exec fence loaded`
    : `UNHEALTHY: ${failing.map((x) => `${x.name}: ${x.detail}`).join('; ')}`;
  const rows: Array<[string, unknown]> = [
    [
      'daemon',
      `pid ${d.pid}, version ${d.version}, up since ${formatTimestamp(d.startedAt, { utc: a.bools.has('utc') })}${d.adopted ? ' (adopted pinned fences)' : ''}`,
    ],
    ['socket', d.socket],
    ['fail mode', d.failMode],
    [
      'exec deny',
      d.execDeny === 'kill'
        ? 'kill (the kernel fence alone: SIGKILL before the first instruction, no seccomp notify)'
        : `${d.execDeny ?? 'errno'} (EACCES through seccomp user notification, the kernel fence behind it)`,
    ],
    ['cgroup mode', d.cgroupMode],
    ['containerd', c.error ? `UNREACHABLE at ${c.address}: ${c.error}` : `${c.version} at ${c.address} (${c.state})`],
    ['kernel', `${k.release}, BTF ${k.btf ? 'yes' : 'no'}, cgroup v2 ${k.cgroupV2 ?? 'none'}, libbpf ${k.libbpf}`],
    ...(['exec', 'network', 'seccomp'] as const).map((ctl): [string, unknown] => {
      const b = (k.backends as Record<string, Record<string, unknown>>)[ctl];
      return [`${ctl} fence`, b.backend];
    }),
    ...seccompDenialsRow(k.backends as Record<string, Record<string, unknown>>),
    ...(k.learn
      ? [
          [
            'learn mode',
            (() => {
              const l = k.learn as { backend: string; learning: number; error?: string };
              return `${l.backend}; ${l.learning} container(s) learning${l.error ? `; ${l.error}` : ''}`;
            })(),
          ] as [string, unknown],
        ]
      : []),
    ['pins', d.pinDir],
    ['config', configRow(s.config, a.bools.has('utc'))],
    [
      'audit log',
      `${au.path}: ${au.written} written, ${au.writeErrors} write errors, ${au.dropped} dropped, kernel drops ${au.kernelDrops}${au.lastError ? `, last error: ${au.lastError}` : ''}`,
    ],
    ['fenced', `${s.fences} container(s)`],
    [
      'kernel tables',
      Object.entries((s.tables ?? {}) as Record<string, { used: number; capacity: number }>)
        .map(([t, u]) => {
          const want = (s.tableSizes as Record<string, number> | undefined)?.[t];
          return `${t} ${u.used}/${u.capacity}${want !== undefined && want !== u.capacity ? ` (config asks ${want}: pinned before, keeps its size until the pins are recreated)` : ''}`;
        })
        .join(', ') +
        (s.limits
          ? `; per container: ${Object.entries(s.limits)
              .map(([k2, v]) => `${k2} ${v}`)
              .join(', ')}`
          : ''),
    ],
    ['tamper watch', tamperRow(s.tamper)],
    ...health.checks.map((x): [string, unknown] => [`check ${x.name}`, `${x.ok ? 'ok' : 'FAIL'}: ${x.detail}`]),
  ];
  const fit = (line: string) => (format === 'wide' ? line : cut(line, lineWidth()));
  console.log(fit(`cgfence ${verdict}`));
  for (const [k2, v] of rows) console.log(fit(`${k2.padEnd(16)} ${v}`));
  return healthy ? 0 : UNHEALTHY_EXIT;
}

/** Whether enforce-mode seccomp denials go to the notify loop (recorded), and if not why (an fd-holder that cannot answer them EPERM). */
function seccompDenialsRow(backends: Record<string, Record<string, unknown>>): Array<[string, unknown]> {
  const h = (backends.seccomp?.enforceDenials as { fdHolder?: { denialsRouted: boolean; version: number; why?: string } } | undefined)
    ?.fdHolder;
  if (!h) return [];
  return [
    [
      'seccomp denials',
      h.denialsRouted
        ? `recorded: answered EPERM by the notify loop, by the fd-holder (protocol version ${h.version}) while no daemon runs`
        : `enforced (SCMP_ACT_ERRNO), NOT recorded for new containers: ${h.why}`,
    ],
  ];
}

function configRow(c: Record<string, unknown> | undefined, utc: boolean): string {
  if (!c || !c.file) return 'none (no --config): no profiles or selectors';
  const r = c.lastReload as { at: string; trigger: string; ok: boolean; error?: string } | null;
  const last = r ? `; last reload ${formatTimestamp(r.at, { utc })} (${r.trigger}) ${r.ok ? 'ok' : `REFUSED: ${r.error}`}` : '';
  return `${c.file} ${c.hash ?? '(unreadable)'}; ${(c.profiles as string[]).length} profile(s), ${c.selectors} selector(s), default ${c.defaultProfile ?? 'none'}${last}`;
}

function tamperRow(t: Record<string, unknown> | null | undefined): string {
  if (!t) return 'none (not in this daemon)';
  if (t.error) return `OFF: ${t.error}`;
  const p = t.protected as { maps: number; programs: number; links: number };
  return `${(t.hooks as string[]).length} syscall tracepoints${t.pinned ? ', pinned' : ''}; protecting ${p.maps} maps, ${p.programs} programs, ${p.links} links; lost ${t.lost}, unreadable ${t.unreadable}`;
}
