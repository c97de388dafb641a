// The audit log under pressure, through the real daemon: a full disk never stops
// enforcement, shows in `cgfence status` and the metrics, and nothing is lost silently.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { scrapeMetrics } from './helpers/metrics';
import { cid, cli, runFenced, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('full');
const mnt = `${dir}-auditfs`;
let p: SandboxPaths;

const metrics = () => scrapeMetrics(p);

function fill(): void {
  // Fill the small file system to the last byte: every audit write now fails with ENOSPC.
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${mnt}/filler`, 'bs=4k'], { stdio: 'ignore' });
  } catch {
    /* ENOSPC is the point */
  }
}

beforeAll(async () => {
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt]);
  // The daemon writes DIR/audit.log; the link puts it on the small file system.
  fs.symlinkSync(`${mnt}/audit.log`, `${dir}/audit.log`);
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  try {
    execFileSync('umount', ['-l', mnt]);
  } catch {
    /* not mounted */
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(mnt, { recursive: true, force: true });
});

it('a full disk under the audit log: enforcement goes on, status and metrics say so, then the backlog is written', async () => {
  fill();
  type AuditStatus = { writeErrors: number; pending: number; lastError: string | null };
  const audit = () => (JSON.parse(cli(p, ['status', '--json']).stdout) as { audit: AuditStatus }).audit;
  // tmpfs appends into the slack of the file's last page until a new page is needed: a few
  // containers' records fill it. Every one of them is still fenced.
  const ids: string[] = [];
  for (let i = 0; i < 10 && audit().writeErrors === 0; i++) {
    const id = cid('full');
    ids.push(id);
    const r = runFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh' }, [
      '/bin/sh',
      '-c',
      '/usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('FORBIDDEN-RAN');
    expect(r.stdout).toMatch(/rc=(126|137)/);
    await new Promise((res) => setTimeout(res, 300));
  }
  const id = ids[ids.length - 1];
  const st = await waitFor('write errors in status', () => {
    const s = audit();
    return s.writeErrors > 0 && s;
  });
  expect(st.lastError).toMatch(/ENOSPC|no space/i);
  expect(st.pending).toBeGreaterThan(0);
  const human = cli(p, ['status']);
  expect(human.stdout).toMatch(/audit log .* [1-9]\d* write errors/);
  expect(await metrics()).toMatch(/cgfence_audit_write_errors_total [1-9]/);

  fs.rmSync(`${mnt}/filler`);
  // The next write (the next container's records) flushes the backlog, in order.
  runFenced(p, cid('after'), { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/true']);
  const recs = await waitFor(
    'the backlog in the log',
    () => {
      void readRecords(p.auditLog).then((x) => (all = x));
      return all.some((x) => x.container_id === id && x.type === 'exec' && x.action === 'deny') && all;
    },
    15_000,
  );
  expect(recs.some((x) => x.container_id === id && x.type === 'lifecycle' && x.action === 'attach')).toBe(true);
  const verify = cli(p, ['audit', 'verify', p.auditLog]);
  expect(verify.status, verify.stderr).toBe(0);
});

let all: Awaited<ReturnType<typeof readRecords>> = [];
