// Workload identity: a CRI-style container (containerd labels io.kubernetes.pod.name,
// io.kubernetes.pod.namespace, io.kubernetes.container.name, as the CRI plugin sets them;
// made here with `ctr run --label`, no kubelet) is named by pod, pod namespace and container
// name in the daemon's ps reply and in every audit record about it; every record names the
// node; a unique id prefix names a container wherever the daemon takes an id.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditRecord } from '../src/audit/audit-record';
import { readRecords } from '../src/audit/audit-read';
import { request } from '../src/daemon/daemon-client';
import { importImage } from '../src/sandbox/containerd-process';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { waitRecords } from './helpers/container-records';
import { removeNamespaceCgroups } from './helpers/kernel';
import { IMAGE, cli, ctr as ctrIn, removeContainer, sandboxDir, startFenced, waitFor } from './helpers/sandbox';

const dir = sandboxDir('wl');
// A namespace of its own (CRI uses k8s.io): runc's per-namespace cgroups are this test's to remove.
const NS = `cgft-k8s-${crypto.randomBytes(3).toString('hex')}`;
let p: SandboxPaths;

const ctr = (args: string[]) => ctrIn(p, args, undefined, NS);
const until = <T>(what: string, fn: () => Promise<T | undefined | false>) => waitFor(what, fn, 20_000);
const ALLOW_SH = { 'cgfence.io/exec-allow': '/bin/sh' };
/** ctr's options that label a container as the CRI plugin does. */
const criLabels = (pod: string, container: string) =>
  [`io.kubernetes.pod.name=${pod}`, 'io.kubernetes.pod.namespace=shop', `io.kubernetes.container.name=${container}`].flatMap((l) => [
    '--label',
    l,
  ]);

const records = (id: string): Promise<AuditRecord[]> => readRecords(p.auditLog, { container: id });

beforeAll(async () => {
  p = await sandboxUp(dir);
  await importImage(p.dir, p.imageTar, NS);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
  removeNamespaceCgroups(NS);
});

describe('a CRI container', () => {
  it('is named by pod, pod namespace and container name in ps and in every record; a unique id prefix names it', async () => {
    const id = crypto.randomBytes(32).toString('hex'); // CRI ids: 64 hex characters
    const start = startFenced(p, id, ALLOW_SH, ['/bin/sh', '-c', 'sleep 120'], { extra: criLabels('web-0', 'app'), namespace: NS });
    expect(start.status, start.stderr).toBe(0);
    try {
      const row = await until('the ps row', async () =>
        (await request<{ containers: Array<Record<string, unknown>> }>(p.socket, { op: 'ps' })).containers.find((c) => c.id === id),
      );
      expect(row.workload).toEqual({ pod: 'web-0', podNamespace: 'shop', containerName: 'app' });
      expect(row.namespace).toBe(NS);

      // A denied exec: a kernel event, attributed with the workload too.
      const bad = ctr(['task', 'exec', '--exec-id', 'bad', id, '/usr/local/bin/tool-a', 'echo', 'RAN']);
      expect(bad.stdout).not.toContain('RAN');

      // The 12 characters `cgfence audit` shows name it for policy set, resolve and learn.
      const short = id.slice(0, 12);
      const set = await cli(p, ['policy', 'set', short, 'cgfence.io/egress-deny=127.0.0.9/32']);
      expect(set.status, set.stderr).toBe(0);
      expect(set.stdout).toContain(`${NS}/${id}`);
      expect(await request(p.socket, { op: 'resolve', id: short })).toMatchObject({ namespace: NS, id, workload: { pod: 'web-0' } });
      const learn = await request<{ running: boolean; namespace?: string }>(p.socket, { op: 'learn', id: short });
      expect(learn).toMatchObject({ running: false, namespace: NS });
      await expect(request(p.socket, { op: 'resolve', id: 'zzzz-no-such' })).rejects.toThrow(/no fenced container "zzzz-no-such"/);
    } finally {
      await removeContainer(p, id, NS);
    }
    const rs = await waitRecords(p, id, (r) => r.action === 'detach', 'the detach record');
    const kinds = new Set(rs.map((r) => `${r.type}/${r.action}`));
    for (const k of ['lifecycle/attach', 'exec/deny', 'lifecycle/policy-update', 'lifecycle/detach']) expect(kinds, k).toContain(k);
    for (const r of rs) {
      expect(r, `${r.type}/${r.action}`).toMatchObject({
        pod: 'web-0',
        pod_namespace: 'shop',
        container_name: 'app',
        namespace: NS,
        container_id: id,
      });
      expect(r.node).toBe(process.env.CGFENCE_NODE_NAME || process.env.NODE_NAME || os.hostname());
      expect(r.hostname).toBe(os.hostname());
    }
    expect(rs.find((r) => r.type === 'exec')!.severity).toBe('warning');
    expect(rs.find((r) => r.action === 'attach')!.severity).toBe('info');
  });

  it('a container whose config.json names its pod (as the CRI plugin writes it) is named from there, not from a lookup', async () => {
    const id = crypto.randomBytes(32).toString('hex');
    // Labels that disagree: the bundle's own annotations are what the daemon goes by.
    const labels = ['io.kubernetes.pod.name=from-labels', 'io.kubernetes.pod.namespace=elsewhere'].flatMap((l) => ['--label', l]);
    const annotations = [
      'io.kubernetes.cri.sandbox-name=web-2',
      'io.kubernetes.cri.sandbox-namespace=shop',
      'io.kubernetes.cri.container-name=app',
      'cgfence.io/exec-allow=/bin/sh',
    ].flatMap((a) => ['--annotation', a]);
    const start = ctr(['run', '-d', '--runc-binary', p.runc, ...labels, ...annotations, IMAGE, id, '/bin/sh', '-c', 'sleep 120']);
    expect(start.status, start.stderr).toBe(0);
    try {
      const row = await until('the ps row', async () =>
        (await request<{ containers: Array<Record<string, unknown>> }>(p.socket, { op: 'ps' })).containers.find((c) => c.id === id),
      );
      expect(row.workload).toEqual({ pod: 'web-2', podNamespace: 'shop', containerName: 'app' });
      const attach = await until('the attach record', async () => (await records(id)).find((r) => r.action === 'attach'));
      expect(attach).toMatchObject({ pod: 'web-2', pod_namespace: 'shop', container_name: 'app' });
    } finally {
      ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      for (let i = 0; i < 50 && ctr(['task', 'delete', id]).status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
      ctr(['containers', 'delete', id]);
    }
  });

  it("a refused create is named too: its refusal record waits for containerd's labels, and is written before ctr hears the refusal", async () => {
    const id = crypto.randomBytes(32).toString('hex');
    const r = ctr([
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      ...criLabels('web-1', 'bad'),
      '--annotation',
      'cgfence.io/exec-allow=/no/such/file',
      IMAGE,
      id,
      '/bin/true',
    ]);
    try {
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('cgfence:');
      // No waiting: the daemon wrote the record before it answered the launcher.
      const refuse = (await records(id)).find((x) => x.action === 'refuse');
      expect(refuse).toMatchObject({
        type: 'lifecycle',
        pod: 'web-1',
        pod_namespace: 'shop',
        container_name: 'bad',
        namespace: NS,
        container_id: id,
      });
    } finally {
      ctr(['containers', 'delete', id]);
    }
  });

  it('an id prefix that names several containers is refused, naming them', async () => {
    const base = crypto.randomBytes(4).toString('hex');
    const ids = [`${base}a1`, `${base}a2`];
    try {
      for (const id of ids) {
        const r = startFenced(p, id, ALLOW_SH, ['/bin/sh', '-c', 'sleep 60'], { namespace: NS });
        expect(r.status, r.stderr).toBe(0);
      }
      const set = await cli(p, ['policy', 'set', base, 'cgfence.io/egress-deny=127.0.0.9/32']);
      expect(set.status).toBe(1);
      expect(set.stderr).toContain(`"${base}" is the start of 2 containers' ids`);
      // A plain ctr container has no workload: null in ps, "" in records.
      const rows = (await request<{ containers: Array<Record<string, unknown>> }>(p.socket, { op: 'ps' })).containers.filter((c) =>
        ids.includes(String(c.id)),
      );
      expect(rows.map((r) => r.workload)).toEqual([null, null]);
      const attach = (await records(ids[0])).find((r) => r.action === 'attach')!;
      expect(attach).toMatchObject({ pod: '', pod_namespace: '', container_name: '' });
    } finally {
      for (const id of ids) await removeContainer(p, id, NS);
    }
  });
});
