// Learn mode's kernel recorders on the real kernel, without containerd: the syscall and
// executable records (also for cgroups below the learning one, for a cgroup seen before its
// ancestor started learning, and for 32-bit syscalls where the kernel takes them; executables
// without any exec fence event, each mapped to its path, a file written after the attach
// reported as such) and the network record (IPv6, IPv4-mapped destinations judged as IPv4),
// through the learn backend the daemon uses.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupId, createCgroup, removeCgroup } from '../src/kernel/cgroup';
import { LearnBackend } from '../src/fence/learn/learn-backend';
import { AttachContext } from '../src/fence/backend';
import { AuditInput } from '../src/audit/audit-record';
import { emptyPolicy } from '../src/policy/policy';
import { buildFixture, mktemp, runInCgroup, uniqueName } from './helpers/kernel';
import { collectingSink } from './helpers/sink';

const name = uniqueName('cgf-learn');
const pinDir = `/sys/fs/bpf/${name}`;
let tmp: string;
let parent: string;
let inner: string;
let plain: string;
let other: string;
let compat: string;
/** What the recording checks run: `compat` where the kernel takes 32-bit syscalls, else a 64-bit program. */
let prog: string;
/** Why this kernel cannot run `compat`, or null. */
let no32bit: string | null = null;
let learn: LearnBackend;
const written: AuditInput[] = [];

async function waitForRecord(id: string): Promise<AuditInput> {
  for (let i = 0; i < 100; i++) {
    const r = written.find((x) => x.action === 'learned' && x.container_id === id);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`no learned record for ${id}`);
}

function ctxFor(cgroupPath: string, id: string): AttachContext<'learn'> {
  return {
    namespace: 'test',
    id,
    bundle: '',
    pid: process.pid,
    cgroupPath,
    cgroupId: cgroupId(cgroupPath),
    policy: { ...emptyPolicy(), mode: 'learn' },
    annotations: {},
    state: {},
  };
}

beforeAll(() => {
  tmp = mktemp(name);
  parent = createCgroup(`${name}/learning`);
  inner = createCgroup(`${name}/learning/inner`);
  plain = createCgroup(`${name}/plain`);
  other = createCgroup(`${name}/other`);
  compat = buildFixture('compat-syscall', tmp);
  // Some kernels refuse int 0x80 altogether (ia32 emulation off, e.g. in confidential or
  // paravirtualized guests): the program then dies of SIGSEGV, and no 32-bit syscall can be
  // recorded there. Everything else is checked with a 64-bit program instead.
  const probe = spawnSync(compat, { encoding: 'utf8' });
  if (!probe.stdout?.includes('compat-done')) {
    no32bit = `this kernel refuses 32-bit syscalls (int 0x80): the probe ended with ${probe.signal ?? `status ${probe.status}`}`;
    prog = path.join(tmp, 'prog64');
    fs.copyFileSync(fs.realpathSync('/bin/true'), prog);
    fs.chmodSync(prog, 0o755);
  } else {
    prog = compat;
  }
  learn = new LearnBackend({ pinDir, stateDir: path.join(tmp, 'state'), cgroupMode: 'auto', sink: collectingSink(written) });
});

afterAll(async () => {
  learn?.close({ detach: true });
  await removeCgroup(path.dirname(parent));
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(pinDir, { recursive: true, force: true });
});

describe('the syscall record', () => {
  it('records a cgroup below the learning one, also one first seen before its ancestor learned', async () => {
    const otherCtx = ctxFor(other, 'other');
    const ctx = ctxFor(parent, 'parent');
    learn.attach(otherCtx); // the program is attached now, and caches `inner` as not learning
    try {
      expect(runInCgroup(inner, [prog]).status).toBe(0);
      expect(runInCgroup(plain, [prog]).status).toBe(0);

      learn.attach(ctx);
      expect(runInCgroup(plain, [prog]).status).toBe(0);
      expect(runInCgroup(inner, [prog]).status).toBe(0);
      expect(runInCgroup(inner, ['/bin/mkdir', path.join(tmp, 'made')]).status).toBe(0);
      // Written after the attach, then run: no allow-list path can allow it in a fresh run.
      const fresh = path.join(tmp, 'fresh-true');
      fs.copyFileSync(fs.realpathSync('/bin/true'), fresh);
      fs.chmodSync(fresh, 0o755);
      expect(runInCgroup(inner, [fresh]).status).toBe(0);

      const [l] = learn.learnedOf('test', 'parent');
      expect(l.running).toBe(true);
      expect(l.syscalls.names).toEqual(expect.arrayContaining(['execve', 'exit_group']));
      expect(l.syscalls.names.some((n) => n === 'mkdir' || n === 'mkdirat')).toBe(true);
      expect(l.syscalls.unnamed).toEqual([]);
      expect(l.incomplete).toEqual([]);
      // No exec fence runs here: the kernel's own record has every executable, by its path.
      const execs = Object.fromEntries(l.exec.map((e) => [e.path, e.origin]));
      expect(execs).toEqual({ [prog]: 'image', [fs.realpathSync('/bin/mkdir')]: 'image', [path.join(tmp, 'fresh-true')]: 'runtime' });
      // Once: the run in `inner` before the attach and the one in `plain` are not its.
      expect(l.exec.find((e) => e.path === prog)?.count).toBe(1);
      // `other` saw nothing: the plain and inner runs were not its.
      expect(learn.learnedOf('test', 'other')[0].syscalls.names).toEqual([]);
    } finally {
      learn.detach(otherCtx);
      if (ctx.state.fenceId) learn.detach(ctx);
    }
    const rec = await waitForRecord('parent');
    expect(rec.type).toBe('lifecycle');
    expect((rec.annotations as Record<string, string>)['cgfence.io/exec-allow']).toBe(
      [prog, fs.realpathSync('/bin/mkdir')].sort().join(','),
    );
    expect(learn.status().syscallProgramAttached).toBe(false);
    expect(learn.learnedOf('test', 'parent')).toEqual([]);
  });

  it('records 32-bit syscalls by their own ABI', async (t) => {
    if (no32bit) {
      console.warn(`skipped: ${no32bit}`);
      t.skip();
    }
    const ctx = ctxFor(parent, 'abi32');
    learn.attach(ctx);
    try {
      expect(runInCgroup(inner, [compat]).stdout).toContain('compat-done');
      const [l] = learn.learnedOf('test', 'abi32');
      // getpid is i386 number 20 (writev on x86_64); socketcall exists for i386 only.
      // libseccomp names socketcall on x86_64 too (a pseudo-syscall there), and applies it to
      // the 32-bit part of the filter.
      expect(l.syscalls.names).toEqual(expect.arrayContaining(['getpid', 'socketcall']));
      expect(l.syscalls.unnamed).toEqual([]);
    } finally {
      learn.detach(ctx);
    }
    const rec = await waitForRecord('abi32');
    expect((rec.annotations as Record<string, string>)['cgfence.io/seccomp-allow']).toMatch(/(^|,)socketcall(,|$)/);
  });
});

describe('the network record', () => {
  it('records IPv6 peers, and an IPv4-mapped destination as the IPv4 address the fence judges', async () => {
    const ctx = ctxFor(parent, 'net');
    learn.attach(ctx);
    try {
      // Port 9 (discard) answers or refuses: either way packets come back from the peer.
      runInCgroup(inner, ['/bin/busybox', 'nc', '-w', '2', '::1', '9'], {}, 20_000);
      runInCgroup(inner, ['/bin/busybox', 'nc', '-w', '2', '::ffff:127.0.0.1', '9'], {}, 20_000);
      const [l] = learn.learnedOf('test', 'net');
      const peers = l.network.peers.map((x) => `${x.direction} ${x.address}`);
      expect(peers).toEqual(['egress 127.0.0.1', 'egress ::1', 'ingress 127.0.0.1', 'ingress ::1']);
      expect(l.network.flows.filter((f) => f.direction === 'egress').map((f) => `${f.address} ${f.proto} ${f.port}`)).toEqual([
        '127.0.0.1 tcp 9',
        '::1 tcp 9',
      ]);
    } finally {
      learn.detach(ctx);
    }
    const rec = await waitForRecord('net');
    const ann = rec.annotations as Record<string, string>;
    expect(ann['cgfence.io/egress-allow']).toBe('127.0.0.1/32,::1/128');
    expect(ann['cgfence.io/ingress-allow']).toBe('127.0.0.1/32,::1/128');
    expect(fs.readdirSync(path.join(pinDir, 'learn-net')).filter((n) => /^\d+$/.test(n))).toEqual([]);
  });
});
