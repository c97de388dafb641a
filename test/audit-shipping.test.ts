// What docs/operations.md tells log shippers: the raw lines of a rotated audit log, put back
// together elsewhere (some delivered twice, as an at-least-once shipper does) still verify;
// the same records parsed and serialized again by a shipper do not. And the schema a shipper
// indexes: one JSON type per field, no dotted keys, node, hostname and severity everywhere.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../src/audit/audit-log';
import { listLogFiles, severityOf } from '../src/audit/audit-record';
import { verifyAuditLog } from '../src/audit/audit-verify';
import { mktemp } from './helpers/kernel';

let dir: string;
beforeEach(() => {
  dir = mktemp('cgft-ship');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function writeSome(file: string): void {
  const log = new AuditLog({
    path: file,
    maxBytes: 4000,
    keep: 50,
    retryIntervalMs: 0,
    context: {
      node: 'node-7',
      hostname: 'host-7',
      workloadOf: (ns, id) => (id === 'c1' ? { pod: 'web-0', podNamespace: 'shop', containerName: 'app' } : null),
    },
  });
  for (let i = 0; i < 60; i++) {
    log.write({
      type: 'exec',
      action: i % 3 ? 'allow' : 'deny',
      namespace: 'k8s.io',
      container_id: i % 2 ? 'c1' : 'c2',
      pid: 100 + i,
      comm: 'sh',
      path: `/bin/p${i}`,
      inode: 5n,
      dev: '0:1',
    });
    if (i % 10 === 0)
      log.write({
        type: 'lifecycle',
        action: 'policy-update',
        namespace: 'k8s.io',
        container_id: 'c1',
        changes: { 'cgfence.io/egress-deny': '10.0.0.0/8', 'cgfence.io/exec-allow': null },
        mode: null,
      });
  }
  log.write({ type: 'agent', action: 'start' });
  log.close();
}

describe('shipping the audit log', () => {
  it('raw lines, reassembled with duplicates removed, verify; re-serialized ones do not', () => {
    const file = path.join(dir, 'audit.log');
    writeSome(file);
    const files = listLogFiles(file);
    expect(files.length).toBeGreaterThan(3);
    // As an at-least-once shipper delivers them: some lines twice, then deduplicated as the doc says.
    const shipped = files.flatMap((f) => {
      const ls = fs.readFileSync(f, 'utf8').split('\n').filter(Boolean);
      return [...ls, ...ls.slice(-2)];
    });
    const archive = path.join(dir, 'archive.log');
    fs.writeFileSync(path.join(dir, 'shipped.log'), shipped.join('\n') + '\n');
    execFileSync('sh', ['-c', `awk '!seen[$0]++' ${dir}/shipped.log > ${archive}`]);
    expect(verifyAuditLog(archive)).toMatchObject({ ok: true, records: 67, anchor: 'genesis' });

    const reserialized = path.join(dir, 'reserialized.log');
    const lines = fs.readFileSync(archive, 'utf8').split('\n').filter(Boolean);
    fs.writeFileSync(
      reserialized,
      lines
        .map((l) => {
          const { ts, ...rest } = JSON.parse(l);
          return JSON.stringify({ ...rest, ts });
        })
        .join('\n') + '\n',
    );
    expect(verifyAuditLog(reserialized).ok).toBe(false);
  });

  it('every record has the same fields of the same JSON types, no dotted keys, and names node, host, severity and workload', () => {
    const file = path.join(dir, 'audit.log');
    writeSome(file);
    const recs = listLogFiles(file).flatMap((f) =>
      fs
        .readFileSync(f, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    );
    const types = new Map<string, Set<string>>();
    const walkKeys = (v: unknown, at: string): void => {
      if (Array.isArray(v)) v.forEach((x, i) => walkKeys(x, `${at}[${i}]`));
      else if (v && typeof v === 'object')
        for (const [k, x] of Object.entries(v)) {
          expect(k, at).not.toContain('.');
          walkKeys(x, `${at}.${k}`);
        }
    };
    for (const r of recs) {
      walkKeys(r, '');
      for (const [k, v] of Object.entries(r)) {
        expect(v, `${r.type}/${r.action} ${k}`).not.toBeNull();
        const t = Array.isArray(v) ? 'array' : typeof v;
        (types.get(k) ?? types.set(k, new Set()).get(k)!).add(t);
      }
      expect(r).toMatchObject({ node: 'node-7', hostname: 'host-7', severity: severityOf(String(r.type), String(r.action)) });
      if (r.container_id === 'c1') expect(r).toMatchObject({ pod: 'web-0', pod_namespace: 'shop', container_name: 'app' });
      else expect(r).toMatchObject({ pod: '', pod_namespace: '', container_name: '' });
    }
    for (const [k, ts] of types) expect([...ts], k).toHaveLength(1);
    expect(types.get('pid')).toEqual(new Set(['number']));
    const upd = recs.find((r) => r.action === 'policy-update')!;
    expect(upd.changes).toEqual([
      { key: 'cgfence.io/egress-deny', value: '10.0.0.0/8' },
      { key: 'cgfence.io/exec-allow', value: null },
    ]);
    expect(upd).not.toHaveProperty('mode');
    expect(recs.find((r) => r.action === 'deny')!.severity).toBe('warning');
  });
});
