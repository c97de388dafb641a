// Seccomp decisions in cgfence's audit log: enforce-mode denials (SCMP_ACT_NOTIFY answered
// EPERM by the daemon's notify loop) and audit-mode logs (SCMP_ACT_LOG, read from the kernel's
// audit multicast group) of real containers become `seccomp` records attributed to the
// container, one at once and then counted (rate-limited), with the rest written before the
// container's detach record. The parser and the rate limit are checked on their own too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { AuditInput, AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { FencedContainer } from '../src/fence/backend';
import { EventSink } from '../src/fence/event-sink';
import { SeccompLogRecords } from '../src/fence/seccomp/seccomp-log-records';
import { SECCOMP_RET, SeccompLogRecord, parseSeccompLog } from '../src/kernel/seccomp-audit';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { scrapeMetrics } from './helpers/metrics';
import { cid, cli, ctr, runFenced, sandboxDir } from './helpers/sandbox';

describe('the kernel seccomp log record parser', () => {
  it('reads what the kernel writes, hex-encoded names included', () => {
    const r = parseSeccompLog(
      'audit(1796038142.940:11): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=12409 comm="logme" exe="/tmp/fr/logme" sig=0 arch=c000003e syscall=83 compat=0 ip=0x7fa4b917ef37 code=0x50000',
      '/default/c1',
    );
    expect(r).toEqual({
      tsMs: 1796038142940,
      pid: 12409,
      uid: 0,
      comm: 'logme',
      exe: '/tmp/fr/logme',
      arch: 'x86_64',
      syscall: 83,
      code: SECCOMP_RET.ERRNO,
      cgroup: '/default/c1',
    });
    const hex = parseSeccompLog(
      'audit(1.5:2): auid=1 uid=7 gid=0 ses=1 pid=3 comm=6120622063 exe="/x" sig=0 arch=40000003 syscall=39 compat=1 ip=0x1 code=0x7ffc0000',
    );
    expect(hex).toMatchObject({ comm: 'a b c', arch: 'x86', code: SECCOMP_RET.LOG, uid: 7 });
    expect(parseSeccompLog('not a record')).toBeNull();
  });
});

describe('rate limiting', () => {
  function sinkFor(owner: Partial<FencedContainer>): { sink: EventSink; written: AuditInput[] } {
    const written: AuditInput[] = [];
    return {
      written,
      sink: { write: (r) => written.push(...r), toWallNs: (m) => m, owner: () => owner as FencedContainer },
    };
  }
  const rec = (ms: number, over: Partial<SeccompLogRecord> = {}): SeccompLogRecord => ({
    tsMs: ms,
    pid: 10,
    uid: 0,
    comm: 'mkdir',
    exe: '/bin/busybox',
    arch: 'x86_64',
    syscall: 83,
    code: SECCOMP_RET.ERRNO,
    cgroup: '/default/c1',
    ...over,
  });

  it('writes the first decision at once, counts the rest, and writes them before the container goes', () => {
    let now = 1000;
    const { sink, written } = sinkFor({
      namespace: 'default',
      id: 'c1',
      mode: 'enforce',
      annotations: { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' },
    });
    const r = new SeccompLogRecords(sink, 1000, () => now);
    r.watch('42', '/default/c1');
    r.onRecords([
      rec(1),
      rec(2),
      rec(3),
      rec(4, { cgroup: '/default/c1/sub' }),
      rec(5, { cgroup: '/other' }),
      rec(6, { code: SECCOMP_RET.USER_NOTIF }),
    ]);
    expect(written.length).toBe(1);
    expect(written[0]).toMatchObject({
      type: 'seccomp',
      action: 'deny',
      namespace: 'default',
      container_id: 'c1',
      syscall: 'mkdir',
      count: 1,
      rule: 'cgfence.io/seccomp-deny',
      seccomp_action: 'SCMP_ACT_ERRNO',
    });
    expect(r.unattributed).toBe(1);
    now += 1500; // a later decision after the interval writes what was counted, itself included
    r.onRecords([rec(1600)]);
    expect(written.length).toBe(2);
    expect(written[1]).toMatchObject({ count: 4 });
    r.onRecords([rec(1700), rec(1800)]);
    expect(written.length).toBe(2);
    r.unwatch('42');
    expect(written.length).toBe(3);
    expect(written[2]).toMatchObject({ count: 2, first_ts: '1970-01-01T00:00:01.700000000Z', last_ts: '1970-01-01T00:00:01.800000000Z' });
    r.onRecords([rec(1900)]);
    expect(written.length).toBe(3);
    expect(r.unattributed).toBe(2);
  });
});

describe("rate limiting of the notify loop's counted denials", () => {
  it('writes the first at once, then counts batches exactly, the rest before the container goes', () => {
    let now = 1000;
    const written: AuditInput[] = [];
    const owner = {
      namespace: 'default',
      id: 'c1',
      mode: 'enforce',
      annotations: { 'cgfence.io/seccomp-deny': 'mkdir' },
    } as Partial<FencedContainer>;
    const sink: EventSink = { write: (r) => written.push(...r), toWallNs: (m) => m, owner: () => owner as FencedContainer };
    const r = new SeccompLogRecords(sink, 1000, () => now);
    const batch = (count: number, ms: number, fenceId = '42') => ({
      fenceId,
      arch: 'x86_64',
      syscall: 83,
      count,
      pid: 7,
      comm: 'sh',
      firstMs: ms,
      lastMs: ms + 1,
    });
    r.onNotified(batch(5, 10, '43')); // not watched
    expect(written).toEqual([]);
    expect(r.unattributed).toBe(5);
    r.watchFence('42');
    r.onNotified(batch(500, 10));
    expect(written).toHaveLength(1);
    expect(written[0]).toMatchObject({
      type: 'seccomp',
      action: 'deny',
      syscall: 'mkdir',
      count: 1,
      seccomp_action: 'SCMP_ACT_NOTIFY',
      errno: 'EPERM',
      via: 'seccomp-notify',
      rule: 'cgfence.io/seccomp-deny',
    });
    r.onNotified(batch(1000, 20));
    expect(written).toHaveLength(1);
    now += 1000;
    r.onNotified(batch(1, 1030));
    expect(written).toHaveLength(2);
    expect(written[1]).toMatchObject({ count: 1500 });
    r.onNotified(batch(8499, 1040));
    r.unwatch('42');
    expect(written).toHaveLength(3);
    expect(written.reduce((n, w) => n + Number(w.count), 0)).toBe(10_000);
    r.onNotified(batch(1, 2000));
    expect(written).toHaveLength(3);
    // The fd-holder's count of a time without a daemon: one record at once, whole, with no caller.
    r.watchFence('42');
    r.onNotified({ ...batch(7, 3000), pid: 0, comm: '', byHolder: true });
    expect(written[3]).toMatchObject({ count: 7, via: 'fd-holder', pid: 0, comm: '', first_ts: null, syscall: 'mkdir', errno: 'EPERM' });
    r.onNotified({ ...batch(2, 3000), syscall: -1, arch: '', pid: 0, comm: '', byHolder: true });
    expect(written[4]).toMatchObject({ count: 2, via: 'fd-holder', syscall: 'several', syscall_nr: null });
  });
});

describe('seccomp records of real containers', () => {
  const dir = sandboxDir('scaud');
  let p: SandboxPaths;
  beforeAll(async () => {
    p = await sandboxUp(dir);
  });
  afterAll(async () => {
    await sandboxDown(dir).catch((e) => console.error(e));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function recordsOf(id: string): Promise<AuditRecord[]> {
    return readRecords(p.auditLog, { container: id });
  }
  async function until(id: string, pred: (rs: AuditRecord[]) => boolean): Promise<AuditRecord[]> {
    const end = Date.now() + 20_000;
    for (;;) {
      const rs = await recordsOf(id);
      if (pred(rs) || Date.now() > end) return rs;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('audit: 200 logged mkdirs run, and are one record at once and counts, all before the detach record', async () => {
    const id = cid('sclog');
    const r = runFenced(p, id, { 'cgfence.io/mode': 'audit', 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' }, [
      '/bin/sh',
      '-c',
      'i=0; n=0; while [ $i -lt 200 ]; do mkdir /tmp/d$i && n=$((n+1)); i=$((i+1)); done; echo made=$n',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('made=200');
    const rs = await until(id, (x) => x.some((y) => y.action === 'detach'));
    const sc = rs.filter((x) => x.type === 'seccomp');
    expect(sc.length).toBeGreaterThanOrEqual(1);
    expect(sc.length).toBeLessThan(20); // rate-limited: never one record per call
    for (const s of sc) {
      expect(s).toMatchObject({
        action: 'audit',
        namespace: 'default',
        container_id: id,
        seccomp_action: 'SCMP_ACT_LOG',
        rule: 'cgfence.io/seccomp-deny',
        arch: 'x86_64',
        mode: 'audit',
      });
      expect(['mkdir', 'mkdirat']).toContain(s.syscall);
    }
    expect(sc[0].count).toBe(1);
    expect(sc.reduce((n, s) => n + Number(s.count), 0)).toBe(200);
    const detach = rs.findIndex((x) => x.action === 'detach');
    expect(rs.findIndex((x) => x.type === 'seccomp')).toBeLessThan(detach);
    expect(rs.slice(detach + 1).filter((x) => x.type === 'seccomp')).toEqual([]);
  });

  const seccompOf = (rs: AuditRecord[]) => rs.filter((x) => x.type === 'seccomp');
  /** cgfence_decisions_total{control="seccomp",action="deny"}, summed over its other labels. */
  async function seccompDenyMetric(): Promise<number> {
    return (await scrapeMetrics(p))
      .split('\n')
      .filter((l) => l.startsWith('cgfence_decisions_total{') && l.includes('control="seccomp"') && l.includes('action="deny"'))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  }
  const total = (rs: AuditRecord[]) => rs.reduce((n, s) => n + Number(s.count), 0);
  function beforeDetach(rs: AuditRecord[]): void {
    const detach = rs.findIndex((x) => x.action === 'detach');
    expect(detach).toBeGreaterThan(-1);
    expect(rs.slice(detach + 1).filter((x) => x.type === 'seccomp')).toEqual([]);
  }

  it('enforce: a denied mkdir fails with EPERM and a seccomp deny record names the container, the syscall and the rule', async () => {
    const id = cid('scdeny');
    const r = runFenced(p, id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' }, [
      '/bin/sh',
      '-c',
      'mkdir /tmp/d; echo rc=$?; [ ! -e /tmp/d ] && echo absent',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toContain('Operation not permitted');
    expect(r.stdout).toContain('rc=1');
    expect(r.stdout).toContain('absent');
    const rs = await until(id, (x) => x.some((y) => y.action === 'detach'));
    const sc = seccompOf(rs);
    expect(sc.length).toBeGreaterThanOrEqual(1);
    expect(sc[0]).toMatchObject({
      action: 'deny',
      namespace: 'default',
      container_id: id,
      syscall: 'mkdir',
      arch: 'x86_64',
      seccomp_action: 'SCMP_ACT_NOTIFY',
      errno: 'EPERM',
      rule: 'cgfence.io/seccomp-deny',
      mode: 'enforce',
      via: 'seccomp-notify',
      count: 1,
      comm: 'mkdir',
    });
    expect(total(sc)).toBe(1);
    beforeDetach(rs);
    const attach = rs.find((x) => x.action === 'attach');
    expect((attach?.backends as Record<string, string>).seccomp).toBe('oci-seccomp, seccomp notify, recorded');
  });

  it("enforce: 10,000 denied mkdirs are a few records whose counts add up to exactly 10,000, before the detach record; a neighbour's own denial is still recorded and the daemon answers meanwhile", async () => {
    const id = cid('scflood');
    const nb = cid('scnb');
    // The neighbour waits for the flood to be under way, then is denied once.
    const deny0 = await seccompDenyMetric();
    const flood = ctr(p, [
      'run',
      '-d',
      '--runc-binary',
      p.runc,
      '--annotation',
      'cgfence.io/seccomp-deny=mkdir,mkdirat',
      'cgfence.local/test:latest',
      id,
      '/bin/sh',
      '-c',
      'i=0; n=0; while [ $i -lt 10000 ]; do mkdir /tmp/d 2>/dev/null || n=$((n+1)); i=$((i+1)); done; echo denied=$n > /tmp/done; sleep 1000',
    ]);
    expect(flood.status, flood.stderr).toBe(0);
    let neighbourDenied = '';
    try {
      await until(id, (x) => seccompOf(x).length > 0);
      // While the flood runs: the daemon answers, a neighbour starts, is denied and recorded.
      const t0 = Date.now();
      const st = cli(p, ['status']);
      expect(st.status, st.stderr).toBe(0);
      const statusMs = Date.now() - t0;
      const n = runFenced(p, nb, { 'cgfence.io/seccomp-deny': 'rmdir' }, ['/bin/sh', '-c', 'mkdir /tmp/x && rmdir /tmp/x; echo rc=$?']);
      expect(n.status, n.stderr).toBe(0);
      expect(n.stdout).toContain('rc=1');
      const nrs = await until(nb, (x) => x.some((y) => y.action === 'detach'));
      expect(seccompOf(nrs).map((x) => [x.syscall, x.count, x.container_id])).toEqual([['rmdir', 1, nb]]);
      neighbourDenied = String(seccompOf(nrs)[0].last_ts);
      // The flood's loop ends: every one of its mkdirs was refused.
      const end = Date.now() + 120_000;
      for (;;) {
        const c = ctr(p, ['task', 'exec', '--exec-id', `cat${Date.now()}`, id, 'cat', '/tmp/done']);
        if (c.stdout.includes('denied=')) {
          expect(c.stdout.trim()).toBe('denied=10000');
          break;
        }
        if (Date.now() > end) throw new Error(`the flood did not end: ${c.stdout} ${c.stderr}`);
        await new Promise((r) => setTimeout(r, 500));
      }
      console.log(`status during the flood: ${statusMs} ms`);
    } finally {
      ctr(p, ['task', 'kill', '-s', 'SIGKILL', id]);
      await new Promise((r) => setTimeout(r, 500));
      ctr(p, ['task', 'delete', '-f', id]);
      ctr(p, ['container', 'delete', id]);
    }
    const rs = await until(id, (x) => x.some((y) => y.action === 'detach'));
    const sc = seccompOf(rs);
    expect(sc.every((x) => x.syscall === 'mkdir' && x.container_id === id && x.action === 'deny')).toBe(true);
    expect(sc.length).toBeLessThan(200); // rate-limited: never one record per call
    expect(sc[0].count).toBe(1);
    expect(total(sc)).toBe(10_000);
    beforeDetach(rs);
    // The node's decision metric counts every one, the neighbour's included.
    expect((await seccompDenyMetric()) - deny0).toBe(10_001);
    // The neighbour was denied while the flood was still being denied.
    const floodEnd = String(sc[sc.length - 1].last_ts);
    console.log(`flood ${String(sc[0].first_ts)} .. ${floodEnd}, neighbour denied at ${neighbourDenied}, ${sc.length} records`);
    expect(neighbourDenied < floodEnd).toBe(true);
  });

  it('enforce: seccomp-allow fails an unlisted syscall with EPERM and records it', async () => {
    const id = cid('scallow');
    // What busybox sh, echo, ls and mkdir need besides RUNC_INIT_SYSCALLS (test/seccomp.test.ts); mkdir left out.
    const allow =
      'write,brk,mprotect,getuid,rt_sigaction,arch_prctl,set_tid_address,set_robust_list,prlimit64,getrandom,rseq,wait4,uname,readlink,ioctl,vfork,fork,clone';
    const r = runFenced(p, id, { 'cgfence.io/seccomp-allow': allow }, ['/bin/sh', '-c', 'echo started; mkdir /tmp/d; echo mkdir=$?']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('started');
    expect(r.stdout).toContain('mkdir=1');
    expect(r.stderr).toContain('Operation not permitted');
    const rs = await until(id, (x) => x.some((y) => y.action === 'detach'));
    const mk = seccompOf(rs).filter((x) => x.syscall === 'mkdir');
    expect(mk.length).toBe(1);
    expect(mk[0]).toMatchObject({
      action: 'deny',
      container_id: id,
      rule: 'cgfence.io/seccomp-allow',
      seccomp_action: 'SCMP_ACT_NOTIFY',
      errno: 'EPERM',
      count: 1,
    });
    beforeDetach(rs);
  });

  it("an unfenced container's seccomp log is not attributed to anyone", async () => {
    const id = cid('scplain');
    const r = ctr(p, ['run', '--rm', '--runc-binary', p.runc, 'cgfence.local/test:latest', id, '/bin/sh', '-c', 'true']);
    expect(r.status, r.stderr).toBe(0);
    expect((await recordsOf(id)).filter((x) => x.type === 'seccomp')).toEqual([]);
  });
});
