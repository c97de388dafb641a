// The cgroup v1 fallback on the real kernel and with real containerd: exec fences keyed by pid
// namespace (tracepoint/sched/sched_process_exec), the connect audit that stands in for the
// network fence, and the daemon in --cgroup-mode v1 end to end. Pid namespaces are made with
// `unshare --pid --fork --mount-proc`; a marker file is the proof that a program ran.
import { ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { AuditInput } from '../src/audit/audit-record';
import { ExecAction, ExecEvent, ExecReason, FenceMode, isPidnsFenceId } from '../src/kernel/abi';
import { cgroupV2PathOfPid } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { containerPidns, pidNamespaceOf, pidnsFenceId, startTicks } from '../src/kernel/pidns';
import { AttachContext } from '../src/fence/backend';
import { chooseScope } from '../src/fence/fence-scope';
import { NetworkV1Audit } from '../src/fence/network/network-v1-audit';
import { fencePidnsExecs } from '../src/fence/exec/pidns-exec-fence';
import { parseAnnotations } from '../src/policy/annotations';
import { allowedFileOf, identityOf } from '../src/policy/identity';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { buildFixture, mktemp, uniqueName } from './helpers/kernel';
import { cid, cli, ctr, IMAGE, runFenced, sandboxDir, waitFor } from './helpers/sandbox';
import { collectingSink } from './helpers/sink';

const name = uniqueName('cgft-v1');
const pinDir = `/sys/fs/bpf/${name}`;
let dir: string;
let fence: ExecFence;
const events: ExecEvent[] = [];
const started = new Set<ChildProcessWithoutNullStreams>();
let probe: string, allowedMarker: string, forbidden: string, unshareBin: string;

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}
interface NsProc {
  initPid: number;
  release(): void;
  done: Promise<Finished>;
}

function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Starts argv as the init of a new pid namespace, held before its exec until release(): the
 * namespace exists (and can be fenced) while nothing in it has run the program yet.
 */
async function startInPidns(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<NsProc> {
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', '/bin/sh', '-c', 'read go; exec "$@"', 'sh', ...argv], {
    env: { PATH: '/usr/bin:/bin', ...env },
  });
  started.add(child);
  let stdout = '',
    stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<Finished>((resolve) =>
    child.on('close', (code, signal) => {
      started.delete(child);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  const initPid = await waitFor('the namespace init', () => {
    const c = childrenOf(child.pid!)[0];
    if (!c) return undefined;
    try {
      const ns = pidNamespaceOf(c);
      return ns.nsPids.length > 1 && ns.nsPids[ns.nsPids.length - 1] === 1 ? c : undefined;
    } catch {
      return undefined;
    }
  });
  return { initPid, release: () => child.stdin.end('go\n'), done };
}

function marker(tag: string): string {
  return path.join(dir, `marker-${tag}-${Math.random().toString(36).slice(2)}`);
}

/** Runs argv in a new pid namespace fenced with allow (plus /bin/sh, which holds it). */
async function runFencedNs(
  argv: string[],
  allow: string[],
  mode: 'enforce' | 'audit' = 'enforce',
): Promise<Finished & { ran: boolean; killed: boolean; fenceId: bigint }> {
  const m = marker('ns');
  const ns = await startInPidns(argv, { CGFENCE_MARKER: m });
  const { fenceId } = fencePidnsExecs(fence, { pid: ns.initPid, mode, execAllow: ['/bin/sh', ...allow] });
  ns.release();
  const r = await ns.done;
  // unshare does not pass its child's SIGKILL on (it fails to re-raise it and exits 1): the
  // kernel's deny counter says the fence killed it, the missing marker that it never ran.
  return { ...r, ran: fs.existsSync(m), killed: (fence.getFence(fenceId)?.denied ?? 0n) > 0n, fenceId };
}

async function eventFor(pred: (e: ExecEvent) => boolean): Promise<ExecEvent> {
  return waitFor('an exec event', () => events.find(pred), 5000);
}

beforeAll(() => {
  execFileSync('bash', [path.join(__dirname, '..', 'scripts', 'setup.sh')]);
  dir = mktemp(name);
  probe = buildFixture('exec-probe', dir);
  allowedMarker = buildFixture('marker', dir);
  forbidden = path.join(dir, 'forbidden');
  fs.copyFileSync(allowedMarker, forbidden);
  fs.chmodSync(forbidden, 0o755);
  unshareBin = fs.realpathSync('/usr/bin/unshare');
  fence = ExecFence.open({ pinDir, programs: ['pidns'], onEvents: (b) => events.push(...b) });
});

afterAll(() => {
  for (const c of started)
    try {
      process.kill(c.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  fence?.close({ detach: true });
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('pid namespace identity', () => {
  it("computes the fence id the kernel computes: inode, and the init's start time", async () => {
    const ns = await startInPidns(['/bin/true']);
    try {
      const id = containerPidns(ns.initPid);
      expect(isPidnsFenceId(id.fenceId)).toBe(true);
      expect(id.inode).toBe(fs.statSync(`/proc/${ns.initPid}/ns/pid`, { bigint: true }).ino);
      expect(`pid:[${id.inode}]`).toBe(fs.readlinkSync(`/proc/${ns.initPid}/ns/pid`));
      expect(id.fenceId).toBe(pidnsFenceId(id.inode, startTicks(ns.initPid)));
      expect(id.level).toBe(1);
    } finally {
      ns.release();
      await ns.done;
    }
  });

  it('refuses the host pid namespace and a namespace the process does not own', async () => {
    expect(() => containerPidns(process.pid)).toThrow(/shares the host pid namespace/);
    const ns = await startInPidns(['/bin/true']);
    // nsenter forks into the namespace: its child is pid 2 there, not the init.
    const joiner = spawn('nsenter', ['--target', String(ns.initPid), '--pid', '--', 'sleep', '30']);
    try {
      const member = await waitFor('the joined process', () => childrenOf(joiner.pid!)[0]);
      await waitFor('it to be in the namespace', () => pidNamespaceOf(member).inode === pidNamespaceOf(ns.initPid).inode);
      expect(() => containerPidns(member)).toThrow(/is pid 2, not the init, of pid namespace/);
    } finally {
      joiner.kill('SIGKILL');
      ns.release();
      await ns.done;
    }
  });

  it('auto mode falls back to the pid namespace when the process has no cgroup v2 of its own; v2 mode refuses', async () => {
    const ns = await startInPidns(['/bin/true']);
    try {
      const cg = cgroupV2PathOfPid(ns.initPid);
      const auto = chooseScope(ns.initPid, cg, 'auto');
      expect(auto.backend).toBe('pidns-tracepoint');
      if (auto.backend === 'pidns-tracepoint')
        expect(auto.why).toMatch(/is the root of the hierarchy|shares its cgroup v2 .* with its parent pid/);
      expect(chooseScope(ns.initPid, cg, 'v1').backend).toBe('pidns-tracepoint');
      expect(() => chooseScope(ns.initPid, cg, 'v2')).toThrow(/cannot be fenced by cgroup/);
    } finally {
      ns.release();
      await ns.done;
    }
  });
});

describe('exec fence by pid namespace (enforce)', () => {
  it('runs an allowed program', async () => {
    const r = await runFencedNs([allowedMarker], [allowedMarker]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.ran).toBe(true);
  });

  it("kills a forbidden program before its first instruction and reports it with the namespace's fence id", async () => {
    const r = await runFencedNs([forbidden], [allowedMarker]);
    expect(r.killed).toBe(true);
    expect(r.ran).toBe(false);
    const e = await eventFor((x) => x.path === forbidden && x.fenceId === r.fenceId);
    expect(e.action).toBe(ExecAction.Deny);
    expect(e.mode).toBe(FenceMode.Enforce);
    expect({ dev: e.dev, ino: e.ino }).toEqual(identityOf(forbidden));
    expect(fence.getFence(r.fenceId)?.denied).toBe(1n);
    fence.unfence(r.fenceId);
  });

  const ways: Array<[string, (target: string) => string[]]> = [
    ['execve', (t) => [probe, 'execve', t]],
    ['a relative path', (t) => [probe, 'relative', t]],
    ['execveat(AT_EMPTY_PATH)', (t) => [probe, 'execveat-empty', t]],
    ['/proc/self/fd/N', (t) => [probe, 'procfd', t]],
    ['memfd + fexecve', (t) => [probe, 'memfd', t]],
  ];
  for (const [how, argv] of ways) {
    it(`never runs a forbidden program started through ${how}`, async () => {
      const r = await runFencedNs(argv(forbidden), [probe, allowedMarker]);
      expect(r.ran).toBe(false);
      expect(r.killed).toBe(true);
      fence.unfence(r.fenceId);
    });
  }

  it('never runs a copy of an allowed program, nor an allowed program copied into a memfd', async () => {
    const copy = path.join(dir, 'copy-of-allowed');
    fs.copyFileSync(allowedMarker, copy);
    fs.chmodSync(copy, 0o755);
    for (const argv of [
      [probe, 'execve', copy],
      [probe, 'memfd', allowedMarker],
    ]) {
      const r = await runFencedNs(argv, [probe, allowedMarker]);
      expect(r.ran, argv.join(' ')).toBe(false);
      expect(r.killed).toBe(true);
      fence.unfence(r.fenceId);
    }
  });

  it('covers pid namespaces nested in the fenced one', async () => {
    const bad = await runFencedNs([unshareBin, '--pid', '--fork', forbidden], [unshareBin, allowedMarker]);
    expect(bad.ran).toBe(false);
    const e = await eventFor((x) => x.path === forbidden && x.fenceId === bad.fenceId);
    expect(e.action).toBe(ExecAction.Deny);
    fence.unfence(bad.fenceId);
    const ok = await runFencedNs([unshareBin, '--pid', '--fork', allowedMarker], [unshareBin, allowedMarker]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.ran).toBe(true);
    fence.unfence(ok.fenceId);
  });

  it("binds the fence to this namespace's init: the same inode with another start time is not this namespace", async () => {
    const m = marker('stale');
    const ns = await startInPidns([forbidden], { CGFENCE_MARKER: m });
    const real = containerPidns(ns.initPid);
    // What a fence left on a dead namespace whose inode number was handed out again looks like.
    const stale = pidnsFenceId(real.inode, startTicks(ns.initPid) + 1n);
    fence.allow(stale, [allowedFileOf('/bin/sh')]);
    fence.setFence(stale, FenceMode.Enforce);
    try {
      ns.release();
      const r = await ns.done;
      expect(r.code, r.stderr).toBe(0);
      expect(fs.existsSync(m)).toBe(true);
    } finally {
      fence.unfence(stale);
    }
  });

  it('leaves processes of other pid namespaces and of the host alone', async () => {
    const ns = await startInPidns([forbidden], { CGFENCE_MARKER: marker('fenced') });
    const fenced = fencePidnsExecs(fence, { pid: ns.initPid, mode: 'enforce', execAllow: ['/bin/sh'] });
    try {
      const m1 = marker('other-ns');
      const other = await startInPidns([forbidden], { CGFENCE_MARKER: m1 });
      other.release();
      expect((await other.done).code).toBe(0);
      expect(fs.existsSync(m1)).toBe(true);
      const m2 = marker('host');
      execFileSync(forbidden, { env: { CGFENCE_MARKER: m2 } });
      expect(fs.existsSync(m2)).toBe(true);
    } finally {
      ns.release();
      await ns.done;
      fence.unfence(fenced.fenceId);
    }
  });
});

describe('exec integrity by pid namespace (the tracepoint program shares the stamp check)', () => {
  it('kills an allowed program changed after the fence was set, with the reason and both stamps', async () => {
    const prog = path.join(dir, `changed-${Math.random().toString(36).slice(2)}`);
    fs.copyFileSync(allowedMarker, prog);
    fs.chmodSync(prog, 0o755);
    const m = marker('changed');
    const ns = await startInPidns([prog], { CGFENCE_MARKER: m });
    const { fenceId } = fencePidnsExecs(fence, { pid: ns.initPid, mode: 'enforce', execAllow: ['/bin/sh', prog] });
    const want = allowedFileOf(prog).ctimeNs;
    fs.chmodSync(prog, 0o755); // moves ctime, keeps (dev, ino) and content
    ns.release();
    await ns.done;
    expect(fs.existsSync(m)).toBe(false);
    const e = await eventFor((x) => x.path === prog && x.fenceId === fenceId);
    expect(e.action).toBe(ExecAction.Deny);
    expect(e.reason).toBe(ExecReason.Modified);
    expect(e.wantCtimeNs).toBe(want);
    expect(e.nowCtimeNs).toBe(allowedFileOf(prog).ctimeNs);
    fence.unfence(fenceId);
  });
});

describe('exec fence by pid namespace (audit)', () => {
  it('lets a forbidden program run and reports it as audit', async () => {
    const r = await runFencedNs([forbidden], [allowedMarker], 'audit');
    expect(r.code, r.stderr).toBe(0);
    expect(r.ran).toBe(true);
    const e = await eventFor((x) => x.path === forbidden && x.fenceId === r.fenceId);
    expect(e.action).toBe(ExecAction.Audit);
    expect(fence.getFence(r.fenceId)?.audited).toBe(1n);
    fence.unfence(r.fenceId);
  });
});

describe('programs and pins', () => {
  function exists(kind: 'prog' | 'map' | 'link', id: number): boolean {
    try {
      execFileSync('bpftool', [kind, 'show', 'id', String(id)], { stdio: 'pipe' });
      return true;
    } catch {
      return false;
    }
  }

  it('loads only the programs asked for, adopts a pinned pidns link whatever is asked, and leaves nothing on detach', async () => {
    const pin = `/sys/fs/bpf/${uniqueName('cgft-v1-adopt')}`;
    try {
      const a = ExecFence.open({ pinDir: pin, programs: ['pidns'] });
      expect(a.programs()).toEqual(['pidns']);
      const idsA = a.objectIds();
      expect(Object.keys(idsA.programs)).toEqual(['pidns']);
      expect(fs.existsSync(path.join(pin, 'exec_fence_pidns_link'))).toBe(true);
      expect(fs.existsSync(path.join(pin, 'exec_fence_link'))).toBe(false);
      a.close(); // a daemon stopped without detach: the pinned link keeps enforcing

      const b = ExecFence.open({ pinDir: pin });
      const idsB = b.objectIds();
      try {
        expect(b.adopted).toBe(true);
        expect(b.programs().sort()).toEqual(['cgroup-v2', 'pidns']);
        expect(exists('link', idsA.programs.pidns.link)).toBe(false);
      } finally {
        b.close({ detach: true });
      }
      const gone = await waitFor('programs, links and maps to be freed', () => {
        const left = [
          ...Object.values(idsB.programs).flatMap((x) => [exists('prog', x.program), exists('link', x.link)]),
          ...Object.values(idsB.maps).map((m) => exists('map', m)),
          exists('prog', idsA.programs.pidns.program),
        ];
        return left.every((x) => !x) ? true : undefined;
      });
      expect(gone).toBe(true);
      expect(fs.existsSync(pin)).toBe(false);
    } finally {
      if (fs.existsSync(pin)) fs.rmSync(pin, { recursive: true, force: true });
    }
  });
});

describe('connect audit (network on the pid-namespace backend)', () => {
  it('says the network rules are unenforceable, refuses enforce, and audits outbound TCP connects as net records', async () => {
    const records: AuditInput[] = [];
    const audit = new NetworkV1Audit({
      pinDir: `/sys/fs/bpf/${uniqueName('cgft-v1-net')}`,
      sink: collectingSink(records),
    });
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const ns = await startInPidns(['/usr/bin/bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`]);
    try {
      const ctx = (mode: string): AttachContext<'network'> => {
        const annotations = { 'cgfence.io/mode': mode, 'cgfence.io/egress-allow': '10.0.0.0/8' };
        return {
          namespace: 'test',
          id: 'netv1',
          bundle: '',
          pid: ns.initPid,
          cgroupPath: null,
          cgroupId: null,
          policy: parseAnnotations(annotations),
          annotations,
          state: {},
        };
      };
      expect(audit.controlState(ctx('enforce').policy)).toMatch(/^unenforceable: CGROUP_SKB/);
      expect(() => audit.attach(ctx('enforce'))).toThrow(/no network rule is enforced.*refusing to start in enforce mode/);
      const c = ctx('audit');
      expect(audit.attach(c)).toMatch(/^unenforceable: .*outbound TCP connection attempts are audited/);
      expect(records.find((r) => r.type === 'agent')).toMatchObject({
        action: 'network-unenforceable',
        container_id: 'netv1',
        backend: 'pidns-tracepoint',
      });
      ns.release();
      expect((await ns.done).code).toBe(0);
      const rec = await waitFor('a net record', () => records.find((r) => r.type === 'net'));
      expect(rec).toMatchObject({
        action: 'audit',
        container_id: 'netv1',
        namespace: 'test',
        daddr: '127.0.0.1',
        dport: port,
        direction: 'egress',
        proto: 'tcp',
        verdict: 'deny',
        enforced: false,
        rule: 'default deny (cgfence.io/egress-allow is set)',
      });
      expect(audit.detach(c)).toMatchObject({ net_connects_seen: 1, net_connects_would_deny: 1 });
      expect(audit.kernel.watched()).toEqual([]);
    } finally {
      server.close();
      audit.close({ detach: true });
    }
  });
});

describe('end to end: the daemon in --cgroup-mode v1 with real containerd', () => {
  const sdir = sandboxDir('v1');
  let p: SandboxPaths;
  let probeDir: string;
  const ALLOW_SH = { 'cgfence.io/exec-allow': '/bin/sh' };
  let objects: { programs: Record<string, { program: number; link: number }>; maps: Record<string, number> } | undefined;

  async function recordsOf(id: string) {
    return readRecords(p.auditLog, { container: id });
  }

  beforeAll(async () => {
    const before = process.env.CGFENCE_CGROUP_MODE;
    process.env.CGFENCE_CGROUP_MODE = 'v1';
    try {
      p = await sandboxUp(sdir);
    } finally {
      if (before === undefined) delete process.env.CGFENCE_CGROUP_MODE;
      else process.env.CGFENCE_CGROUP_MODE = before;
    }
    probeDir = mktemp('cgft-v1-probe');
    buildFixture('exec-probe', probeDir);
  }, 120_000);

  afterAll(async () => {
    await sandboxDown(sdir).catch((e) => console.error(e));
    fs.rmSync(sdir, { recursive: true, force: true });
    if (probeDir) fs.rmSync(probeDir, { recursive: true, force: true });
  }, 60_000);

  it('status shows the pid-namespace backend only', () => {
    const r = cli(p, ['status', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.daemon.cgroupMode).toBe('v1');
    expect(s.kernel.backends.exec.backends).toEqual(['pidns-tracepoint']);
    expect(s.kernel.backends.exec.backend).toMatch(/^pidns-tracepoint \(tracepoint\/sched\/sched_process_exec/);
    objects = s.kernel.backends.exec.objects;
    expect(Object.keys(objects!.programs)).toEqual(['pidns']);
    const text = cli(p, ['status']);
    expect(text.stdout).toMatch(/exec fence\s+pidns-tracepoint/);
  });

  it('runs allowed programs and kills forbidden ones: direct, copied and memfd execs never run', async () => {
    const id = cid('v1-deny');
    // The probe is mounted over a file the image has: prepare resolves the allow-list in the
    // image's rootfs, attach in the container's mount namespace, where the probe is.
    const script = [
      'echo ALLOWED-RAN',
      '/usr/local/bin/tool-a echo DIRECT-RAN; echo "direct rc=$?"',
      'cp /bin/busybox /tmp/bb && /tmp/bb echo COPY-RAN; echo "copy rc=$?"',
      '/usr/local/bin/tool-b execve /bin/busybox echo PROBE-OK; echo "probe rc=$?"',
      '/usr/local/bin/tool-b memfd /bin/busybox echo MEMFD-RAN; echo "memfd rc=$?"',
    ].join('; ');
    const r = runFenced(
      p,
      id,
      { 'cgfence.io/exec-allow': '/bin/sh,/usr/local/bin/tool-b' },
      ['/bin/sh', '-c', script],
      ['--mount', `type=bind,src=${path.join(probeDir, 'exec-probe')},dst=/usr/local/bin/tool-b,options=rbind:ro`],
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('ALLOWED-RAN');
    expect(r.stdout).toContain('PROBE-OK');
    // Never ran: no output. How it was stopped depends on the path: EACCES from the seccomp
    // notify loop where it is in front (126 from sh, 127 from the probe), else the kernel
    // fence's SIGKILL (137).
    for (const what of ['DIRECT', 'COPY', 'MEMFD']) expect(r.stdout).not.toContain(`${what}-RAN`);
    for (const what of ['direct', 'copy', 'memfd']) expect(r.stdout).toMatch(new RegExp(`${what} rc=(126|127|137)\\n`));

    let recs: Awaited<ReturnType<typeof recordsOf>> = [];
    await waitFor('three deny records', () => {
      void recordsOf(id).then((x) => (recs = x));
      return recs.filter((x) => x.type === 'exec' && x.action === 'deny').length >= 3;
    });
    const denies = recs.filter((x) => x.type === 'exec' && x.action === 'deny');
    expect(denies.map((x) => x.path)).toEqual(expect.arrayContaining(['/usr/local/bin/tool-a', '/tmp/bb']));
    expect(denies.every((x) => x.namespace === 'default')).toBe(true);
    const attach = recs.find((x) => x.type === 'lifecycle' && x.action === 'attach')!;
    expect(attach.controls).toMatchObject({ exec: 'enforced' });
  });

  it('the kernel fence itself kills: an allowed #! script whose interpreter is forbidden dies before the interpreter runs', async () => {
    // The notify loop judges the file execve names (the allowed script); only the kernel sees
    // the interpreter the script brings in, so this verdict is the pidns program's.
    const script = path.join(probeDir, 'script');
    fs.writeFileSync(script, '#!/usr/local/bin/tool-a\n', { mode: 0o755 });
    const id = cid('v1-script');
    const r = runFenced(
      p,
      id,
      { 'cgfence.io/exec-allow': '/bin/sh,/usr/local/bin/tool-b' },
      ['/bin/sh', '-c', '/usr/local/bin/tool-b; echo "script rc=$?"'],
      ['--mount', `type=bind,src=${script},dst=/usr/local/bin/tool-b,options=rbind:ro`],
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('script rc=137');
    expect(r.stderr).not.toContain('applet not found');
    let recs: Awaited<ReturnType<typeof recordsOf>> = [];
    const detach = await waitFor('the detach record', () => {
      void recordsOf(id).then((x) => (recs = x));
      return recs.find((x) => x.type === 'lifecycle' && x.action === 'detach');
    });
    expect(detach.denied).toBe(1);
    const deny = recs.find((x) => x.type === 'exec' && x.action === 'deny');
    expect(deny).toMatchObject({ path: '/usr/local/bin/tool-b', mode: 'enforce' });
    expect(deny!.via).toBeUndefined();
  });

  it('audit mode lets a forbidden program run and records it', async () => {
    const id = cid('v1-audit');
    const r = runFenced(p, id, { ...ALLOW_SH, 'cgfence.io/mode': 'audit' }, [
      '/bin/sh',
      '-c',
      '(exec -a echo /usr/local/bin/tool-a AUDITED-RAN)',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('AUDITED-RAN');
    let recs: Awaited<ReturnType<typeof recordsOf>> = [];
    const rec = await waitFor('an audit record', () => {
      void recordsOf(id).then((x) => (recs = x));
      return recs.find((x) => x.type === 'exec' && x.action === 'audit');
    });
    expect(rec.path).toBe('/usr/local/bin/tool-a');
  });

  it('ps shows the pidns backend of a running container, and the fence goes at exit', async () => {
    const id = cid('v1-ps');
    const ann = ['--annotation', 'cgfence.io/exec-allow=/bin/sh'];
    const start = ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', 'sleep 60']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const r = cli(p, ['ps', '--json']);
      expect(r.status, r.stderr).toBe(0);
      const row = (JSON.parse(r.stdout) as Array<{ id: string; backend: Record<string, string>; controls: Record<string, string> }>).find(
        (c) => c.id === id,
      );
      expect(row?.backend.exec).toBe('pidns-tracepoint');
      expect(row?.controls.exec).toBe('enforced');
      expect(cli(p, ['ps', '-o', 'wide']).stdout).toMatch(new RegExp(`default/${id}.*pidns-tracepoint`));
    } finally {
      ctr(p, ['task', 'kill', '-s', 'SIGKILL', id]);
      await waitFor(
        'the task to stop',
        () => ctr(p, ['task', 'delete', id]).status === 0 || !ctr(p, ['task', 'ls']).stdout.includes(id),
        20_000,
      ).catch(() => {});
      ctr(p, ['containers', 'delete', id]);
    }
    await waitFor(
      'detach after exit',
      () => {
        const r = cli(p, ['ps', '--json']);
        return r.status === 0 && !(JSON.parse(r.stdout) as Array<{ id: string }>).some((c) => c.id === id);
      },
      20_000,
    );
    const s = JSON.parse(cli(p, ['status', '--json']).stdout);
    expect(s.kernel.backends.exec.fences['pidns-tracepoint']).toBe(0);
  });

  it('refuses an enforce container in the host pid namespace, and says an audit one gets no exec fence', async () => {
    const id = cid('v1-hostpid');
    // Our own pid namespace is the host's (runc here fails to join it through /proc/1).
    const hostNs = ['--with-ns', `pid:/proc/${process.pid}/ns/pid`];
    const r = runFenced(p, id, ALLOW_SH, ['/bin/sh', '-c', 'echo SHOULD-NOT-RUN'], hostNs);
    ctr(p, ['containers', 'delete', id]);
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('SHOULD-NOT-RUN');
    expect(r.stderr).toMatch(
      /cgfence\.io\/exec-allow="\/bin\/sh": the pid-namespace exec fence cannot serve this container: pid \d+ shares the host pid namespace.*refusing to start in enforce mode/,
    );

    const aid = cid('v1-hostpid-audit');
    const a = runFenced(p, aid, { ...ALLOW_SH, 'cgfence.io/mode': 'audit' }, ['/bin/sh', '-c', 'echo AUDIT-RAN'], hostNs);
    expect(a.status, a.stderr).toBe(0);
    expect(a.stdout).toContain('AUDIT-RAN');
    let recs: Awaited<ReturnType<typeof recordsOf>> = [];
    const attach = await waitFor('the attach record', () => {
      void recordsOf(aid).then((x) => (recs = x));
      return recs.find((x) => x.type === 'lifecycle' && x.action === 'attach');
    });
    expect((attach.controls as Record<string, string>).exec).toMatch(
      /^unenforceable: the pid-namespace exec fence cannot serve this container: pid \d+ shares the host pid namespace/,
    );
  });

  it('leaves nothing in the kernel after sandbox down', async () => {
    expect(objects).toBeDefined();
    await sandboxDown(sdir);
    const exists = (kind: string, id: number) => {
      try {
        execFileSync('bpftool', [kind, 'show', 'id', String(id)], { stdio: 'pipe' });
        return true;
      } catch {
        return false;
      }
    };
    const left = await waitFor("the daemon's programs, links and maps to be freed", () => {
      const l = [
        ...Object.values(objects!.programs).flatMap((x) => [exists('prog', x.program), exists('link', x.link)]),
        ...Object.values(objects!.maps).map((m) => exists('map', m)),
      ];
      return l.every((x) => !x) ? true : undefined;
    });
    expect(left).toBe(true);
    expect(fs.existsSync(p.pinDir)).toBe(false);
  });
});
