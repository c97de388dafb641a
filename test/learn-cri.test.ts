// Learn mode for a Kubernetes pod, driven through a private containerd's CRI plugin with
// cgfence's runtime handler, as kubelet drives it: a pod annotated cgfence.io/mode=learn with
// a job container that lives a few milliseconds and an app container, `cgfence learn --pod`
// merges the two (found by the pod annotations containerd's CRI puts on each container), and
// the yaml it prints, given to a new pod, fences both with zero denials.
// (The CRI harness follows test/oci-config.test.ts; the same handler file is used.)
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { readRecords } from '../src/audit/audit-read';
import { TEST_IMAGE_NAME, buildOciImage, buildTestImage } from '../src/image/oci-image';
import { importImage, startContainerd } from '../src/sandbox/containerd-process';
import { SandboxPaths, sandboxDown, sandboxPaths, sandboxUp } from '../src/sandbox/sandbox';
import { buildFixture } from './helpers/kernel';
import { cli, sandboxDir, waitFor } from './helpers/sandbox';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const dir = sandboxDir('lcri');
const POD_NAMESPACE = 'shop';
const PAUSE_IMAGE = 'cgfence.local/pause:test';
let p: SandboxPaths;
let cri: Cri;
const pods: string[] = [];

interface Cri { call<T = Obj>(method: string, req: Obj, timeoutMs?: number): Promise<T>; close(): void }

function criClient(socket: string): Cri {
  const root = protobuf.loadSync(path.join(__dirname, 'fixtures', 'cri-runtime-v1.proto'));
  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  return {
    call<T>(method: string, req: Obj, timeoutMs = 60_000): Promise<T> {
      const [svc, name] = method.includes('.') ? method.split('.') : ['RuntimeService', method];
      const reqT = root.lookupType(`runtime.v1.${name}Request`);
      const resT = root.lookupType(`runtime.v1.${name}Response`);
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest(`/runtime.v1.${svc}/${name}`,
          (m: Obj) => Buffer.from(reqT.encode(reqT.fromObject(m)).finish()),
          (b: Buffer) => resT.toObject(resT.decode(b), { longs: Number, enums: String, defaults: true }),
          req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs },
          (err, res) => (err ? reject(new Error(`CRI ${name}: ${err.details || err.message}`)) : resolve(res as T)));
      });
    },
    close: () => client.close(),
  };
}

const NS_OPTIONS = { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } };

async function runPod(name: string, annotations: Record<string, string>): Promise<{ id: string; config: Obj }> {
  const logDirectory = path.join(dir, 'pods', name);
  fs.mkdirSync(logDirectory, { recursive: true });
  const config = {
    metadata: { name, uid: crypto.randomUUID(), namespace: POD_NAMESPACE, attempt: 0 },
    logDirectory, annotations,
    // Host network: no CNI here.
    linux: { securityContext: NS_OPTIONS },
  };
  const r = await cri.call<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler: 'cgfence' });
  pods.push(r.podSandboxId);
  return { id: r.podSandboxId, config };
}

/** A container as kubelet creates it, with kubelet's labels; it runs `script` once. */
async function runContainer(pod: { id: string; config: Obj }, name: string, script: string): Promise<string> {
  const c = await cri.call<{ containerId: string }>('CreateContainer', {
    podSandboxId: pod.id,
    sandboxConfig: pod.config,
    config: {
      metadata: { name }, image: { image: TEST_IMAGE_NAME }, command: ['/bin/sh', '-c', script], logPath: `${name}.log`,
      labels: { 'io.kubernetes.pod.name': pod.config.metadata.name, 'io.kubernetes.pod.namespace': POD_NAMESPACE, 'io.kubernetes.container.name': name },
      linux: { securityContext: NS_OPTIONS },
    },
  });
  await cri.call('StartContainer', { containerId: c.containerId });
  return c.containerId;
}

function output(pod: { config: Obj }, name: string): string {
  try {
    return fs.readFileSync(path.join(pod.config.logDirectory, `${name}.log`), 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ').slice(3).join(' ')).join('\n');
  } catch {
    return '';
  }
}

/** Waits for the container to exit and the daemon to have handled it. */
async function exited(id: string): Promise<void> {
  await waitFor(`${id} to exit`, () => !cli(p, ['ps', '--json']).stdout.includes(id), 60_000);
}

beforeAll(async () => {
  p = sandboxPaths(dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const handlerToml = fs.readFileSync(path.join(__dirname, '..', 'oci-config', 'containerd-runtime-handler.toml'), 'utf8');
  const binaryName = /^\s*BinaryName\s*=\s*"([^"]+)"/m.exec(handlerToml)?.[1];
  const handler = handlerToml
    .replace(`BinaryName = "${binaryName}"`, `BinaryName = ${JSON.stringify(p.runc)}`)
    .replace('SystemdCgroup = true', 'SystemdCgroup = false');
  const extraConfig = [
    '[plugins."io.containerd.grpc.v1.cri"]',
    `  sandbox_image = ${JSON.stringify(PAUSE_IMAGE)}`,
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    '  restrict_oom_score_adj = true',
    '  [plugins."io.containerd.grpc.v1.cri".cni]',
    `    bin_dir = ${JSON.stringify(path.join(dir, 'cni', 'bin'))}`,
    `    conf_dir = ${JSON.stringify(path.join(dir, 'cni', 'conf'))}`,
    '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
    '    runtime_type = "io.containerd.runc.v2"',
    handler,
  ].join('\n');
  const realRunc = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
  await startContainerd(dir, {
    enableCri: true, extraConfig,
    env: { CGFENCE_SOCKET: p.socket, CGFENCE_REAL_RUNC: realRunc, CGFENCE_FAIL_MODE: 'closed', CGFENCE_SPOOL_DIR: path.join(dir, 'spool') },
  });
  p = await sandboxUp(dir);
  const work = path.join(dir, 'images');
  fs.mkdirSync(work, { recursive: true });
  const pauseBin = buildFixture('pause', work);
  const pauseTar = path.join(work, 'pause.tar');
  await buildOciImage({
    name: PAUSE_IMAGE, outFile: pauseTar, config: { entrypoint: ['/pause'] },
    files: [{ path: '/pause', source: pauseBin, mode: 0o755 }, { path: '/proc', dir: true }, { path: '/sys', dir: true }, { path: '/dev', dir: true }, { path: '/etc', dir: true }],
  });
  if (!fs.existsSync(p.imageTar)) await buildTestImage(p.imageTar);
  await importImage(dir, pauseTar, 'k8s.io');
  await importImage(dir, p.imageTar, 'k8s.io');
  cri = criClient(p.containerdSocket);
  for (const image of [PAUSE_IMAGE, TEST_IMAGE_NAME]) {
    let seen = false;
    await waitFor(`CRI to see ${image}`, () => {
      void cri.call<Obj>('ImageService.ImageStatus', { image: { image } }).then((r) => { seen = !!r.image?.id; }, () => {});
      return seen;
    }, 30_000);
  }
});

afterAll(async () => {
  for (const id of pods) {
    await cri?.call('StopPodSandbox', { podSandboxId: id }).catch(() => {});
    await cri?.call('RemovePodSandbox', { podSandboxId: id }).catch(() => {});
  }
  cri?.close();
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('learn over a pod through the CRI', () => {
  it('merges the pod\'s containers into pod annotations that fence a new pod with zero denials', async () => {
    const name = `web-${crypto.randomBytes(3).toString('hex')}`;
    const pod = await runPod(name, { 'cgfence.io/mode': 'learn' });
    // A job of a few milliseconds (like an init container), and an app.
    const job = await runContainer(pod, 'job', '(exec -a echo /usr/local/bin/tool-a job-ran); echo job-done');
    await exited(job);
    const app = await runContainer(pod, 'app', 'ls / >/dev/null; echo app-done');
    await exited(app);
    expect(output(pod, 'job')).toBe('job-ran\njob-done');
    expect(output(pod, 'app')).toBe('app-done');

    const out = cli(p, ['learn', '--pod', `${POD_NAMESPACE}/${name}`, '--format', 'yaml']);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/^# cgfence learn: what 2 containers \(k8s\.io\/\w+, k8s\.io\/\w+\) did, as pod annotations/);
    const ann = (YAML.parse(out.stdout) as { metadata: { annotations: Record<string, string> } }).metadata.annotations;
    expect(ann['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a');
    const json = JSON.parse(cli(p, ['learn', '--pod', `${POD_NAMESPACE}/${name}`, '--json']).stdout) as { sources: Array<{ id: string; pod: { namespace: string; name: string } }> };
    expect(json.sources.map((s) => s.id).sort()).toEqual([app, job].sort());
    expect(json.sources.every((s) => s.pod.namespace === POD_NAMESPACE && s.pod.name === name)).toBe(true);

    const name2 = `web2-${crypto.randomBytes(3).toString('hex')}`;
    const pod2 = await runPod(name2, ann);
    const job2 = await runContainer(pod2, 'job', '(exec -a echo /usr/local/bin/tool-a job-ran); echo job-done');
    await exited(job2);
    const app2 = await runContainer(pod2, 'app', 'ls / >/dev/null; echo app-done');
    await exited(app2);
    expect(output(pod2, 'job')).toBe('job-ran\njob-done');
    expect(output(pod2, 'app')).toBe('app-done');
    for (const id of [job2, app2]) {
      // The detach record comes last, once the backends have written what they owe the
      // container (its network counts): wait for it.
      let recs = await readRecords(p.auditLog, { container: id });
      for (let i = 0; i < 150 && !recs.some((r) => r.type === 'lifecycle' && r.action === 'detach'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        recs = await readRecords(p.auditLog, { container: id });
      }
      const attach = recs.find((r) => r.type === 'lifecycle' && r.action === 'attach');
      expect(attach?.controls).toEqual({ exec: 'enforced', network: 'enforced', seccomp: 'enforced' });
      const detach = recs.find((r) => r.type === 'lifecycle' && r.action === 'detach');
      expect(detach?.denied).toBe(0);
      expect(recs.filter((r) => r.action === 'deny')).toEqual([]);
    }
  });
});
