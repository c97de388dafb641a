// cgfence-fd-holder against the real kernel: a notification the daemon received but never
// answered (it died in between) is answered by the holder, so the caller does not wait
// forever; an idle holder goes away by itself.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFdHolder } from '../src/fence/exec/fd-holder';
import { projectRoot } from '../src/native';
import { FIXTURES, buildFixture, mktemp, pidsByArgv } from './helpers/kernel';
import { waitFor } from './helpers/sandbox';

let dir = '';
let control = '';
let agent = '';

function holderPid(): number | undefined {
  return pidsByArgv((argv) => argv.includes(control))[0];
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

  // The holder tells an exec (let on to the exec fence) from a seccomp denial (EPERM) by the
  // daemon's in-flight table, and, for one it receives itself, by the syscall number
  // (getppid is not an exec: a denial, never CONTINUE).
  for (const [kind, answer] of [
    ['exec', 'ran'],
    ['deny', 'EPERM'],
    ['unreceived', 'EPERM'],
  ] as const) {
    it(`answers a notification its daemon died holding (${kind}): ${answer}`, async () => {
      const fixture = buildFixture('notify-inflight', dir);
      startFdHolder(control, agent); // the last case's holder may have gone idle and exited
      const done = path.join(dir, `done-${kind}`);
      const r = spawnSync(fixture, [control, agent, done, kind], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, r.stderr).toBe(0);
      const child = Number(r.stdout.trim());
      expect(child).toBeGreaterThan(0);
      await waitFor('the unanswered getppid to return', () => fs.existsSync(done) && fs.readFileSync(done, 'utf8').length > 0, 20_000);
      expect(fs.readFileSync(done, 'utf8')).toBe(`done ${answer}\n`);
    });
  }

  it('exits once it holds nothing and nobody is connected', async () => {
    // The fixture's child has exited, so its filter is gone (POLLHUP) and so is the fixture.
    await waitFor('the idle holder to exit', () => holderPid() === undefined, 20_000);
    expect(fs.existsSync(control)).toBe(false);
    expect(fs.existsSync(agent)).toBe(false);
  });

  it('keeps a notify fd only when the runc state is read exactly (strict JSON, pid an integer, the key whole)', async () => {
    // A fresh holder that no daemon took over: it keeps what runc delivers and forwards nothing.
    startFdHolder(control, agent);
    const holder = holderPid()!;
    const notifyFds = () =>
      fs.readdirSync(`/proc/${holder}/fd`).filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/${holder}/fd/${fd}`) === 'anon_inode:seccomp notify';
        } catch {
          return false;
        }
      }).length;
    const deliver = buildFixture('agent-deliver', dir);
    const state = (o: Record<string, unknown>) =>
      JSON.stringify({ ociVersion: '1.0.2', fds: ['seccompFd'], ...o, state: { id: 'x', status: 'creating' } });
    const cases: Array<[string, boolean]> = [
      [state({ pid: 4242, metadata: 'test/good' }), true],
      [state({ pid: '4242', metadata: 'test/pid-string' }), false],
      [state({ pid: 1e30, metadata: 'test/pid-huge' }), false],
      [state({ pid: 4294967297, metadata: 'test/pid-wraps' }), false],
      [state({ pid: 7, metadata: 'k'.repeat(1025) }), false],
      [state({ pid: 7, metadata: 'test/trailing' }) + ' x', false],
      ['{"pid":7,"metadata\\u0000x":"a","metadata":"test/nul-key"}', false],
    ];
    for (const [text, kept] of cases) {
      const before = notifyFds();
      const child = spawn(deliver, [agent, text], { stdio: ['pipe', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d) => {
          if (String(d).includes('sent')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`agent-deliver exited ${code}`)));
      });
      try {
        if (kept) await waitFor('the holder to keep the fd', () => notifyFds() === before + 1, 10_000);
        else {
          await new Promise((r) => setTimeout(r, 300)); // the holder has read and judged it by now
          expect(notifyFds(), text.slice(0, 80)).toBe(before);
        }
      } finally {
        child.stdin!.end();
        await new Promise((r) => child.on('close', r));
      }
      // Its filter has no task left: a kept fd is dropped (POLLHUP).
      await waitFor('the holder to drop the fd', () => notifyFds() === 0, 10_000);
    }
  });

  it("is taken over by an older daemon's client, which knows no protocol version (END read by its prefix)", async () => {
    // The client of ab82b4d, before versions, built from git with a driver of its own.
    const old = path.join(dir, 'old-client');
    for (const f of ['native/fd-holder-client.cc', 'native/fd-holder-client.h', 'native/fd-holder/protocol.h']) {
      fs.mkdirSync(path.dirname(path.join(old, f)), { recursive: true });
      fs.writeFileSync(path.join(old, f), execFileSync('git', ['-C', projectRoot(), 'show', `ab82b4d:${f}`]));
    }
    const take = path.join(dir, 'holder-take');
    execFileSync(
      'g++',
      [
        '-std=c++17',
        '-O2',
        '-I',
        path.join(old, 'native'),
        '-o',
        take,
        path.join(FIXTURES, 'holder-take.cc'),
        path.join(old, 'native/fd-holder-client.cc'),
      ],
      { stdio: 'pipe' },
    );
    startFdHolder(control, agent);
    const deliver = buildFixture('agent-deliver', dir);
    const state = JSON.stringify({
      ociVersion: '1.0.2',
      fds: ['seccompFd'],
      pid: 4242,
      metadata: 'test/old-client',
      state: { id: 'x', status: 'creating' },
    });
    const child = spawn(deliver, [agent, state], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d) => {
          if (String(d).includes('sent')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`agent-deliver exited ${code}`)));
      });
      // The holder reads the delivery on its own time: asked before, it would have nothing to give.
      const holder = holderPid()!;
      await waitFor(
        'the holder to keep the fd',
        () =>
          fs.readdirSync(`/proc/${holder}/fd`).some((fd) => {
            try {
              return fs.readlinkSync(`/proc/${holder}/fd/${fd}`) === 'anon_inode:seccomp notify';
            } catch {
              return false;
            }
          }),
        10_000,
      );
      expect(execFileSync(take, [control], { encoding: 'utf8', timeout: 10_000 })).toBe('1 table test/old-client\n');
    } finally {
      child.stdin!.end();
      await new Promise((r) => child.on('close', r));
    }
  });
});
