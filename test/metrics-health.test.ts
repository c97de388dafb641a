// Metrics, /healthz, /readyz, `cgfence status` and `cgfence ps` against a real sandbox
// (private containerd + daemon): decisions counted where the kernel makes them (not per
// rate-limited audit record), per control and per workload, refusals, build_info, Prometheus
// types and names; health that follows containerd; ps that counts every kind of denial.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { stopContainerd, startContainerd } from '../src/sandbox/containerd-process';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { daemonGet } from './helpers/metrics';
import { IMAGE, cid, cli, ctr, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('met');
let p: SandboxPaths;

const get = (pathName: string) => daemonGet(p, pathName);

/** The value of one sample, e.g. sample(text, 'cgfence_decisions_total', {control: 'network', action: 'deny'}). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return null;
}

async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('metrics and health', () => {
  it('names and types follow Prometheus conventions; build_info is there', async () => {
    const m = await get('/metrics');
    expect(m.status).toBe(200);
    const types = Object.fromEntries([...m.body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((x) => [x[1], x[2]]));
    const totals = Object.keys(types).filter((n) => n.endsWith('_total'));
    expect(totals).toContain('cgfence_decisions_total');
    expect(totals).toContain('cgfence_ring_buffer_drops_total');
    for (const n of totals) expect(types[n], n).toBe('counter');
    expect(Object.keys(types).filter((n) => n.includes('process_process'))).toEqual([]);
    expect(types.cgfence_process_cpu_seconds_total).toBe('counter');
    expect(sample(m.body, 'cgfence_build_info', { version: '0.1.0' })).toBe(1);
    for (const n of Object.keys(types)) expect(n).toMatch(/^cgfence_[a-z0-9_]+$/);
  });

  it('counts every denied connect and exec at the decision, per control and per workload; ps agrees', async () => {
    const before = await get('/metrics');
    const base = (c: string) => sample(before.body, 'cgfence_decisions_total', { control: c, action: 'deny' }) ?? 0;
    const [net0, exec0] = [base('network'), base('exec')];
    const id = cid('met');
    const N = 40;
    // 40 denied connects (far more than the per-flow audit records let through) and one denied exec.
    const script = `i=0; while [ $i -lt ${N} ]; do nc -w 1 127.0.0.2 9 </dev/null 2>/dev/null; i=$((i+1)); done; /usr/local/bin/tool-a true; echo done > /tmp/done; sleep 120`;
    const r = ctr(p, [
      'run',
      '-d',
      '--runc-binary',
      p.runc,
      '--annotation',
      'cgfence.io/egress-deny=127.0.0.2/32',
      '--annotation',
      'cgfence.io/exec-allow=/bin/sh,/bin/*',
      '--net-host',
      IMAGE,
      id,
      '/bin/sh',
      '-c',
      script,
    ]);
    expect(r.status, r.stderr).toBe(0);
    try {
      await waitFor(
        'the container script',
        () => ctr(p, ['tasks', 'exec', '--exec-id', `chk-${Date.now()}`, id, '/bin/cat', '/tmp/done']).stdout.includes('done'),
        60_000,
      );
      const m = await get('/metrics');
      expect(sample(m.body, 'cgfence_decisions_total', { control: 'network', action: 'deny' })! - net0).toBe(N);
      expect(sample(m.body, 'cgfence_decisions_total', { control: 'exec', action: 'deny' })! - exec0).toBe(1);
      expect(
        sample(m.body, 'cgfence_workload_decisions_total', { namespace: 'default', pod: id, control: 'network', action: 'deny' }),
      ).toBe(N);
      expect(sample(m.body, 'cgfence_workload_decisions_total', { namespace: 'default', pod: id, control: 'exec', action: 'deny' })).toBe(
        1,
      );
      // The audit log has fewer net records than decisions: the metric does not count records.
      const recs = await readRecords(p.auditLog, { type: 'net', container: id });
      expect(recs.length).toBeLessThan(N);

      const ps = cli(p, ['ps', '-o', 'json']);
      expect(ps.status, ps.stderr).toBe(0);
      const row = (JSON.parse(ps.stdout) as Array<{ id: string; decisions: Record<string, Record<string, number>> }>).find(
        (x) => x.id === id,
      )!;
      expect(row.decisions.network.deny).toBe(N);
      const table = cli(p, ['ps']);
      const line = table.stdout.split('\n').find((l) => l.includes(id))!;
      expect(line.split(/\s{2,}/)).toContain(String(N + 1));
      expect(table.stdout.split('\n')[0]).toMatch(/^CONTAINER\s+PID\s+MODE\s+EXEC\s+EXEC-DENY\s+NETWORK\s+SECCOMP\s+DENIED\s+ATTACHED/);
      const wide = cli(p, ['ps', '-o', 'wide', '--utc']);
      expect(wide.stdout).toContain(`exec=1 net=${N} seccomp=0`);
      expect(wide.stdout).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} Z/);
    } finally {
      ctr(p, ['tasks', 'kill', '-s', 'SIGKILL', id]);
      await waitFor('the task to stop', () => !ctr(p, ['tasks', 'ls']).stdout.includes(id), 30_000).catch(() => undefined);
      ctr(p, ['containers', 'rm', id]);
    }
    // Gone: its series go, the node-wide counter keeps what it counted.
    await waitFor('detach', () => !cli(p, ['ps', '-o', 'json']).stdout.includes(id), 30_000);
    const after = await get('/metrics');
    expect(sample(after.body, 'cgfence_decisions_total', { control: 'network', action: 'deny' })! - net0).toBe(N);
    expect(sample(after.body, 'cgfence_workload_decisions_total', { pod: id })).toBeNull();
  });

  it('counts refused creates', async () => {
    const m0 = await get('/metrics');
    const before = sample(m0.body, 'cgfence_refusals_total', { stage: 'prepare' }) ?? 0;
    const id = cid('ref');
    const r = ctr(p, [
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      '--annotation',
      'cgfence.io/egress-allow=10.0.0.300/8',
      IMAGE,
      id,
      '/bin/true',
    ]);
    expect(r.status).not.toBe(0);
    ctr(p, ['containers', 'rm', id]);
    const m = await get('/metrics');
    expect(sample(m.body, 'cgfence_refusals_total', { stage: 'prepare' })).toBe(before + 1);
  });

  it('healthz and readyz follow the kernel side and containerd; status says so in its first line and exit code', async () => {
    expect((await get('/healthz')).status).toBe(200);
    const ready = await get('/readyz');
    expect(ready.status, ready.body).toBe(200);
    expect(ready.body).toMatch(/^ok {3}containerd: /m);
    const st = cli(p, ['status']);
    expect(st.status, st.stderr).toBe(0);
    expect(st.stdout.split('\n')[0]).toMatch(/^cgfence healthy: \d+ container\(s\) fenced; containerd \S+ connected/);
    for (const l of st.stdout.split('\n')) expect(l.length).toBeLessThanOrEqual(120);

    // containerd goes away (its shims too): not ready, still alive.
    await stopContainerd(p.dir, { killShims: false });
    try {
      await waitUntil('readyz to fail', async () => (await get('/readyz')).status === 503, 20_000);
      const r = await get('/readyz');
      expect(r.body).toMatch(/^FAIL containerd: not connected/m);
      expect((await get('/healthz')).status).toBe(200);
      const m = await get('/metrics');
      expect(sample(m.body, 'cgfence_health_check', { check: 'containerd' })).toBe(0);
      const down = cli(p, ['status']);
      expect(down.status).toBe(3);
      expect(down.stdout.split('\n')[0]).toMatch(/^cgfence UNHEALTHY: containerd: not connected/);
    } finally {
      const env = fs.readFileSync(path.join(p.dir, 'env'), 'utf8');
      expect(env).toContain('CGFENCE_SOCKET');
      await startContainerd(p.dir, {
        env: {
          CGFENCE_SOCKET: p.socket,
          CGFENCE_SPOOL_DIR: p.spoolDir,
          CGFENCE_REAL_RUNC: spawnSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).stdout.trim(),
        },
      });
    }
    await waitUntil('readyz again', async () => (await get('/readyz')).status === 200, 30_000);
    expect(cli(p, ['status']).status).toBe(0);
  });

  it('the sandbox env puts cgfence on PATH', () => {
    const r = spawnSync(
      'bash',
      [
        '-c',
        `env -i PATH=${path.dirname(process.execPath)}:/usr/bin:/bin bash -c '. ${p.env}; command -v cgfence && cgfence status -o json >/dev/null && echo reachable'`,
      ],
      { encoding: 'utf8' },
    );
    expect(r.stdout, r.stderr).toMatch(/\/bin\/cgfence\nreachable/);
  });
});
