// The DaemonSet's image (`npm run image`): this machine's node and the shared libraries it
// and the addon load (found with ldd), the built project (dist/src, the addon, cgfence-runc,
// the fd-holder, production node_modules), and a static busybox for the few shell tools the
// daemon runs (mount). One uncompressed layer, OCI layout, importable with `ctr images import`
// or pushable with any OCI tool. The BPF objects are CO-RE and inside the addon: one image
// serves every kernel with BTF of the build machine's architecture.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../native';
import { BuiltImage, ImageConfig, ImageFile, buildOciImage } from './oci-image';

export const IMAGE_PREFIX = '/opt/cgfence';

export function daemonImageName(version = projectVersion()): string {
  return `cgfence.local/cgfence:${version}`;
}

export function projectVersion(root = projectRoot()): string {
  return (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
}

/** The shared objects an ELF file loads, with the dynamic loader; [] for a static one. */
export function sharedLibraries(file: string): string[] {
  let out: string;
  try {
    out = execFileSync('ldd', [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const text = `${(e as { stdout?: string }).stdout ?? ''}${(e as { stderr?: string }).stderr ?? ''}`;
    if (/not a dynamic executable|statically linked/.test(text)) return [];
    throw new Error(`ldd ${file}: ${text.trim() || (e as Error).message}`);
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
    else if (/=>\s+not found/.test(line)) throw new Error(`${file} needs ${line.trim()}`);
  }
  return libs;
}

/** Every file under dir (symlinks kept as links), as image files under `to`. */
function tree(dir: string, to: string, keep: (rel: string) => boolean = () => true): ImageFile[] {
  const out: ImageFile[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (!keep(r)) continue;
      const abs = path.join(dir, r);
      if (e.isSymbolicLink()) out.push({ path: path.join(to, r), symlink: fs.readlinkSync(abs) });
      else if (e.isDirectory()) walk(r);
      else if (e.isFile()) out.push({ path: path.join(to, r), source: abs });
    }
  };
  walk('');
  return out;
}

/** The production dependency closure, as npm resolved it in node_modules. */
function productionModules(root: string): string[] {
  const out = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith(path.join(root, 'node_modules') + path.sep));
}

export interface DaemonImageOptions {
  root?: string;
  node?: string;
  busybox?: string;
}

export function daemonImageFiles(opts: DaemonImageOptions = {}): ImageFile[] {
  const root = opts.root ?? projectRoot();
  const node = fs.realpathSync(opts.node ?? process.execPath);
  const busybox = opts.busybox ?? '/bin/busybox';
  const release = path.join(root, 'build', 'Release');
  const binaries = ['cgfence.node', 'cgfence-runc', 'cgfence-fd-holder'].map((b) => path.join(release, b));
  for (const f of [...binaries, path.join(root, 'dist', 'src', 'cli', 'main.js')]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run \`npm run build\` first`);
  }
  if (sharedLibraries(busybox).length) throw new Error(`${busybox} is not statically linked (install busybox-static)`);

  const files: ImageFile[] = [
    { path: '/usr/bin/node', source: node, mode: 0o755 },
    { path: '/bin/busybox', source: busybox, mode: 0o755 },
    ...['sh', 'mount', 'cat', 'ls', 'cp', 'mv', 'rm', 'mkdir'].map((a) => ({ path: `/bin/${a}`, symlink: 'busybox' })),
    { path: '/usr/bin/env', symlink: '/bin/busybox' },
    { path: '/usr/local/bin/cgfence', symlink: `${IMAGE_PREFIX}/bin/cgfence` },
    { path: '/usr/local/bin/cgfence-runc', symlink: `${IMAGE_PREFIX}/build/Release/cgfence-runc` },
    { path: `${IMAGE_PREFIX}/package.json`, source: path.join(root, 'package.json') },
    { path: `${IMAGE_PREFIX}/bin/cgfence`, source: path.join(root, 'bin', 'cgfence'), mode: 0o755 },
    ...binaries.map((b) => ({ path: `${IMAGE_PREFIX}/build/Release/${path.basename(b)}`, source: b, mode: 0o755 })),
    ...tree(path.join(root, 'dist', 'src'), `${IMAGE_PREFIX}/dist/src`, (r) => !r.endsWith('.map')),
    { path: '/tmp', dir: true, mode: 0o1777 },
    { path: '/etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
    { path: '/etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
    ...['/proc', '/sys', '/dev', '/run', '/var/lib/cgfence', '/var/log/cgfence', '/etc/cgfence', '/root'].map((d) => ({
      path: d,
      dir: true as const,
    })),
  ];
  for (const mod of productionModules(root)) {
    files.push(...tree(mod, `${IMAGE_PREFIX}/${path.relative(root, mod)}`, (r) => !r.split(path.sep).includes('node_modules')));
  }
  // The libraries at the paths the loader looks them up by; content of the final target.
  const libs = new Set<string>();
  for (const f of [node, ...binaries]) for (const l of sharedLibraries(f)) libs.add(l);
  for (const l of libs) files.push({ path: l, source: fs.realpathSync(l), mode: 0o755 });
  return files;
}

export const DAEMON_IMAGE_CONFIG: ImageConfig = {
  env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'NODE_ENV=production'],
  entrypoint: ['/usr/local/bin/cgfence'],
  cmd: ['daemon'],
  workingDir: '/',
};

export function buildDaemonImage(outFile: string, opts: DaemonImageOptions & { name?: string } = {}): Promise<BuiltImage> {
  return buildOciImage({
    name: opts.name ?? daemonImageName(projectVersion(opts.root)),
    outFile,
    files: daemonImageFiles(opts),
    config: DAEMON_IMAGE_CONFIG,
  });
}

async function main(argv: string[]): Promise<void> {
  const i = argv.indexOf('--out');
  const out = i >= 0 && argv[i + 1] ? path.resolve(argv[i + 1]) : path.join(projectRoot(), 'build', 'cgfence-image.tar');
  const n = argv.indexOf('--name');
  const img = await buildDaemonImage(out, n >= 0 && argv[n + 1] ? { name: argv[n + 1] } : {});
  const mb = (fs.statSync(out).size / 1048576).toFixed(1);
  console.log(`${img.name}: ${out} (${mb} MiB, OCI layout, manifest ${img.manifestDigest})`);
  console.log(`import on a node:  ctr -n k8s.io images import ${out}`);
  console.log(`or push:           skopeo copy oci-archive:${out} docker://REGISTRY/cgfence:${projectVersion()}`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(`npm run image: ${(e as Error).message}`);
    process.exitCode = 1;
  });
}
