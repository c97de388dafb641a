// Exec integrity in the kernel fence alone (no notify loop): the tp_btf program compares the
// ctime stamp of the executed file and of its ELF loader with the allow entry, and kills a
// changed one before its first instruction. Real kernel, overlayfs and host loader.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ExecAction, ExecEvent, ExecReason } from '../src/kernel/abi';
import { createCgroup, removeCgroup, requireCgroupV2Root } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { elfInterpreter } from '../src/policy/elf-interp';
import { allowedFileOf, identityOf } from '../src/policy/identity';
import { buildDynamicFixture, buildFixture, mktemp, runInCgroup, uniqueName } from './helpers/kernel';

const name = uniqueName('cgfence-test-integrity');
const pinDir = `/sys/fs/bpf/${name}`;
let dir: string;
let ovl: { lower: string; upper: string; work: string; merged: string };
let fence: ExecFence;
let markerProg: string, dynApp: string;
const events: ExecEvent[] = [];
let n = 0;

function newCgroup(): string {
  return createCgroup(`${name}/c${n++}`);
}

async function eventFor(pred: (e: ExecEvent) => boolean, timeoutMs = 5000): Promise<ExecEvent> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const e = events.find(pred);
    if (e) return e;
    if (Date.now() > end)
      throw new Error(`no matching exec event in ${JSON.stringify(events, (_, v) => (typeof v === 'bigint' ? v.toString() : v))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function marker(): string {
  return path.join(dir, `marker-${Math.random().toString(36).slice(2)}`);
}

/** A fresh copy of the marker program in the overlay's lower layer, seen through the overlay. */
function lowerProgram(): string {
  const base = `prog-${n++}`;
  fs.copyFileSync(markerProg, path.join(ovl.lower, base));
  fs.chmodSync(path.join(ovl.lower, base), 0o755);
  return path.join(ovl.merged, base);
}

beforeAll(() => {
  dir = mktemp(name);
  markerProg = buildFixture('marker', dir);
  dynApp = buildDynamicFixture('dyn-app', dir);
  ovl = { lower: path.join(dir, 'lower'), upper: path.join(dir, 'upper'), work: path.join(dir, 'work'), merged: path.join(dir, 'merged') };
  for (const d of Object.values(ovl)) fs.mkdirSync(d);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${ovl.lower},upperdir=${ovl.upper},workdir=${ovl.work}`, ovl.merged]);
  fence = ExecFence.open({ pinDir, onEvents: (b) => events.push(...b) });
});

afterAll(async () => {
  await removeCgroup(path.join(requireCgroupV2Root(), name)).catch(() => {});
  fence?.close({ detach: true });
  if (ovl)
    try {
      execFileSync('umount', ['-l', ovl.merged]);
    } catch {
      /* not mounted */
    }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  events.length = 0;
});

describe('a changed file is not the allowed file (enforce, kernel fence)', () => {
  const changes: Array<[string, (f: string) => void]> = [
    ['overwritten in place (overlayfs copy-up keeps the inode number)', (f) => fs.copyFileSync(markerProg, f)],
    [
      'a few bytes patched without truncation',
      (f) => {
        const fd = fs.openSync(f, 'r+');
        fs.writeSync(fd, Buffer.from([0x90]), 0, 1, 4000);
        fs.closeSync(fd);
      },
    ],
    ['chmod to the same mode', (f) => fs.chmodSync(f, 0o755)],
    ['a new hard link', (f) => fs.linkSync(f, `${f}.link`)],
  ];
  for (const [what, change] of changes) {
    it(what, async () => {
      const cg = newCgroup();
      const prog = lowerProgram();
      const before = identityOf(prog);
      const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [prog] });
      const ok = marker();
      expect(runInCgroup(cg, [prog], { CGFENCE_MARKER: ok }).status).toBe(0);
      expect(fs.existsSync(ok)).toBe(true);

      change(prog);
      expect(identityOf(prog)).toEqual(before); // same identity: only the stamp tells
      const m = marker();
      const r = runInCgroup(cg, [prog], { CGFENCE_MARKER: m });
      expect(r.signal).toBe('SIGKILL');
      expect(fs.existsSync(m)).toBe(false);
      const e = await eventFor((x) => x.path === prog);
      expect(e.action).toBe(ExecAction.Deny);
      expect(e.reason).toBe(ExecReason.Modified);
      expect(e.wantCtimeNs).toBe(fence.allowEntry(fenceId, before)!.ctimeNs);
      expect(e.nowCtimeNs).toBe(allowedFileOf(prog).ctimeNs);
      expect(e.nowCtimeNs).not.toBe(e.wantCtimeNs);

      // Re-fencing (what `policy set` does) takes the new stamp: it runs again.
      fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [prog] });
      const again = marker();
      expect(runInCgroup(cg, [prog], { CGFENCE_MARKER: again }).status).toBe(0);
      expect(fs.existsSync(again)).toBe(true);
    });
  }

  // The file is created (in the lower layer) just before the attach, and changed through the
  // overlay right after it, with nothing in between: the copy-up gives a new upper inode that
  // nobody has queried, whose ctime is max(coarse clock, newest fine-grained time), which in
  // the same clock tick is exactly the lower file's ctime. The stamp must not be taken until the
  // clock has moved past the file's ctime (identity.ts, allowedFileOf). Before that rule about
  // 4 in 5 of these rounds ran the changed program.
  it('changed in the same clock tick as its last change before the attach (fresh overlayfs copy-up)', async () => {
    const kinds: Array<(f: string) => void> = [
      (f) => fs.chmodSync(f, 0o755),
      (f) => fs.linkSync(f, `${f}.link`),
      (f) => {
        const fd = fs.openSync(f, 'r+');
        fs.writeSync(fd, Buffer.from([0x90]), 0, 1, 4000);
        fs.closeSync(fd);
      },
    ];
    for (let round = 0; round < 12; round++) {
      const cg = newCgroup();
      const prog = lowerProgram();
      const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [prog] });
      kinds[round % kinds.length](prog);
      const m = marker();
      const r = runInCgroup(cg, [prog], { CGFENCE_MARKER: m });
      expect(
        r.signal,
        `round ${round}: stamp ${fence.allowEntry(fenceId, identityOf(prog))?.ctimeNs}, now ${allowedFileOf(prog).ctimeNs}`,
      ).toBe('SIGKILL');
      expect(fs.existsSync(m)).toBe(false);
    }
  });

  it('in audit mode the changed file runs and the event carries the reason and both stamps', async () => {
    const cg = newCgroup();
    const prog = lowerProgram();
    fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'audit', execAllow: [prog] });
    fs.copyFileSync(markerProg, prog);
    const m = marker();
    expect(runInCgroup(cg, [prog], { CGFENCE_MARKER: m }).status).toBe(0);
    expect(fs.existsSync(m)).toBe(true);
    const e = await eventFor((x) => x.path === prog);
    expect(e.action).toBe(ExecAction.Audit);
    expect(e.reason).toBe(ExecReason.Modified);
    expect(e.wantCtimeNs).not.toBeNull();
  });
});

describe('the ELF loader of a dynamic program (enforce, kernel fence)', () => {
  const loader = () => fs.realpathSync(elfInterpreter(dynApp)!);

  it('is added to the list as loader-only, and the program runs', async () => {
    const cg = newCgroup();
    const { resolved } = fenceCgroupExecs(fence, {
      cgroupPath: cg,
      rootPid: process.pid,
      mode: 'enforce',
      execAllow: [dynApp],
      reportAllowed: true,
    });
    const entry = resolved.find((x) => x.loaderOf === dynApp);
    expect(entry?.identity).toMatchObject({ ...identityOf(loader()), interpOnly: true });
    const r = runInCgroup(cg, [dynApp]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('APP-RAN\n');
    const e = await eventFor((x) => x.path === dynApp);
    expect(e.reason).toBe(ExecReason.None);
    expect(e.interp).toEqual(identityOf(loader()));
  });

  it('a loader that is not on the list kills the program before the loader runs', async () => {
    const cg = newCgroup();
    const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [dynApp] });
    fence.disallow(fenceId, [identityOf(loader())]);
    const r = runInCgroup(cg, [dynApp]);
    expect(r.signal).toBe('SIGKILL');
    expect(r.stdout).toBe('');
    const e = await eventFor((x) => x.path === dynApp);
    expect(e.reason).toBe(ExecReason.InterpNotAllowed);
    expect(e.interp).toEqual(identityOf(loader()));
  });

  it('a loader whose stamp differs from its entry kills the program', async () => {
    const cg = newCgroup();
    const { fenceId } = fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [dynApp] });
    const real = allowedFileOf(loader(), true);
    fence.allow(fenceId, [{ ...real, ctimeNs: real.ctimeNs - 1n }]);
    const r = runInCgroup(cg, [dynApp]);
    expect(r.signal).toBe('SIGKILL');
    const e = await eventFor((x) => x.path === dynApp);
    expect(e.reason).toBe(ExecReason.InterpModified);
    expect(e.wantCtimeNs).toBe(real.ctimeNs - 1n);
    expect(e.nowCtimeNs).toBe(real.ctimeNs);
  });

  it('the loader run by name (ld.so PROGRAM, which maps any file) is refused: it is allowed only as a loader', async () => {
    const cg = newCgroup();
    fenceCgroupExecs(fence, { cgroupPath: cg, rootPid: process.pid, mode: 'enforce', execAllow: [dynApp] });
    const r = runInCgroup(cg, [loader(), dynApp]);
    expect(r.signal).toBe('SIGKILL');
    expect(r.stdout).toBe('');
    const e = await eventFor((x) => x.path === loader());
    expect(e.reason).toBe(ExecReason.InterpOnly);
  });
});
