// Learn mode round trips with real containerd and runc, for the workloads people learn from:
// jobs that live a few milliseconds (the learned policy is asked for the moment `ctr run`
// returns, 20 times in a row, and each applies with zero denials), a long-lived server
// stopped with `ctr task kill`, several runs merged into one policy, a pod's containers in
// yaml, and a direction with no peer (empty, and denied as the output says).
import { SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { recordsOf, waitRecord } from './helpers/container-records';
import { parseLearned } from './helpers/learn-output';
import { cid, cli, ctr, IMAGE, removeContainer, runFencedBounded, sandboxDir, waitFor } from './helpers/sandbox';
import { mapField } from '../src/audit/audit-read';

const dir = sandboxDir('lrt');
let p: SandboxPaths;

// A job of a few milliseconds: a second binary, a connection to a loopback port nobody
// listens on (refused: one packet each way, so one egress and one ingress peer), done. It
// reports how long it ran on stderr, from /proc/uptime (10 ms ticks).
const JOB =
  'read t0 _ </proc/uptime; (exec -a echo /usr/local/bin/tool-a tool-a-ran); nc 127.0.0.1 7001 </dev/null; echo nc-rc=$?; echo job-done; read t1 _ </proc/uptime; echo "ran $t0 $t1" >&2';
const JOB_OUT = 'tool-a-ran\nnc-rc=1\njob-done\n';

/** `ctr run --rm` through cgfence-runc; a hung container is killed and removed, so the test fails instead. */
function run(id: string, annotations: Record<string, string>, argv: string[]): SpawnSyncReturns<string> {
  return runFencedBounded(p, id, annotations, argv, 60_000);
}

/**
 * The container ran under the policy with no denial of any kind: no deny record, no exec
 * denial counted. (The network counters live in the cgroup's storage and are gone when runc
 * removed the cgroup before the daemon handled the exit, so they are checked when present;
 * every network denial also writes a deny record, and the callers check the output.)
 */
async function expectNoDenials(id: string): Promise<void> {
  const detach = await waitRecord(p, id, (x) => x.type === 'lifecycle' && x.action === 'detach', `detach record of ${id}`);
  expect(detach.denied, `exec denials of ${id}`).toBe(0);
  for (const k of ['net_denied_egress', 'net_denied_ingress', 'net_records_lost'])
    if (k in detach) expect(detach[k], `${k} of ${id}`).toBe(0);
  expect((await recordsOf(p, id)).filter((x) => x.action === 'deny')).toEqual([]);
}

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('a job that lives a few milliseconds', () => {
  const learnIds: string[] = [];
  let last: Record<string, string> = {};

  it('20 times in a row: learned the moment ctr returns, every policy applies with zero denials', async () => {
    const ranMs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const learnId = cid(`job${i}`);
      learnIds.push(learnId);
      const l = run(learnId, { 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', JOB]);
      expect(l.status, l.stderr).toBe(0);
      expect(l.stdout).toBe(JOB_OUT);
      const ran = /ran ([\d.]+) ([\d.]+)/.exec(l.stderr);
      if (ran) ranMs.push(Math.round((Number(ran[2]) - Number(ran[1])) * 1000));

      // No wait for the exit record: the daemon answers, or the record is already written.
      const out = cli(p, ['learn', learnId]);
      expect(out.status, out.stderr).toBe(0);
      expect(out.stderr, `run ${i}`).not.toMatch(/warning/);
      const learned = parseLearned(out.stdout);
      expect(learned['cgfence.io/exec-allow'], `run ${i}`).toBe('/bin/busybox,/usr/local/bin/tool-a');
      expect(learned['cgfence.io/egress-allow'], `run ${i}`).toBe('127.0.0.1/32');
      expect(learned['cgfence.io/ingress-allow'], `run ${i}`).toBe('127.0.0.1/32');
      expect(learned['cgfence.io/seccomp-allow'].split(','), `run ${i}`).toEqual(
        expect.arrayContaining(['execve', 'socket', 'connect', 'exit_group']),
      );

      const enforceId = cid(`jobe${i}`);
      const e = run(enforceId, learned, ['/bin/sh', '-c', JOB]);
      expect(e.status, e.stderr).toBe(0);
      expect(e.stdout, `enforce run ${i}: ${e.stderr}`).toBe(JOB_OUT);
      expect(e.stderr).not.toMatch(/Operation not permitted|Permission denied/);
      await expectNoDenials(enforceId);
      last = learned;
    }
    // How long the learned jobs ran (0 means within one 10 ms tick), for the record.
    console.log(`learn round trip: job run times in ms (10 ms ticks): ${ranMs.join(' ')}`);
  });

  it('the exit record says the same as the answer given at once', async () => {
    const id = learnIds[learnIds.length - 1];
    const rec = await waitRecord(p, id, (x) => x.type === 'lifecycle' && x.action === 'learned', 'learned record');
    expect(mapField(rec.annotations)).toEqual(last);
  });

  it('a new binary, a new peer and a new syscall are each denied', async () => {
    const bin = run(cid('newbin'), last, [
      '/bin/sh',
      '-c',
      `${JOB}; (exec -a echo /usr/local/bin/tool-b NEW-BINARY-RAN); echo tool-b-rc=$?`,
    ]);
    expect(bin.stdout).toContain('job-done');
    expect(bin.stdout).not.toContain('NEW-BINARY-RAN');
    expect(bin.stdout).toMatch(/tool-b-rc=126/);
    expect(bin.stderr).toMatch(/tool-b: Permission denied/);

    const peer = run(cid('newpeer'), last, ['/bin/sh', '-c', `${JOB}; nc 127.0.0.2 7001 </dev/null; echo new-peer-rc=$?`]);
    expect(peer.stdout).toContain('job-done');
    expect(peer.stdout).toContain('new-peer-rc=1');
    expect(peer.stderr).toMatch(/127\.0\.0\.2.*Operation not permitted/);

    const sys = run(cid('newsys'), last, ['/bin/sh', '-c', `${JOB}; mkdir /tmp/new-dir; echo mkdir-rc=$?`]);
    expect(sys.stdout).toContain('job-done');
    expect(sys.stdout).toContain('mkdir-rc=1');
    expect(sys.stderr).toMatch(/mkdir: can't create directory '\/tmp\/new-dir': Operation not permitted/);
  });

  it('the 20 runs merge into one policy; --json says where each item came from and how often', () => {
    const out = cli(p, ['learn', ...learnIds, '--json']);
    expect(out.status, out.stderr).toBe(0);
    const j = JSON.parse(out.stdout) as {
      annotations: Record<string, string>;
      sources: Array<{ id: string }>;
      exec: Array<{ path: string; count: number; seenIn: Array<{ container: string; count: number }> }>;
      network: { peers: Array<{ direction: string; address: string; seenIn: unknown[] }> };
      syscalls: { seenIn: Record<string, string[]> };
    };
    expect(j.annotations).toEqual(
      expect.objectContaining({
        'cgfence.io/exec-allow': '/bin/busybox,/usr/local/bin/tool-a',
        'cgfence.io/egress-allow': '127.0.0.1/32',
        'cgfence.io/ingress-allow': '127.0.0.1/32',
      }),
    );
    expect(j.sources.map((s) => s.id).sort()).toEqual([...learnIds].sort());
    const toolA = j.exec.find((e) => e.path === '/usr/local/bin/tool-a')!;
    expect(toolA.seenIn.map((s) => s.container).sort()).toEqual(learnIds.map((id) => `${SANDBOX_NAMESPACE}/${id}`).sort());
    expect(toolA.seenIn.every((s) => s.count === 1)).toBe(true);
    expect(toolA.count).toBe(20);
    expect(j.network.peers.every((x) => x.seenIn.length === 20)).toBe(true);
    expect(j.syscalls.seenIn.connect).toHaveLength(20);
  });
});

describe('files created at run time', () => {
  it('are reported as such in the text and the JSON, and left out of exec-allow', () => {
    // /tmp/gone is removed right after it ran: mapped while it still exists it is "runtime";
    // found only after, it keeps the path the kernel saw and is "unknown". Either way it is out.
    const id = cid('rtfile');
    const r = run(id, { 'cgfence.io/mode': 'learn' }, [
      '/bin/sh',
      '-c',
      'cp /usr/local/bin/tool-a /tmp/mine; (exec -a echo /tmp/mine mine-ran); cp /tmp/mine /tmp/gone; (exec -a echo /tmp/gone gone-ran); rm /tmp/gone',
    ]);
    expect(r.stdout).toBe('mine-ran\ngone-ran\n');
    const out = cli(p, ['learn', id]);
    expect(out.status, out.stderr).toBe(0);
    expect(parseLearned(out.stdout)['cgfence.io/exec-allow']).toBe('/bin/busybox');
    expect(out.stderr).toContain('warning: executable /tmp/mine (run as "/tmp/mine") was created or changed at run time');
    expect(out.stderr).toMatch(
      /warning: executable \/tmp\/gone \(run as "\/tmp\/gone"\) (was created or changed at run time|was there when it ran, but no such file is in the container's root filesystem any more)/,
    );
    const j = JSON.parse(cli(p, ['learn', id, '--json']).stdout) as { exec: Array<{ path: string; origin: string }>; warnings: string[] };
    expect(j.exec.map((e) => e.path)).toEqual(['/bin/busybox', '/tmp/gone', '/tmp/mine']);
    expect(j.exec.map((e) => e.origin)).toEqual(['image', expect.stringMatching(/^(runtime|unknown)$/), 'runtime']);
    expect(j.warnings).toHaveLength(2);
  });
});

describe('names that lead nowhere once the job is gone', () => {
  it("a relative name whose working directory died with the job maps to the file's own path", () => {
    const id = cid('relname');
    const r = run(id, { 'cgfence.io/mode': 'learn' }, [
      '/bin/sh',
      '-c',
      'cd /usr/local/bin && (exec -a echo ./tool-a rel-ran); cd / && /bin/ls -d / >/dev/null; echo done',
    ]);
    expect(r.stdout).toBe('rel-ran\ndone\n');
    const out = cli(p, ['learn', id, '--json']);
    expect(out.status, out.stderr).toBe(0);
    const j = JSON.parse(out.stdout) as {
      annotations: Record<string, string>;
      exec: Array<{ path: string; names: string[] }>;
      warnings: string[];
    };
    expect(j.annotations['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a');
    expect(j.exec.find((e) => e.path === '/usr/local/bin/tool-a')?.names).toContain('./tool-a');
    expect(j.warnings).toEqual([]);
  });
});

describe('a direction with no peer', () => {
  it('is empty, says it denies all, and the enforce run denies as it says', async () => {
    const id = cid('nonet');
    expect(run(id, { 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', 'echo quiet']).stdout).toBe('quiet\n');
    const out = cli(p, ['learn', id]);
    expect(out.status, out.stderr).toBe(0);
    const learned = parseLearned(out.stdout);
    expect(learned['cgfence.io/egress-allow']).toBe('');
    expect(learned['cgfence.io/ingress-allow']).toBe('');
    expect(out.stderr).toContain('note: cgfence.io/egress-allow is empty: no egress peer was seen; applied, it denies all egress');
    expect(out.stderr).toContain('note: cgfence.io/ingress-allow is empty: no ingress peer was seen; applied, it denies all ingress');
    const j = JSON.parse(cli(p, ['learn', id, '--json']).stdout) as { meanings: Record<string, string> };
    expect(Object.keys(j.meanings).sort()).toEqual(['cgfence.io/egress-allow', 'cgfence.io/ingress-allow']);

    const same = cid('nonete');
    expect(run(same, learned, ['/bin/sh', '-c', 'echo quiet']).stdout).toBe('quiet\n');
    await expectNoDenials(same);
    // Without the learned seccomp-allow: the run never made socket(), which would be refused
    // before any packet; here the network rule itself is what denies.
    const { 'cgfence.io/seccomp-allow': _sys, ...network } = learned;
    const denied = cid('nonetd');
    const d = run(denied, network, ['/bin/sh', '-c', 'echo quiet; nc 127.0.0.1 7001 </dev/null; echo nc-rc=$?']);
    expect(d.stdout).toBe('quiet\nnc-rc=1\n');
    expect(d.stderr).toContain('Operation not permitted');
    const deny = await waitRecord(p, denied, (x) => x.type === 'net' && x.action === 'deny', 'net deny record');
    expect(deny.daddr).toBe('127.0.0.1');
  });
});

describe('a pod', () => {
  it('--pod merges the containers of one pod into pod annotations (yaml) that fence all of them', async () => {
    // What containerd's CRI puts on every container of a pod.
    const pod = { 'io.kubernetes.cri.sandbox-namespace': 'shop', 'io.kubernetes.cri.sandbox-name': `web-${cid('p')}` };
    const a = cid('poda');
    const b = cid('podb');
    const other = cid('podx');
    // (A script of one subshell alone is exec'd without a fork: "; echo" makes the shell fork.)
    expect(
      run(a, { ...pod, 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', '(exec -a echo /usr/local/bin/tool-a a-ran); echo a-done']).stdout,
    ).toBe('a-ran\na-done\n');
    expect(run(b, { ...pod, 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', 'echo b-ran']).stdout).toBe('b-ran\n');
    expect(run(other, { 'cgfence.io/mode': 'learn' }, ['/bin/sh', '-c', '(exec -a echo /usr/local/bin/tool-b other-ran)']).stdout).toBe(
      'other-ran\n',
    );

    const out = cli(p, ['learn', '--pod', `shop/${pod['io.kubernetes.cri.sandbox-name']}`, '--format', 'yaml']);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/^# cgfence learn: what 2 containers/);
    expect(out.stdout).toContain('# empty: no egress peer was seen; applied, it denies all egress');
    const doc = YAML.parse(out.stdout) as { metadata: { annotations: Record<string, string> } };
    const ann = doc.metadata.annotations;
    expect(ann['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a');
    expect(ann['cgfence.io/egress-allow']).toBe('');

    // Each container of the pod runs under the pod's policy with no denial; the binary of a
    // container outside the pod is denied.
    for (const [tag, script, want] of [
      ['poda2', '(exec -a echo /usr/local/bin/tool-a a-ran); echo a-done', 'a-ran\na-done\n'],
      ['podb2', 'echo b-ran', 'b-ran\n'],
    ]) {
      const id = cid(tag);
      const r = run(id, ann, ['/bin/sh', '-c', script]);
      expect(r.stdout, r.stderr).toBe(want);
      await expectNoDenials(id);
    }
    const outside = cid('podc2');
    const c = run(outside, ann, ['/bin/sh', '-c', '(exec -a echo /usr/local/bin/tool-b other-ran); echo rc=$?']);
    expect(c.stdout).toBe('rc=126\n');
    const deny = await waitRecord(p, outside, (x) => x.type === 'exec' && x.action === 'deny', 'exec deny record');
    expect(deny.path).toBe('/usr/local/bin/tool-b');

    const bad = cli(p, ['learn', '--pod', 'shop']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--pod "shop": expected NAMESPACE\/NAME/);
    const none = cli(p, ['learn', '--pod', 'shop/no-such-pod']);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/nothing learned for pod shop\/no-such-pod/);
  });
});

describe('a long-lived server stopped with ctr task kill', () => {
  const SERVER = 'trap "echo stopping; exit 0" TERM; nc -ll -p 7002 -e /bin/cat & while :; do sleep 1; done';
  const CLIENT =
    'i=0; until echo ping | nc 127.0.0.1 7002 | grep -q ping; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 1; done; echo client-ok';

  async function serve(id: string, annotations: Record<string, string>): Promise<void> {
    const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
    const start = ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', SERVER]);
    expect(start.status, start.stderr).toBe(0);
    try {
      const c = ctr(p, ['task', 'exec', '--exec-id', 'client', id, '/bin/sh', '-c', CLIENT]);
      expect(c.stdout, c.stderr).toContain('client-ok');
      const k = ctr(p, ['task', 'kill', id]);
      expect(k.status, k.stderr).toBe(0);
      await waitFor(
        'the server to stop on SIGTERM',
        () =>
          !/RUNNING/.test(
            ctr(p, ['task', 'ls'])
              .stdout.split('\n')
              .find((l) => l.startsWith(`${id} `)) ?? '',
          ),
        20_000,
      );
    } finally {
      await removeContainer(p, id);
    }
  }

  it('learns the server and its client, and the learned policy serves again with zero denials', async () => {
    const id = cid('srv');
    await serve(id, { 'cgfence.io/mode': 'learn' });
    const out = cli(p, ['learn', id]);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stderr).not.toMatch(/warning/);
    const learned = parseLearned(out.stdout);
    expect(learned['cgfence.io/exec-allow']).toBe('/bin/busybox');
    expect(learned['cgfence.io/egress-allow']).toBe('127.0.0.1/32');
    expect(learned['cgfence.io/ingress-allow']).toBe('127.0.0.1/32');
    const sys = learned['cgfence.io/seccomp-allow'].split(',');
    expect(sys).toEqual(expect.arrayContaining(['bind', 'listen']));
    expect(sys.some((s) => s === 'accept' || s === 'accept4')).toBe(true);

    const again = cid('srve');
    await serve(again, learned);
    await expectNoDenials(again);
  });
});
