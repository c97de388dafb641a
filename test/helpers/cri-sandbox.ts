// A private containerd with its CRI plugin and cgfence's runtime handler (the file shipped in
// oci-config/, with this machine's launcher), the daemon beside it, a pause image and the test
// image in k8s.io: pods and containers made as kubelet makes them, without Kubernetes.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TEST_IMAGE_NAME, buildOciImage, buildTestImage } from '../../src/image/oci-image';
import { containerdPaths, importImage, startContainerd } from '../../src/sandbox/containerd-process';
import { SandboxPaths, sandboxDown, sandboxPaths, sandboxUp } from '../../src/sandbox/sandbox';
import { CriClient, Obj, criClient } from './cri-client';
import { buildFixture } from './kernel';
import { waitFor } from './sandbox';

export const PAUSE_IMAGE = 'cgfence.local/pause:test';
export const HANDLER_FILE = path.join(__dirname, '..', '..', 'oci-config', 'containerd-runtime-handler.toml');

/** A pod sandbox as RunPodSandbox made it, with the config kubelet would pass on. */
export interface CriPod {
  id: string;
  config: Obj;
}

export interface PodOptions {
  namespace: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  /** The runtime handler; '' is containerd's default (runc). */
  handler?: string;
}

export interface CriSandboxOptions {
  /** The daemon's config file (profiles, selectors), as YAML. */
  daemonConfig?: string;
}

export class CriSandbox {
  paths: SandboxPaths;
  /** The runtime handler TOML containerd was given: the shipped one, with this machine's launcher and no systemd. */
  handler = '';
  private client: CriClient | null = null;
  private readonly pods: string[] = [];

  constructor(readonly dir: string) {
    this.paths = sandboxPaths(dir);
  }

  get cri(): CriClient {
    if (!this.client) throw new Error(`CRI sandbox ${this.dir}: not up`);
    return this.client;
  }

  async up(opts: CriSandboxOptions = {}): Promise<void> {
    const { dir } = this;
    const p = this.paths;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const shipped = fs.readFileSync(HANDLER_FILE, 'utf8');
    const binaryName = /^\s*BinaryName\s*=\s*"([^"]+)"/m.exec(shipped)?.[1];
    if (!binaryName) throw new Error(`${HANDLER_FILE}: no BinaryName = "..." line`);
    this.handler = shipped
      // This machine's build of the launcher, and no systemd to manage cgroups.
      .replace(`BinaryName = "${binaryName}"`, `BinaryName = ${JSON.stringify(p.runc)}`)
      .replace('SystemdCgroup = true', 'SystemdCgroup = false');
    const extraConfig = [
      '[plugins."io.containerd.grpc.v1.cri"]',
      `  sandbox_image = ${JSON.stringify(PAUSE_IMAGE)}`,
      // Never a node-wide port: the streaming server (exec, attach) on an ephemeral one.
      '  stream_server_address = "127.0.0.1"',
      '  stream_server_port = "0"',
      // Root here lacks CAP_SYS_RESOURCE, so the sandbox's oom_score_adj of -998 would fail runc.
      '  restrict_oom_score_adj = true',
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      `    bin_dir = ${JSON.stringify(path.join(dir, 'cni', 'bin'))}`,
      `    conf_dir = ${JSON.stringify(path.join(dir, 'cni', 'conf'))}`,
      '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '    runtime_type = "io.containerd.runc.v2"',
      this.handler,
    ].join('\n');
    const realRunc = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
    await startContainerd(dir, {
      enableCri: true,
      extraConfig,
      env: {
        CGFENCE_SOCKET: p.socket,
        CGFENCE_REAL_RUNC: realRunc,
        CGFENCE_FAIL_MODE: 'closed',
        CGFENCE_SPOOL_DIR: path.join(dir, 'spool'),
      },
    });
    // Reuses that containerd; starts the daemon.
    let config: string | undefined;
    if (opts.daemonConfig !== undefined) {
      config = path.join(dir, 'daemon-config.yaml');
      fs.writeFileSync(config, opts.daemonConfig);
    }
    this.paths = await sandboxUp(dir, () => {}, { config });

    const work = path.join(dir, 'images');
    fs.mkdirSync(work, { recursive: true });
    const pauseBin = buildFixture('pause', work);
    const pauseTar = path.join(work, 'pause.tar');
    await buildOciImage({
      name: PAUSE_IMAGE,
      outFile: pauseTar,
      config: { entrypoint: ['/pause'] },
      files: [
        { path: '/pause', source: pauseBin, mode: 0o755 },
        { path: '/proc', dir: true },
        { path: '/sys', dir: true },
        { path: '/dev', dir: true },
        { path: '/etc', dir: true },
      ],
    });
    if (!fs.existsSync(this.paths.imageTar)) await buildTestImage(this.paths.imageTar);
    await importImage(dir, pauseTar, 'k8s.io');
    await importImage(dir, this.paths.imageTar, 'k8s.io');
    this.client = criClient(this.paths.containerdSocket);
    for (const image of [PAUSE_IMAGE, TEST_IMAGE_NAME]) {
      // CRI learns of imported images from containerd's events.
      let seen = false;
      await waitFor(
        `CRI to see ${image}`,
        () => {
          void this.cri.call<Obj>('ImageService.ImageStatus', { image: { image } }).then(
            (r) => {
              seen = !!r.image?.id;
            },
            () => {},
          );
          return seen;
        },
        30_000,
      );
    }
  }

  /** Removes every pod made here, stops the daemon and containerd, removes the directory; safe after a failed up(). */
  async down(): Promise<void> {
    for (const id of this.pods) {
      await this.client?.call('StopPodSandbox', { podSandboxId: id }).catch(() => {});
      await this.client?.call('RemovePodSandbox', { podSandboxId: id }).catch(() => {});
    }
    this.client?.close();
    this.client = null;
    await sandboxDown(this.dir).catch((e) => console.error(e));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** RunPodSandbox as kubelet calls it: host network (no CNI here), each container its own pid namespace (the default). */
  async runPod(name: string, opts: PodOptions): Promise<CriPod> {
    const logDirectory = path.join(this.dir, 'pods', name);
    fs.mkdirSync(logDirectory, { recursive: true });
    const config = {
      metadata: { name, uid: crypto.randomUUID(), namespace: opts.namespace, attempt: 0 },
      logDirectory,
      annotations: opts.annotations ?? {},
      labels: opts.labels ?? {},
      linux: { securityContext: NAMESPACES },
    };
    const r = await this.cri
      .call<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler: opts.handler ?? 'cgfence' })
      .catch((e: Error) => {
        // containerd's own words on why, for whoever reads a failure.
        const log = fs
          .readFileSync(containerdPaths(this.dir).log, 'utf8')
          .split('\n')
          .filter((l) => /level=(error|warning)/.test(l))
          .slice(-5)
          .join('\n');
        throw new Error(`${e.message}\ncontainerd log:\n${log}`);
      });
    this.pods.push(r.podSandboxId);
    return { id: r.podSandboxId, config };
  }

  /** CreateContainer + StartContainer of the test image running `/bin/sh -c script`; its log is `<name>.log` in the pod's log directory. */
  async runContainer(pod: CriPod, name: string, script: string, labels: Record<string, string> = {}): Promise<string> {
    const c = await this.cri.call<{ containerId: string }>('CreateContainer', {
      podSandboxId: pod.id,
      sandboxConfig: pod.config,
      config: {
        metadata: { name },
        image: { image: TEST_IMAGE_NAME },
        command: ['/bin/sh', '-c', script],
        logPath: `${name}.log`,
        labels,
        linux: { securityContext: NAMESPACES },
      },
    });
    await this.cri.call('StartContainer', { containerId: c.containerId });
    return c.containerId;
  }
}

const NAMESPACES = { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } };

/** The container's output lines from its CRI log file ("<time> stdout F <line>"). */
export function containerOutput(pod: CriPod, name: string): string {
  try {
    return fs
      .readFileSync(path.join(pod.config.logDirectory, `${name}.log`), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ').slice(3).join(' '))
      .join('\n');
  } catch {
    return '';
  }
}
