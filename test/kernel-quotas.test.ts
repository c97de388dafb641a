// Bounded, atomic kernel tables on the real kernel: per-container quotas refused before
// anything is written (the maps dumped before and after are the same bytes), the next
// container fenced normally afterwards, a write the kernel refuses halfway rolled back, and
// the orphan sweep collecting allow and rule entries whose fence is gone.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttachContext, BackendName, BackendStates } from '../src/fence/backend';
import { ExecBackend } from '../src/fence/exec/exec-backend';
import { writeExecFence } from '../src/fence/exec/cgroup-exec-fence';
import { NetworkBackend } from '../src/fence/network/network-backend';
import { QuotaError } from '../src/fence/quota';
import { loadConfigFile } from '../src/daemon/config';
import { cgroupId, createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { parseAnnotations } from '../src/policy/annotations';
import { collectingSink } from './helpers/sink';
import { mktemp, uniqueName } from './helpers/kernel';

const name = uniqueName('cgfence-test-quota');
const pinDir = `/sys/fs/bpf/${name}`;
const LIMITS = { execAllowPerContainer: 50, netRulesPerContainer: 10 };
let dir: string;
let exec: ExecBackend;
let net: NetworkBackend;
const procs: ChildProcess[] = [];
const cgroups: string[] = [];

/** A process parked in a fresh cgroup: what attach gets at create. */
function container(tag: string): { cg: string; pid: number } {
  const cg = createCgroup(`${name}/${tag}`);
  cgroups.push(cg);
  // Moved in from outside after its exec, so that no exec of its own meets the fence.
  const p = spawn('sleep', ['600'], { stdio: 'ignore' });
  procs.push(p);
  fs.writeFileSync(path.join(cg, 'cgroup.procs'), String(p.pid));
  return { cg, pid: p.pid! };
}

async function inCgroup(c: { cg: string; pid: number }): Promise<void> {
  const end = Date.now() + 5000;
  while (!fs.readFileSync(path.join(c.cg, 'cgroup.procs'), 'utf8').split('\n').includes(String(c.pid))) {
    if (Date.now() > end) throw new Error(`pid ${c.pid} never reached ${c.cg}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function ctx<N extends BackendName>(
  id: string,
  c: { cg: string; pid: number },
  annotations: Record<string, string>,
  state: BackendStates[N] = {},
): AttachContext<N> {
  return {
    namespace: 'quota-test',
    id,
    bundle: '',
    pid: c.pid,
    cgroupPath: c.cg,
    cgroupId: cgroupId(c.cg),
    policy: parseAnnotations(annotations),
    annotations,
    state,
  };
}

/**
 * Every entry of a pinned map (keys and values as bytes, as bpftool dumps them), sorted: a
 * hash map's iteration order is the kernel's business. Summed up as a count and a digest so
 * that a difference in 65,536 entries does not print them all.
 */
function dump(map: string): { entries: number; sha256: string } {
  const out = execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', path.join(pinDir, map)], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const lines = (JSON.parse(out) as Array<{ key: string[]; value: string[] }>).map((e) => `${e.key.join('')}=${e.value.join('')}`).sort();
  return { entries: lines.length, sha256: crypto.createHash('sha256').update(lines.join('\n')).digest('hex') };
}

function dumpAll(): Record<string, { entries: number; sha256: string }> {
  return { fences: dump('fences'), exec_allow: dump('exec_allow'), rules4: dump('net/net_rules4'), rules6: dump('net/net_rules6') };
}

beforeAll(() => {
  dir = mktemp(name);
  // 100 small executables: twice the per-container quota.
  for (let i = 0; i < 100; i++) {
    const f = path.join(dir, 'many', `tool-${String(i).padStart(3, '0')}`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, '#!/bin/sh\n', { mode: 0o755 });
  }
  for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(dir, `few-${i}`), '#!/bin/sh\n', { mode: 0o755 });
  exec = new ExecBackend({ pinDir, cgroupMode: 'v2', onEvents: () => {}, limits: LIMITS });
  net = new NetworkBackend({ pinDir: path.join(pinDir, 'net'), cgroupMode: 'v2', sink: collectingSink(), limits: LIMITS });
});

afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  exec?.close({ detach: true });
  net?.close({ detach: true });
  const top = cgroups.length ? path.dirname(cgroups[0]) : null;
  if (top) await removeCgroup(top).catch(() => {});
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(pinDir, { recursive: true, force: true });
});

describe('exec allow quota', () => {
  it('refuses a container over its quota before writing anything, naming it and the limit; the next one is fenced', async () => {
    const big = container('big');
    const small = container('small');
    await Promise.all([inCgroup(big), inCgroup(small)]);
    const before = dumpAll();
    const ann = { 'cgfence.io/exec-allow': `/bin/sh,${dir}/many/*` };
    expect(() => exec.attach(ctx('big', big, ann))).toThrow(QuotaError);
    // 100 files, /bin/sh, and the ELF loader /bin/sh names (loader entries count too).
    expect(() => exec.attach(ctx('big', big, ann))).toThrow(
      /container quota-test\/big asks for 102 exec allow entries, more than the 50 one container may hold \(node config limits\.execAllowPerContainer\); nothing was written/,
    );
    expect(dumpAll()).toEqual(before);
    expect(exec.fence.getFence(cgroupId(big.cg))).toBeNull();

    const st: BackendStates['exec'] = {};
    exec.attach(ctx('small', small, { 'cgfence.io/exec-allow': `/bin/sh,${dir}/few-0` }, st));
    // /bin/sh, few-0, and the loader /bin/sh names.
    expect(exec.fence.allowed(cgroupId(small.cg))).toHaveLength(3);
    expect(exec.usage().exec_allow.used).toBeGreaterThanOrEqual(2);
    exec.detach(ctx('small', small, {}, st));
  });

  it('a live update over the quota leaves the fence byte-for-byte as it was', async () => {
    const c = container('live');
    await inCgroup(c);
    const st: BackendStates['exec'] = {};
    exec.attach(ctx('live', c, { 'cgfence.io/exec-allow': `${dir}/few-0,${dir}/few-1` }, st));
    const before = dumpAll();
    expect(() => exec.update(ctx('live', c, { 'cgfence.io/exec-allow': `${dir}/many/*` }, { ...st }))).toThrow(
      /asks for 100 exec allow entries/,
    );
    expect(dumpAll()).toEqual(before);
    // The undo of a successful update (a later control failed) puts back the exact bytes.
    const undo = exec.update(
      ctx('live', c, { 'cgfence.io/exec-allow': `${dir}/few-2,${dir}/few-3,${dir}/few-4`, 'cgfence.io/mode': 'audit' }, { ...st }),
    );
    expect(dumpAll()).not.toEqual(before);
    undo();
    expect(dumpAll()).toEqual(before);
    exec.detach(ctx('live', c, {}, st));
  });

  it('a full table refuses by capacity; a write the kernel refuses halfway is rolled back; the sweep collects ownerless entries', async () => {
    const c = container('cap');
    await inCgroup(c);
    const st: BackendStates['exec'] = {};
    exec.attach(ctx('cap', c, { 'cgfence.io/exec-allow': `${dir}/few-0` }, st));
    const fenceId = cgroupId(c.cg);

    // Fill the shared map to 3 entries short of full under a fence id nobody owns (what a
    // crash mid-attach would leave: allow entries without a fence entry).
    const ghost = 0x7ead00000000n + BigInt(process.pid);
    const { used, capacity } = exec.usage().exec_allow;
    const fill = capacity - used - 3;
    exec.fence.allow(
      ghost,
      Array.from({ length: fill }, (_, i) => ({ dev: 1n, ino: BigInt(i + 1), ctimeNs: 0n, interpOnly: false })),
    );
    expect(exec.usage().exec_allow.used).toBe(capacity - 3);

    const before = dumpAll();
    expect(() =>
      exec.update(ctx('cap', c, { 'cgfence.io/exec-allow': [1, 2, 3, 4, 5].map((i) => `${dir}/few-${i}`).join(',') }, { ...st })),
    ).toThrow(
      new RegExp(
        `container quota-test/cap needs 5 more exec allow entries, but the node's exec allow table holds ${capacity - 3} of ${capacity}; nothing was written`,
      ),
    );
    expect(dumpAll()).toEqual(before);

    // Without the quota check the kernel itself refuses the 4th entry (E2BIG): the entries
    // already written go again, and the fence keeps its list and mode.
    const ids = [1, 2, 3, 4, 5].map((i) => ({ dev: 2n, ino: BigInt(1000 + i), ctimeNs: 0n, interpOnly: false }));
    expect(() => writeExecFence(exec.fence, fenceId, ids, 'audit', 0)).toThrow(/exec_allow/);
    expect(dumpAll()).toEqual(before);

    // The orphan sweep collects the ghost's entries (no fence entry, no container) and
    // leaves the known fence alone; then the update fits.
    const removed = exec.sweepOrphans(new Set([fenceId.toString()]));
    expect(removed, JSON.stringify(removed)).toEqual([
      { type: 'agent', action: 'remove-orphan-fence', control: 'exec', cgroup_id: ghost.toString() },
    ]);
    expect(exec.fence.allowed(ghost)).toEqual([]);
    expect(exec.fence.allowed(fenceId)).toHaveLength(1);
    exec.update(ctx('cap', c, { 'cgfence.io/exec-allow': `${dir}/few-1,${dir}/few-2` }, st));
    expect(exec.fence.allowed(fenceId)).toHaveLength(2);
    exec.detach(ctx('cap', c, {}, st));
  });
});

describe('network rule quota', () => {
  const cidrs = (n: number) => Array.from({ length: n }, (_, i) => `10.${i}.0.0/16`).join(',');

  it('refuses a rule set over the quota before writing anything; the next container is fenced', async () => {
    const a = container('net-big');
    const b = container('net-small');
    await Promise.all([inCgroup(a), inCgroup(b)]);
    const before = dumpAll();
    expect(() => net.attach(ctx('net-big', a, { 'cgfence.io/egress-deny': cidrs(11) }))).toThrow(
      /container quota-test\/net-big asks for 11 network rules \(IPv4\) entries, more than the 10 one container may hold \(node config limits\.netRulesPerContainer\); nothing was written/,
    );
    expect(dumpAll()).toEqual(before);
    expect(net.fence.isAttached(cgroupId(a.cg))).toBe(false);

    const st: BackendStates['network'] = {};
    net.attach(ctx('net-small', b, { 'cgfence.io/egress-deny': cidrs(10) }, st));
    expect(net.fence.entries(cgroupId(b.cg))).toHaveLength(10);
    const live = dumpAll();
    expect(() => net.update(ctx('net-small', b, { 'cgfence.io/egress-deny': cidrs(12) }, { ...st }))).toThrow(/asks for 12 network rules/);
    expect(dumpAll()).toEqual(live);
    net.detach(ctx('net-small', b, {}, st));
  });

  it('the sweep collects rule entries whose fence is gone', async () => {
    const c = container('net-orphan');
    await inCgroup(c);
    const st: BackendStates['network'] = {};
    net.attach(ctx('net-orphan', c, { 'cgfence.io/egress-deny': cidrs(3) }, st));
    const id = cgroupId(c.cg);
    const removed = net.sweepOrphans(new Set());
    expect(removed.map((r) => r.cgroup_id)).toContain(id.toString());
    expect(net.fence.entries(id)).toEqual([]);
  });
});

describe('table sizes', () => {
  const sizesPin = `/sys/fs/bpf/${name}-sizes`;
  afterAll(() => {
    fs.rmSync(sizesPin, { recursive: true, force: true });
  });

  it('a new table gets the configured size; a pinned one keeps its own', () => {
    const a = new ExecBackend({
      pinDir: sizesPin,
      cgroupMode: 'v2',
      sizes: { exec_fences: 64, exec_allow: 1000, net_rules4: 10, net_rules6: 10 },
    });
    try {
      expect(a.usage()).toEqual({ fences: { used: 0, capacity: 64 }, exec_allow: { used: 0, capacity: 1000 } });
    } finally {
      a.close({ detach: false });
    }
    const b = new ExecBackend({
      pinDir: sizesPin,
      cgroupMode: 'v2',
      sizes: { exec_fences: 128, exec_allow: 2000, net_rules4: 10, net_rules6: 10 },
    });
    try {
      expect(b.usage().exec_allow.capacity).toBe(1000);
    } finally {
      b.close({ detach: true });
    }
  });

  it('the node config names a bad size or an unknown table', () => {
    const f = path.join(dir, 'sizes.json');
    fs.writeFileSync(f, JSON.stringify({ tableSizes: { exec_allow: 0 } }));
    expect(() => loadConfigFile(f)).toThrow(/tableSizes\.exec_allow must be an integer from 1 to 16777216, not 0/);
    fs.writeFileSync(f, JSON.stringify({ tableSizes: { exec_alow: 10 } }));
    expect(() => loadConfigFile(f)).toThrow(/unknown setting "tableSizes\.exec_alow"/);
    fs.writeFileSync(f, JSON.stringify({ limits: { execAllowPerContainer: -1 } }));
    expect(() => loadConfigFile(f)).toThrow(/limits\.execAllowPerContainer must be a positive integer, not -1/);
    fs.writeFileSync(f, JSON.stringify({ limits: { execAllowPerContainer: 10 }, tableSizes: { exec_allow: 100 } }));
    expect(loadConfigFile(f)).toMatchObject({
      limits: { execAllowPerContainer: 10, netRulesPerContainer: 8192 },
      tableSizes: { exec_allow: 100, exec_fences: 4096 },
    });
  });
});
