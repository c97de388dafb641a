import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainerdClient } from '../src/containerd/client';
import { ContainerdEvent, decodeEnvelope } from '../src/containerd/events';
import { EventMonitor } from '../src/containerd/event-monitor';
import { buildTestImage, TEST_IMAGE_NAME } from '../src/image/oci-image';
import { importImage, isRunning, startContainerd, stopContainerd, containerdPaths } from '../src/sandbox/containerd-process';
import { removeNamespaceCgroups } from './helpers/kernel';

// Real containerd, real runc: these tests need root, containerd 1.6, runc and /bin/busybox.
const suffix = randomBytes(4).toString('hex');
const NS = `cgft-${suffix}`;
const ENV_MARKER = `marker-${suffix}`;
let dir = '';
let sock = '';
let client: ContainerdClient;

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function ctr(args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ctr', ['-a', sock, '-n', NS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function ctrOk(args: string[]): Promise<string> {
  const r = await ctr(args);
  if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let counter = 0;
const cid = (tag: string) => `${tag}-${suffix}-${counter++}`;

async function removeContainer(id: string): Promise<void> {
  await ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
  await waitFor(`task ${id} stopped`, async () => (await client.getTask(NS, id))?.status !== 'running', 10_000).catch(() => undefined);
  await ctr(['tasks', 'delete', '-f', id]);
  await ctr(['containers', 'delete', id]);
}

beforeAll(async () => {
  // Short path: the ttrpc socket under it must fit in sun_path (108 bytes).
  dir = fs.mkdtempSync(`/tmp/cgft-${suffix}-`);
  sock = containerdPaths(dir).socket;
  const image = await buildTestImage(path.join(dir, 'test-image.tar'));
  expect(image.layerDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
  await startContainerd(dir, { env: { CGFENCE_ENV_PROBE: ENV_MARKER } });
  client = new ContainerdClient(`unix://${sock}`);
  await importImage(dir, image.outFile, NS);
});

afterAll(async () => {
  client?.close();
  if (!dir) return;
  try {
    // Kills leftover tasks through their shims (runc delete --force) and unmounts rootfs.
    await stopContainerd(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    removeNamespaceCgroups(NS);
  }
});

describe('private containerd', () => {
  it('is healthy and reports its version', async () => {
    expect(isRunning(dir)).toBe(true);
    const v = await client.version();
    expect(v.version).toMatch(/1\.6/);
    // Starting again is a no-op that finds the running one.
    const again = await startContainerd(dir);
    expect(again.started).toBe(false);
  });

  it('lists the namespace the image was imported into', async () => {
    expect(await client.listNamespaces()).toContain(NS);
    const images = await ctrOk(['images', 'ls', '-q']);
    expect(images.split('\n')).toContain(TEST_IMAGE_NAME);
  });

  it('runs the test image: busybox applets and separate tool copies', async () => {
    const id = cid('run');
    const out = await ctrOk([
      'run',
      '--rm',
      TEST_IMAGE_NAME,
      id,
      '/bin/sh',
      '-c',
      [
        'echo hi',
        // busybox picks the applet from argv[0]; "tool-a" is no applet name.
        '/usr/local/bin/tool-a true 2>&1; echo rc=$?',
        // So the copies are run under an applet name (ash's exec -a).
        '(exec -a true /usr/local/bin/tool-a); echo rc=$?',
        '(exec -a echo /usr/local/bin/tool-b via-b)',
        'stat -c %i /bin/busybox /usr/local/bin/tool-a /usr/local/bin/tool-b',
        'echo PATH=$PATH',
        'stat -c %a /tmp',
      ].join('; '),
    ]);
    const lines = out.trim().split('\n');
    expect(lines.slice(0, 5)).toEqual(['hi', 'tool-a: applet not found', 'rc=127', 'rc=0', 'via-b']);
    const inodes = lines.slice(5, 8);
    expect(new Set(inodes).size).toBe(3);
    expect(lines[8]).toBe('PATH=/usr/local/bin:/usr/bin:/bin');
    expect(lines[9]).toBe('1777');
  });
});

describe('event stream', () => {
  it('delivers decoded lifecycle events for a short container', async () => {
    const events: ContainerdEvent[] = [];
    let streamError: Error | undefined;
    const sub = client.subscribe(
      [],
      (env) => events.push(decodeEnvelope(env)),
      (err) => (streamError = err),
    );
    try {
      // Subscribe gives no signal when it is live: publish until our own probe comes back.
      await waitFor('subscription live', async () => {
        await client.publish(NS, '/cgft/probe');
        await new Promise((r) => setTimeout(r, 100));
        return events.some((e) => e.topic === '/cgft/probe');
      });
      const id = cid('ev');
      await ctrOk(['run', '--rm', TEST_IMAGE_NAME, id, '/bin/true']);
      await waitFor('container-delete', () => events.some((e) => e.kind === 'container-delete' && e.containerId === id));
      const mine = events.filter((e) => e.kind !== 'other' && e.containerId === id);
      const kinds = mine.map((e) => e.kind);
      expect(kinds).toEqual(['container-create', 'task-create', 'task-start', 'task-exit', 'task-delete', 'container-delete']);
      for (const e of mine) expect(e.namespace).toBe(NS);

      const create = mine.find((e) => e.kind === 'task-create');
      const start = mine.find((e) => e.kind === 'task-start');
      const exit = mine.find((e) => e.kind === 'task-exit');
      const del = mine.find((e) => e.kind === 'task-delete');
      if (create?.kind !== 'task-create' || start?.kind !== 'task-start' || exit?.kind !== 'task-exit' || del?.kind !== 'task-delete') {
        throw new Error('missing events');
      }
      expect(create.pid).toBeGreaterThan(1);
      expect(create.bundle).toContain(path.join(containerdPaths(dir).state, 'io.containerd.runtime.v2.task', NS, id));
      expect(start.pid).toBe(create.pid);
      expect(exit.pid).toBe(create.pid);
      expect(exit.exitStatus).toBe(0);
      expect(exit.isInit).toBe(true);
      expect(exit.exitedAt).toBeInstanceOf(Date);
      expect(del.pid).toBe(create.pid);
      expect(del.isInit).toBe(true);
      expect(create.timestamp).toBeInstanceOf(Date);
      const cc = mine[0];
      if (cc.kind !== 'container-create') throw new Error('expected container-create');
      expect(cc.image).toBe(TEST_IMAGE_NAME);
      expect(cc.runtimeName).toBe('io.containerd.runc.v2');
      expect(streamError).toBeUndefined();
    } finally {
      sub.cancel();
    }
  });

  it('lists a running container with its OCI annotations and labels, and exec events', async () => {
    const events: ContainerdEvent[] = [];
    const sub = client.subscribe(
      ['topic~="/tasks/"'],
      (env) => events.push(decodeEnvelope(env)),
      () => undefined,
    );
    const id = cid('sleep');
    try {
      await ctrOk([
        'run',
        '-d',
        '--annotation',
        'cgfence.io/mode=audit',
        '--annotation',
        'cgfence.io/exec-allow=/bin/sleep,/usr/local/bin/tool-a',
        '--label',
        'team=blue',
        TEST_IMAGE_NAME,
        id,
        'sleep',
        '300',
      ]);
      const containers = await client.listContainers(NS);
      const c = containers.find((x) => x.id === id);
      expect(c).toBeDefined();
      // ctr 1.6 copies --label into the OCI annotations too; --annotation only sets annotations.
      expect(c!.spec?.annotations).toEqual({
        'cgfence.io/mode': 'audit',
        'cgfence.io/exec-allow': '/bin/sleep,/usr/local/bin/tool-a',
        team: 'blue',
      });
      expect(c!.labels.team).toBe('blue');
      expect(c!.labels['cgfence.io/mode']).toBeUndefined();
      expect(c!.image).toBe(TEST_IMAGE_NAME);
      expect(c!.runtimeName).toBe('io.containerd.runc.v2');
      expect(c!.createdAt).toBeInstanceOf(Date);
      expect(c!.spec?.linux?.cgroupsPath).toBe(`/${NS}/${id}`);
      expect(await client.getContainer(NS, id)).toEqual(c);
      expect(await client.getContainer(NS, 'no-such-container')).toBeUndefined();
      expect(await client.containerLabels(NS, id)).toEqual(c!.labels);
      expect(await client.containerLabels(NS, 'no-such-container')).toBeUndefined();

      const tasks = await client.listTasks(NS);
      const t = tasks.find((x) => x.containerId === id);
      expect(t).toBeDefined();
      expect(t!.status).toBe('running');
      expect(t!.pid).toBeGreaterThan(1);
      expect(fs.readFileSync(`/proc/${t!.pid}/cmdline`, 'utf8')).toContain('sleep');
      const got = await client.getTask(NS, id);
      expect(got?.pid).toBe(t!.pid);
      expect(got?.containerId).toBe(id);
      expect(await client.getTask(NS, 'no-such-container')).toBeUndefined();

      await ctrOk(['tasks', 'exec', '--exec-id', 'x1', id, '/bin/true']);
      await waitFor('exec exit', () => events.some((e) => e.kind === 'task-exit' && e.id === 'x1'));
      const added = events.find((e) => e.kind === 'task-exec-added');
      const started = events.find((e) => e.kind === 'task-exec-started');
      const exit = events.find((e) => e.kind === 'task-exit' && e.id === 'x1');
      expect(added).toMatchObject({ containerId: id, execId: 'x1' });
      expect(started).toMatchObject({ containerId: id, execId: 'x1' });
      expect(exit).toMatchObject({ containerId: id, id: 'x1', isInit: false, exitStatus: 0 });

      await ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
      await waitFor('init exit', () => events.some((e) => e.kind === 'task-exit' && e.containerId === id && e.isInit));
      const initExit = events.find((e) => e.kind === 'task-exit' && e.containerId === id && e.isInit);
      expect(initExit).toMatchObject({ exitStatus: 137, pid: t!.pid });
    } finally {
      sub.cancel();
      await removeContainer(id);
    }
  });

  it("the runc.v2 shim passes containerd's environment to the runtime binary", async () => {
    const wrapper = path.join(dir, 'runc-wrapper');
    const envDir = path.join(dir, 'wrapper-env');
    fs.mkdirSync(envDir);
    fs.writeFileSync(wrapper, `#!/bin/sh\nenv > ${envDir}/env.$$\necho "$@" > ${envDir}/args.$$\nexec runc "$@"\n`, { mode: 0o755 });
    const id = cid('wrap');
    const out = await ctrOk(['run', '--rm', '--runc-binary', wrapper, TEST_IMAGE_NAME, id, '/bin/echo', 'wrapped']);
    expect(out.trim()).toBe('wrapped');
    const files = fs.readdirSync(envDir);
    const envs = files.filter((f) => f.startsWith('env.')).map((f) => fs.readFileSync(path.join(envDir, f), 'utf8'));
    const args = files.filter((f) => f.startsWith('args.')).map((f) => fs.readFileSync(path.join(envDir, f), 'utf8'));
    expect(envs.length).toBeGreaterThan(0);
    // Every runtime invocation sees the variable containerd was started with.
    for (const e of envs) expect(e).toContain(`CGFENCE_ENV_PROBE=${ENV_MARKER}`);
    expect(args.some((a) => /\bcreate\b/.test(a) && a.includes('--bundle'))).toBe(true);
    expect(args.some((a) => /\bstart\b/.test(a))).toBe(true);
    expect(args.some((a) => /\bdelete\b/.test(a))).toBe(true);
  });
});

describe('EventMonitor', () => {
  it('retries a failing handler per container without blocking others', async () => {
    const handled: ContainerdEvent[] = [];
    const slow = cid('slow');
    const fast = cid('fast');
    let failures = 0;
    const monitor = new EventMonitor({
      client,
      filters: [`namespace=="${NS}"`],
      reconcile: async () => undefined,
      handler: (ev) => {
        if (ev.kind === 'task-create' && ev.containerId === slow && failures < 5) {
          failures++;
          throw new Error('simulated handler failure');
        }
        handled.push(ev);
      },
    });
    monitor.start();
    try {
      await monitor.waitConnected();
      await ctrOk(['run', '--rm', TEST_IMAGE_NAME, slow, '/bin/true']);
      await ctrOk(['run', '--rm', TEST_IMAGE_NAME, fast, '/bin/true']);
      await waitFor(
        'slow container-delete handled',
        () => handled.some((e) => e.kind === 'container-delete' && e.containerId === slow),
        30_000,
      );
      const order = (id: string) => handled.filter((e) => e.kind !== 'other' && e.containerId === id).map((e) => e.kind);
      const expected = ['container-create', 'task-create', 'task-start', 'task-exit', 'task-delete', 'container-delete'];
      expect(order(slow)).toEqual(expected);
      expect(order(fast)).toEqual(expected);
      // fast ran entirely while slow's task-create was still being retried.
      const fastDone = handled.findIndex((e) => e.kind === 'container-delete' && e.containerId === fast);
      const slowCreate = handled.findIndex((e) => e.kind === 'task-create' && e.containerId === slow);
      expect(fastDone).toBeLessThan(slowCreate);
      expect(monitor.status().handlerFailures).toBe(5);
      expect(monitor.status().handlerGiveUps).toBe(0);
    } finally {
      await monitor.stop();
    }
  });

  it('reconnects after a containerd restart, reconciles again, and events flow again', async () => {
    const handled: ContainerdEvent[] = [];
    const reconciles: Array<{ tasks: string[] }> = [];
    // Its own client, as the daemon would have: the shared one must not be the thing under test.
    const monClient = new ContainerdClient(`unix://${sock}`);
    const monitor = new EventMonitor({
      client: monClient,
      reconcile: async () => {
        const tasks = await monClient.listTasks(NS);
        reconciles.push({ tasks: tasks.filter((t) => t.status === 'running').map((t) => t.containerId) });
      },
      handler: (ev) => {
        if (ev.namespace === NS) handled.push(ev);
      },
    });
    const survivor = cid('survivor');
    monitor.start();
    try {
      await monitor.waitConnected();
      expect(reconciles.length).toBe(1);
      await ctrOk(['run', '-d', TEST_IMAGE_NAME, survivor, 'sleep', '300']);
      await waitFor('survivor task-start', () => handled.some((e) => e.kind === 'task-start' && e.containerId === survivor));

      // Shims (and so containers) outlive containerd: this is a restart, not a teardown.
      await stopContainerd(dir, { killShims: false });
      await waitFor('disconnected', () => !monitor.status().connected);
      expect(monitor.status().lastError).toBeTruthy();
      await startContainerd(dir, { env: { CGFENCE_ENV_PROBE: ENV_MARKER } });
      await waitFor('reconnected', () => monitor.status().connected && reconciles.length >= 2, 30_000);
      expect(monitor.status().connects).toBeGreaterThanOrEqual(2);
      // The restarted containerd found the running task through its shim.
      expect(reconciles[reconciles.length - 1].tasks).toContain(survivor);

      const after = cid('after');
      await ctrOk(['run', '--rm', TEST_IMAGE_NAME, after, '/bin/true']);
      await waitFor('events after restart', () => handled.some((e) => e.kind === 'container-delete' && e.containerId === after));
      await removeContainer(survivor);
      await waitFor('survivor delete', () => handled.some((e) => e.kind === 'task-delete' && e.containerId === survivor));
    } finally {
      await monitor.stop();
      monClient.close();
      if (!isRunning(dir)) await startContainerd(dir, { env: { CGFENCE_ENV_PROBE: ENV_MARKER } });
      await removeContainer(survivor).catch(() => undefined);
    }
  });
});
