// End to end on a stock kernel with BPF LSM (run in the VM by test/vm.test.ts, once with
// cgroup v2 and once on a v1-only host): the sandbox's daemon picks the BPF-LSM exec backend,
// a fenced container started through containerd and cgfence-runc gets EACCES for a forbidden
// program, no seccomp notify route is put in its config, and status, ps, the attach record
// and the deny record say which backend decided. A container with seccomp-deny rules there
// gets its denials answered EPERM and recorded by the seccomp control's own notify loop and
// fd-holder (the exec control has none), while its execs are still the LSM's to refuse, and
// no notify fd outlives it.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupV2Root } from '../../../src/kernel/cgroup';
import { notifyPaths } from '../../../src/fence/exec/exec-notify';
import { containerdPaths } from '../../../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../../../src/sandbox/sandbox';
import { Rec, waitRecords } from '../../helpers/container-records';
import { daemonPid as daemonPidOf, holderPids as holderPidsOf } from '../../helpers/daemon-restart';
import { cid, cli, ctr, removeContainer, runFenced, sandboxDir, startFenced, waitFor } from '../../helpers/sandbox';

const dir = sandboxDir('vm-lsm');
let p: SandboxPaths;
const v2 = cgroupV2Root() !== null;

const holderPids = () => holderPidsOf(p);
const daemonPid = () => daemonPidOf(p);

/** How many seccomp notify fds a process holds (each container process's filter has its own). */
function notifyFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:seccomp notify';
    } catch {
      return false;
    }
  }).length;
}

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
    const r = runFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh' }, [
      '/bin/sh',
      '-c',
      'echo inside; /usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"; grep -c . /proc/self/status >/dev/null && echo applets-ok',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('inside');
    expect(r.stdout).not.toContain('FORBIDDEN-RAN');
    expect(r.stdout).toContain('rc=126');
    expect(r.stdout).toContain('applets-ok');
    expect(r.stderr).toMatch(/tool-a: Permission denied/);
    const isDeny = (x: Rec) => x.type === 'exec' && x.action === 'deny';
    let recs = await waitRecords(p, id, isDeny, 'the deny record', 60_000);
    const deny = recs.find(isDeny)!;
    expect(deny.path).toBe('/usr/local/bin/tool-a');
    expect(deny.via).toBe('bpf-lsm');
    expect(deny.errno).toBe('EACCES');
    const attach = recs.find((x) => x.type === 'lifecycle' && x.action === 'attach')!;
    expect((attach.controls as Record<string, string>).exec).toBe('enforced');
    expect((attach.backends as Record<string, string>).exec).toBe(`${v2 ? 'cgroup-v2' : 'pidns-tracepoint'}, lsm/bprm_check_security`);
    const isDetach = (x: Rec) => x.type === 'lifecycle' && x.action === 'detach';
    recs = await waitRecords(p, id, isDetach, 'the detach record', 60_000);
    const detach = recs.find(isDetach)!;
    expect(detach.denied).toBe(1);
    expect(detach.denied_by_notify).toBeUndefined();
  });

  it('puts no seccomp notify route in the container, and ps works (also without cgroup v2)', async () => {
    const id = cid('lsm-ps');
    const r = startFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/sh', '-c', 'sleep 60']);
    expect(r.status, r.stderr).toBe(0);
    try {
      const ps = cli(p, ['ps']);
      expect(ps.status, ps.stderr).toBe(0);
      expect(ps.stdout).toContain(id);
      // The cgroup column (wide) says when a container has no cgroup v2.
      const wide = cli(p, ['ps', '-o', 'wide']);
      expect(wide.status, wide.stderr).toBe(0);
      if (!v2) expect(wide.stdout).toContain('no cgroup v2');
      const config = JSON.parse(
        fs.readFileSync(
          path.join(containerdPaths(p.dir).state, 'io.containerd.runtime.v2.task', SANDBOX_NAMESPACE, id, 'config.json'),
          'utf8',
        ),
      );
      expect(JSON.stringify(config)).toContain('cgfence.io/exec-allow');
      expect(config.linux?.seccomp?.listenerPath).toBeUndefined();
    } finally {
      await removeContainer(p, id);
    }
  });
});

describe(`seccomp-deny with the BPF-LSM exec backend (cgroup ${v2 ? 'v2' : 'v1 only'})`, () => {
  it("answers mkdir EPERM through the seccomp control's own notify loop and records it; a forbidden exec is still the LSM's EACCES; no notify fd outlives the container", async () => {
    const id = cid('lsm-sc');
    const ann = { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat', 'cgfence.io/exec-allow': '/bin/sh,/bin/busybox' };
    // The init denies itself one mkdir before it waits; `task exec` then does another (a
    // process with its own notify fd) and a forbidden exec.
    const start = startFenced(p, id, ann, ['/bin/sh', '-c', 'mkdir /tmp/init-d 2>/tmp/init-err; echo $? > /tmp/init-rc; sleep 600']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const status = JSON.parse(cli(p, ['status', '--json']).stdout) as {
        kernel: { backends: { exec: Record<string, unknown>; seccomp: { enforceDenials: Record<string, unknown> } } };
      };
      expect(status.kernel.backends.exec.hook).toBe('lsm/bprm_check_security');
      expect(status.kernel.backends.exec.notify).toBeUndefined(); // the exec control routes nothing to notify
      expect(status.kernel.backends.seccomp.enforceDenials).toMatchObject({ ownLoop: true, routed: 1 });
      const config = JSON.parse(
        fs.readFileSync(
          path.join(containerdPaths(p.dir).state, 'io.containerd.runtime.v2.task', SANDBOX_NAMESPACE, id, 'config.json'),
          'utf8',
        ),
      );
      expect(config.linux.seccomp.listenerPath).toBe(notifyPaths(p.stateDir).listener);

      let tries = 0;
      const init = await waitFor(
        "the init's mkdir",
        () => {
          const r = ctr(p, ['task', 'exec', '--exec-id', `rc${tries++}`, id, '/bin/sh', '-c', 'cat /tmp/init-rc /tmp/init-err']);
          return r.status === 0 && r.stdout.trim() ? r.stdout : undefined;
        },
        60_000,
      );
      expect(init).toMatch(/^1\n/);
      expect(init).toContain('Operation not permitted');
      const r = ctr(p, [
        'task',
        'exec',
        '--exec-id',
        'probe',
        id,
        '/bin/sh',
        '-c',
        'mkdir /tmp/d; echo mkdir-rc=$?; /usr/local/bin/tool-a echo FORBIDDEN-RAN; echo exec-rc=$?',
      ]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain('mkdir-rc=1');
      expect(r.stderr).toMatch(/mkdir: can't create directory '\/tmp\/d': Operation not permitted/);
      expect(r.stdout).not.toContain('FORBIDDEN-RAN');
      expect(r.stdout).toContain('exec-rc=126');
      expect(r.stderr).toMatch(/tool-a: Permission denied/);

      // While it runs, the fd-holder and the daemon's loop hold its notify fds (so the check
      // after its exit below can see a leak).
      const holders = holderPids();
      expect(holders).toHaveLength(1);
      expect(notifyFds(holders[0])).toBeGreaterThanOrEqual(1);
      expect(notifyFds(daemonPid())).toBeGreaterThanOrEqual(1);
    } finally {
      await removeContainer(p, id);
    }

    const recs = await waitRecords(p, id, (x) => x.type === 'lifecycle' && x.action === 'detach', 'the detach record', 60_000);
    const attach = recs.find((x) => x.type === 'lifecycle' && x.action === 'attach')!;
    expect((attach.backends as Record<string, string>).exec).toContain('lsm/');
    expect((attach.backends as Record<string, string>).seccomp).toBe('oci-seccomp, seccomp notify, recorded');
    expect((attach.controls as Record<string, string>).seccomp).toBe('enforced');
    // Both mkdirs (the init's and the exec'd shell's), by the seccomp control's loop.
    const sc = recs.filter((x) => x.type === 'seccomp');
    expect(sc.length).toBeGreaterThanOrEqual(1);
    for (const x of sc) {
      expect(x).toMatchObject({
        action: 'deny',
        container_id: id,
        syscall: 'mkdir',
        via: 'seccomp-notify',
        seccomp_action: 'SCMP_ACT_NOTIFY',
        errno: 'EPERM',
        rule: 'cgfence.io/seccomp-deny',
      });
      // The container's cgroup v2 id, as in its attach record; none without cgroup v2.
      expect(x.cgroup_id).toBe(attach.cgroup_id);
      expect(x.cgroup_id === '').toBe(!v2);
    }
    expect(sc.reduce((n, x) => n + (x.count as number), 0)).toBe(2);
    const exec = recs.filter((x) => x.type === 'exec' && x.action === 'deny');
    expect(exec.map((x) => [x.path, x.via, x.errno])).toEqual([['/usr/local/bin/tool-a', 'bpf-lsm', 'EACCES']]);
    expect(recs[recs.length - 1]).toMatchObject({ type: 'lifecycle', action: 'detach' });

    // Nothing of the container stays: the loop and the holder closed its fds (the holder
    // itself stays for the next container), and the loop routes nothing.
    await waitFor('the notify fds to close', () => notifyFds(daemonPid()) === 0 && holderPids().every((h) => notifyFds(h) === 0), 30_000);
    const after = JSON.parse(cli(p, ['status', '--json']).stdout) as {
      kernel: { backends: { seccomp: { enforceDenials: Record<string, unknown> } } };
    };
    expect(after.kernel.backends.seccomp.enforceDenials).toMatchObject({ ownLoop: true, routed: 0 });
    expect(after.kernel.backends.seccomp.enforceDenials.answered).toBeGreaterThanOrEqual(2);
  });

  it('audit mode: mkdir runs and is recorded from the kernel log with cgroup v2; without, the attach record says it cannot be', async () => {
    const id = cid('lsm-sca');
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat', 'cgfence.io/mode': 'audit' }, [
      '/bin/sh',
      '-c',
      'mkdir /tmp/d; echo rc=$?',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('rc=0');
    const recs = await waitRecords(p, id, (x) => x.type === 'lifecycle' && x.action === 'detach', 'the detach record', 60_000);
    const attach = recs.find((x) => x.type === 'lifecycle' && x.action === 'attach')!;
    const sc = recs.filter((x) => x.type === 'seccomp');
    if (v2) {
      expect((attach.backends as Record<string, string>).seccomp).toBe('oci-seccomp, kernel seccomp log');
      expect(sc.map((x) => [x.action, x.syscall, x.via, x.count])).toEqual([['audit', 'mkdir', 'kernel seccomp log', 1]]);
    } else {
      expect((attach.backends as Record<string, string>).seccomp).toBe('oci-seccomp, kernel seccomp log, not attributed (no cgroup v2)');
      expect(sc).toEqual([]);
    }
  });

  it("sandbox down lets the seccomp control's fd-holder go", async () => {
    expect(holderPids()).toHaveLength(1);
    await sandboxDown(dir);
    await waitFor('the fd-holder to exit', () => holderPids().length === 0, 30_000);
    expect(fs.existsSync(notifyPaths(p.stateDir).holder)).toBe(false);
  });
});
