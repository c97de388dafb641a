// A restarted daemon reads fences.json back and checks it: an entry with a wrong field is
// left out (the log names the field, the file as read is kept), and reconcile fences that
// container again by late attach under the same fence id, so its pinned fence is taken over,
// never swept as an orphan; the other entries are adopted as they were.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { waitLog } from './helpers/container-records';
import { killDaemon } from './helpers/daemon-restart';
import { cid, cli, ctr, removeContainers, sandboxDir, startFenced } from './helpers/sandbox';

const dir = sandboxDir('state');
let p: SandboxPaths;
const started: string[] = [];

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await removeContainers(p, started);
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

function toolA(id: string, execId: string) {
  return ctr(p, ['task', 'exec', '--exec-id', execId, id, '/bin/sh', '-c', '/usr/local/bin/tool-a echo TOOL-RAN; echo "rc=$?"']);
}

it('leaves out an entry with a wrong field, says which, and fences that container again under the same fence id', async () => {
  const kept = cid('kept');
  const spoiled = cid('spoiled');
  for (const id of [kept, spoiled]) {
    const r = startFenced(p, id, { 'cgfence.io/exec-allow': '/bin/sh' }, ['/bin/sh', '-c', 'sleep 120']);
    expect(r.status, r.stderr).toBe(0);
    started.push(id);
  }
  await killDaemon(p, { signal: 'SIGTERM' }); // fences stay pinned; the state file is written at stop

  const file = path.join(p.stateDir, 'fences.json');
  const list = JSON.parse(fs.readFileSync(file, 'utf8')) as Array<{
    id: string;
    cgroupId: string;
    backends: { exec: { allow: Array<{ ino: string }> } };
  }>;
  const i = list.findIndex((f) => f.id === spoiled);
  expect(i).toBeGreaterThanOrEqual(0);
  const cgroupId = list[i].cgroupId;
  list[i].backends.exec.allow[0].ino = 'not-a-number';
  fs.writeFileSync(file, JSON.stringify(list));

  await sandboxUp(dir);
  const recs = await waitLog(
    p,
    (all) => all.some((r) => r.container_id === spoiled && r.type === 'lifecycle' && r.action === 'attach' && r.how === 'late-attach'),
    'late attach of the left-out container',
  );
  const log = fs.readFileSync(p.daemonLog, 'utf8');
  expect(log).toContain(
    `fences.json[${i}] (default/${spoiled}).backends.exec.allow[0].ino: a decimal integer string expected, found "not-a-number": entry left out`,
  );
  expect(fs.readdirSync(p.stateDir).filter((n) => n.startsWith('fences.json.corrupt-'))).toHaveLength(1);
  // Same cgroup, same fence id: taken over, not removed as an orphan.
  const again = recs.find((r) => r.container_id === spoiled && r.action === 'attach' && r.how === 'late-attach');
  expect(String(again?.cgroup_id)).toBe(cgroupId);
  expect(recs.filter((r) => r.action === 'remove-orphan-fence')).toEqual([]);
  // The other entry was adopted as it was, not attached again.
  expect(recs.filter((r) => r.container_id === kept && r.action === 'attach').map((r) => r.how)).toEqual(['create']);

  for (const id of [kept, spoiled]) expect(toolA(id, 'after').stdout).not.toContain('TOOL-RAN');
  const ps = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; controls: { exec: string } }>;
  expect(ps.filter((c) => c.id === kept || c.id === spoiled).map((c) => c.controls.exec)).toEqual(['enforced', 'enforced']);
});
