// The BPF-LSM exec fence (lsm/bprm_check_security) on a stock kernel with BPF LSM (run in the
// VM by test/vm.test.ts): a forbidden exec fails with EACCES in the caller, nothing is
// killed, and the cgroup v2 and pid-namespace identities both work with the same maps.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ExecAction, ExecEvent, FenceMode } from '../../../src/kernel/abi';
import { createCgroup, removeCgroup } from '../../../src/kernel/cgroup';
import { ExecFence } from '../../../src/kernel/exec-fence';
import { ExecLsm, probeExecLsm } from '../../../src/kernel/exec-lsm';
import { pidNamespaceOf } from '../../../src/kernel/pidns';
import { fenceCgroupExecs } from '../../../src/fence/exec/cgroup-exec-fence';
import { ExecBackend } from '../../../src/fence/exec/exec-backend';
import { ExecLsmBackend } from '../../../src/fence/exec/exec-lsm-backend';
import { fencePidnsExecs } from '../../../src/fence/exec/pidns-exec-fence';
import { identityOf } from '../../../src/policy/identity';
import { buildFixture, mktemp, runInCgroup, uniqueName } from '../../helpers/kernel';

const name = uniqueName('cgfence-test-lsm');
const pinDir = `/sys/fs/bpf/${name}`;
let dir: string;
let fence: ExecFence;
let lsm: ExecLsm;
const events: ExecEvent[] = [];
let probe: string, allowedMarker: string, forbidden: string, script: string;
const cgroups: string[] = [];

function marker(tag: string): string {
  return path.join(dir, `marker-${tag}-${Math.random().toString(36).slice(2)}`);
}

async function eventFor(pred: (e: ExecEvent) => boolean, timeoutMs = 10000): Promise<ExecEvent> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const e = events.find(pred);
    if (e) return e;
    if (Date.now() > end) throw new Error('no matching exec event');
    await new Promise((r) => setTimeout(r, 50));
  }
}

function newCgroup(): string {
  const cg = createCgroup(`${name}/c${cgroups.length}`);
  cgroups.push(cg);
  return cg;
}

beforeAll(() => {
  dir = mktemp(name);
  probe = buildFixture('exec-probe', dir);
  allowedMarker = buildFixture('marker', dir);
  forbidden = path.join(dir, 'forbidden');
  fs.copyFileSync(allowedMarker, forbidden);
  fs.chmodSync(forbidden, 0o755);
  script = path.join(dir, 'script.sh');
  fs.writeFileSync(script, '#!/bin/sh\necho "$0 ran" > "$CGFENCE_MARKER"\n', { mode: 0o755 });
  fence = ExecFence.open({ pinDir, programs: [], onEvents: (b) => events.push(...b) });
  lsm = ExecLsm.attach({ pinDir });
});

afterAll(async () => {
  const top = cgroups.length ? path.dirname(cgroups[0]) : null;
  if (top) await removeCgroup(top).catch(() => {});
  lsm?.close({ detach: true });
  fence?.close({ detach: true });
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  events.length = 0;
});

describe('BPF LSM exec fence', () => {
  it('is usable on this kernel (bpf is an active LSM, the probe program loads and attaches)', () => {
    expect(fs.readFileSync('/sys/kernel/security/lsm', 'utf8')).toMatch(/\bbpf\b/);
    expect(probeExecLsm()).toEqual({ usable: true });
  });

  it('refuses a forbidden exec with EACCES in the caller, which lives on; allowed ones run', async () => {
    const cg = newCgroup();
    const { fenceId } = fenceCgroupExecs(fence, {
      cgroupPath: cg,
      rootPid: process.pid,
      mode: 'enforce',
      execAllow: [probe, allowedMarker],
    });
    const ok = marker('ok');
    expect(runInCgroup(cg, [allowedMarker], { CGFENCE_MARKER: ok }).status).toBe(0);
    expect(fs.existsSync(ok)).toBe(true);

    // exec-probe is allowed; its execve of the forbidden file fails, and it says with which errno.
    for (const how of ['execve', 'execveat-empty', 'procfd', 'memfd']) {
      const m = marker(how);
      const r = runInCgroup(cg, [probe, how, forbidden], { CGFENCE_MARKER: m });
      expect(r.signal, how).toBeNull();
      expect(r.status, `${how}: ${r.stderr}`).toBe(127);
      expect(r.stderr, how).toMatch(/Permission denied/);
      expect(fs.existsSync(m)).toBe(false);
    }
    const e = await eventFor((x) => x.path === forbidden && x.action === ExecAction.Deny);
    expect(e.via).toBe('lsm');
    expect(e.fenceId).toBe(fenceId);
    expect({ dev: e.dev, ino: e.ino }).toEqual(identityOf(forbidden));
    expect(fence.getFence(fenceId)?.denied).toBeGreaterThanOrEqual(4n);
    fence.unfence(fenceId);
  });

  it('judges a #! script and its interpreter: both must be allowed', () => {
    // The interpreter is a copy on /tmp's tmpfs: on the VM's root (an overlay over 9p) the
    // identity stat() gives is not the one the kernel executes (see docs/vm-harness.md).
    const sh = path.join(dir, 'sh');
    fs.copyFileSync(fs.realpathSync('/bin/sh'), sh);
    fs.chmodSync(sh, 0o755);
    fs.writeFileSync(script, `#!${sh}\necho "$0 ran" > "$CGFENCE_MARKER"\n`, { mode: 0o755 });
    const cases: Array<[string[], boolean]> = [
      [[script], false],
      [[sh], false],
      [[script, sh], true],
    ];
    for (const [allow, runs] of cases) {
      const cg = newCgroup();
      const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [probe, ...allow] });
      const m = marker('script');
      const r = runInCgroup(cg, [probe, 'execve', script], { CGFENCE_MARKER: m });
      expect(fs.existsSync(m), `allow ${allow.join(',')}: ${r.stderr}`).toBe(runs);
      if (!runs) expect(r.stderr).toMatch(/Permission denied/);
      fence.unfence(fenceId);
    }
  });

  it('in audit mode lets the forbidden exec run and reports it', async () => {
    const cg = newCgroup();
    const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'audit', execAllow: [probe] });
    const m = marker('audit');
    expect(runInCgroup(cg, [probe, 'execve', forbidden], { CGFENCE_MARKER: m }).status).toBe(0);
    expect(fs.existsSync(m)).toBe(true);
    const e = await eventFor((x) => x.path === forbidden && x.fenceId === fenceId);
    expect(e.action).toBe(ExecAction.Audit);
    fence.unfence(fenceId);
  });

  it('finds pid-namespace fences too (containers without a cgroup v2 of their own)', async () => {
    const m = marker('ns');
    // The namespace's init waits for a line before it execs, so it can be fenced first.
    const child = spawn(
      'unshare',
      ['--pid', '--fork', '--mount-proc', '/bin/sh', '-c', 'read go; "$@"; echo "status $?"', 'sh', probe, 'execve', forbidden],
      {
        env: { PATH: '/usr/bin:/bin', CGFENCE_MARKER: m },
      },
    );
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const done = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    let initPid = 0;
    for (let i = 0; i < 200 && !initPid; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const kids = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
      if (kids[0] && pidNamespaceOf(kids[0]).nsPids.at(-1) === 1) initPid = kids[0];
    }
    expect(initPid).toBeGreaterThan(0);
    const { fenceId } = fencePidnsExecs(fence, { pid: initPid, mode: 'enforce', execAllow: ['/bin/sh', probe], lsm: true });
    child.stdin.end('go\n');
    await done;
    expect(out).toMatch(/Permission denied/);
    expect(out).toMatch(/status 127/);
    expect(fs.existsSync(m)).toBe(false);
    const e = await eventFor((x) => x.path === forbidden && x.fenceId === fenceId);
    expect(e.action).toBe(ExecAction.Deny);
    fence.unfence(fenceId);
  });

  it('refuses opening an allow-listed file or a /proc/PID/mem for writing from a fenced cgroup; reads and other files are fine', async () => {
    // A busybox copy on /tmp (see the interpreter note above) runs the shell inside the fence.
    const bb = path.join(dir, 'busybox');
    fs.copyFileSync(fs.realpathSync('/bin/busybox'), bb);
    fs.chmodSync(bb, 0o755);
    const target = path.join(dir, 'allowed-target');
    fs.copyFileSync(allowedMarker, target);
    fs.chmodSync(target, 0o755);
    const other = path.join(dir, 'other-file');
    fs.writeFileSync(other, '');
    const before = fs.readFileSync(target);
    const sh = (cg: string, cmd: string) => runInCgroup(cg, [bb, 'sh', '-c', cmd]);
    const cmd = `cat "${target}" > /dev/null && echo read-ok; echo x >> "${target}" || echo write-refused; echo x >> "${other}" && echo other-ok; echo x > /proc/self/mem; echo "mem $?"`;

    const cg = newCgroup();
    const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [bb, target] });
    const r = sh(cg, cmd);
    expect(r.signal, r.stderr).toBeNull();
    expect(r.stdout).toMatch(/mem [1-9]/);
    expect(r.stdout).toContain('read-ok');
    expect(r.stdout).toContain('write-refused');
    expect(r.stdout).toContain('other-ok');
    expect(r.stderr).toMatch(/allowed-target: Permission denied/);
    expect(r.stderr).toMatch(/\/proc\/self\/mem: Permission denied/);
    expect(fs.readFileSync(target)).toEqual(before);
    const w = await eventFor((x) => x.op === 'write-allow-listed' && x.fenceId === fenceId);
    expect(w.action).toBe(ExecAction.Deny);
    expect(w.path).toBe('allowed-target');
    expect((await eventFor((x) => x.op === 'write-proc-mem' && x.fenceId === fenceId)).action).toBe(ExecAction.Deny);
    fence.unfence(fenceId);

    // Unfenced, the same opens succeed (the /proc/self/mem write itself then fails with EIO at offset 0).
    const free = sh(newCgroup(), cmd);
    expect(free.signal, free.stderr).toBeNull();
    expect(free.stdout).toMatch(/mem \d+/);
    expect(free.stdout).toContain('other-ok');
    expect(free.stdout).not.toContain('write-refused');
    expect(free.stderr).not.toMatch(/Permission denied/);
    expect(fs.readFileSync(target).length).toBe(before.length + 2);
  });

  it("lets an ordinary dynamic program map the image's loader and libraries, but not a library or loader written after the fence was set", async () => {
    // Built before the fence: a dynamic program, and one whose PT_INTERP names a loader that
    // does not exist yet (it is written after the fence is set: "a replaced loader").
    const src = path.join(dir, 'dyn.c');
    fs.writeFileSync(src, 'int main(void) { return 0; }\n');
    const dyn = path.join(dir, 'dyn');
    spawnSync('gcc', ['-O2', '-o', dyn, src], { stdio: 'pipe' });
    const newLoader = path.join(dir, 'ld-new.so');
    const dynNewLoader = path.join(dir, 'dyn-new-loader');
    spawnSync('gcc', ['-O2', `-Wl,--dynamic-linker=${newLoader}`, '-o', dynNewLoader, src], { stdio: 'pipe' });
    const libc = fs.realpathSync('/lib/x86_64-linux-gnu/libc.so.6');
    const loader = fs.realpathSync('/lib64/ld-linux-x86-64.so.2');

    for (const mode of ['enforce', 'audit'] as const) {
      const cg = newCgroup();
      const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode, execAllow: [dyn, dynNewLoader] });
      lsm.setSince(fenceId);
      await new Promise((r) => setTimeout(r, 50)); // ctime is coarse: be clearly after the fence
      const libDir = path.join(dir, `lib-${mode}`);
      fs.mkdirSync(libDir);
      fs.copyFileSync(libc, path.join(libDir, 'libc.so.6'));
      fs.rmSync(newLoader, { force: true });
      fs.copyFileSync(loader, newLoader);
      fs.chmodSync(newLoader, 0o755);

      const plain = runInCgroup(cg, [dyn]);
      expect(plain.status, `${mode}, the image's libc and loader: ${plain.stderr}`).toBe(0);
      const newLib = runInCgroup(cg, [dyn], { LD_LIBRARY_PATH: libDir });
      const replacedLoader = runInCgroup(cg, [dynNewLoader]);
      if (mode === 'enforce') {
        expect(newLib.status, 'a library written after the fence').not.toBe(0);
        expect(newLib.stderr).toMatch(/libc\.so\.6: failed to map segment/);
        expect(replacedLoader.status === 0, 'a loader written after the fence').toBe(false);
        const e = await eventFor((x) => x.op === 'map-exec' && x.fenceId === fenceId && x.path === 'libc.so.6');
        expect(e.action).toBe(ExecAction.Deny);
        await eventFor((x) => x.op === 'map-exec' && x.fenceId === fenceId && x.path === 'ld-new.so');
      } else {
        expect(newLib.status, newLib.stderr).toBe(0);
        expect(replacedLoader.status, replacedLoader.stderr).toBe(0);
        expect((await eventFor((x) => x.op === 'map-exec' && x.fenceId === fenceId && x.path === 'libc.so.6')).action).toBe(
          ExecAction.Audit,
        );
      }
      fence.unfence(fenceId);
      lsm.clearSince(fenceId);
    }
    // Unfenced, both run: the copies themselves work.
    const free = newCgroup();
    expect(runInCgroup(free, [dyn], { LD_LIBRARY_PATH: path.join(dir, 'lib-enforce') }).status).toBe(0);
    expect(runInCgroup(free, [dynNewLoader]).status).toBe(0);
  });

  it('sweeps an orphan fence together with its fence-set time (a crash between the kernel write and the state file)', () => {
    const other = `/sys/fs/bpf/${name}-o`;
    const l2 = ExecLsm.attach({ pinDir: other });
    const backend = new ExecLsmBackend(new ExecBackend({ pinDir: other, cgroupMode: 'auto', kernelHook: 'lsm' }), l2);
    const since = () =>
      JSON.parse(
        spawnSync('bpftool', ['-j', 'map', 'dump', 'pinned', path.join(other, 'exec_fence_since')], { encoding: 'utf8' }).stdout,
      ) as unknown[];
    try {
      const ghost = 0x7ead00000000n + BigInt(process.pid);
      backend.inner.fence.setFence(ghost, FenceMode.Enforce);
      l2.setSince(ghost);
      expect(since()).toHaveLength(1);
      expect(backend.sweepOrphans(new Set())).toEqual([
        { type: 'agent', action: 'remove-orphan-fence', control: 'exec', cgroup_id: ghost.toString() },
      ]);
      expect(backend.inner.fence.getFence(ghost)).toBeNull();
      expect(since()).toHaveLength(0);
    } finally {
      backend.close({ detach: true });
    }
    expect(fs.existsSync(other)).toBe(false);
  });

  it('leaves nothing attached or pinned on detach', () => {
    const pins = fs.readdirSync(pinDir);
    expect(pins).toContain('exec_lsm_link');
    const other = `/sys/fs/bpf/${name}-b`;
    const f2 = ExecFence.open({ pinDir: other, programs: [] });
    const l2 = ExecLsm.attach({ pinDir: other });
    const progIds = Object.values(l2.objectIds()).map((p) => p.program);
    expect(progIds).toHaveLength(4);
    l2.close({ detach: true });
    f2.close({ detach: true });
    expect(fs.existsSync(other)).toBe(false);
    for (const id of progIds) expect(spawnSync('bpftool', ['prog', 'show', 'id', String(id)], { encoding: 'utf8' }).status).not.toBe(0);
  });
});
