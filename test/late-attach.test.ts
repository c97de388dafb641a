// Fail-open and late attach with real containerd: containers that started while the daemon
// was down (fail-open through cgfence-runc, or plain runc with cgfence annotations) are
// audited and fenced by the next daemon's reconcile.
import fs from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { waitLog } from './helpers/container-records';
import { killDaemon } from './helpers/daemon-restart';
import { cid, cli, ctr, IMAGE, removeContainers, sandboxDir, startFenced } from './helpers/sandbox';

const dir = sandboxDir('late');
let p: SandboxPaths;
const started: string[] = [];

beforeAll(async () => {
  const prev = process.env.CGFENCE_FAIL_MODE;
  process.env.CGFENCE_FAIL_MODE = 'open';
  try {
    p = await sandboxUp(dir);
  } finally {
    if (prev === undefined) delete process.env.CGFENCE_FAIL_MODE;
    else process.env.CGFENCE_FAIL_MODE = prev;
  }
});

afterAll(async () => {
  await removeContainers(p, started);
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

function toolA(id: string, execId: string, text: string) {
  return ctr(p, ['task', 'exec', '--exec-id', execId, id, '/bin/sh', '-c', `(exec -a echo /usr/local/bin/tool-a ${text}); echo "rc=$?"`]);
}

it('audits fail-open creates and late-attaches what started while the daemon was down', async () => {
  await killDaemon(p, { signal: 'SIGTERM' }); // a clean stop: fences stay pinned, the socket goes away

  const viaLauncher = cid('failopen');
  const viaRunc = cid('plainrunc');
  const ann = ['--annotation', 'cgfence.io/exec-allow=/bin/sh'];
  const a = startFenced(p, viaLauncher, { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/sh', '-c', 'sleep 120']);
  expect(a.status, a.stderr).toBe(0);
  started.push(viaLauncher);
  const b = ctr(p, ['run', '-d', ...ann, IMAGE, viaRunc, '/bin/sh', '-c', 'sleep 120']);
  expect(b.status, b.stderr).toBe(0);
  started.push(viaRunc);
  // Unfenced for now: that is what fail-open means.
  expect(toolA(viaLauncher, 'before', 'RAN-UNFENCED').stdout).toContain('RAN-UNFENCED');

  await sandboxUp(dir);
  const recs = await waitLog(
    p,
    (all) =>
      [viaLauncher, viaRunc].every((id) =>
        all.some((r) => r.container_id === id && r.type === 'lifecycle' && r.action === 'attach' && r.how === 'late-attach'),
      ),
    'late attach of both',
  );
  const spooled = recs.find((r) => r.type === 'agent' && r.action === 'fail-open' && r.container_id === viaLauncher);
  expect(spooled, 'the fail-open create is in the audit log').toBeDefined();

  for (const id of [viaLauncher, viaRunc]) {
    const r = toolA(id, 'after', 'RAN-FENCED');
    expect(r.stdout).not.toContain('RAN-FENCED');
    expect(r.stdout).toContain('rc=137');
  }
  const ps = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; controls: { exec: string } }>;
  expect(ps.filter((c) => c.id === viaLauncher || c.id === viaRunc).map((c) => c.controls.exec)).toEqual(['enforced', 'enforced']);
});
