// The network fence with real containerd and runc, through the sandbox (private containerd +
// daemon): a container on the host network against servers this test runs on the host's
// loopback, a container in its own network namespace against its own loopback, refusals
// that name the annotation, `cgfence policy set` on a running container, detach at exit.
// The static net-probe (test/fixtures) is bind-mounted at /probe to print what an
// application sees; busybox nc and wget show the same thing in their own words.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { LoopbackServers } from './helpers/loopback-servers';
import { buildFixture, mktemp } from './helpers/kernel';
import { IMAGE, cid, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('net');
let p: SandboxPaths;
let probeDir: string;
const loopback = new LoopbackServers();
const { tcp, udp } = loopback;
const listenTcp = (addr: string) => loopback.listenTcp(addr);
const listenUdp = (addr: string) => loopback.listenUdp(addr);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Asynchronous, unlike the shared helper: this process's servers must answer meanwhile. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 90_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const ctr = (args: string[]) => run('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, ...args]);
const cli = (args: string[]) =>
  run(process.execPath, [path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js'), ...args], {
    ...process.env,
    CGFENCE_SOCKET: p.socket,
    CGFENCE_AUDIT_LOG: p.auditLog,
  });

function annotationArgs(a: Record<string, string>): string[] {
  return Object.entries(a).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
}

const MOUNT = () => ['--mount', `type=bind,src=${probeDir},dst=/probe,options=rbind:ro`];

function runFenced(id: string, annotations: Record<string, string>, script: string, opts: { hostNet?: boolean } = {}): Promise<Run> {
  return ctr([
    'run',
    '--rm',
    '--runc-binary',
    p.runc,
    ...(opts.hostNet ? ['--net-host'] : []),
    ...annotationArgs(annotations),
    ...MOUNT(),
    IMAGE,
    id,
    '/bin/sh',
    '-c',
    script,
  ]);
}

/** Lines "TAG rest" printed by a container script, as a map. */
function tagged(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of stdout.split('\n')) {
    const m = /^([A-Z][A-Z0-9]*) (.*)$/.exec(l.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

async function recordsOf(id: string): Promise<AuditRecord[]> {
  return readRecords(p.auditLog, { container: id });
}

async function recordFor(id: string, pred: (r: AuditRecord) => boolean, what: string): Promise<AuditRecord> {
  let last: AuditRecord[] = [];
  return waitFor(
    what,
    () => {
      void recordsOf(id).then((x) => (last = x));
      return last.find(pred);
    },
    20_000,
  );
}

function cgroupLinks(cgroupId: string): unknown[] {
  const links = JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' }) || '[]') as Array<{ cgroup_id?: number }>;
  return links.filter((l) => String(l.cgroup_id) === cgroupId);
}

beforeAll(async () => {
  probeDir = mktemp('cgft-net-probe');
  buildFixture('net-probe', probeDir);
  fs.chmodSync(probeDir, 0o755);
  p = await sandboxUp(dir);
  for (const a of ['127.0.0.2', '127.0.0.3', '::1']) await listenTcp(a);
  for (const a of ['127.0.0.2', '::1']) await listenUdp(a);
});

afterAll(async () => {
  loopback.close();
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  if (probeDir) fs.rmSync(probeDir, { recursive: true, force: true });
});

describe('a container on the host network', () => {
  it('gets EPERM at connect/sendto for denied host loopback addresses (TCP, UDP, IPv4, IPv6), and reaches the others', async () => {
    const id = cid('hostnet');
    const P = (a: string) => String(tcp[a]);
    const r = await runFenced(
      id,
      { 'cgfence.io/egress-deny': '127.0.0.2/32,::1/128' },
      [
        `echo "A $(/probe/net-probe connect tcp 127.0.0.2 ${P('127.0.0.2')})"`,
        `echo "B $(/probe/net-probe connect tcp 127.0.0.3 ${P('127.0.0.3')})"`,
        `echo "C $(/probe/net-probe connect tcp ::1 ${P('::1')})"`,
        `echo "D $(/probe/net-probe sendto 127.0.0.2 ${udp['127.0.0.2'].port} 2)"`,
        `echo "E $(/probe/net-probe connect udp ::1 ${udp['::1'].port})"`,
        `echo "F $(echo hi | nc 127.0.0.2 ${P('127.0.0.2')} 2>&1)"`,
        `echo "G $(echo hi | nc 127.0.0.3 ${P('127.0.0.3')} 2>&1)"`,
      ].join('; '),
      { hostNet: true },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = tagged(r.stdout);
    expect(out).toMatchObject({ A: 'EPERM', B: 'ok', C: 'EPERM', D: 'sent 0 eperm 2 other 0', E: 'EPERM', G: 'ok' });
    expect(out.F).toMatch(/Operation not permitted/);
    expect(udp['127.0.0.2'].got).toEqual([]);

    const attach = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'attach', 'the attach record');
    expect((attach.controls as Record<string, string>).network).toBe('enforced');
    const deny = await recordFor(id, (x) => x.type === 'net' && x.daddr === '::1' && x.proto === 'tcp', 'the IPv6 deny record');
    expect(deny).toMatchObject({
      action: 'deny',
      direction: 'egress',
      dport: tcp['::1'],
      hook: 'connect',
      comm: 'net-probe',
      namespace: 'default',
      rule: 'cgfence.io/egress-deny=::1/128',
    });
    const udpRec = await recordFor(id, (x) => x.type === 'net' && x.proto === 'udp' && x.daddr === '127.0.0.2', 'the UDP deny record');
    expect(udpRec).toMatchObject({ hook: 'sendmsg', dport: udp['127.0.0.2'].port });
    // Detached at exit: no link left on its cgroup, no pin directory.
    const detach = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'detach', 'the detach record');
    expect(detach.net_denied_egress).toBeGreaterThanOrEqual(6);
    expect(cgroupLinks(attach.cgroup_id)).toEqual([]);
    expect(fs.existsSync(path.join(p.pinDir, 'net', attach.cgroup_id))).toBe(false);
  });

  it('audit mode lets the traffic through and records it', async () => {
    const id = cid('hostaudit');
    const r = await runFenced(
      id,
      { 'cgfence.io/mode': 'audit', 'cgfence.io/egress-deny': '127.0.0.2/32' },
      `echo "A $(/probe/net-probe connect tcp 127.0.0.2 ${tcp['127.0.0.2']})"`,
      { hostNet: true },
    );
    expect(tagged(r.stdout).A).toBe('ok');
    const rec = await recordFor(id, (x) => x.type === 'net', 'the audit record');
    expect(rec).toMatchObject({ action: 'audit', daddr: '127.0.0.2' });
    const attach = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'attach', 'the attach record');
    expect((attach.controls as Record<string, string>).network).toBe('audited');
  });
});

describe('a container in its own network namespace', () => {
  it('is fenced on its own loopback: egress by destination, ingress by source', async () => {
    const id = cid('ownnet');
    const r = await runFenced(
      id,
      { 'cgfence.io/egress-deny': '127.0.0.2/32', 'cgfence.io/ingress-deny': '::1/128' },
      [
        '/probe/net-probe listen-tcp 0.0.0.0 8081 > /tmp/tcp.log 2>&1 &',
        '/probe/net-probe listen-udp ::1 9000 > /tmp/udp.log 2>&1 &',
        'until grep -q ready /tmp/tcp.log && grep -q ready /tmp/udp.log; do sleep 0.1; done',
        'echo "A $(/probe/net-probe connect tcp 127.0.0.1 8081)"',
        'echo "B $(/probe/net-probe connect tcp 127.0.0.2 8081)"',
        'echo "C $(echo hi | nc 127.0.0.2 8081 2>&1)"',
        'echo "D $(/probe/net-probe sendto ::1 9000 3)"',
        'echo "E $(grep -c "^from" /tmp/udp.log)"',
        'echo "F $(grep -c "^accepted" /tmp/tcp.log)"',
        'kill %1 %2',
      ].join('\n'),
    );
    expect(r.status, r.stderr).toBe(0);
    const out = tagged(r.stdout);
    // The datagrams leave (egress to ::1 is allowed) and are dropped on the way in.
    expect(out).toMatchObject({ A: 'ok', B: 'EPERM', D: 'sent 3 eperm 0 other 0', E: '0', F: '1' });
    expect(out.C).toMatch(/Operation not permitted/);
    const ingress = await recordFor(id, (x) => x.type === 'net' && x.direction === 'ingress', 'the ingress record');
    expect(ingress).toMatchObject({ action: 'deny', saddr: '::1', dport: 9000, proto: 'udp', hook: 'packet' });
  });
});

describe('refusals', () => {
  it('keeps a container with an invalid CIDR from starting, naming the annotation', async () => {
    const id = cid('badcidr');
    const r = await runFenced(id, { 'cgfence.io/egress-deny': '10.0.0.0/8,10.0.0.300/8' }, 'echo STARTED');
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('STARTED');
    expect(r.stderr).toContain('cgfence.io/egress-deny');
    expect(r.stderr).toContain('10.0.0.300/8');
    await ctr(['containers', 'delete', id]);
  });
});

describe('cgfence policy set', () => {
  it("changes a running container's rules through map updates, audited, and rejects invalid changes", async () => {
    const id = cid('live');
    const start = await ctr([
      'run',
      '-d',
      '--net-host',
      '--runc-binary',
      p.runc,
      ...annotationArgs({ 'cgfence.io/egress-deny': '127.0.0.2/32' }),
      ...MOUNT(),
      IMAGE,
      id,
      '/bin/sh',
      '-c',
      'sleep 120',
    ]);
    expect(start.status, start.stderr).toBe(0);
    let n = 0;
    const probe = async (addr: string) =>
      (
        await ctr(['task', 'exec', '--exec-id', `p${n++}`, id, '/probe/net-probe', 'connect', 'tcp', addr, String(tcp[addr])])
      ).stdout.trim();
    try {
      const attach = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'attach', 'the attach record');
      expect(await probe('127.0.0.2')).toBe('EPERM');
      expect(await probe('127.0.0.3')).toBe('ok');

      const set = await cli(['policy', 'set', id, 'cgfence.io/egress-deny=127.0.0.3/32']);
      expect(set.status, set.stderr).toBe(0);
      expect(set.stdout).toContain(`updated default/${id}`);
      expect(set.stdout).toContain('network enforced');
      expect(await probe('127.0.0.2')).toBe('ok');
      expect(await probe('127.0.0.3')).toBe('EPERM');
      const upd = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'policy-update', 'the policy-update record');
      expect(upd.old_policy_hash).toBe(attach.policy_hash);
      expect(upd.new_policy_hash).not.toBe(attach.policy_hash);
      expect(upd.changes).toEqual([{ key: 'cgfence.io/egress-deny', value: '127.0.0.3/32' }]); // no dotted keys in records

      const bad = await cli(['policy', 'set', `default/${id}`, 'cgfence.io/egress-deny=127.0.0.300/32']);
      expect(bad.status).toBe(1);
      expect(bad.stderr).toContain('cgfence.io/egress-deny');
      expect(bad.stderr).toContain('127.0.0.300/32');
      expect(await probe('127.0.0.3')).toBe('EPERM');

      // An allow list turns the direction default-deny; removing the key lifts it.
      expect((await cli(['policy', 'set', id, 'cgfence.io/egress-deny-', 'cgfence.io/egress-allow=127.0.0.2/32'])).status).toBe(0);
      expect(await probe('127.0.0.2')).toBe('ok');
      expect(await probe('127.0.0.3')).toBe('EPERM');
      expect(await probe('::1')).toBe('EPERM');
      expect((await cli(['policy', 'set', id, 'cgfence.io/mode=audit'])).status).toBe(0);
      expect(await probe('127.0.0.3')).toBe('ok');

      expect((await cli(['policy', 'set', 'no-such-container', 'cgfence.io/mode=audit'])).stderr).toContain('no fenced container');
    } finally {
      await ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      for (let i = 0; i < 50 && (await ctr(['task', 'delete', id])).status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
      await ctr(['containers', 'delete', id]);
    }
    const attach = await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'attach', 'the attach record');
    await recordFor(id, (x) => x.type === 'lifecycle' && x.action === 'detach', 'the detach record');
    expect(cgroupLinks(attach.cgroup_id)).toEqual([]);
    expect(fs.existsSync(path.join(p.pinDir, 'net', attach.cgroup_id))).toBe(false);
  });
});

describe('detach', () => {
  it('leaves no network fence behind once every container is gone', async () => {
    const st = await cli(['status', '--json']);
    expect(st.status, st.stderr).toBe(0);
    const status = JSON.parse(st.stdout) as { kernel: { backends: { network: { fences: number } } } };
    expect(status.kernel.backends.network.fences).toBe(0);
    const left = fs.existsSync(path.join(p.pinDir, 'net')) ? fs.readdirSync(path.join(p.pinDir, 'net')).filter((n) => /^\d+$/.test(n)) : [];
    expect(left).toEqual([]);
  });
});
