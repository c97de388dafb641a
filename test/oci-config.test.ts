// oci-config/, checked as far as one machine without Kubernetes allows: the manifests'
// structure against what the daemon and cgfence-runc accept, and the containerd runtime
// handler live, in a private containerd with its CRI plugin, driven as kubelet drives it.
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { readRecords } from '../src/audit/audit-read';
import { parseArgs } from '../src/cli/args';
import { UNINSTALL_FLAGS } from '../src/cli/commands/uninstall';
import { DEFAULT_SOCKET } from '../src/daemon/daemon-client';
import { ContainerdClient } from '../src/containerd/client';
import { SETTINGS, loadConfigFile, resolveConfig } from '../src/daemon/config';
import { daemonImageName } from '../src/image/daemon-image';
import { native } from '../src/native';
import { KEYS, parseAnnotations } from '../src/policy/annotations';
import { containerdConfig, containerdPaths } from '../src/sandbox/containerd-process';
import { SandboxPaths } from '../src/sandbox/sandbox';
import { CriClient, Obj } from './helpers/cri-client';
import { CriPod, CriSandbox, containerOutput } from './helpers/cri-sandbox';
import { cli, sandboxDir, waitFor } from './helpers/sandbox';

const ROOT = path.join(__dirname, '..');
const OCI = path.join(ROOT, 'oci-config');
const read = (f: string) => fs.readFileSync(path.join(OCI, f), 'utf8');
const resolveSyscalls = (names: string[]) => native().resolveSyscalls(names);

const handlerToml = read('containerd-runtime-handler.toml');
const handlerName = /^\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.([\w-]+)\]$/m.exec(handlerToml)?.[1];
const binaryName = /^\s*BinaryName\s*=\s*"([^"]+)"/m.exec(handlerToml)?.[1];

const docs = (f: string): Obj[] =>
  YAML.parseAllDocuments(read(f))
    .map((d) => {
      expect(d.errors, `${f}: ${d.errors.join('; ')}`).toEqual([]);
      return d.toJS() as Obj;
    })
    .filter((d) => d !== null);

const dsDocs = docs('daemonset.yaml');
const ds = dsDocs.find((d) => d.kind === 'DaemonSet')!;
const pod = ds?.spec?.template?.spec as Obj;
const daemon = pod?.containers?.find((c: Obj) => c.name === 'cgfence') as Obj;
const volume = (name: string) => pod.volumes.find((v: Obj) => v.name === name) as Obj;

/** The daemon's flags as the CLI parses them: an unknown one throws. */
function daemonFlags(): Record<string, string | undefined> {
  const argv = [...daemon.command, ...(daemon.args ?? [])];
  expect(argv.slice(0, 2)).toEqual(['cgfence', 'daemon']);
  return parseArgs(argv.slice(2), { values: [...Object.keys(SETTINGS), 'config'] }).flags;
}

/** The host path behind a path inside the daemon container, through its hostPath mounts. */
function hostPathOf(container: Obj, inside: string): string | null {
  const mounts = [...container.volumeMounts].sort((a: Obj, b: Obj) => b.mountPath.length - a.mountPath.length);
  for (const m of mounts) {
    if (inside !== m.mountPath && !inside.startsWith(`${m.mountPath}/`)) continue;
    const v = volume(m.name);
    if (!v?.hostPath) return null;
    return path.join(v.hostPath.path, inside.slice(m.mountPath.length));
  }
  return null;
}

function runcConfKeys(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const eq = t.indexOf('=');
    expect(eq, `runc.conf line ${JSON.stringify(line)}`).toBeGreaterThan(0);
    out[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
  }
  return out;
}

describe('oci-config: the files agree with each other and with what cgfence accepts', () => {
  it('the runtime handler TOML loads in containerd 1.6 with BinaryName and the annotation passthrough', () => {
    expect(handlerName).toBe('cgfence');
    expect(binaryName).toBe('/usr/local/bin/cgfence-runc');
    const tmp = fs.mkdtempSync('/tmp/cgft-toml-');
    try {
      const file = path.join(tmp, 'config.toml');
      // As on a node: the handler next to the runc one that `containerd config default` writes.
      fs.writeFileSync(
        file,
        [
          'version = 2',
          '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
          '  runtime_type = "io.containerd.runc.v2"',
          handlerToml,
        ].join('\n'),
      );
      const dump = execFileSync('containerd', ['--config', file, 'config', 'dump'], { encoding: 'utf8' });
      const section = dump.slice(dump.indexOf('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cgfence]'));
      expect(section.length).toBeLessThan(dump.length);
      const own = section.slice(0, section.indexOf('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]') >>> 0);
      expect(own).toMatch(/runtime_type = "io\.containerd\.runc\.v2"/);
      expect(own).toMatch(/pod_annotations = \["cgfence\.io\/\*", "\*\/mode", "\*\/profile", "\*\/exec-allow",/);
      expect(own).toMatch(/container_annotations = \["cgfence\.io\/\*"\]/);
      expect(own).toMatch(/BinaryName = "\/usr\/local\/bin\/cgfence-runc"/);
      expect(own).toMatch(/SystemdCgroup = true/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('the containerd 2.x handler has the same runtime, binary and passthrough as the 1.x one, in the 2.x plugin', () => {
    const v3 = read('containerd2-runtime-handler.toml');
    expect(v3).toMatch(/^\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.containerd\.runtimes\.cgfence\]$/m);
    expect(v3).toMatch(/^\s*runtime_type = 'io\.containerd\.runc\.v2'$/m);
    expect(/^\s*BinaryName = '([^']+)'$/m.exec(v3)?.[1]).toBe(binaryName);
    const items = (text: string, key: string) =>
      (new RegExp(`^\\s*${key} = \\[(.*)\\]$`, 'm').exec(text)?.[1] ?? '').split(',').map((x) => x.trim().replace(/^["']|["']$/g, ''));
    expect(items(v3, 'pod_annotations')).toContain('*/exec-allow');
    expect(items(v3, 'pod_annotations')).toEqual(items(handlerToml, 'pod_annotations'));
    expect(items(v3, 'container_annotations')).toEqual(items(handlerToml, 'container_annotations'));
  });

  it('the RuntimeClass names the handler and schedules where the DaemonSet runs', () => {
    const [rc] = docs('runtimeclass.yaml');
    expect(rc).toMatchObject({ apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass', handler: handlerName });
    expect(rc.metadata.name).toMatch(/^[a-z0-9-]+$/);
    expect(rc.scheduling.nodeSelector).toEqual(pod.nodeSelector);
  });

  it('the DaemonSet: kinds, host pid, selector, service account', () => {
    expect(dsDocs.map((d) => d.kind)).toEqual(['Namespace', 'ServiceAccount', 'DaemonSet']);
    expect(ds.apiVersion).toBe('apps/v1');
    const ns = dsDocs[0].metadata.name;
    expect(ds.metadata.namespace).toBe(ns);
    expect(dsDocs[1].metadata.namespace).toBe(ns);
    expect(pod.serviceAccountName).toBe(dsDocs[1].metadata.name);
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork ?? false).toBe(false);
    for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) expect(ds.spec.template.metadata.labels[k]).toBe(v);
  });

  it("the daemon runs `cgfence daemon` with the contract's flags, each a real one", () => {
    const flags = daemonFlags();
    for (const f of ['containerd-socket', 'state-dir', 'audit-log', 'socket', 'cgroup-mode']) expect(flags[f], f).toBeTruthy();
    expect(['auto', 'v2', 'v1']).toContain(flags['cgroup-mode']);
    // The config file it names is the ConfigMap's daemon-config.yaml, mounted as a directory
    // (a subPath mount would never see an update, and the daemon reloads on update).
    const cfgMount = daemon.volumeMounts.find((m: Obj) => m.mountPath === path.dirname(flags.config!));
    expect(path.basename(flags.config!)).toBe('daemon-config.yaml');
    expect(cfgMount.subPath).toBeUndefined();
    expect(volume(cfgMount.name).configMap.name).toBe('cgfence-config');
    const cfg = resolveConfig({ ...flags, config: path.join(OCI, 'daemon-config.yaml') }, {});
    expect(cfg.socket).toBe(flags.socket);
    // The CLI's default socket: `kubectl exec ds/cgfence -- cgfence status` finds it.
    expect(cfg.socket).toBe(DEFAULT_SOCKET);
    // Probes ask the daemon's own /healthz and /readyz on the metrics port.
    const port = Number(/:(\d+)$/.exec(flags['metrics-address']!)?.[1]);
    const metrics = daemon.ports.find((x: Obj) => x.name === 'metrics');
    expect(metrics.containerPort).toBe(port);
    expect(daemon.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(daemon.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(ds.spec.template.metadata.annotations['prometheus.io/port']).toBe(String(port));
    // The image the manifests name is the one `npm run image` builds.
    for (const c of [daemon, ...pod.initContainers]) expect(c.image).toBe(daemonImageName());
  });

  it('every path the daemon shares with the host is mounted from the host at the same path', () => {
    const cfg = resolveConfig({ ...daemonFlags(), config: path.join(OCI, 'daemon-config.yaml') }, {});
    // cgfence-runc, runc and containerd on the host name these paths to the daemon, and it to them.
    for (const p of [
      cfg.containerdSocket,
      cfg.stateDir,
      cfg.auditLog,
      cfg.socket,
      cfg.pinDir,
      '/run/containerd/io.containerd.runtime.v2.task/k8s.io/x/config.json',
      '/sys/fs/cgroup/kubepods',
    ]) {
      expect(hostPathOf(daemon, p), p).toBe(p);
    }
    for (const hp of ['/sys/fs/bpf', '/sys/fs/cgroup', '/run/containerd', '/var/lib/cgfence', '/var/log/cgfence', '/run/cgfence']) {
      expect(
        pod.volumes.some((v: Obj) => v.hostPath?.path === hp),
        hp,
      ).toBe(true);
    }
    const m = (p: string) => daemon.volumeMounts.find((x: Obj) => x.mountPath === p);
    // Container rootfs mounts made on the host after the pod started must show inside.
    expect(m('/run/containerd').mountPropagation).toBe('HostToContainer');
    // Bidirectional would need privileged and is not needed: the pins are made in the host's bpffs.
    for (const x of daemon.volumeMounts) expect(x.mountPropagation ?? 'None').not.toBe('Bidirectional');
  });

  it('privileges: the capabilities the daemon uses, and privileged only with the reason written next to it', () => {
    const sc = daemon.securityContext;
    expect(sc.capabilities.drop).toEqual(['ALL']);
    for (const c of ['BPF', 'PERFMON', 'SYS_ADMIN', 'SYS_PTRACE', 'NET_ADMIN']) expect(sc.capabilities.add).toContain(c);
    expect(sc.runAsUser).toBe(0);
    if (sc.privileged) expect(read('daemonset.yaml')).toMatch(/cgroup namespace/);
    const init = pod.initContainers[0];
    expect(init.securityContext.privileged).toBe(false);
    expect(init.securityContext.capabilities.drop).toEqual(['ALL']);
  });

  it('the init container installs cgfence-runc where the handler runs it, and runc.conf where it reads it', () => {
    const init = pod.initContainers[0] as Obj;
    expect(init.command.slice(0, 2)).toEqual(['cgfence', 'install']);
    // `cgfence install` copies next to the target and renames (test/lifecycle.test.ts runs it).
    const flags = parseArgs(init.command.slice(2), { values: ['runc-path', 'runc-conf', 'runc-conf-from'] }).flags;
    expect(hostPathOf(init, flags['runc-path']!)).toBe(binaryName);
    const defaultFile = /#define CFG_DEFAULT_FILE\s+"([^"]+)"/.exec(
      fs.readFileSync(path.join(ROOT, 'native/cgfence-runc/config.h'), 'utf8'),
    )![1];
    expect(hostPathOf(init, flags['runc-conf']!)).toBe(defaultFile);
    const cm = init.volumeMounts.find((v: Obj) => volume(v.name).configMap);
    expect(flags['runc-conf-from']).toBe(`${cm.mountPath}/runc.conf`);
  });

  it('runc.conf: only keys cgfence-runc reads, values that agree with the DaemonSet', () => {
    const keyList = /static const char \*const keys\[\] = \{([^}]*)\}/.exec(
      fs.readFileSync(path.join(ROOT, 'native/cgfence-runc/config.c'), 'utf8'),
    )![1];
    const accepted = new Set([...keyList.matchAll(/"(\w+)"/g)].map((x) => x[1]));
    expect([...accepted].sort()).toEqual(['fail_mode', 'node_hint', 'runc', 'socket', 'spool_dir']);
    const conf = runcConfKeys(read('runc.conf'));
    for (const k of Object.keys(conf)) expect(accepted, k).toContain(k);
    expect(['closed', 'open']).toContain(conf.fail_mode);
    expect(conf.socket).toBe(daemonFlags().socket);
    // The spool is read back by the daemon: it must be on a path the DaemonSet mounts.
    expect(hostPathOf(daemon, conf.spool_dir)).toBe(conf.spool_dir);
    // The daemon writes the launcher's node hint into its state dir (docs/launcher.md).
    const hint =
      conf.node_hint ??
      /#define CFG_DEFAULT_NODE_HINT\s+"([^"]+)"/.exec(fs.readFileSync(path.join(ROOT, 'native/cgfence-runc/config.h'), 'utf8'))![1];
    expect(hint).toBe(path.join(daemonFlags()['state-dir']!, 'launcher-node.conf'));
    expect(hostPathOf(daemon, hint)).toBe(hint);
  });

  it('runc.conf: cgfence-runc reads it (pass-through finds runc, create asks the socket it names)', () => {
    const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', CGFENCE_RUNC_CONFIG: path.join(OCI, 'runc.conf') };
    const runc = path.join(ROOT, 'build/Release/cgfence-runc');
    const v = spawnSync(runc, ['--version'], { env, encoding: 'utf8' });
    expect(v.status, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/^runc version/);
    const tmp = fs.mkdtempSync('/tmp/cgft-runcconf-');
    try {
      const c = spawnSync(
        runc,
        [
          '--root',
          path.join(tmp, 'root'),
          'create',
          '--bundle',
          tmp,
          '--pid-file',
          path.join(tmp, 'pid'),
          `cgft-conf-${crypto.randomBytes(3).toString('hex')}`,
        ],
        { env, encoding: 'utf8' },
      );
      expect(c.status).not.toBe(0);
      expect(c.stdout + c.stderr).toMatch(/daemon unreachable at \/run\/cgfence\/cgfence\.sock .*fail-closed|cannot read .*config\.json/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('daemon-config.yaml loads, and every profile is a valid policy', () => {
    const cfg = loadConfigFile(path.join(OCI, 'daemon-config.yaml'));
    expect(Object.keys(cfg.profiles ?? {}).length).toBeGreaterThan(0);
    expect('defaultProfile' in cfg).toBe(true);
    if (cfg.defaultProfile !== null) expect(Object.keys(cfg.profiles!)).toContain(cfg.defaultProfile);
    for (const name of Object.keys(cfg.profiles!)) {
      const p = parseAnnotations({ [KEYS.profile]: name }, { profiles: cfg.profiles, defaultProfile: cfg.defaultProfile, resolveSyscalls });
      expect(p.profile).toBe(name);
      expect(p.mode, name).not.toBe('off');
    }
    expect(resolveConfig({ config: path.join(OCI, 'daemon-config.yaml') }, {}).failMode).toBe(cfg.failMode);
  });

  it("uninstall.yaml: `cgfence uninstall` with real flags, on the DaemonSet's host paths, removing no mount point, never the audit log", () => {
    const u = docs('uninstall.yaml').find((d) => d.kind === 'DaemonSet')!;
    const upod = u.spec.template.spec as Obj;
    expect(upod.nodeSelector).toEqual(pod.nodeSelector);
    const init = upod.initContainers.find((c: Obj) => c.name === 'uninstall') as Obj;
    expect(init.command.slice(0, 2)).toEqual(['cgfence', 'uninstall']);
    const flags = parseArgs(init.command.slice(2), UNINSTALL_FLAGS).flags;
    expect(flags.force, 'the manifest must not run on over fenced containers').toBeUndefined();
    const hostOf = (inside: string) => {
      const m = [...init.volumeMounts]
        .sort((a: Obj, b: Obj) => b.mountPath.length - a.mountPath.length)
        .find((x: Obj) => inside === x.mountPath || inside.startsWith(`${x.mountPath}/`));
      const v = m && upod.volumes.find((x: Obj) => x.name === m.name);
      return v?.hostPath
        ? { host: path.join(v.hostPath.path, inside.slice(m.mountPath.length)), mountPoint: inside === m.mountPath }
        : null;
    };
    const d = daemonFlags();
    const conf = runcConfKeys(read('runc.conf'));
    const want: Record<string, string> = {
      socket: d.socket!,
      'pin-dir': d['pin-dir']!,
      'state-dir': d['state-dir']!,
      'spool-dir': conf.spool_dir,
      'runc-path': binaryName!,
      'runc-conf': /#define CFG_DEFAULT_FILE\s+"([^"]+)"/.exec(
        fs.readFileSync(path.join(ROOT, 'native/cgfence-runc/config.h'), 'utf8'),
      )![1],
    };
    for (const [flag, host] of Object.entries(want)) {
      const at = hostOf(flags[flag]!);
      expect(at?.host, `--${flag}`).toBe(host);
      expect(at?.mountPoint, `--${flag} is a mount point, which cannot be removed`).toBe(false);
    }
    for (const m of init.volumeMounts) expect(hostOf(m.mountPath)!.host.startsWith('/var/log'), m.mountPath).toBe(false);
  });

  it('the README covers every file and the steps', () => {
    const readme = read('README.md');
    for (const f of fs.readdirSync(OCI).filter((f) => f !== 'README.md')) expect(readme, f).toContain(f);
    expect(readme).toContain('kubectl -n cgfence-system create configmap cgfence-config');
    expect(readme).toMatch(/runtimeClassName: cgfence/);
  });
});

// ---- live: containerd's CRI with the handler, driven like kubelet ----

const sb = new CriSandbox(sandboxDir('oci'));
let p: SandboxPaths;
let cri: CriClient;

/** A pod in namespace cgft, with an annotation no handler passes on next to the test's own. */
function runPod(name: string, annotations: Record<string, string>, handler: string, labels: Record<string, string> = {}): Promise<CriPod> {
  return sb.runPod(name, { namespace: 'cgft', annotations: { ...annotations, 'example.com/not-passed': 'x' }, labels, handler });
}

async function specOf(id: string) {
  const client = new ContainerdClient(`unix://${p.containerdSocket}`);
  try {
    return (await client.listContainers('k8s.io')).find((c) => c.id === id)!;
  } finally {
    client.close();
  }
}

describe('live: a private containerd loads the handler with its CRI plugin, and pods get fenced', () => {
  beforeAll(async () => {
    // The node's config: a selector for pods labelled team=fenced.
    await sb.up({
      daemonConfig:
        'profiles:\n  sh-only:\n    cgfence.io/exec-allow: /bin/sh\nselectors:\n  - namespace: cgft\n    podLabels: {team: fenced}\n    profile: sh-only\n',
    });
    p = sb.paths;
    cri = sb.cri;
    expect(sb.handler).toContain(p.runc);
    expect(sb.handler).toContain('SystemdCgroup = false');
    const v = await cri.call<Obj>('Version', { version: 'v1' });
    expect(v.runtimeName).toBe('containerd');
  });

  afterAll(() => sb.down());

  it('containerd accepts the handler: the CRI plugin is up', () => {
    const r = spawnSync('ctr', ['-a', p.containerdSocket, 'plugins', 'ls'], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);
  });

  it('a pod of the cgfence handler: annotations reach the spec, the sandbox runs unfenced, the container is fenced', async () => {
    const name = `fenced-${crypto.randomBytes(3).toString('hex')}`;
    const podRun = await runPod(name, { [KEYS.execAllow]: '/bin/sh' }, 'cgfence');
    const sandbox = await specOf(podRun.id);
    expect(sandbox.runcOptions?.binaryName).toBe(p.runc);
    expect(sandbox.spec?.annotations?.['io.kubernetes.cri.container-type']).toBe('sandbox');
    expect(sandbox.spec?.annotations?.[KEYS.execAllow]).toBe('/bin/sh');

    const id = await sb.runContainer(podRun, 'app', 'echo ALLOWED-RAN; /usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"; sleep 60');
    const spec = await specOf(id);
    expect(spec.runcOptions?.binaryName).toBe(p.runc);
    expect(spec.spec?.annotations?.[KEYS.execAllow]).toBe('/bin/sh');
    expect(spec.spec?.annotations?.['example.com/not-passed']).toBeUndefined();

    await waitFor('the container to report', () => containerOutput(podRun, 'app').includes('rc='), 60_000);
    const out = containerOutput(podRun, 'app');
    expect(out).toContain('ALLOWED-RAN');
    expect(out).not.toContain('FORBIDDEN-RAN');
    // EACCES from execve (the seccomp-notify path) or SIGKILL before it runs (the BPF path).
    expect(out).toMatch(/rc=(126|137)/);

    // kubectl exec: the same fence.
    const ok = await cri.call<Obj>('ExecSync', { containerId: id, cmd: ['/bin/sh', '-c', 'echo EXEC-OK'], timeout: 30 });
    expect(Buffer.from(ok.stdout).toString()).toContain('EXEC-OK');
    const bad = await cri.call<Obj>('ExecSync', { containerId: id, cmd: ['/usr/local/bin/tool-a', 'echo', 'EXEC-RAN'], timeout: 30 });
    expect(Buffer.from(bad.stdout).toString()).not.toContain('EXEC-RAN');
    expect(bad.exitCode).not.toBe(0);

    const ps = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ namespace: string; id: string }>;
    expect(ps).toContainEqual(expect.objectContaining({ namespace: 'k8s.io', id }));
    expect(ps.some((x) => x.id === podRun.id)).toBe(false);
    const recs = await readRecords(p.auditLog, { container: id });
    expect(recs.some((r) => r.type === 'lifecycle' && r.action === 'attach' && r.namespace === 'k8s.io')).toBe(true);
    let denied = false;
    await waitFor(
      'the denial in the audit log',
      () => {
        void readRecords(p.auditLog, { container: id }).then((rs) => {
          denied = rs.some((r) => r.type === 'exec' && r.action === 'deny' && r.path === '/usr/local/bin/tool-a');
        });
        return denied;
      },
      20_000,
    );
    expect(
      (await readRecords(p.auditLog, { container: podRun.id })).filter((r) => r.type === 'lifecycle' && r.action !== 'refuse'),
    ).toEqual([]);

    await cri.call('StopContainer', { containerId: id, timeout: 0 });
    await waitFor('detach at exit', () => !cli(p, ['ps', '--json']).stdout.includes(id), 30_000);
  });

  it("selectors see the pod's namespace and labels through CRI; a misspelt prefix passes the handler and gives a warning", async () => {
    const name = `sel-${crypto.randomBytes(3).toString('hex')}`;
    // No cgfence.io/* annotation of its own: the fence comes from the node's selector.
    const podRun = await runPod(name, { 'cgfenc.io/exec-allow': '/bin/sh' }, 'cgfence', { team: 'fenced' });
    const id = await sb.runContainer(podRun, 'app', '/usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"; sleep 60');
    expect((await specOf(id)).spec?.annotations?.['cgfenc.io/exec-allow']).toBe('/bin/sh');
    await waitFor('the container to report', () => containerOutput(podRun, 'app').includes('rc='), 60_000);
    expect(containerOutput(podRun, 'app')).toMatch(/rc=(126|137)/);
    const recs = await readRecords(p.auditLog, { container: id });
    expect(recs.find((r) => r.action === 'profile-selected')).toMatchObject({
      namespace: 'k8s.io',
      profile: 'sh-only',
      selector: 'namespace=cgft,team=fenced',
      pod_namespace: 'cgft',
    });
    expect(recs.find((r) => r.action === 'annotation-warning')).toMatchObject({
      key: 'cgfenc.io/exec-allow',
      suggestion: 'cgfence.io/exec-allow',
    });
    // The sandbox gets neither.
    expect(
      (await readRecords(p.auditLog, { container: podRun.id })).filter(
        (r) => r.action === 'profile-selected' || r.action === 'annotation-warning',
      ),
    ).toEqual([]);
    await cri.call('StopContainer', { containerId: id, timeout: 0 });
  });

  it('a pod with a bad cgfence annotation fails at its first step, with the message', async () => {
    const name = `bad-${crypto.randomBytes(3).toString('hex')}`;
    await expect(runPod(name, { [KEYS.execAllow]: 'bin/sh' }, 'cgfence')).rejects.toThrow(
      /cgfence\.io\/exec-allow: "bin\/sh" is not an absolute path/,
    );
  });

  it('without the handler (the default runc one) the annotations do not reach the spec and nothing is fenced', async () => {
    const name = `plain-${crypto.randomBytes(3).toString('hex')}`;
    const podRun = await runPod(name, { [KEYS.execAllow]: '/bin/sh' }, '');
    const id = await sb.runContainer(podRun, 'app', '(exec -a echo /usr/local/bin/tool-a PLAIN-RAN)');
    expect((await specOf(id)).spec?.annotations?.[KEYS.execAllow]).toBeUndefined();
    await waitFor('the container to run', () => containerOutput(podRun, 'app').includes('PLAIN-RAN'), 60_000);
  });
});

// Keep containerdConfig's CRI switch honest without starting anything.
describe('containerdConfig', () => {
  it('disables CRI unless asked, and appends extra TOML', () => {
    const cp = containerdPaths('/run/cgft-none');
    expect(containerdConfig(cp)).toContain('"io.containerd.grpc.v1.cri"');
    const on = containerdConfig(cp, 'info', { enableCri: true, extraConfig: '# extra' });
    expect(on).not.toContain('"io.containerd.grpc.v1.cri",');
    expect(on.trimEnd().endsWith('# extra')).toBe(true);
  });
});
