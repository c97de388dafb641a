// Hostile and oversized input through real containerd and runc (the sandbox, with a node
// config of small quotas): a container over its exec allow quota is refused with a message
// naming the container and the limit, and the next one starts; a refused `policy set` leaves
// the kernel maps as they were and is audited; allow-lists naming files from bind mounts are
// resolved in the container's own mount namespace; `[` is a file name, not a wildcard; a
// missing allow-list entry is one error, not two.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { nameBytes } from '../src/audit/exact-name';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { mktemp } from './helpers/kernel';
import { scrapeMetrics } from './helpers/metrics';
import { IMAGE, cid, cli, ctr, runFenced, removeContainer, sandboxDir, startFenced } from './helpers/sandbox';

const dir = sandboxDir('bounds');
const LIMIT = 16;
/** A file name that is not UTF-8: "d", 0xff, "e". */
const NOT_UTF8 = Buffer.from([0x64, 0xff, 0x65]);
let p: SandboxPaths;
let host: string;
let savedConfig: string | undefined;

const TOOLS = () => ['--mount', `type=bind,src=${path.join(host, 'tools')},dst=/mnt/tools,options=rbind:ro`];
const MANY = () => ['--mount', `type=bind,src=${path.join(host, 'many')},dst=/mnt/many,options=rbind:ro`];

function records(id: string): Promise<AuditRecord[]> {
  return readRecords(p.auditLog, { container: id });
}

async function recordFor(id: string, pred: (r: AuditRecord) => boolean, what: string): Promise<AuditRecord> {
  const end = Date.now() + 10_000;
  for (;;) {
    const r = (await records(id)).find(pred);
    if (r) return r;
    if (Date.now() > end) throw new Error(`no ${what} for ${id}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

function dump(map: string): { entries: number; sha256: string } {
  const out = execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', path.join(p.pinDir, map)], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const lines = (JSON.parse(out) as Array<{ key: string[]; value: string[] }>).map((e) => `${e.key.join('')}=${e.value.join('')}`).sort();
  return { entries: lines.length, sha256: crypto.createHash('sha256').update(lines.join('\n')).digest('hex') };
}

function kernelState(): Record<string, { entries: number; sha256: string }> {
  return { fences: dump('fences'), exec_allow: dump('exec_allow'), rules4: dump('net/net_rules4'), rules6: dump('net/net_rules6') };
}

const stop = (id: string) => removeContainer(p, id);

beforeAll(async () => {
  host = mktemp('cgfence-bounds');
  // Files only a bind mount brings in: copies of busybox (each its own identity), one named `[`.
  fs.mkdirSync(path.join(host, 'tools'));
  for (const n of ['echo', 'cat', '[']) fs.copyFileSync('/bin/busybox', path.join(host, 'tools', n));
  for (const n of ['echo', 'cat', '[']) fs.chmodSync(path.join(host, 'tools', n), 0o755);
  const odd = Buffer.concat([Buffer.from(path.join(host, 'tools') + '/'), NOT_UTF8]);
  fs.writeFileSync(odd, '#!/bin/sh\necho ODD-RAN\n');
  fs.chmodSync(odd, 0o755);
  fs.mkdirSync(path.join(host, 'many'));
  for (let i = 0; i < LIMIT + 4; i++) fs.writeFileSync(path.join(host, 'many', `s-${i}`), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  const cfg = path.join(host, 'cgfence.json');
  fs.writeFileSync(cfg, JSON.stringify({ limits: { execAllowPerContainer: LIMIT } }));
  savedConfig = process.env.CGFENCE_CONFIG;
  process.env.CGFENCE_CONFIG = cfg; // the sandbox daemon inherits it
  p = await sandboxUp(dir);
});

afterAll(async () => {
  if (savedConfig === undefined) delete process.env.CGFENCE_CONFIG;
  else process.env.CGFENCE_CONFIG = savedConfig;
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  if (host) fs.rmSync(host, { recursive: true, force: true });
});

describe('exec allow quota', () => {
  it('refuses a container over its quota naming it and the limit; the next container starts normally', async () => {
    const id = cid('big');
    const before = kernelState();
    const r = runFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh,/mnt/many/*' }, ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN'], MANY());
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('SHOULD-NOT-RUN');
    expect(r.stderr).toContain(
      `container default/${id} asks for ${LIMIT + 5} exec allow entries, more than the ${LIMIT} one container may hold (node config limits.execAllowPerContainer); nothing was written`,
    );
    await recordFor(
      id,
      (x) => x.type === 'lifecycle' && x.action === 'refuse' && String(x.reason).includes('limits.execAllowPerContainer'),
      'the refuse record',
    );
    expect(kernelState()).toEqual(before);
    ctr(p, ['containers', 'delete', id]);

    const next = runFenced(p, cid('next'), { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/sh', '-c', 'echo NEXT-RAN']);
    expect(next.status, next.stderr).toBe(0);
    expect(next.stdout).toContain('NEXT-RAN');
  });

  it('a refused policy set leaves the kernel maps byte-for-byte as before, keeps the old policy and writes an audit record', async () => {
    const id = cid('live');
    const start = startFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh,/mnt/many/s-0' }, ['/bin/sh', '-c', 'sleep 120'], {
      extra: MANY(),
    });
    expect(start.status, start.stderr).toBe(0);
    try {
      const psBefore = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; policyHash: string }>;
      const hash = psBefore.find((c) => c.id === id)!.policyHash;
      const before = kernelState();
      const set = cli(p, ['policy', 'set', id, 'cgfence.io/exec-allow=/bin/sh,/mnt/many/*']);
      expect(set.status).toBe(1);
      expect(set.stderr).toContain(`container default/${id} asks for ${LIMIT + 5} exec allow entries`);
      expect(set.stderr).toContain('the container keeps its previous policy');
      expect(kernelState()).toEqual(before);
      const psAfter = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; policyHash: string }>;
      expect(psAfter.find((c) => c.id === id)!.policyHash).toBe(hash);
      const rec = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'policy-refuse', 'the refused update record');
      expect(rec.changes).toEqual([{ key: 'cgfence.io/exec-allow', value: '/bin/sh,/mnt/many/*' }]);
      expect(rec.policy_hash).toBe(hash);
      expect(String(rec.reason)).toContain('limits.execAllowPerContainer');
      // The old policy still holds: s-0 runs, s-1 does not.
      // (By exit status: ctr can lose the output of a process that exits at once.)
      const e0 = ctr(p, ['task', 'exec', '--exec-id', 'e0', id, '/mnt/many/s-0']);
      expect(e0.status, e0.stderr).toBe(0);
      expect(ctr(p, ['task', 'exec', '--exec-id', 'e1', id, '/mnt/many/s-1']).status).not.toBe(0);

      const st = JSON.parse(cli(p, ['status', '--json']).stdout) as {
        tables: Record<string, { used: number; capacity: number }>;
        limits: Record<string, number>;
      };
      expect(st.tables.exec_allow.capacity).toBe(65536);
      expect(st.tables.exec_allow.used).toBeGreaterThanOrEqual(2);
      expect(st.limits.execAllowPerContainer).toBe(LIMIT);
      expect(cli(p, ['status']).stdout).toMatch(/kernel tables\s+exec_fences \d+\/4096, exec_allow \d+\/65536/);
      const metrics = await scrapeMetrics(p);
      expect(metrics).toContain('cgfence_kernel_table_capacity{table="exec_allow"} 65536');
      expect(metrics).toMatch(/cgfence_kernel_table_entries\{table="exec_allow"\} [1-9]\d*/);
      expect(metrics).toContain('cgfence_kernel_table_capacity{table="net_rules4"} 262144');
    } finally {
      await stop(id);
    }
  });
});

describe('allow-lists and bind mounts', () => {
  it("an entry only a bind mount brings in is resolved in the container's mount namespace at attach", () => {
    const r = runFenced(
      p,
      cid('bind'),
      { 'cgfence.io/exec-allow': '/bin/sh,/mnt/tools/echo' },
      ['/bin/sh', '-c', '/mnt/tools/echo BIND-ALLOWED; /mnt/tools/cat /etc/group && echo CAT-RAN; true'],
      TOOLS(),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('BIND-ALLOWED');
    expect(r.stdout).not.toContain('CAT-RAN');
    expect(r.stderr).toContain('Permission denied');
  });

  it('an entrypoint under a bind mount is judged at attach: allowed runs, forbidden is refused', () => {
    const ok = runFenced(p, cid('bind-entry'), { 'cgfence.io/exec-allow': '/mnt/tools/echo' }, ['/mnt/tools/echo', 'ENTRY-OK'], TOOLS());
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('ENTRY-OK');
    const id = cid('bind-bad');
    const bad = runFenced(p, id, { 'cgfence.io/exec-allow': '/mnt/tools/echo' }, ['/mnt/tools/cat', '/etc/group'], TOOLS());
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('does not allow the entrypoint "/mnt/tools/cat"');
    ctr(p, ['containers', 'delete', id]);
  });

  it('a missing entry under a bind mount is refused at attach, naming it', () => {
    const id = cid('bind-missing');
    const r = runFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh,/mnt/tools/nosuch' }, ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN'], TOOLS());
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('SHOULD-NOT-RUN');
    expect(r.stderr).toContain('/mnt/tools/nosuch: no such file in the container');
    ctr(p, ['containers', 'delete', id]);
  });
});

describe('exact names', () => {
  it('a denied exec of a non-UTF-8 name (the notify loop) is recorded with its exact bytes', async () => {
    const id = cid('odd');
    const r = runFenced(
      p,
      id,
      { 'cgfence.io/exec-allow': '/bin/sh' },
      ['/bin/sh', '-c', '"$(printf "/mnt/tools/d\\377e")"; echo STATUS=$?'],
      TOOLS(),
    );
    expect(r.stdout).toContain('STATUS=126');
    expect(r.stdout).not.toContain('ODD-RAN');
    const rec = await recordFor(id, (x) => x.type === 'exec' && x.action === 'deny', 'the deny record');
    expect(rec.via).toBe('seccomp-notify');
    expect(nameBytes(rec as Record<string, unknown>, 'path')!.equals(Buffer.concat([Buffer.from('/mnt/tools/'), NOT_UTF8]))).toBe(true);
    expect(rec.path).toBe('/mnt/tools/d\\xffe');
    const shown = cli(p, ['audit', '--container', id, '--type', 'exec']);
    expect(shown.stdout).toContain('/mnt/tools/d\\xffe');
    expect(cli(p, ['audit', 'verify', p.auditLog]).status).toBe(0);
  });
});

describe('exec records are rate-limited', () => {
  it('10,000 denials of one container: few records, counts adding up to 10,000, a neighbour still recorded', async () => {
    const id = cid('flood');
    const script = 'i=0; while [ $i -lt 10000 ]; do /usr/local/bin/tool-a 2>/dev/null; i=$((i+1)); done; echo FLOOD-DONE';
    const r = ctr(
      p,
      ['run', '--rm', '--runc-binary', p.runc, '--annotation', 'cgfence.io/exec-allow=/bin/sh', IMAGE, id, '/bin/sh', '-c', script],
      600_000,
    );
    expect(r.stdout, r.stderr).toContain('FLOOD-DONE');
    const neighbour = cid('neighbour');
    const other = runFenced(p, neighbour, { 'cgfence.io/exec-allow': '/bin/sh' }, [
      '/bin/sh',
      '-c',
      '/usr/local/bin/tool-b; /usr/local/bin/tool-b; true',
    ]);
    expect(other.status, other.stderr).toBe(0);
    const detach = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'detach', 'the detach record');
    expect(detach.denied).toBe(10_000);
    const denials = (await records(id)).filter((x) => x.type === 'exec' && x.action === 'deny');
    const counted = denials.reduce((n, x) => n + (typeof x.count === 'number' ? x.count : 1), 0);
    expect(counted).toBe(10_000);
    console.log(
      `flood: ${denials.length} deny records (${denials.filter((x) => x.rate_limited === true).length} of them counts) for 10,000 denials`,
    );
    expect(denials.length).toBeLessThan(500);
    expect(denials.filter((x) => x.rate_limited === true).every((x) => x.path === '/usr/local/bin/tool-a')).toBe(true);
    // The flood did not cost the neighbour its records.
    await recordFor(neighbour, (x) => x.type === 'lifecycle' && x.action === 'detach', "the neighbour's detach record");
    expect((await records(neighbour)).filter((x) => x.type === 'exec' && x.action === 'deny' && x.count === undefined)).toHaveLength(2);
    expect(cli(p, ['audit', 'verify', p.auditLog]).status).toBe(0);
  });
});

describe('small errors', () => {
  it('`[` in a path is a file name, not a wildcard', () => {
    const r = runFenced(
      p,
      cid('bracket'),
      { 'cgfence.io/exec-allow': '/bin/sh,/mnt/tools/[' },
      ['/bin/sh', '-c', '/mnt/tools/[ 1 = 1 ] && echo BRACKET-RAN'],
      TOOLS(),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('BRACKET-RAN');
  });

  it('a missing allow-list entry is one error: no second one about the entrypoint', () => {
    const id = cid('missing');
    const r = runFenced(p, id, { 'cgfence.io/exec-allow': '/bin/busybox,/bin/nosuch' }, ['/bin/sh', '-c', 'true']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('/bin/nosuch: no such file in the container');
    expect(r.stderr).not.toContain('does not allow the entrypoint');
    ctr(p, ['containers', 'delete', id]);
  });
});
