// The exec rate limiter in the kernel (bpf/exec-fence.bpf.c) with its user-space half
// (fence/exec/exec-rate-audit.ts): 10,000 refusals of one container give a few dozen
// records whose counts add up to exactly 10,000, and another container's refusals still get
// their own records. Also the same limiter for the notify loop's denials, in user space.
import { ChildProcess, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditInput } from '../src/audit/audit-record';
import { AttachContext } from '../src/fence/backend';
import { ExecBackend } from '../src/fence/exec/exec-backend';
import { NotifyRateLimiter } from '../src/fence/exec/notify-rate-limit';
import { EXEC_RATE_BURST, EXEC_RATE_FENCE_BURST } from '../src/kernel/abi';
import { cgroupId, createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { parseAnnotations } from '../src/policy/annotations';
import { collectingSink } from './helpers/sink';
import { mktemp, runInCgroup, uniqueName } from './helpers/kernel';

const name = uniqueName('cgfence-test-rate');
const pinDir = `/sys/fs/bpf/${name}`;
const N = 10_000;
let dir: string;
let loop: string, noop: string;
let exec: ExecBackend;
const records: AuditInput[] = [];
const cgroups: string[] = [];
const procs: ChildProcess[] = [];

function build(src: string): string {
  const out = path.join(dir, path.basename(src, '.c'));
  execFileSync('gcc', ['-static', '-O2', '-o', out, path.join(__dirname, '..', 'bench', 'fixtures', src)], { stdio: 'pipe' });
  return out;
}

function attach(tag: string, annotations: Record<string, string>): { cg: string; ctx: AttachContext<'exec'> } {
  const cg = createCgroup(`${name}/${tag}`);
  cgroups.push(cg);
  const ctx: AttachContext<'exec'> = {
    namespace: 'rate',
    id: tag,
    bundle: '',
    pid: process.pid,
    cgroupPath: cg,
    cgroupId: cgroupId(cg),
    policy: parseAnnotations(annotations),
    annotations,
    state: {},
  };
  exec.attach(ctx);
  return { cg, ctx };
}

const mine = (cg: string) => records.filter((r) => r.type === 'exec' && r.cgroup_id === cgroupId(cg).toString());
const total = (rs: AuditInput[]) => rs.reduce((n, r) => n + (typeof r.count === 'number' ? r.count : 1), 0);

beforeAll(() => {
  dir = mktemp(name);
  loop = build('exec-loop.c');
  noop = build('noop.c');
  exec = new ExecBackend({ pinDir, cgroupMode: 'v2', sink: collectingSink(records), sweepMs: 200 });
});

afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  exec?.close({ detach: true });
  const top = cgroups.length ? path.dirname(cgroups[0]) : null;
  if (top) await removeCgroup(top).catch(() => {});
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('exec rate limit (kernel)', () => {
  it('10,000 refusals: a bounded number of records, counts that add up to exactly 10,000, a neighbour still recorded', async () => {
    const a = attach('flood', { 'cgfence.io/mode': 'audit', 'cgfence.io/exec-allow': loop });
    const b = attach('quiet', { 'cgfence.io/mode': 'audit', 'cgfence.io/exec-allow': loop });
    const started = Date.now();
    const r = runInCgroup(a.cg, [loop, String(N), noop], {}, 300_000);
    expect(r.status, r.stderr).toBe(0);
    const seconds = (Date.now() - started) / 1000;
    const q = runInCgroup(b.cg, [loop, '3', noop]);
    expect(q.status, q.stderr).toBe(0);

    // Detach: the auditor reports what is left within two sweeps, then forgets the fence.
    await new Promise((res) => setTimeout(res, 600));
    exec.detach(a.ctx);
    exec.detach(b.ctx);
    await new Promise((res) => setTimeout(res, 1000));

    const flood = mine(a.cg);
    expect(total(flood)).toBe(N);
    // One window per second of the loop (plus the partial ones at either end), each with at
    // most a fence's burst of records, and a few count records per sweep.
    const windows = Math.ceil(seconds) + 2;
    expect(flood.filter((x) => x.count === undefined).length).toBeLessThanOrEqual(windows * EXEC_RATE_BURST);
    expect(flood.length).toBeLessThan(windows * EXEC_RATE_BURST + Math.ceil(seconds / 0.2) + 10);
    expect(flood.filter((x) => x.rate_limited === true).every((x) => typeof x.count === 'number' && x.count > 0)).toBe(true);
    // The counts name the identity that was refused.
    expect(flood.some((x) => x.rate_limited === true && x.path === noop)).toBe(true);

    const quiet = mine(b.cg);
    expect(quiet.filter((x) => x.count === undefined && x.action === 'audit')).toHaveLength(3);
    expect(exec.fence.suppressed(cgroupId(a.cg))).toBeNull(); // forgotten after the last report
  });
});

describe('exec rate limit (notify loop, user space)', () => {
  it('holds back past the burst per identity and per container, and hands every count back', () => {
    const lim = new NotifyRateLimiter<number>();
    const t0 = 1_000_000_000n;
    let recorded = 0;
    // One identity, 10,000 times in one window.
    for (let i = 0; i < N; i++) if (lim.admit('ns/a', '1:1', i, t0)) recorded++;
    expect(recorded).toBe(EXEC_RATE_BURST);
    // Many identities (copies of a file): the container's budget bounds them.
    for (let i = 0; i < N; i++) if (lim.admit('ns/b', `1:${i}`, i, t0)) recorded++;
    expect(recorded).toBe(EXEC_RATE_BURST + EXEC_RATE_FENCE_BURST);
    // A neighbour is not held back by them.
    expect(lim.admit('ns/c', '1:1', 0, t0)).toBe(true);
    const held = lim.drain(t0);
    expect(held.reduce((n, h) => n + h.count, 0) + recorded).toBe(2 * N);
    expect(lim.drain(t0)).toEqual([]);
    // The next window records again.
    expect(lim.admit('ns/a', '1:1', 0, t0 + 1_000_000_000n)).toBe(true);
  });
});
