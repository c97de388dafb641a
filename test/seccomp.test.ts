// The syscall fence with real containerd, runc and the kernel's seccomp: cgfence.io/seccomp-deny
// and seccomp-allow become a filter runc installs before the entrypoint runs.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { containerdPaths } from '../src/sandbox/containerd-process';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { cid, ctr, IMAGE, runFenced, removeContainer, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('sc');
let p: SandboxPaths;

// What busybox sh, echo, ls and mkdir need besides RUNC_INIT_SYSCALLS (measured with
// SCMP_ACT_LOG); mkdir(2) and mkdirat(2) are left out on purpose.
const BUSYBOX_NEEDS =
  'write,brk,mprotect,getuid,rt_sigaction,arch_prctl,set_tid_address,set_robust_list,prlimit64,getrandom,rseq,wait4,uname,readlink,ioctl,vfork,fork,clone';

async function attachRecord(id: string) {
  return waitFor('attach record', () => {
    void readRecords(p.auditLog, { container: id }).then((r) => (recs = r));
    return recs.find((x) => x.container_id === id && x.type === 'lifecycle' && x.action === 'attach');
  });
}
let recs: Awaited<ReturnType<typeof readRecords>> = [];

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('cgfence.io/seccomp-deny', () => {
  it('fails the listed syscalls with EPERM and the rest of the container works', async () => {
    const id = cid('deny');
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat,fchmodat,chmod' }, [
      '/bin/sh',
      '-c',
      [
        'mkdir /tmp/d; echo mkdir=$?',
        'touch /tmp/f && chmod 600 /tmp/f; echo chmod=$?',
        'echo hello > /tmp/g && cat /tmp/g',
        'ls /tmp | wc -l',
        'grep ^Seccomp: /proc/self/status',
      ].join('; '),
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('mkdir=1');
    expect(r.stdout).toContain('chmod=1');
    expect(r.stderr).toMatch(/mkdir: can't create directory '\/tmp\/d': Operation not permitted/);
    expect(r.stdout).toContain('hello');
    expect(r.stdout).toMatch(/^2$/m); // f and g
    expect(r.stdout).toMatch(/Seccomp:\s+2/);
    const a = await attachRecord(id);
    expect(a.controls).toMatchObject({ seccomp: 'enforced' });
  });

  it("keeps the container's own profile (ctr --seccomp) and adds to it", async () => {
    const id = cid('keep');
    const ann = ['--annotation', 'cgfence.io/seccomp-deny=mkdir,mkdirat'];
    const start = ctr(p, ['run', '-d', '--seccomp', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const bundle = path.join(containerdPaths(p.dir).state, 'io.containerd.runtime.v2.task', 'default', id, 'config.json');
      const sc = JSON.parse(fs.readFileSync(bundle, 'utf8')).linux.seccomp;
      // containerd's default profile: deny by default, a long allow-list; ours on top.
      expect(sc.defaultAction).toBe('SCMP_ACT_ERRNO');
      expect(sc.syscalls.length).toBeGreaterThan(3);
      const mk = sc.syscalls.filter((r: { names: string[] }) => r.names.includes('mkdir'));
      // Routed to the daemon's notify loop, which answers EPERM and records it.
      expect(mk).toEqual([{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_NOTIFY' }]);
      expect(sc.listenerMetadata).toBe(`default/${id}`);
      const ex = ctr(p, ['task', 'exec', '--exec-id', 'x1', id, '/bin/sh', '-c', 'mkdir /tmp/d; echo mkdir=$?; echo ok']);
      expect(ex.stdout).toContain('mkdir=1');
      expect(ex.stdout).toContain('ok');
    } finally {
      await removeContainer(p, id);
    }
  });

  it('in audit mode blocks nothing and says so', async () => {
    const id = cid('audit');
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat', 'cgfence.io/mode': 'audit' }, [
      '/bin/sh',
      '-c',
      'mkdir /tmp/d && echo made',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('made');
    expect((await attachRecord(id)).controls).toMatchObject({ seccomp: 'audited' });
  });
});

describe('cgfence.io/seccomp-allow', () => {
  it('fails everything not listed with EPERM, while runc still starts the entrypoint', () => {
    const r = runFenced(p, cid('allow'), { 'cgfence.io/seccomp-allow': BUSYBOX_NEEDS }, [
      '/bin/sh',
      '-c',
      'echo started; mkdir /tmp/d; echo mkdir=$?; ls /tmp',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('started');
    expect(r.stdout).toContain('mkdir=1');
    expect(r.stderr).toContain('Operation not permitted');
  });
});

describe('refusals', () => {
  for (const key of ['cgfence.io/seccomp-deny', 'cgfence.io/seccomp-allow']) {
    it(`refuses an unknown syscall in ${key}, naming the annotation and the name`, async () => {
      const id = cid('unknown');
      const r = runFenced(p, id, { [key]: 'mkdir,frobnicate' }, ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN']);
      ctr(p, ['containers', 'delete', id]);
      expect(r.status).not.toBe(0);
      expect(r.stdout).not.toContain('SHOULD-NOT-RUN');
      expect(r.stderr).toContain(`${key}: unknown syscall "frobnicate"`);
    });
  }

  it('refuses a syscall this architecture does not have', () => {
    const id = cid('arch');
    // socketcall(2) exists on i386 only; libseccomp knows the name, x86_64 has no number for it.
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'socketcall' }, ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN']);
    ctr(p, ['containers', 'delete', id]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/cgfence\.io\/seccomp-deny: unknown syscall "socketcall" for the container's architecture x86_64/);
  });
});
