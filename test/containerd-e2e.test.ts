// tool-a is a separate copy of busybox (its own file identity); busybox picks the applet
// from argv[0], hence `exec -a echo` where it has to run.
// cgfence with real containerd and runc: create-time attach through cgfence-runc, exec
// denials, refusals that name the annotation, detach at exit, daemon restart.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { request } from '../src/daemon/daemon-client';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { ensureTracefs } from '../src/kernel/tracefs';
import { bpfCounts, uniqueName, waitForBpfCounts, BpfCounts } from './helpers/kernel';
import { killDaemon } from './helpers/daemon-restart';
import { scrapeMetrics } from './helpers/metrics';
import { cid, cli, ctr, IMAGE, runFenced, removeContainer, sandboxDir, startFenced, waitFor } from './helpers/sandbox';

const dir = sandboxDir('e2e');
let p: SandboxPaths;
let baseline: BpfCounts;

const ALLOW_SH = { 'cgfence.io/exec-allow': '/bin/sh' };

async function records(id: string) {
  return readRecords(p.auditLog, { container: id });
}

function psIds(): string[] {
  const r = cli(p, ['ps', '--json']);
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Array<{ id: string }>).map((c) => c.id);
}

beforeAll(async () => {
  p = await sandboxUp(dir);
  baseline = bpfCounts();
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('containers fenced through cgfence-runc', () => {
  it("runs allowed programs (busybox applets share /bin/sh's identity)", () => {
    const r = runFenced(p, cid('allowed'), ALLOW_SH, ['/bin/sh', '-c', 'echo one; ls / >/dev/null && echo two']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('one');
    expect(r.stdout).toContain('two');
  });

  it('kills a forbidden program before it runs, and audits the denial with the container', async () => {
    const id = cid('denied');
    const r = runFenced(p, id, ALLOW_SH, ['/bin/sh', '-c', '/usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('FORBIDDEN-RAN');
    // Refused at execve through seccomp notify (EACCES: sh returns 126), the kernel fence behind it.
    expect(r.stdout).toContain('rc=126');
    const recs = await waitFor('deny record', () => {
      void records(id).then((x) => (last = x));
      return last.find((x) => x.type === 'exec' && x.action === 'deny');
    });
    expect(recs.path).toBe('/usr/local/bin/tool-a');
    expect(recs.namespace).toBe('default');
    const attach = last.find((x) => x.type === 'lifecycle' && x.action === 'attach')!;
    expect(attach.controls).toEqual({ exec: 'enforced', network: 'none', seccomp: 'none' });
    expect(String(attach.policy_hash)).toMatch(/^sha256:/);
  });

  it('audit mode lets it run and records it', async () => {
    const id = cid('audit');
    const r = runFenced(p, id, { ...ALLOW_SH, 'cgfence.io/mode': 'audit' }, [
      '/bin/sh',
      '-c',
      '(exec -a echo /usr/local/bin/tool-a AUDITED-RAN)',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('AUDITED-RAN');
    const rec = await waitFor('audit record', () => {
      void records(id).then((x) => (last = x));
      return last.find((x) => x.type === 'exec' && x.action === 'audit');
    });
    expect(rec.path).toBe('/usr/local/bin/tool-a');
  });

  it('denies a forbidden exec that is the first thing the container does, even when it would exit at once', () => {
    const r = runFenced(p, cid('fast'), ALLOW_SH, ['/bin/sh', '-c', 'exec /usr/local/bin/tool-a echo FAST-RAN']);
    expect(r.stdout).not.toContain('FAST-RAN');
    expect(r.status).not.toBe(0);
  });

  it('denies `ctr task exec` of a forbidden program into a running fenced container', async () => {
    const id = cid('exec');
    const start = startFenced(p, id, ALLOW_SH, ['/bin/sh', '-c', 'sleep 60']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const ok = ctr(p, ['task', 'exec', '--exec-id', 'ok1', id, '/bin/sh', '-c', 'echo EXEC-OK']);
      expect(ok.stdout).toContain('EXEC-OK');
      const bad = ctr(p, ['task', 'exec', '--exec-id', 'bad1', id, '/usr/local/bin/tool-a', 'echo', 'EXEC-RAN']);
      expect(bad.stdout).not.toContain('EXEC-RAN');
      expect(bad.status).not.toBe(0);
      expect(psIds()).toContain(id);
      // `cgfence ps` counts the denial, whichever of the notify loop and the kernel fence made it.
      const row = (JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; counters: { denied: number } }>).find(
        (c) => c.id === id,
      )!;
      expect(row.counters.denied).toBeGreaterThanOrEqual(1);
    } finally {
      await removeContainer(p, id);
    }
    await waitFor('detach after exit', () => !psIds().includes(id));
  });

  it('leaves an unannotated container alone', async () => {
    const id = cid('plain');
    const r = ctr(p, [
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      IMAGE,
      id,
      '/bin/sh',
      '-c',
      '(exec -a echo /usr/local/bin/tool-a PLAIN-RAN)',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('PLAIN-RAN');
    expect((await records(id)).filter((x) => x.type === 'lifecycle')).toEqual([]);
  });

  it("a create with nothing to attach becomes runc in the launcher's own process; a fenced create runs runc as a child", () => {
    // The kernel's exec events of every runtime call: a pass-through, and an unfenced create,
    // exec runc in the pid that exec'd cgfence-runc; a fenced create forks runc first.
    ensureTracefs();
    const inst = `/sys/kernel/tracing/instances/${uniqueName('cgfence-test-launcher')}`;
    fs.mkdirSync(inst);
    try {
      fs.writeFileSync(`${inst}/events/sched/sched_process_exec/enable`, '1');
      const marker = fs.openSync(`${inst}/trace_marker`, 'w');
      const arms: Array<[string, Record<string, string>]> = [
        ['none', {}],
        ['nothing-to-fence', { 'cgfence.io/mode': 'enforce' }],
        ['fenced', ALLOW_SH],
      ];
      for (const [arm, annotations] of arms) {
        fs.writeSync(marker, `BEGIN ${arm}`);
        const r = runFenced(p, cid(arm), annotations, ['/bin/true']);
        fs.writeSync(marker, `END ${arm}`);
        expect(r.status, r.stderr).toBe(0);
      }
      fs.closeSync(marker);
      fs.writeFileSync(`${inst}/tracing_on`, '0');
      const execs = new Map<string, Array<{ file: string; pid: number }>>();
      let cur: string | null = null;
      for (const line of fs.readFileSync(`${inst}/trace`, 'utf8').split('\n')) {
        const mark = /tracing_mark_write: (BEGIN|END) (\S+)/.exec(line);
        if (mark) cur = mark[1] === 'BEGIN' ? mark[2] : null;
        const ex = /sched_process_exec: filename=(\S+) pid=(\d+)/.exec(line);
        if (cur && ex) execs.set(cur, [...(execs.get(cur) ?? []), { file: path.basename(ex[1]), pid: Number(ex[2]) }]);
      }
      /** runc's execs (not runc init, which is /proc/self/exe) in a pid that had exec'd cgfence-runc, and in another. */
      const runcPids = (arm: string) => {
        const ev = execs.get(arm) ?? [];
        const launchers = new Set(ev.filter((e) => e.file === 'cgfence-runc').map((e) => e.pid));
        const runc = ev.filter((e) => e.file === 'runc');
        expect(launchers.size, `${arm}: cgfence-runc was run`).toBeGreaterThanOrEqual(3); // create, start, delete
        return { inLauncher: runc.filter((e) => launchers.has(e.pid)).length, inChild: runc.filter((e) => !launchers.has(e.pid)).length };
      };
      // create, start, delete: all in the launcher's process when nothing is attached
      expect(runcPids('none')).toMatchObject({ inChild: 0, inLauncher: expect.any(Number) });
      expect(runcPids('none').inLauncher).toBeGreaterThanOrEqual(3);
      expect(runcPids('nothing-to-fence')).toMatchObject({ inChild: 0 });
      expect(runcPids('nothing-to-fence').inLauncher).toBeGreaterThanOrEqual(3);
      // the fenced create's runc is the launcher's child; start and delete are pass-throughs
      expect(runcPids('fenced').inChild).toBe(1);
      expect(runcPids('fenced').inLauncher).toBeGreaterThanOrEqual(2);
    } finally {
      fs.writeFileSync(`${inst}/tracing_on`, '0');
      fs.rmdirSync(inst);
    }
  });

  it('hears only the containerd events it acts on: a container started and removed reaches it as three', async () => {
    // containerd publishes ~8 events per `ctr run --rm` (create, snapshots, task create and
    // start, exit, delete, removal); the daemon's subscription is filtered to the three it
    // detaches on (/tasks/exit, /tasks/delete, /containers/delete).
    const received = async () =>
      (await request<{ containerd: { eventsReceived: number } }>(p.socket, { op: 'status' })).containerd.eventsReceived;
    const before = await received();
    const r = ctr(p, ['run', '--rm', IMAGE, cid('events'), '/bin/true']);
    expect(r.status, r.stderr).toBe(0);
    await waitFor('the exit, delete and removal events', async () => (await received()) - before >= 3);
    await new Promise((res) => setTimeout(res, 500)); // an event past the three would be in by now
    expect((await received()) - before).toBe(3);
  });
});

describe('refusals name the annotation and value', () => {
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    [
      'an invalid CIDR',
      { 'cgfence.io/egress-deny': '10.0.0.0/33' },
      /cgfence\.io\/egress-deny: "10\.0\.0\.0\/33" is not an IPv4 or IPv6 CIDR/,
    ],
    ['an unknown cgfence.io key', { 'cgfence.io/exec-alow': '/bin/sh' }, /unknown annotation cgfence\.io\/exec-alow="\/bin\/sh"/],
    [
      'an unknown mode',
      { ...ALLOW_SH, 'cgfence.io/mode': 'strict' },
      /cgfence\.io\/mode="strict" is not one of enforce, audit, learn, off/,
    ],
    ['a relative path', { 'cgfence.io/exec-allow': 'bin/sh' }, /cgfence\.io\/exec-allow: "bin\/sh" is not an absolute path/],
    [
      'a path missing from the image',
      { 'cgfence.io/exec-allow': '/bin/sh,/usr/bin/nonexistent' },
      /cgfence\.io\/exec-allow=.*\/usr\/bin\/nonexistent: no such file in the container/,
    ],
    [
      'every path missing from the image, not only the first',
      { 'cgfence.io/exec-allow': '/bin/nosuch-a,/bin/sh,/bin/nosuch-b' },
      /\/bin\/nosuch-a: no such file in the container; \/bin\/nosuch-b: no such file in the container/,
    ],
    ['a forbidden entrypoint', { 'cgfence.io/exec-allow': '/usr/local/bin/tool-a' }, /does not allow the entrypoint "\/bin\/sh"/],
    ['an unknown syscall', { 'cgfence.io/seccomp-deny': 'mkdir,notasyscall' }, /cgfence\.io\/seccomp-deny: unknown syscall "notasyscall"/],
  ];
  for (const [what, ann, msg] of cases) {
    it(`refuses ${what}`, async () => {
      const id = cid('refused');
      const r = runFenced(p, id, ann, ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN']);
      ctr(p, ['containers', 'delete', id]);
      expect(r.status).not.toBe(0);
      expect(r.stdout).not.toContain('SHOULD-NOT-RUN');
      expect(r.stderr).toMatch(msg);
      expect((await records(id)).some((x) => x.type === 'lifecycle' && x.action === 'refuse')).toBe(true);
    });
  }
});

describe('metrics', () => {
  it('serves Prometheus metrics with decisions, fenced containers and attach latency', async () => {
    runFenced(p, cid('metrics'), ALLOW_SH, ['/bin/sh', '-c', '/usr/local/bin/tool-b echo X']);
    const body = await waitFor('a deny in the metrics', async () => {
      const text = await scrapeMetrics(p).catch(() => '');
      return /cgfence_decisions_total\{control="exec",action="deny"\} [1-9]/.test(text) && text;
    });
    expect(body).toMatch(/cgfence_fenced_containers \d+/);
    expect(body).toMatch(/cgfence_attach_duration_seconds_count\{how="create"\} [1-9]/);
    expect(body).toMatch(/cgfence_ring_buffer_drops_total 0/);
    expect(body).toMatch(/cgfence_audit_write_errors_total 0/);
  });
});

describe('cleanup and restart', () => {
  it('after every container exits, nothing per-container is left in the kernel', async () => {
    await waitFor('no fenced containers', () => psIds().length === 0);
    expect(await waitForBpfCounts(baseline)).toEqual(baseline);
  });

  it('a daemon killed with SIGKILL leaves fences enforcing; the restarted daemon adopts them without duplicates', async () => {
    const id = cid('restart');
    const start = startFenced(p, id, ALLOW_SH, ['/bin/sh', '-c', 'sleep 60']);
    expect(start.status, start.stderr).toBe(0);
    try {
      await killDaemon(p);
      const whileDown = ctr(p, ['task', 'exec', '--exec-id', 'down1', id, '/usr/local/bin/tool-a', 'echo', 'DOWN-RAN']);
      expect(whileDown.stdout).not.toContain('DOWN-RAN');
      await sandboxUp(dir);
      expect(psIds().filter((x) => x === id)).toHaveLength(1);
      // The kernel counted the denial while no daemon was there; the new daemon says so.
      const whileDownRec = await waitFor('while-down record', () => {
        void records(id).then((x) => (last = x));
        return last.find((x) => x.type === 'agent' && x.action === 'while-down');
      });
      expect(Number(whileDownRec.denied)).toBeGreaterThanOrEqual(1);
      const st = JSON.parse(cli(p, ['status', '--json']).stdout) as { daemon: { adopted: boolean }; fences: number };
      expect(st.daemon.adopted).toBe(true);
      expect(st.fences).toBe(1);
      const after = ctr(p, ['task', 'exec', '--exec-id', 'up1', id, '/usr/local/bin/tool-a', 'echo', 'UP-RAN']);
      expect(after.stdout).not.toContain('UP-RAN');
      const ok = ctr(p, ['task', 'exec', '--exec-id', 'up2', id, '/bin/sh', '-c', 'echo STILL-OK']);
      expect(ok.stdout).toContain('STILL-OK');
      expect(bpfCounts().progs).toBe(baseline.progs);
    } finally {
      await removeContainer(p, id);
    }
    await waitFor('detach after exit', () => !psIds().includes(id));
    expect(await waitForBpfCounts(baseline)).toEqual(baseline);
  });
});

let last: Awaited<ReturnType<typeof records>> = [];
