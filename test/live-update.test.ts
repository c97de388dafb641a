// `cgfence policy set` on running containers, control by control (exec, network, seccomp):
// after each add, change and removal, what the daemon's ps reply says is what the kernel
// does, shown by doing the real thing inside the container (an exec, a connect, a mkdir).
// A change a running container cannot receive (seccomp) is refused with a way out, changes
// nothing (registry, kernel, ps), is audited, and does not block later unrelated changes.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { request } from '../src/daemon/daemon-client';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { LoopbackServers } from './helpers/loopback-servers';
import { IMAGE, cid, sandboxDir, waitFor as waitForWithin } from './helpers/sandbox';

const dir = sandboxDir('live');
let p: SandboxPaths;
const loopback = new LoopbackServers();

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Asynchronous: this process's loopback servers must answer while ctr runs. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const ctr = (args: string[]) => run('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, ...args]);
// Live updates and records under load take longer than the shared default.
const waitFor = <T>(what: string, fn: () => Promise<T | undefined>) => waitForWithin(what, fn, 20_000);

const cli = (args: string[]) =>
  run(process.execPath, [path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js'), ...args], {
    ...process.env,
    CGFENCE_SOCKET: p.socket,
    CGFENCE_AUDIT_LOG: p.auditLog,
  });

interface PsRow {
  namespace: string;
  id: string;
  mode: string;
  policyHash: string;
  annotations: Record<string, string>;
  controls: Record<string, string>;
  backend: Record<string, string>;
}

/** The row without its counters, which move with every exec. */
/** What a policy decides (counters and decision counts move with every exec the test makes). */
function stateOf(row: PsRow): Omit<PsRow, 'counters' | 'networkCounters'> {
  const {
    counters: _c,
    networkCounters: _n,
    decisions: _d,
    ...rest
  } = row as PsRow & { counters?: unknown; networkCounters?: unknown; decisions?: unknown };
  return rest;
}

async function psRow(id: string): Promise<PsRow> {
  const r = await request<{ containers: PsRow[] }>(p.socket, { op: 'ps' });
  const row = r.containers.find((c) => c.id === id);
  if (!row) throw new Error(`${id} is not in the daemon's ps reply`);
  return row;
}

/** A running container on the host network, fenced by `annotations`. */
async function startContainer(id: string, annotations: Record<string, string>): Promise<void> {
  const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  const r = await ctr(['run', '-d', '--net-host', '--runc-binary', p.runc, ...ann, IMAGE, id, '/bin/sh', '-c', 'sleep 300']);
  expect(r.status, r.stderr).toBe(0);
  await waitFor(`${id} fenced`, async () => {
    try {
      return await psRow(id);
    } catch {
      return undefined;
    }
  });
}

async function removeContainer(id: string): Promise<void> {
  await ctr(['task', 'kill', '-s', 'SIGKILL', id]);
  for (let i = 0; i < 100 && (await ctr(['task', 'delete', id])).status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
  await ctr(['containers', 'delete', id]);
}

let execN = 0;
/** Runs a shell line in the container: stdout, and the exit status. */
async function inside(id: string, script: string): Promise<Run> {
  // ctr task exec now and then loses the output of a process that exits at once: the script
  // ends with a marker, and a run without it is repeated.
  for (let i = 0; ; i++) {
    const r = await ctr(['task', 'exec', '--exec-id', `x${execN++}`, id, '/bin/sh', '-c', `${script}; echo END`]);
    if (r.stdout.includes('END') || i === 4) return r;
  }
}

/** Whether tool-a (a busybox copy outside every allow-list but the ones that name it) runs. */
async function toolRuns(id: string, tool: 'tool-a' | 'tool-b'): Promise<boolean> {
  const r = await inside(id, `(exec -a echo /usr/local/bin/${tool} RAN); echo rc=$?`);
  if (r.stdout.includes('RAN')) return true;
  // Denied by the notify path (126, EACCES) or by the kernel fence (137, SIGKILL).
  expect(r.stdout, JSON.stringify(r)).toMatch(/rc=(126|137)/);
  return false;
}

async function connect(id: string, addr: string): Promise<string> {
  // busybox nc (the /bin/sh identity the allow-lists name): the loopback server answers "ok".
  const out = (await inside(id, `echo hi | nc ${addr} ${loopback.tcp[addr]} 2>&1`)).stdout;
  if (out.includes('ok')) return 'ok';
  expect(out).toContain('Operation not permitted');
  return 'EPERM';
}

async function mkdirWorks(id: string): Promise<boolean> {
  const d = `/tmp/d${execN}`;
  const r = await inside(id, `mkdir ${d} 2>&1; echo rc=$?`);
  if (/rc=0/.test(r.stdout)) return true;
  expect(r.stdout).toContain('Operation not permitted');
  return false;
}

async function set(target: string, ...kvs: string[]): Promise<Run> {
  return cli(['policy', 'set', target, ...kvs]);
}

async function recordsOf(id: string): Promise<AuditRecord[]> {
  return readRecords(p.auditLog, { container: id });
}

beforeAll(async () => {
  p = await sandboxUp(dir);
  for (const a of ['127.0.0.2', '127.0.0.3']) await loopback.listenTcp(a);
});

afterAll(async () => {
  loopback.close();
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('policy set on a running container: ps says what the kernel does', () => {
  it('exec and network: add, change, remove', async () => {
    const id = cid('live');
    await startContainer(id, { 'cgfence.io/exec-allow': '/bin/sh' });
    try {
      let row = await psRow(id);
      expect(row.controls).toMatchObject({ exec: 'enforced', network: 'none', seccomp: 'none' });
      expect(await toolRuns(id, 'tool-a')).toBe(false);
      expect(await connect(id, '127.0.0.2')).toBe('ok');

      // network: add
      let r = await set(id, 'cgfence.io/egress-deny=127.0.0.2/32');
      expect(r.status, r.stderr).toBe(0);
      expect((await psRow(id)).controls.network).toBe('enforced');
      expect(await connect(id, '127.0.0.2')).toBe('EPERM');
      expect(await connect(id, '127.0.0.3')).toBe('ok');

      // network: change
      r = await set(id, 'cgfence.io/egress-deny=127.0.0.3/32');
      expect(r.status, r.stderr).toBe(0);
      expect((await psRow(id)).controls.network).toBe('enforced');
      expect(await connect(id, '127.0.0.2')).toBe('ok');
      expect(await connect(id, '127.0.0.3')).toBe('EPERM');

      // exec: change
      r = await set(id, 'cgfence.io/exec-allow=/bin/sh,/usr/local/bin/tool-a');
      expect(r.status, r.stderr).toBe(0);
      row = await psRow(id);
      expect(row.controls.exec).toBe('enforced');
      expect(await toolRuns(id, 'tool-a')).toBe(true);
      expect(await toolRuns(id, 'tool-b')).toBe(false);

      // exec: remove
      r = await set(id, 'cgfence.io/exec-allow-');
      expect(r.status, r.stderr).toBe(0);
      row = await psRow(id);
      expect(row.controls.exec).toBe('none');
      expect(row.backend.exec).toBeUndefined();
      expect(await toolRuns(id, 'tool-b')).toBe(true);

      // exec: add (to a running container: the kernel fence judges; runc exec's processes
      // carry the filter the container started with, which routes no exec to the notify loop)
      r = await set(id, 'cgfence.io/exec-allow=/bin/sh');
      expect(r.status, r.stderr).toBe(0);
      expect((await psRow(id)).controls.exec).toBe('enforced');
      expect(await toolRuns(id, 'tool-a')).toBe(false);
      expect(await toolRuns(id, 'tool-b')).toBe(false);

      // network: remove
      r = await set(id, 'cgfence.io/egress-deny-');
      expect(r.status, r.stderr).toBe(0);
      row = await psRow(id);
      expect(row.controls.network).toBe('none');
      expect(await connect(id, '127.0.0.2')).toBe('ok');
      expect(await connect(id, '127.0.0.3')).toBe('ok');
      expect(await toolRuns(id, 'tool-a')).toBe(false);
    } finally {
      await removeContainer(id);
    }
  });

  it('seccomp cannot be added to a running container: refused with what to do, nothing changes, audited, later updates work', async () => {
    const id = cid('scadd');
    await startContainer(id, { 'cgfence.io/exec-allow': '/bin/sh' });
    try {
      const before = await psRow(id);
      expect(before.controls.seccomp).toBe('none');
      expect(await mkdirWorks(id)).toBe(true);

      const r = await set(id, 'cgfence.io/seccomp-deny=mkdir,mkdirat');
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('cgfence.io/seccomp-deny="mkdir,mkdirat"');
      expect(r.stderr).toContain('cannot be added, changed or removed');
      expect(r.stderr).toContain('nothing was changed');
      expect(r.stderr).toContain('recreate the container');
      expect(r.stderr).not.toMatch(/\n\s+at /); // one message, no stack

      const after = await psRow(id);
      expect(stateOf(after)).toEqual(stateOf(before));
      expect(after.controls.seccomp).toBe('none');
      expect(await mkdirWorks(id)).toBe(true);

      const refused = await waitFor('the policy-refuse record', async () =>
        (await recordsOf(id)).find((x) => x.type === 'lifecycle' && x.action === 'policy-refuse'),
      );
      expect(refused.changes).toEqual([{ key: 'cgfence.io/seccomp-deny', value: 'mkdir,mkdirat' }]);
      expect(refused.policy_hash).toBe(before.policyHash);
      expect(String(refused.reason)).toContain('recreate the container');
      // Who asked: the CLI process, from the socket's peer credentials.
      expect(refused).toMatchObject({ actor_uid: process.getuid!(), actor_comm: 'node' });
      expect(refused.actor_pid).toBeGreaterThan(0);
      expect(String(refused.actor_cmdline)).toContain('policy set');
      expect((await recordsOf(id)).filter((x) => x.action === 'policy-update')).toEqual([]);

      // Unrelated updates still work, and take effect.
      const ok = await set(id, 'cgfence.io/egress-deny=127.0.0.2/32');
      expect(ok.status, ok.stderr).toBe(0);
      expect((await psRow(id)).controls).toMatchObject({ network: 'enforced', seccomp: 'none' });
      const upd = await waitFor('the policy-update record', async () => (await recordsOf(id)).find((x) => x.action === 'policy-update'));
      expect(upd).toMatchObject({ actor_uid: process.getuid!(), actor_comm: 'node', severity: 'info' });
      expect(upd.actor_pid).not.toBe(refused.actor_pid);
      expect(await connect(id, '127.0.0.2')).toBe('EPERM');
      // Mixed with a seccomp change, the whole update is refused, the other part too.
      const mixed = await set(id, 'cgfence.io/egress-deny-', 'cgfence.io/seccomp-allow=read');
      expect(mixed.status).toBe(1);
      expect(await connect(id, '127.0.0.2')).toBe('EPERM');
      expect((await psRow(id)).annotations['cgfence.io/egress-deny']).toBe('127.0.0.2/32');
    } finally {
      await removeContainer(id);
    }
  });

  it('seccomp rules a container started with cannot be changed or removed, nor its mode: refused, the filter keeps working, other updates work', async () => {
    const id = cid('scfix');
    await startContainer(id, { 'cgfence.io/seccomp-deny': 'mkdir,mkdirat' });
    try {
      const before = await psRow(id);
      expect(before.controls.seccomp).toBe('enforced');
      expect(await mkdirWorks(id)).toBe(false);

      for (const change of [['cgfence.io/seccomp-deny=mkdirat'], ['cgfence.io/seccomp-deny-'], ['cgfence.io/mode=audit']]) {
        const r = await set(id, ...change);
        expect(r.status, change.join(' ')).toBe(1);
        expect(r.stderr).toContain('recreate the container');
        expect(r.stderr).toContain('the container keeps cgfence.io/seccomp-deny="mkdir,mkdirat"');
        expect(stateOf(await psRow(id))).toEqual(stateOf(before));
        expect(await mkdirWorks(id)).toBe(false);
      }
      const refusals = (await recordsOf(id)).filter((x) => x.type === 'lifecycle' && x.action === 'policy-refuse');
      expect(refusals.length).toBe(3);

      const ok = await set(id, 'cgfence.io/egress-deny=127.0.0.3/32');
      expect(ok.status, ok.stderr).toBe(0);
      const row = await psRow(id);
      expect(row.controls).toMatchObject({ network: 'enforced', seccomp: 'enforced' });
      expect(await connect(id, '127.0.0.3')).toBe('EPERM');
      expect(await connect(id, '127.0.0.2')).toBe('ok');
      expect(await mkdirWorks(id)).toBe(false);
    } finally {
      await removeContainer(id);
    }
  });
});
