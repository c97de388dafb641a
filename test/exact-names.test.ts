// Names that are not UTF-8: an exec of a file whose name has bytes that are no UTF-8 is
// recorded recoverably (escaped, with the exact bytes in path_raw / comm_raw), two names
// that differ only in such bytes never give the same record, `cgfence audit` shows them
// unambiguously and `audit verify` still passes.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../src/audit/audit-log';
import { readRecords, formatRecord } from '../src/audit/audit-read';
import { verifyAuditLog } from '../src/audit/audit-verify';
import { escapeBytes, exactName, nameBytes } from '../src/audit/exact-name';
import { execAuditRecords } from '../src/fence/exec/exec-audit';
import { ExecEvent, FenceMode } from '../src/kernel/abi';
import { cgroupId, createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { collectingSink } from './helpers/sink';
import { mktemp, uniqueName } from './helpers/kernel';

const name = uniqueName('cgfence-test-names');
const pinDir = `/sys/fs/bpf/${name}`;
let dir: string;
let cg: string;
let fence: ExecFence;
const events: ExecEvent[] = [];

beforeAll(() => {
  dir = mktemp(name);
  cg = createCgroup(name);
  fence = ExecFence.open({ pinDir, onEvents: (b) => events.push(...b) });
});

afterAll(async () => {
  fence?.close({ detach: true });
  if (cg) await removeCgroup(cg).catch(() => {});
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('exact names', () => {
  it('escapes only what is no UTF-8, keeps the bytes, and keeps different names apart', () => {
    const names = [
      Buffer.from('/x/a\xffb', 'latin1'),
      Buffer.from('/x/a\xfeb', 'latin1'),
      Buffer.from('/x/a\ufffdb', 'utf8'),
      Buffer.from('/x/a\\xffb', 'utf8'),
      Buffer.from('/x/\xc3\xa9t\xc3', 'latin1'),
      Buffer.from('/x/\xed\xa0\x80', 'latin1'),
    ];
    const recs = names.map((n) => exactName('path', n));
    expect(recs[0]).toEqual({ path: '/x/a\\xffb', path_raw: names[0].toString('base64') });
    expect(recs[2]).toEqual({ path: '/x/a\ufffdb' });
    expect(recs[3]).toEqual({ path: '/x/a\\xffb' }); // valid UTF-8: as it is, no _raw
    expect(recs[4].path).toBe('/x/ét\\xc3'); // a character is kept, a cut one is escaped
    expect(recs[5].path).toBe('/x/\\xed\\xa0\\x80'); // a surrogate is no UTF-8
    for (let i = 0; i < names.length; i++) expect(nameBytes(recs[i], 'path')!.equals(names[i])).toBe(true);
    expect(new Set(recs.map((r) => JSON.stringify(r))).size).toBe(names.length);
    expect(new Set(names.map((n) => escapeBytes(n))).size).toBe(names.length);
  });

  it('an exec of a non-UTF-8 name is recorded exactly, shown unambiguously, and the chain verifies', async () => {
    fence.setFence(cgroupId(cg), FenceMode.Audit);
    // Two names that one U+FFFD would have made the same.
    const files = [Buffer.from(path.join(dir, 't\xff\xfe'), 'latin1'), Buffer.from(path.join(dir, 't\xfe\xff'), 'latin1')];
    for (const f of files) {
      fs.writeFileSync(f, '#!/bin/sh\nexit 0\n');
      fs.chmodSync(f, 0o755);
    }
    const esc = (b: Buffer) => [...b].map((c) => (c >= 0x80 ? `\\${c.toString(8)}` : String.fromCharCode(c))).join('');
    for (const f of files) {
      const r = spawnSync('/bin/sh', ['-c', `echo $$ > "$0/cgroup.procs" && exec "$(printf '${esc(f)}')"`, cg]);
      expect(r.status, r.stderr.toString()).toBe(0);
    }
    const end = Date.now() + 5000;
    while (events.filter((e) => e.cgroupId === cgroupId(cg)).length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const mine = events.filter((e) => e.cgroupId === cgroupId(cg));
    expect(mine).toHaveLength(2);
    const recs = execAuditRecords(mine, collectingSink());
    for (let i = 0; i < 2; i++) {
      expect(nameBytes(recs[i] as Record<string, unknown>, 'path')!.equals(files[i])).toBe(true);
      // comm is the kernel's: the basename, as bytes.
      expect(
        nameBytes(recs[i] as Record<string, unknown>, 'comm')!.equals(Buffer.from(path.basename(files[i].toString('latin1')), 'latin1')),
      ).toBe(true);
    }
    expect(recs[0].path).not.toBe(recs[1].path);

    const log = path.join(dir, 'audit.log');
    const audit = new AuditLog({ path: log });
    for (const r of recs) audit.write(r);
    audit.close();
    expect(verifyAuditLog(log)).toMatchObject({ ok: true, records: 2 });
    const back = await readRecords(log);
    const shown = back.map((r) => formatRecord(r));
    expect(shown[0]).toContain(`${dir}/t\\xff\\xfe`);
    expect(shown[0]).toContain('(t\\xff\\xfe)');
    expect(shown[1]).toContain(`${dir}/t\\xfe\\xff`);
    expect(shown[0]).not.toContain('path_raw');
    // A C1 control character (valid UTF-8) is shown as \u, never as a byte escape.
    expect(formatRecord({ ...back[0], path: '/x/\u0085', path_raw: undefined } as never)).toContain('/x/\\u0085');
  });
});
