// cgfence-fd-holder against the real kernel: a notification the daemon received but never
// answered (it died in between) is answered by the holder, so the caller does not wait
// forever; an idle holder goes away by itself.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFdHolder } from '../src/fence/exec/fd-holder';
import { buildFixture, mktemp } from './helpers/kernel';
import { waitFor } from './helpers/sandbox';

let dir = '';
let control = '';
let agent = '';

function holderPid(): number | undefined {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).find((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(control);
    } catch {
      return false;
    }
  });
}

beforeAll(() => {
  // /tmp is short enough for sun_path; mktemp's default base is too.
  dir = mktemp('cgft-fdh', '/tmp');
  control = path.join(dir, 'c.sock');
  agent = path.join(dir, 'a.sock');
});

afterAll(() => {
  const pid = holderPid();
  if (pid) process.kill(pid, 'SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('cgfence-fd-holder', () => {
  it('starts once per socket', () => {
    startFdHolder(control, agent);
    const pid = holderPid();
    expect(pid).toBeGreaterThan(0);
    startFdHolder(control, agent);
    expect(holderPid()).toBe(pid);
  });

  it('answers a notification its daemon received and died holding', async () => {
    const fixture = buildFixture('notify-inflight', dir);
    const done = path.join(dir, 'done');
    const r = spawnSync(fixture, [control, agent, done], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    const child = Number(r.stdout.trim());
    expect(child).toBeGreaterThan(0);
    await waitFor('the received, unanswered getppid to return', () => fs.existsSync(done), 20_000);
    expect(fs.readFileSync(done, 'utf8')).toBe('done\n');
  });

  it('exits once it holds nothing and nobody is connected', async () => {
    // The fixture's child has exited, so its filter is gone (POLLHUP) and so is the fixture.
    await waitFor('the idle holder to exit', () => holderPid() === undefined, 20_000);
    expect(fs.existsSync(control)).toBe(false);
    expect(fs.existsSync(agent)).toBe(false);
  });
});
