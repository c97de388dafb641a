// Exec integrity (issue 12) end to end: an allow-listed file is bound to its content at attach.
// Real containerd, runc, overlayfs and kernel: each container starts from the image, changes an
// allowed file the way an attacker with the allowed shell would, and tries to run it. In
// enforce mode the notify loop refuses the changed file with EACCES (sh: 126) and the kernel
// fence kills a program whose ELF loader was replaced before the loader's first instruction.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { FIXTURE_DIR, importFixtureImage } from './helpers/fixture-image';
import { cid, cli, ctr, removeContainer, sandboxDir, waitFor } from './helpers/sandbox';
import { mapField } from '../src/audit/audit-read';

const dir = sandboxDir('ig');
const IMAGE = 'cgfence.local/integrity-test:latest';
const LOADER = '/lib64/ld-linux-x86-64.so.2';
let p: SandboxPaths;

const ALLOW = { 'cgfence.io/exec-allow': '/bin/sh,/bin/busybox,/usr/bin/dyn-app' };

function run(id: string, annotations: Record<string, string>, script: string) {
  const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  return ctr(p, ['run', '--rm', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', script], 120_000);
}

async function execRecord(id: string, pred: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  let recs: AuditRecord[] = [];
  return waitFor(`exec record of ${id}`, () => {
    void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
    return recs.find((r) => r.type === 'exec' && pred(r));
  });
}

/** Runs the program after `change`; also checks that an untouched allowed program still runs. */
const tryIt = (change: string) =>
  [
    change,
    `CGFENCE_MARKER=/tmp/forbidden-ran /usr/bin/dyn-app; echo rc=$?`,
    'test -e /tmp/forbidden-ran && echo FORBIDDEN-CONTENT-RAN',
    '/bin/busybox echo untouched-ok',
  ].join('; ');

beforeAll(async () => {
  p = await sandboxUp(dir);
  await importFixtureImage(p, IMAGE, { static: ['marker', 'inject-probe'], dynamic: ['dyn-app'], freestanding: ['loader-payload'] });
}, 180_000);

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('an allowed file changed inside the container is refused (enforce)', () => {
  const cases: Array<[string, string]> = [
    ['overwritten in place with a shell redirect', `cat ${FIXTURE_DIR}/marker > /usr/bin/dyn-app`],
    ['patched with dd conv=notrunc', "printf 'XXXX' | busybox dd of=/usr/bin/dyn-app bs=1 seek=200 conv=notrunc 2>/dev/null"],
    ['truncated then written', `busybox truncate -s 0 /usr/bin/dyn-app; cat ${FIXTURE_DIR}/marker >> /usr/bin/dyn-app`],
    [
      'replaced by content of the same size (a script for the allowed shell)',
      [
        's=$(stat -c %s /usr/bin/dyn-app)',
        "printf '#!/bin/sh\\necho SCRIPT-RAN; touch /tmp/forbidden-ran\\nexit 0\\n' > /tmp/p",
        'busybox truncate -s $s /tmp/p; cat /tmp/p > /usr/bin/dyn-app',
        '[ "$(stat -c %s /usr/bin/dyn-app)" = "$s" ] && echo same-size',
      ].join('; '),
    ],
    ['chmod (a benign change: denied until re-allowed)', 'chmod 0700 /usr/bin/dyn-app'],
    ['a new hard link (a benign change: denied until re-allowed)', 'ln /usr/bin/dyn-app /tmp/hardlink'],
  ];
  for (const [what, change] of cases) {
    it(what, async () => {
      const id = cid('mod');
      const r = run(id, ALLOW, tryIt(change));
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).not.toContain('FORBIDDEN-CONTENT-RAN');
      expect(r.stdout).not.toContain('SCRIPT-RAN');
      expect(r.stdout).not.toContain('APP-RAN');
      expect(r.stdout, r.stderr).toContain('rc=126');
      expect(r.stderr).toContain('/usr/bin/dyn-app: Permission denied');
      expect(r.stdout).toContain('untouched-ok');
      if (what.startsWith('replaced')) expect(r.stdout).toContain('same-size');
      const rec = await execRecord(id, (x) => x.action === 'deny');
      expect(rec).toMatchObject({ path: '/usr/bin/dyn-app', via: 'seccomp-notify', errno: 'EACCES', reason: 'modified-since-allowed' });
      expect(String(rec.stamp_allowed)).toMatch(/^\d+\.\d{9}$/);
      expect(String(rec.stamp_now)).toMatch(/^\d+\.\d{9}$/);
      expect(rec.stamp_now).not.toBe(rec.stamp_allowed);
    });
  }

  it('a rename over the file, its mtime set back with touch -d: a new identity, refused', async () => {
    const id = cid('mv');
    const r = run(
      id,
      ALLOW,
      tryIt(
        [
          `cp ${FIXTURE_DIR}/marker /usr/bin/new`,
          'm=$(stat -c %y /usr/bin/dyn-app)',
          'busybox mv /usr/bin/new /usr/bin/dyn-app',
          'touch -d "$m" /usr/bin/dyn-app',
        ].join('; '),
      ),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('FORBIDDEN-CONTENT-RAN');
    expect(r.stdout, r.stderr).toContain('rc=126');
    expect(r.stdout).toContain('untouched-ok');
    const rec = await execRecord(id, (x) => x.action === 'deny');
    expect(rec).toMatchObject({ path: '/usr/bin/dyn-app', reason: 'not-allowed' });
  });

  it('the unchanged program and its loader run', () => {
    const r = run(cid('ok'), ALLOW, '/usr/bin/dyn-app; echo rc=$?');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('APP-RAN\nrc=0');
  });
});

describe('the ELF loader (PT_INTERP) of an allowed program is judged', () => {
  it('a replaced loader is killed before its first instruction and audited', async () => {
    const id = cid('ld');
    const r = run(
      id,
      ALLOW,
      [
        `rm ${LOADER}; cp ${FIXTURE_DIR}/loader-payload ${LOADER}`,
        '/usr/bin/dyn-app; echo rc=$?',
        'test -e /tmp/loader-ran && echo PAYLOAD-RAN',
        '/bin/busybox echo untouched-ok',
      ].join('; '),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('PAYLOAD-RAN');
    expect(r.stdout).not.toContain('LOADER-PAYLOAD-RAN');
    expect(r.stdout, r.stderr).toContain('rc=137'); // SIGKILL from the kernel fence
    expect(r.stdout).toContain('untouched-ok');
    const rec = await execRecord(id, (x) => x.action === 'deny');
    expect(rec).toMatchObject({ path: '/usr/bin/dyn-app', reason: 'loader-not-allowed' });
    expect(String(rec.loader_inode)).toMatch(/^\d+$/);
    expect(rec.via).toBeUndefined();
  });

  it('a loader overwritten in place is refused the same way', async () => {
    const id = cid('ldw');
    const r = run(
      id,
      ALLOW,
      [
        `cat ${FIXTURE_DIR}/loader-payload > ${LOADER}`,
        '/usr/bin/dyn-app; echo rc=$?',
        'test -e /tmp/loader-ran && echo PAYLOAD-RAN',
        'echo done',
      ].join('; '),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('PAYLOAD-RAN');
    expect(r.stdout, r.stderr).toContain('rc=137');
    const rec = await execRecord(id, (x) => x.action === 'deny');
    expect(String(rec.reason)).toMatch(/^loader-(not-allowed|modified-since-allowed)$/);
  });
});

describe('audit mode reports without blocking', () => {
  it('a modified file runs and is audited with both stamps', async () => {
    const id = cid('aud');
    const r = run(
      id,
      { ...ALLOW, 'cgfence.io/mode': 'audit' },
      [
        `cat ${FIXTURE_DIR}/marker > /usr/bin/dyn-app`,
        'CGFENCE_MARKER=/tmp/m1 /usr/bin/dyn-app; test -e /tmp/m1 && echo modified-ran',
      ].join('; '),
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('modified-ran');
    const rec = await execRecord(id, (x) => x.action === 'audit');
    expect(rec).toMatchObject({ path: '/usr/bin/dyn-app', reason: 'modified-since-allowed', mode: 'audit' });
    expect(rec.stamp_now).not.toBe(rec.stamp_allowed);
  });

  it('a replaced loader runs and is audited', async () => {
    const id = cid('audld');
    const r = run(
      id,
      { ...ALLOW, 'cgfence.io/mode': 'audit' },
      [`rm ${LOADER}; cp ${FIXTURE_DIR}/loader-payload ${LOADER}`, '/usr/bin/dyn-app; test -e /tmp/loader-ran && echo payload-ran'].join(
        '; ',
      ),
    );
    expect(r.status, r.stderr).toBe(0);
    // The payload really runs as a loader when nothing stops it: what the enforce test stops.
    expect(r.stdout).toContain('payload-ran');
    const rec = await execRecord(id, (x) => x.action === 'audit');
    expect(rec).toMatchObject({ path: '/usr/bin/dyn-app', reason: 'loader-not-allowed' });
  });
});

describe('re-allowing a legitimately updated file', () => {
  it('`cgfence policy set` re-resolves the list: the updated file runs again', async () => {
    const id = cid('set');
    const ann = Object.entries(ALLOW).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
    const start = ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', 'sleep 120']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const upd = ctr(p, [
        'task',
        'exec',
        '--exec-id',
        'upd',
        id,
        '/bin/sh',
        '-c',
        'chmod 0755 /usr/bin/dyn-app; /usr/bin/dyn-app; echo rc=$?',
      ]);
      expect(upd.stdout, upd.stderr).toContain('rc=126');
      const set = cli(p, ['policy', 'set', id, `cgfence.io/exec-allow=${ALLOW['cgfence.io/exec-allow']}`]);
      expect(set.status, set.stderr + set.stdout).toBe(0);
      const again = ctr(p, ['task', 'exec', '--exec-id', 'again', id, '/bin/sh', '-c', '/usr/bin/dyn-app; echo rc=$?']);
      expect(again.stdout, again.stderr).toContain('APP-RAN\nrc=0');
    } finally {
      await removeContainer(p, id);
    }
  });
});

describe('the hardened profile (built into every node)', () => {
  const allow = { 'cgfence.io/exec-allow': `/bin/sh,/bin/busybox,${FIXTURE_DIR}/inject-probe` };

  it('a default container can write into another process through ptrace and process_vm_writev', () => {
    const r = run(cid('inj'), allow, `${FIXTURE_DIR}/inject-probe`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('ptrace=0');
    expect(r.stdout).toContain('process_vm_writev=0');
  });

  it('with cgfence.io/profile=hardened both fail with EPERM', () => {
    const r = run(cid('hard'), { ...allow, 'cgfence.io/profile': 'hardened' }, `${FIXTURE_DIR}/inject-probe`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('ptrace=EPERM');
    expect(r.stdout).toContain('process_vm_writev=EPERM');
  });
});

describe('learn mode still produces a policy that applies', () => {
  it('a dynamic program learned in learn mode runs under the learned exec-allow in enforce mode', async () => {
    const learnId = cid('lrn');
    // The sleep keeps the root alive while the daemon resolves the learned path.
    const workload = '/usr/bin/dyn-app; echo rc=$?; sleep 1';
    const r = run(learnId, { 'cgfence.io/mode': 'learn' }, workload);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('APP-RAN\nrc=0');
    const rec = await recordOf(learnId, (x) => x.type === 'lifecycle' && x.action === 'learned');
    const allow = String(mapField(rec.annotations)['cgfence.io/exec-allow']);
    expect(allow.split(',')).toContain('/usr/bin/dyn-app');
    // The loader is not learned by name: the enforce-mode attach adds it as loader-only.
    expect(allow).not.toContain('ld-linux');

    const id = cid('lrnenf');
    const again = run(id, { 'cgfence.io/exec-allow': allow }, workload);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain('APP-RAN\nrc=0');
    await recordOf(id, (x) => x.type === 'lifecycle' && x.action === 'detach');
    const denials = (await readRecords(p.auditLog, { container: id })).filter((x) => x.type === 'exec' && x.action === 'deny');
    expect(denials).toEqual([]);
  });
});

async function recordOf(id: string, pred: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  let recs: AuditRecord[] = [];
  return waitFor(
    `record of ${id}`,
    () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find(pred);
    },
    20_000,
  );
}
