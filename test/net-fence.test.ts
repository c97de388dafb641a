// The network fence on the real kernel: cgroups under the v2 hierarchy, a static probe run
// inside them that connects/sends/listens and prints what the application saw, and servers
// this test runs on loopback (127.0.0.x and ::1) outside the fence.
import { execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditInput } from '../src/audit/audit-record';
import { ExecAction, FenceMode } from '../src/kernel/abi';
import { cgroupId, createCgroup, removeCgroup, requireCgroupV2Root } from '../src/kernel/cgroup';
import { NetDir, NetEvent, NetHook, RATE_BURST } from '../src/kernel/net-abi';
import { NetFence, NetRuleSet } from '../src/kernel/net-fence';
import { NetAuditor } from '../src/fence/network/network-audit';
import { compileNetRules, describeRule } from '../src/fence/network/network-rules';
import { parseAnnotations } from '../src/policy/annotations';
import { LoopbackServers } from './helpers/loopback-servers';
import { buildFixture, mktemp, uniqueName } from './helpers/kernel';

const name = uniqueName('cgfence-test-net');
const pinDir = `/sys/fs/bpf/${name}`;
let dir: string;
let probe: string;
let fence: NetFence;
let auditor: NetAuditor;
const events: NetEvent[] = [];
const records: AuditInput[] = [];
const cgroups: string[] = [];
const tables = new Map<bigint, string[]>();
const loopback = new LoopbackServers();
const { tcp, udp } = loopback;
const listenTcp = (addr: string) => loopback.listenTcp(addr);
const listenUdp = (addr: string) => loopback.listenUdp(addr);

function rules(annotations: Record<string, string>): NetRuleSet {
  const p = parseAnnotations(annotations);
  const c = compileNetRules(p);
  return { mode: p.mode === 'enforce' ? FenceMode.Enforce : FenceMode.Audit, defaultDeny: c.defaultDeny, entries: c.entries };
}

/** A new cgroup with a network fence from annotations; its fence id is its cgroup id. */
function fenced(annotations: Record<string, string>): { cg: string; id: bigint } {
  const cg = createCgroup(`${name}/c${cgroups.length}`);
  cgroups.push(cg);
  const id = cgroupId(cg);
  fence.attach(cg, rules(annotations));
  tables.set(id, compileNetRules(parseAnnotations(annotations)).table);
  auditor.track(id, id, parseAnnotations(annotations).mode === 'enforce' ? 'deny' : 'audit');
  return { cg, id };
}

interface Proc {
  pid: number;
  out: string[];
  done: Promise<number | null>;
  kill(): void;
}

/** Starts argv with its pid in the cgroup first; asynchronous, so this process's servers answer meanwhile. */
function startIn(cg: string, argv: string[]): Proc {
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop()!;
    out.push(...lines);
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const done = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      if (buf) out.push(buf);
      if (err) out.push(`stderr: ${err.trim()}`);
      resolve(code);
    }),
  );
  return { pid: child.pid!, out, done, kill: () => child.kill('SIGKILL') };
}

async function runIn(cg: string, argv: string[]): Promise<{ pid: number; out: string }> {
  const p = startIn(cg, argv);
  await p.done;
  return { pid: p.pid, out: p.out.join('\n') };
}

const connect = (cg: string, proto: 'tcp' | 'udp', addr: string, port: number) => runIn(cg, [probe, 'connect', proto, addr, String(port)]);

async function waitFor<T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function sendFrom(src: string, dst: string, port: number, payloads: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket(src.includes(':') ? 'udp6' : 'udp4');
    s.on('error', reject);
    s.bind(0, src, async () => {
      for (const p of payloads) await new Promise<void>((r, j) => s.send(p, port, dst, (e) => (e ? j(e) : r())));
      s.close();
      resolve();
    });
  });
}

const eventsOf = (id: bigint) => events.filter((e) => e.fenceId === id && e.kind === 'net');

beforeAll(async () => {
  execFileSync('bash', [path.join(__dirname, '..', 'scripts', 'setup.sh')]);
  dir = mktemp(name);
  probe = buildFixture('net-probe', dir);
  fence = NetFence.open({
    pinDir,
    onEvents: (batch) => {
      events.push(...batch);
      auditor.onEvents(batch);
    },
  });
  auditor = new NetAuditor({
    flow: (k) => fence.flow(k),
    stats: (cg) => fence.stats(cg),
    deleteFlows: (id) => fence.deleteFlows(id),
    write: (r) => records.push(...r),
    owner: (id) => ({ namespace: 'test', id: id.toString() }),
    toWallNs: (ns) => ns,
    rule: (id, _gen, d, ruleId) => describeRule(tables.get(id), d, ruleId),
  });
  for (const a of ['127.0.0.1', '127.0.0.2', '127.0.0.3', '::1']) await listenTcp(a);
  for (const a of ['127.0.0.2', '::1']) await listenUdp(a);
});

afterAll(async () => {
  loopback.close();
  if (cgroups.length) await removeCgroup(path.dirname(cgroups[0])).catch(() => {});
  fence?.close({ detach: true });
  if (fs.existsSync(pinDir)) fs.rmSync(pinDir, { recursive: true, force: true });
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('egress (enforce)', () => {
  let f: { cg: string; id: bigint };
  beforeAll(() => {
    f = fenced({ 'cgfence.io/egress-deny': '127.0.0.2/32,::1/128' });
  });

  it('refuses connect() to a denied IPv4 address with EPERM, TCP and UDP, and passes the others', async () => {
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('EPERM');
    expect((await connect(f.cg, 'udp', '127.0.0.2', udp['127.0.0.2'].port)).out).toBe('EPERM');
    expect((await connect(f.cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('ok');
    expect((await connect(f.cg, 'tcp', '127.0.0.1', tcp['127.0.0.1'])).out).toBe('ok');
  });

  it('refuses IPv6 the same way (::1)', async () => {
    expect((await connect(f.cg, 'tcp', '::1', tcp['::1'])).out).toBe('EPERM');
    expect((await connect(f.cg, 'udp', '::1', udp['::1'].port)).out).toBe('EPERM');
  });

  it('refuses unconnected UDP sendto() with EPERM (sendmsg hooks), and nothing arrives', async () => {
    const before = udp['127.0.0.2'].got.length;
    expect((await runIn(f.cg, [probe, 'sendto', '127.0.0.2', String(udp['127.0.0.2'].port), '3'])).out).toBe('sent 0 eperm 3 other 0');
    expect((await runIn(f.cg, [probe, 'sendto', '::1', String(udp['::1'].port), '2'])).out).toBe('sent 0 eperm 2 other 0');
    expect(udp['127.0.0.2'].got.length).toBe(before);
  });

  it('records each refusal with destination, port, protocol, hook, process and rule', async () => {
    const r = await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2']);
    const e = await waitFor('the connect event', () => eventsOf(f.id).find((x) => x.pid === r.pid));
    expect(e).toMatchObject({
      action: ExecAction.Deny,
      family: 4,
      daddr: '127.0.0.2',
      dport: tcp['127.0.0.2'],
      proto: 6,
      dir: NetDir.Egress,
      hook: NetHook.Connect,
      comm: 'net-probe',
      cgroupId: f.id,
    });
    expect(describeRule(tables.get(f.id), e.dir, e.ruleId)).toBe('cgfence.io/egress-deny=127.0.0.2/32');
    const u = await waitFor('the sendmsg6 event', () => eventsOf(f.id).find((x) => x.hook === NetHook.Sendmsg && x.family === 6));
    expect(u).toMatchObject({ daddr: '::1', dport: udp['::1'].port, proto: 17 });
    expect(fence.stats(f.id)!.denied.egress).toBeGreaterThanOrEqual(6n);
  });

  it('judges IPv4-mapped IPv6 destinations by the IPv4 rules', async () => {
    const r = await connect(f.cg, 'tcp', '::ffff:127.0.0.2', tcp['127.0.0.2']);
    expect(r.out).toBe('EPERM');
    expect((await connect(f.cg, 'tcp', '::ffff:127.0.0.3', tcp['127.0.0.3'])).out).toBe('ok');
    const e = await waitFor('the mapped event', () => eventsOf(f.id).find((x) => x.pid === r.pid));
    expect(e).toMatchObject({ family: 4, daddr: '127.0.0.2', hook: NetHook.Connect });
  });

  it('drops packets that bypass connect/sendmsg (ping over a raw or ICMP socket) in cgroup_skb/egress', async () => {
    const r = await runIn(f.cg, ['/bin/busybox', 'ping', '-c', '1', '-W', '1', '127.0.0.2']);
    expect(r.out).not.toMatch(/1 packets received/);
    const e = await waitFor('the ICMP event', () => eventsOf(f.id).find((x) => x.proto === 1));
    expect(e).toMatchObject({ daddr: '127.0.0.2', dir: NetDir.Egress });
    expect([NetHook.Skb, NetHook.Connect, NetHook.Sendmsg]).toContain(e.hook);
  });

  it('fences sockets of cgroups below the fenced one', async () => {
    const child = createCgroup(`${path.relative(requireCgroupV2Root(), f.cg)}/child`);
    try {
      expect((await connect(child, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('EPERM');
      expect((await connect(child, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('ok');
    } finally {
      fs.rmdirSync(child);
    }
  });
});

describe('rule semantics', () => {
  it('a deny entry wins over a longer allow entry', async () => {
    const f = fenced({ 'cgfence.io/egress-deny': '127.0.0.0/8', 'cgfence.io/egress-allow': '127.0.0.2/32' });
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('EPERM');
    expect((await connect(f.cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('EPERM');
  });

  it('an allow list makes its direction default-deny, for both families', async () => {
    const f = fenced({ 'cgfence.io/egress-allow': '127.0.0.2/32' });
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('ok');
    expect((await connect(f.cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('EPERM');
    expect((await connect(f.cg, 'tcp', '::1', tcp['::1'])).out).toBe('EPERM');
    const e = await waitFor('a default-deny event', () => eventsOf(f.id).find((x) => x.daddr === '127.0.0.3'));
    expect(describeRule(tables.get(f.id), e.dir, e.ruleId)).toBe('default deny (cgfence.io/egress-allow is set)');
  });

  it('an IPv6 rule covering the mapped range does not touch IPv4; the unspecified address is loopback', async () => {
    const f = fenced({ 'cgfence.io/egress-deny': '::/0,127.0.0.1/32' });
    expect((await connect(f.cg, 'tcp', '::1', tcp['::1'])).out).toBe('EPERM');
    expect((await connect(f.cg, 'tcp', '::ffff:127.0.0.3', tcp['127.0.0.3'])).out).toBe('ok');
    expect((await connect(f.cg, 'tcp', '0.0.0.0', tcp['127.0.0.1'])).out).toBe('EPERM');
  });

  it('audit mode decides and records but never blocks', async () => {
    const f = fenced({ 'cgfence.io/mode': 'audit', 'cgfence.io/egress-deny': '127.0.0.2/32' });
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('ok');
    const e = await waitFor('the audit event', () => eventsOf(f.id).find((x) => x.daddr === '127.0.0.2' && x.hook === NetHook.Connect));
    expect(e.action).toBe(ExecAction.Audit);
    const s = fence.stats(f.id)!;
    expect(s.audited.egress).toBeGreaterThanOrEqual(1n);
    expect(s.denied.egress).toBe(0n);
  });
});

describe('ingress', () => {
  it('drops UDP datagrams by source address; the others arrive', async () => {
    const f = fenced({ 'cgfence.io/ingress-deny': '127.0.0.3/32' });
    const port = 20000 + Math.floor(Math.random() * 20000);
    const srv = startIn(f.cg, [probe, 'listen-udp', '127.0.0.1', String(port)]);
    try {
      await waitFor('the listener', () => srv.out.includes('ready'));
      await sendFrom('127.0.0.3', '127.0.0.1', port, ['denied-1', 'denied-2', 'denied-3']);
      await sendFrom('127.0.0.4', '127.0.0.1', port, ['allowed-1', 'end']);
      expect(await srv.done).toBe(0);
      await waitFor('3 ingress refusals', () => fence.stats(f.id)!.denied.ingress >= 3n);
      expect(srv.out.filter((l) => l.startsWith('from'))).toEqual(['from 127.0.0.4 allowed-1', 'from 127.0.0.4 end']);
      const e = await waitFor('the ingress event', () => eventsOf(f.id).find((x) => x.dir === NetDir.Ingress));
      expect(e).toMatchObject({
        saddr: '127.0.0.3',
        daddr: '127.0.0.1',
        dport: port,
        proto: 17,
        hook: NetHook.Skb,
        action: ExecAction.Deny,
      });
    } finally {
      srv.kill();
    }
  });

  it('drops a TCP SYN from a denied source before the listener sees it', async () => {
    const f = fenced({ 'cgfence.io/ingress-deny': '127.0.0.3/32' });
    const port = 20000 + Math.floor(Math.random() * 20000);
    const srv = startIn(f.cg, [probe, 'listen-tcp', '127.0.0.1', String(port)]);
    let denied: net.Socket | undefined;
    try {
      await waitFor('the listener', () => srv.out.includes('ready'));
      denied = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.3' });
      denied.on('error', () => {});
      await waitFor('the dropped SYN', () =>
        eventsOf(f.id).find((x) => x.dir === NetDir.Ingress && x.saddr === '127.0.0.3' && x.proto === 6),
      );
      denied.destroy();
      await new Promise<void>((resolve, reject) => {
        const ok = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.4' }, () => ok.write('end\n'));
        ok.on('data', () => {
          ok.destroy();
          resolve();
        });
        ok.on('error', reject);
      });
      expect(await srv.done).toBe(0);
      expect(srv.out.filter((l) => l.startsWith('accepted'))).toEqual(['accepted 127.0.0.4']);
    } finally {
      denied?.destroy();
      srv.kill();
    }
  });

  it('drops IPv6 from a denied source (::1)', async () => {
    const f = fenced({ 'cgfence.io/ingress-deny': '::1/128' });
    const port = 20000 + Math.floor(Math.random() * 20000);
    const srv = startIn(f.cg, [probe, 'listen-udp', '::1', String(port)]);
    try {
      await waitFor('the listener', () => srv.out.includes('ready'));
      await sendFrom('::1', '::1', port, ['denied-1', 'denied-2']);
      await waitFor('2 ingress refusals', () => fence.stats(f.id)!.denied.ingress >= 2n);
      expect(srv.out.filter((l) => l.startsWith('from'))).toEqual([]);
      const e = await waitFor('the ingress event', () => eventsOf(f.id).find((x) => x.dir === NetDir.Ingress));
      expect(e).toMatchObject({ family: 6, saddr: '::1', dport: port });
    } finally {
      srv.kill();
      await srv.done;
    }
  });
});

describe('audit rate limit', () => {
  it('records the first refusals of a flow one by one, then counts, and the counts add up exactly', async () => {
    const f = fenced({ 'cgfence.io/egress-deny': '127.0.0.2/32' });
    const port = udp['127.0.0.2'].port;
    expect((await runIn(f.cg, [probe, 'sendto', '127.0.0.2', String(port), '200'])).out).toBe('sent 0 eperm 200 other 0');
    const mine = () => records.filter((r) => r.container_id === f.id.toString() && r.type === 'net');
    const total = () => mine().reduce((n, r) => n + (r.count as number), 0);
    await waitFor('200 refusals accounted for', () => {
      auditor.sweep();
      return total() >= 200;
    });
    const single = mine().filter((r) => !r.rate_limited);
    const counted = mine().filter((r) => r.rate_limited);
    expect(total()).toBe(200);
    // One window holds RATE_BURST records; the loop may straddle a window boundary.
    expect(single.length).toBeGreaterThanOrEqual(RATE_BURST);
    expect(single.length).toBeLessThanOrEqual(2 * RATE_BURST);
    expect(counted.length).toBeGreaterThanOrEqual(1);
    expect(counted[0]).toMatchObject({ action: 'deny', daddr: '127.0.0.2', dport: port, direction: 'egress', proto: 'udp' });
    expect(fence.stats(f.id)!.suppressed).toBe(BigInt(200 - single.length));
  });

  it('still reports counts whose flow entry is gone, as a count without a flow', async () => {
    const f = fenced({ 'cgfence.io/egress-deny': '127.0.0.2/32' });
    const port = udp['127.0.0.2'].port;
    expect((await runIn(f.cg, [probe, 'sendto', '127.0.0.2', String(port), '50'])).out).toBe('sent 0 eperm 50 other 0');
    const suppressed = await waitFor('suppressed decisions', () => fence.stats(f.id)!.suppressed || null);
    // Wait for the THROTTLE event, then lose the flow as an LRU eviction would.
    await waitFor('the throttle event', () => events.find((e) => e.fenceId === f.id && e.kind === 'net-throttle'));
    fence.deleteFlows(f.id);
    const mine = () => records.filter((r) => r.container_id === f.id.toString() && r.rate_limited);
    await waitFor('the unattributed count', () => {
      auditor.sweep();
      return mine().reduce((n, r) => n + (r.count as number), 0) >= Number(suppressed);
    });
    expect(mine().reduce((n, r) => n + (r.count as number), 0)).toBe(Number(suppressed));
    expect(mine()[0]).toMatchObject({ daddr: null, action: 'deny' });
  });
});

describe('live update and detach', () => {
  it('replaces the rules atomically through the other generation, leaving no stale entries', async () => {
    const f = fenced({ 'cgfence.io/egress-deny': '127.0.0.2/32' });
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('EPERM');
    fence.setRules(f.id, rules({ 'cgfence.io/egress-deny': '127.0.0.3/32,::1/128' }));
    expect(fence.config(f.id)!.gen).toBe(1);
    expect(new Set(fence.entries(f.id).map((e) => e.gen))).toEqual(new Set([1]));
    expect(fence.entries(f.id)).toHaveLength(2);
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('ok');
    expect((await connect(f.cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('EPERM');
    fence.setRules(f.id, rules({ 'cgfence.io/mode': 'audit', 'cgfence.io/egress-deny': '127.0.0.3/32' }));
    expect(fence.config(f.id)!.gen).toBe(0);
    expect((await connect(f.cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('ok');
  });

  it('detach removes every link, pin and rule entry, and the cgroup is unfenced', async () => {
    const f = fenced({ 'cgfence.io/egress-deny': '127.0.0.2/32' });
    const links = fence.linkIds(f.id);
    expect(links).toHaveLength(6);
    const linked = () =>
      (JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' }) || '[]') as Array<{ id: number }>).filter((l) =>
        links.includes(l.id),
      );
    expect(linked()).toHaveLength(6);
    expect(fs.readdirSync(path.join(pinDir, f.id.toString())).sort()).toHaveLength(6);
    const last = fence.detach(f.id);
    expect(last).not.toBeNull();
    expect(linked()).toHaveLength(0);
    expect(fs.existsSync(path.join(pinDir, f.id.toString()))).toBe(false);
    expect(fence.entries(f.id)).toHaveLength(0);
    expect(fence.config(f.id)).toBeNull();
    expect((await connect(f.cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('ok');
  });

  it('outlives its process: closed without detach it keeps enforcing, and a new instance adopts, updates and detaches it', async () => {
    const pins = `${pinDir}-restart`;
    const first = NetFence.open({ pinDir: pins });
    const cg = createCgroup(`${name}/restart`);
    cgroups.push(cg);
    const id = cgroupId(cg);
    let second: NetFence | undefined;
    try {
      first.attach(cg, rules({ 'cgfence.io/egress-deny': '127.0.0.2/32' }));
      first.close();
      expect((await connect(cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('EPERM');
      second = NetFence.open({ pinDir: pins });
      expect(second.fences().map((f) => f.fenceId)).toEqual([id]);
      expect(second.isAttached(id)).toBe(true);
      second.setRules(id, rules({ 'cgfence.io/egress-deny': '127.0.0.3/32' }));
      expect((await connect(cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('ok');
      expect((await connect(cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('EPERM');
      expect(second.detach(id)!.denied.egress).toBe(2n);
      expect((await connect(cg, 'tcp', '127.0.0.3', tcp['127.0.0.3'])).out).toBe('ok');
    } finally {
      first.close({ detach: true });
      second?.close({ detach: true });
      if (fs.existsSync(pins)) fs.rmSync(pins, { recursive: true, force: true });
    }
  });

  it('closing with detach leaves no program, map, link or pin of ours in the kernel', async () => {
    // A second instance on its own pins, so this test does not depend on the others' state.
    const pins = `${pinDir}-close`;
    const other = NetFence.open({ pinDir: pins });
    const cg = createCgroup(`${name}/close`);
    cgroups.push(cg);
    try {
      other.attach(cg, rules({ 'cgfence.io/egress-deny': '127.0.0.2/32' }));
      const ids = other.objectIds();
      const links = other.linkIds(cgroupId(cg));
      other.close({ detach: true });
      expect(fs.existsSync(pins)).toBe(false);
      const show = (kind: string) =>
        (JSON.parse(execFileSync('bpftool', ['-j', kind, 'show'], { encoding: 'utf8' }) || '[]') as Array<{ id: number }>).map((x) => x.id);
      // The kernel frees programs and maps after an RCU grace period.
      await waitFor('programs, maps and links to go', () => {
        const progs = show('prog'),
          maps = show('map'),
          ls = show('link');
        return (
          Object.values(ids.programs).every((id) => !progs.includes(id)) &&
          Object.values(ids.maps).every((id) => !maps.includes(id)) &&
          links.every((id) => !ls.includes(id))
        );
      });
      expect((await connect(cg, 'tcp', '127.0.0.2', tcp['127.0.0.2'])).out).toBe('ok');
    } finally {
      other.close({ detach: true });
      if (fs.existsSync(pins)) fs.rmSync(pins, { recursive: true, force: true });
    }
  });
});
