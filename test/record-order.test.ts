// A container's detach record is its last: the records backends still owe a container when
// it exits (the network fence's rate-limited counts, a learn-mode container's learned
// policy) are written before it, with the real kernel and containerd.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { cid, runFenced, sandboxDir } from './helpers/sandbox';

const dir = sandboxDir('order');
let p: SandboxPaths;
beforeAll(async () => {
  p = await sandboxUp(dir);
});
afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function untilDetach(id: string): Promise<AuditRecord[]> {
  const end = Date.now() + 20_000;
  for (;;) {
    const rs = await readRecords(p.auditLog, { container: id });
    if (rs.some((r) => r.action === 'detach') || Date.now() > end) return rs;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("the detach record is a container's last", () => {
  it('network: 60 denied connects, rate-limited into counts that all come before the detach', async () => {
    const id = cid('netord');
    const r = runFenced(
      p,
      id,
      { 'cgfence.io/egress-deny': '127.0.0.2/32' },
      ['/bin/sh', '-c', 'i=0; while [ $i -lt 60 ]; do nc -w 1 127.0.0.2 9 </dev/null 2>/dev/null; i=$((i+1)); done; echo done'],
      ['--net-host'],
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('done');
    const rs = await untilDetach(id);
    // Nothing of it may come later either: give the sweeps time, then look again.
    await new Promise((res) => setTimeout(res, 3000));
    const all = await readRecords(p.auditLog, { container: id });
    const detach = all.findIndex((x) => x.action === 'detach');
    expect(detach, JSON.stringify(rs.map((x) => x.action))).toBe(all.length - 1);
    const net = all.filter((x) => x.type === 'net');
    expect(net.reduce((n, x) => n + Number(x.count), 0)).toBe(60);
  });

  it('learn: the learned record comes before the detach', async () => {
    const id = cid('lrnord');
    const r = runFenced(p, id, { 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', 'ls / >/dev/null; echo done']);
    expect(r.status, r.stderr).toBe(0);
    await untilDetach(id);
    const all = await readRecords(p.auditLog, { container: id });
    expect(all.map((x) => x.action).slice(-2)).toEqual(['learned', 'detach']);
  });
});
