// End to end on a stock kernel with BPF LSM (run in the VM by test/vm.test.ts, once with
// cgroup v2 and once on a v1-only host): the sandbox's daemon picks the BPF-LSM exec backend,
// a fenced container started through containerd and cgfence-runc gets EACCES for a forbidden
// program, no seccomp notify route is put in its config, and status, ps, the attach record
// and the deny record say which backend decided.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../../src/audit/audit-read';
import { cgroupV2Root } from '../../../src/kernel/cgroup';
import { containerdPaths } from '../../../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../../../src/sandbox/sandbox';
import { cid, cli, ctr, IMAGE, runFenced, sandboxDir, waitFor } from '../../helpers/sandbox';

const dir = sandboxDir('vm-lsm');
let p: SandboxPaths;
const v2 = cgroupV2Root() !== null;

beforeAll(async () => {
  p = await sandboxUp(dir);
}, 600_000);

afterAll(async () => {
  if (p) await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe(`a fenced container with the BPF-LSM exec backend (cgroup ${v2 ? 'v2' : 'v1 only'})`, () => {
  it('status says the exec backend is bpf-lsm, with no seccomp notify loop', () => {
    const r = cli(p, ['status', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const exec = JSON.parse(r.stdout).kernel.backends.exec;
    expect(exec.backend).toMatch(/^bpf-lsm \(lsm\/bprm_check_security/);
    expect(exec.hook).toBe('lsm/bprm_check_security');
    expect(exec.notify).toBeUndefined();
    expect(exec.backends).toEqual(v2 ? ['cgroup-v2', 'pidns-tracepoint'] : ['pidns-tracepoint']);
  });

  it('refuses a forbidden program with EACCES inside the kernel; audit, ps and the attach record say so', async () => {
    const id = cid('lsm');
    const r = runFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh' },
      ['/bin/sh', '-c', 'echo inside; /usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"; grep -c . /proc/self/status >/dev/null && echo applets-ok']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('inside');
    expect(r.stdout).not.toContain('FORBIDDEN-RAN');
    expect(r.stdout).toContain('rc=126');
    expect(r.stdout).toContain('applets-ok');
    expect(r.stderr).toMatch(/tool-a: Permission denied/);
    let recs: Awaited<ReturnType<typeof readRecords>> = [];
    const deny = await waitFor('the deny record', () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find((x) => x.type === 'exec' && x.action === 'deny');
    }, 60_000);
    expect(deny.path).toBe('/usr/local/bin/tool-a');
    expect(deny.via).toBe('bpf-lsm');
    expect(deny.errno).toBe('EACCES');
    const attach = recs.find((x) => x.type === 'lifecycle' && x.action === 'attach')!;
    expect((attach.controls as Record<string, string>).exec).toBe('enforced');
    expect((attach.backends as Record<string, string>).exec).toBe(`${v2 ? 'cgroup-v2' : 'pidns-tracepoint'}, lsm/bprm_check_security`);
    const detach = await waitFor('the detach record', () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find((x) => x.type === 'lifecycle' && x.action === 'detach');
    }, 60_000);
    expect(detach.denied).toBe(1);
    expect(detach.denied_by_notify).toBeUndefined();
  });

  it('puts no seccomp notify route in the container, and ps works (also without cgroup v2)', () => {
    const id = cid('lsm-ps');
    const r = ctr(p, ['run', '--detach', '--runc-binary', p.runc, '--annotation', 'cgfence.io/exec-allow=/bin/sh', IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
    expect(r.status, r.stderr).toBe(0);
    try {
      const ps = cli(p, ['ps']);
      expect(ps.status, ps.stderr).toBe(0);
      expect(ps.stdout).toContain(id);
      // The cgroup column (wide) says when a container has no cgroup v2.
      const wide = cli(p, ['ps', '-o', 'wide']);
      expect(wide.status, wide.stderr).toBe(0);
      if (!v2) expect(wide.stdout).toContain('no cgroup v2');
      const config = JSON.parse(fs.readFileSync(path.join(containerdPaths(p.dir).state, 'io.containerd.runtime.v2.task', SANDBOX_NAMESPACE, id, 'config.json'), 'utf8'));
      expect(JSON.stringify(config)).toContain('cgfence.io/exec-allow');
      expect(config.linux?.seccomp?.listenerPath).toBeUndefined();
    } finally {
      ctr(p, ['task', 'kill', '-s', 'KILL', id]);
      for (let i = 0; i < 50 && ctr(p, ['task', 'delete', id]).status !== 0; i++) spawnSync('sleep', ['0.2']);
      ctr(p, ['container', 'rm', id]);
    }
  });
});
