// The kernel exec fence on the real kernel: cgroups under the v2 hierarchy, processes run
// inside them, and a marker file as proof that a program ran.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ExecAction, ExecEvent, FenceMode } from '../src/kernel/abi';
import { cgroupId, createCgroup, removeCgroup, requireCgroupV2Root } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { identityOf } from '../src/policy/identity';
import { native, NativeError } from '../src/native';
import { bpfCounts, buildFixture, mktemp, openFdCount, runInCgroup, uniqueName, waitForBpfCounts } from './helpers/kernel';

const name = uniqueName('cgfence-test-exec');
const pinDir = `/sys/fs/bpf/${name}`;
let dir: string;
let tmpfsDir: string;
let ovl: { lower: string; upper: string; work: string; merged: string };
let fence: ExecFence;
const events: ExecEvent[] = [];
const cgroups: string[] = [];
let probe: string, allowedMarker: string, forbidden: string;

function newCgroup(): string {
  const cg = createCgroup(`${name}/c${cgroups.length}`);
  cgroups.push(cg);
  return cg;
}

/** Waits until the ring buffer delivered an event matching pred. */
async function eventFor(pred: (e: ExecEvent) => boolean, timeoutMs = 5000): Promise<ExecEvent> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const e = events.find(pred);
    if (e) return e;
    if (Date.now() > end) throw new Error('no matching exec event');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function marker(tag: string): string {
  return path.join(dir, `marker-${tag}-${Math.random().toString(36).slice(2)}`);
}

beforeAll(() => {
  execFileSync('bash', [path.join(__dirname, '..', 'scripts', 'setup.sh')]);
  dir = mktemp(name);
  probe = buildFixture('exec-probe', dir);
  allowedMarker = buildFixture('marker', dir);
  forbidden = path.join(dir, 'forbidden');
  fs.copyFileSync(allowedMarker, forbidden);
  fs.chmodSync(forbidden, 0o755);

  tmpfsDir = path.join(dir, 'tmpfs');
  fs.mkdirSync(tmpfsDir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', tmpfsDir]);
  ovl = { lower: path.join(dir, 'lower'), upper: path.join(dir, 'upper'), work: path.join(dir, 'work'), merged: path.join(dir, 'merged') };
  for (const d of Object.values(ovl)) fs.mkdirSync(d);
  fs.copyFileSync(allowedMarker, path.join(ovl.lower, 'marker'));
  fs.chmodSync(path.join(ovl.lower, 'marker'), 0o755);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${ovl.lower},upperdir=${ovl.upper},workdir=${ovl.work}`, ovl.merged]);

  fence = ExecFence.open({ pinDir, onEvents: (batch) => events.push(...batch) });
});

afterAll(async () => {
  // removeCgroup takes the whole per-run subtree, whatever a failed test left in it.
  const top = cgroups.length ? path.dirname(cgroups[0]) : null;
  if (top) await removeCgroup(top).catch(() => {});
  fence?.close({ detach: true });
  for (const m of [ovl?.merged, tmpfsDir])
    if (m)
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        /* not mounted */
      }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  events.length = 0;
});

describe('exec fence (enforce)', () => {
  let cg: string;
  let fenceId: bigint;

  beforeAll(() => {
    cg = newCgroup();
    ({ fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [probe, allowedMarker] }));
  });

  it('runs an allowed program and makes no event for it', () => {
    const m = marker('allowed');
    const r = runInCgroup(cg, [allowedMarker], { CGFENCE_MARKER: m });
    expect(r.status).toBe(0);
    expect(fs.existsSync(m)).toBe(true);
    expect(events.filter((e) => e.action === ExecAction.Allow)).toHaveLength(0);
  });

  it('kills a forbidden program before its first instruction and reports it', async () => {
    const m = marker('direct');
    const r = runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m });
    expect(r.signal).toBe('SIGKILL');
    expect(fs.existsSync(m)).toBe(false);
    const e = await eventFor((x) => x.path === forbidden);
    expect(e.action).toBe(ExecAction.Deny);
    expect(e.fenceId).toBe(fenceId);
    expect(e.cgroupId).toBe(fenceId);
    expect({ dev: e.dev, ino: e.ino }).toEqual(identityOf(forbidden));
    expect(fence.getFence(fenceId)?.denied).toBeGreaterThanOrEqual(1n);
  });

  const ways: Array<[string, (target: string) => string[]]> = [
    ['execve', (t) => [probe, 'execve', t]],
    ['a relative path', (t) => [probe, 'relative', t]],
    ['execveat(AT_EMPTY_PATH)', (t) => [probe, 'execveat-empty', t]],
    ['/proc/self/fd/N', (t) => [probe, 'procfd', t]],
    ['memfd + fexecve', (t) => [probe, 'memfd', t]],
  ];
  for (const [how, argv] of ways) {
    it(`never runs a forbidden program started through ${how}`, () => {
      const m = marker('way');
      const r = runInCgroup(cg, argv(forbidden), { CGFENCE_MARKER: m });
      expect(fs.existsSync(m)).toBe(false);
      expect(r.signal).toBe('SIGKILL');
    });
  }

  it('still runs the allowed program through execveat and /proc/self/fd (same identity)', () => {
    for (const mode of ['execveat-empty', 'procfd', 'relative']) {
      const m = marker(mode);
      const r = runInCgroup(cg, [probe, mode, allowedMarker], { CGFENCE_MARKER: m });
      expect(r.status, `${mode}: ${r.stderr}`).toBe(0);
      expect(fs.existsSync(m)).toBe(true);
    }
  });

  it('denies an allowed program copied into memfd (a new identity)', () => {
    const m = marker('memfd-allowed');
    const r = runInCgroup(cg, [probe, 'memfd', allowedMarker], { CGFENCE_MARKER: m });
    expect(r.signal).toBe('SIGKILL');
    expect(fs.existsSync(m)).toBe(false);
  });

  it('follows the file, not the name: hard links and symlinks to a forbidden file are denied, to an allowed file allowed', () => {
    const hard = path.join(dir, 'hardlink-to-forbidden');
    const sym = path.join(dir, 'symlink-to-forbidden');
    const symOk = path.join(dir, 'symlink-to-allowed');
    fs.linkSync(forbidden, hard);
    fs.symlinkSync(forbidden, sym);
    fs.symlinkSync(allowedMarker, symOk);
    for (const p of [hard, sym]) {
      const m = marker('link');
      expect(runInCgroup(cg, [probe, 'execve', p], { CGFENCE_MARKER: m }).signal).toBe('SIGKILL');
      expect(fs.existsSync(m)).toBe(false);
    }
    const m = marker('symok');
    expect(runInCgroup(cg, [probe, 'execve', symOk], { CGFENCE_MARKER: m }).status).toBe(0);
    expect(fs.existsSync(m)).toBe(true);
  });

  it('denies a copy of an allowed program (a copy is a new identity)', () => {
    const copy = path.join(dir, 'copy-of-allowed');
    fs.copyFileSync(allowedMarker, copy);
    fs.chmodSync(copy, 0o755);
    const m = marker('copy');
    expect(runInCgroup(cg, [probe, 'execve', copy], { CGFENCE_MARKER: m }).signal).toBe('SIGKILL');
    expect(fs.existsSync(m)).toBe(false);
  });

  it('denies a #! script whose interpreter is forbidden', () => {
    const script = path.join(dir, 'script-forbidden-interp');
    fs.writeFileSync(script, `#!${forbidden}\n`, { mode: 0o755 });
    const m = marker('shebang');
    const r = runInCgroup(cg, [probe, 'execve', script], { CGFENCE_MARKER: m });
    expect(r.signal).toBe('SIGKILL');
    expect(fs.existsSync(m)).toBe(false);
  });

  it('does not run a file written after the fence was attached, even at an allowed path name', () => {
    const late = path.join(dir, 'late');
    fs.copyFileSync(allowedMarker, late);
    fs.chmodSync(late, 0o755);
    // Rename it over nothing allowed: the allow-list holds identities, not names.
    const m = marker('late');
    expect(runInCgroup(cg, [probe, 'execve', late], { CGFENCE_MARKER: m }).signal).toBe('SIGKILL');
    expect(fs.existsSync(m)).toBe(false);
  });

  it('fences child cgroups of the fenced cgroup too', () => {
    const child = createCgroup(`${path.relative(requireCgroupV2Root(), cg)}/child`);
    try {
      const m = marker('child');
      expect(runInCgroup(child, [probe, 'execve', forbidden], { CGFENCE_MARKER: m }).signal).toBe('SIGKILL');
      expect(fs.existsSync(m)).toBe(false);
      const ok = marker('child-ok');
      expect(runInCgroup(child, [allowedMarker], { CGFENCE_MARKER: ok }).status).toBe(0);
    } finally {
      fs.rmdirSync(child);
    }
  });

  it('updates a running fence live: allowing a file makes it run, removing it denies it again', () => {
    fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [probe, allowedMarker, forbidden] });
    const m1 = marker('live1');
    expect(runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m1 }).status).toBe(0);
    expect(fs.existsSync(m1)).toBe(true);
    fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [probe, allowedMarker] });
    const m2 = marker('live2');
    expect(runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m2 }).signal).toBe('SIGKILL');
    expect(fs.existsSync(m2)).toBe(false);
  });

  it('leaves other cgroups alone', () => {
    const other = newCgroup();
    const m = marker('other');
    expect(runInCgroup(other, [forbidden], { CGFENCE_MARKER: m }).status).toBe(0);
    expect(fs.existsSync(m)).toBe(true);
  });
});

describe('exec fence (audit)', () => {
  it('lets a forbidden program run and reports it as audit', async () => {
    const cg = newCgroup();
    fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'audit', execAllow: [allowedMarker] });
    const m = marker('audit');
    const r = runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m });
    expect(r.status).toBe(0);
    expect(fs.existsSync(m)).toBe(true);
    const e = await eventFor((x) => x.path === forbidden && x.fenceId === cgroupId(cg));
    expect(e.action).toBe(ExecAction.Audit);
    expect(e.mode).toBe(FenceMode.Audit);
    expect(fence.getFence(cgroupId(cg))?.audited).toBe(1n);
  });
});

describe('identities computed in user space match the kernel', () => {
  for (const fsName of ['ext4', 'tmpfs', 'overlayfs']) {
    it(`on ${fsName}`, async () => {
      const cg = newCgroup();
      let file: string;
      if (fsName === 'ext4') file = allowedMarker;
      else if (fsName === 'tmpfs') {
        file = path.join(tmpfsDir, 'marker');
        fs.copyFileSync(allowedMarker, file);
        fs.chmodSync(file, 0o755);
      } else file = path.join(ovl.merged, 'marker');
      expect(fs.readFileSync('/proc/self/mounts', 'utf8')).toContain(
        fsName === 'ext4' ? ' / ext4 ' : fsName === 'tmpfs' ? `${tmpfsDir} tmpfs` : `${ovl.merged} overlay`,
      );
      fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [file], reportAllowed: true });
      const m = marker(fsName);
      const r = runInCgroup(cg, [file], { CGFENCE_MARKER: m });
      expect(r.status).toBe(0);
      expect(fs.existsSync(m)).toBe(true);
      const e = await eventFor((x) => x.path === file);
      expect(e.action).toBe(ExecAction.Allow);
      expect({ dev: e.dev, ino: e.ino }).toEqual(identityOf(file));
    });
  }
});

describe('unfence and close', () => {
  it('unfence removes every map entry of the fence', () => {
    const cg = newCgroup();
    const { fenceId } = fenceCgroupExecs(fence, {
      cgroupPath: cg,
      rootPid: process.pid,
      mode: 'enforce',
      execAllow: [probe, allowedMarker],
    });
    expect(fence.allowed(fenceId)).toHaveLength(2);
    fence.unfence(fenceId);
    expect(fence.getFence(fenceId)).toBeNull();
    expect(fence.allowed(fenceId)).toHaveLength(0);
    const m = marker('unfenced');
    expect(runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m }).status).toBe(0);
  });

  it("unfence removes the entries an earlier instance wrote, and no other fence's", async () => {
    const pin = `/sys/fs/bpf/${uniqueName('cgfence-test-unfence')}`;
    const before = bpfCounts();
    const a = ExecFence.open({ pinDir: pin });
    let b: ExecFence | undefined;
    try {
      const [one, two] = [newCgroup(), newCgroup()];
      const first = fenceCgroupExecs(a, { cgroupPath: one, rootPid: process.pid, mode: 'enforce', execAllow: [probe, allowedMarker] });
      a.close(); // as a daemon restarted: the next instance learns the entries from the pinned map
      b = ExecFence.open({ pinDir: pin });
      const second = fenceCgroupExecs(b, { cgroupPath: two, rootPid: process.pid, mode: 'enforce', execAllow: [allowedMarker] });
      expect(b.allowed(first.fenceId)).toHaveLength(2);
      b.unfence(first.fenceId);
      expect(b.allowed(first.fenceId)).toHaveLength(0);
      expect(b.getFence(first.fenceId)).toBeNull();
      expect(b.allowed(second.fenceId)).toHaveLength(1);
      expect(b.usage().allow.used).toBe(1);
    } finally {
      (b ?? a).close({ detach: true });
      if (fs.existsSync(pin)) execFileSync('rm', ['-rf', pin]);
    }
    // The kernel frees maps and programs a moment after their last fd and pin: the next
    // tests count them.
    expect(await waitForBpfCounts(before)).toEqual(before);
  });

  it('open + close leaves no fd, program, map, link or pin behind', async () => {
    const fds = openFdCount();
    const before = bpfCounts();
    const pin = `/sys/fs/bpf/${uniqueName('cgfence-test-close')}`;
    const f = ExecFence.open({ pinDir: pin, onEvents: () => {} });
    let pinLeft = true;
    try {
      const during = bpfCounts();
      expect(during.progs).toBe(before.progs + 1);
      expect(during.links).toBe(before.links + 1);
      expect(fs.existsSync(path.join(pin, 'exec_fence_link'))).toBe(true);
    } finally {
      // Even when a count above is off (other programs come and go on a shared machine),
      // nothing of this test stays pinned.
      f.close({ detach: true });
      pinLeft = fs.existsSync(pin);
      if (pinLeft) execFileSync('rm', ['-rf', pin]);
    }
    expect(openFdCount()).toBe(fds);
    expect(await waitForBpfCounts(before)).toEqual(before);
    expect(pinLeft).toBe(false); // close with detach removed the pins itself
  });

  it('a pinned fence keeps enforcing after close without detach, and a new instance adopts it', async () => {
    const pin = `/sys/fs/bpf/${uniqueName('cgfence-test-adopt')}`;
    const cg = newCgroup();
    const before = bpfCounts();
    const a = ExecFence.open({ pinDir: pin });
    fenceCgroupExecs(a, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [allowedMarker] });
    a.close(); // as a daemon killed or upgraded: the pins hold program and maps
    try {
      const m = marker('orphan');
      expect(runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m }).signal).toBe('SIGKILL');
      expect(fs.existsSync(m)).toBe(false);
      const b = ExecFence.open({ pinDir: pin });
      try {
        expect(b.adopted).toBe(true);
        expect(b.getFence(cgroupId(cg))?.denied).toBe(1n);
        // the old program was replaced, not doubled
        expect((await waitForBpfCounts({ progs: before.progs + 1 })).progs).toBe(before.progs + 1);
        const m2 = marker('adopted');
        expect(runInCgroup(cg, [forbidden], { CGFENCE_MARKER: m2 }).signal).toBe('SIGKILL');
        expect(b.getFence(cgroupId(cg))?.denied).toBe(2n);
      } finally {
        b.close({ detach: true });
      }
      expect(await waitForBpfCounts(before)).toEqual(before);
    } finally {
      if (fs.existsSync(pin)) execFileSync('rm', ['-rf', pin]);
    }
  });

  it('a failed pin carries the errno and the operation', () => {
    const notBpffs = mktemp('cgfence-test-notbpffs');
    try {
      let err: NativeError | undefined;
      try {
        ExecFence.open({ pinDir: notBpffs }).close({ detach: true });
      } catch (e) {
        err = e as NativeError;
      }
      expect(err).toBeDefined();
      expect(err!.syscall).toMatch(/^bpf_/);
      expect(typeof err!.errno).toBe('number');
      expect(err!.errno).toBeLessThan(0);
      expect(err!.code).toMatch(/^E[A-Z]+$/);
    } finally {
      fs.rmSync(notBpffs, { recursive: true, force: true });
    }
  });

  it('a program the verifier rejects fails with the verifier log', () => {
    let err: NativeError | undefined;
    try {
      new (native().BpfObject)('verifier-reject');
    } catch (e) {
      err = e as NativeError;
    }
    expect(err).toBeDefined();
    expect(err!.syscall).toBe('bpf_object__load');
    expect(err!.code).toBe('EACCES');
    expect(err!.verifierLog).toMatch(/invalid access to map value/);
  });
});
