// Enforce-mode seccomp denials are recorded on a node whose exec control has no notify
// loop of its own (--exec-deny kill here; the BPF-LSM exec backend is the same case): the
// seccomp control opens the loop and fd-holder for its denials alone.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { cid, cli, runFenced, sandboxDir } from './helpers/sandbox';

const dir = sandboxDir('sdk');
let p: SandboxPaths;

beforeAll(async () => {
  p = await sandboxUp(dir, () => {}, { daemonEnv: { CGFENCE_EXEC_DENY: 'kill' } });
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--exec-deny kill', () => {
  it('still answers seccomp denials EPERM through a notify loop of the seccomp control and records them', async () => {
    const before = JSON.parse(cli(p, ['status', '--json']).stdout) as {
      kernel: { backends: { exec: Record<string, unknown>; seccomp: { enforceDenials: Record<string, unknown> } } };
    };
    expect(before.kernel.backends.exec.notify).toBeUndefined(); // no exec notify loop on this node
    const id = cid('sdkill');
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat', 'cgfence.io/exec-allow': '/bin/sh,/bin/busybox' }, [
      '/bin/sh',
      '-c',
      'mkdir /tmp/d; echo rc=$?',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('rc=1');
    expect(r.stderr).toContain('Operation not permitted');
    const end = Date.now() + 20_000;
    let rs = await readRecords(p.auditLog, { container: id });
    while (!rs.some((x) => x.action === 'detach') && Date.now() < end) {
      await new Promise((res) => setTimeout(res, 100));
      rs = await readRecords(p.auditLog, { container: id });
    }
    const sc = rs.filter((x) => x.type === 'seccomp');
    expect(sc.map((x) => [x.syscall, x.count, x.via, x.seccomp_action])).toEqual([['mkdir', 1, 'seccomp-notify', 'SCMP_ACT_NOTIFY']]);
    const after = JSON.parse(cli(p, ['status', '--json']).stdout) as typeof before;
    expect(after.kernel.backends.seccomp.enforceDenials).toMatchObject({ ownLoop: true });
  });
});
