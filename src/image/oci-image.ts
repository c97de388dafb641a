import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar-stream';

export const TEST_IMAGE_NAME = 'cgfence.local/test:latest';

export type ImageFile =
  | { path: string; source?: string; content?: Buffer | string; mode?: number }
  | { path: string; symlink: string }
  | { path: string; dir: true; mode?: number };

export interface ImageConfig {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
}

export interface BuildOciImageOptions {
  /** Full reference, e.g. cgfence.local/test:latest. */
  name: string;
  outFile: string;
  files: ImageFile[];
  config: ImageConfig;
}

export interface BuiltImage {
  name: string;
  outFile: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
}

const MEDIA = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar',
};

// A fixed mtime keeps digests stable across builds, so re-importing the same
// files is a no-op for containerd's content store.
const EPOCH = new Date(0);

export function ociArchitecture(arch: string = process.arch): string {
  switch (arch) {
    case 'x64':
      return 'amd64';
    case 'arm64':
      return 'arm64';
    case 'arm':
      return 'arm';
    case 'ia32':
      return '386';
    case 'ppc64':
      return 'ppc64le';
    case 's390x':
      return 's390x';
    case 'riscv64':
      return 'riscv64';
    default:
      throw new Error(`no OCI architecture known for node arch ${arch}`);
  }
}

function sha256(buf: Buffer): string {
  return 'sha256:' + createHash('sha256').update(buf).digest('hex');
}

function normalize(p: string): string {
  const n = path.posix
    .normalize('/' + p)
    .replace(/^\/+/, '')
    .replace(/\/+$/, '');
  if (n === '' || n === '.' || n.startsWith('..')) throw new Error(`bad image path: ${p}`);
  return n;
}

type Entry =
  | { kind: 'dir'; name: string; mode: number }
  | { kind: 'file'; name: string; mode: number; data: Buffer }
  | { kind: 'symlink'; name: string; target: string };

function collectEntries(files: ImageFile[]): Entry[] {
  const byName = new Map<string, Entry>();
  const addParents = (name: string) => {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const cur = byName.get(dir);
      if (!cur) byName.set(dir, { kind: 'dir', name: dir, mode: 0o755 });
      else if (cur.kind !== 'dir') throw new Error(`image path ${dir} is both a directory and a ${cur.kind}`);
    }
  };
  for (const f of files) {
    const name = normalize(f.path);
    addParents(name);
    let entry: Entry;
    if ('symlink' in f) {
      entry = { kind: 'symlink', name, target: f.symlink };
    } else if ('dir' in f) {
      entry = { kind: 'dir', name, mode: f.mode ?? 0o755 };
    } else {
      let data: Buffer;
      if (f.content !== undefined) data = Buffer.isBuffer(f.content) ? f.content : Buffer.from(f.content);
      else if (f.source !== undefined) data = fs.readFileSync(f.source);
      else throw new Error(`image file ${f.path}: needs source or content`);
      const mode = f.mode ?? (f.source !== undefined ? fs.statSync(f.source).mode & 0o7777 : 0o644);
      entry = { kind: 'file', name, mode, data };
    }
    const prev = byName.get(name);
    // An explicit dir entry may restate an implied parent (e.g. to set /tmp's mode).
    if (prev && !(prev.kind === 'dir' && entry.kind === 'dir')) throw new Error(`image path ${name} given twice`);
    byName.set(name, entry);
  }
  // Sorted by path components so every parent precedes its children.
  return [...byName.values()].sort((a, b) => {
    const pa = a.name.split('/');
    const pb = b.name.split('/');
    for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
      if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
    }
    return pa.length - pb.length;
  });
}

async function packToBuffer(fill: (pack: tar.Pack) => Promise<void>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  await fill(pack);
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

function addEntry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }, data?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (data) pack.entry(header, data, cb);
    else pack.entry(header, cb);
  });
}

const owner = { uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: EPOCH };

async function buildLayer(entries: Entry[]): Promise<Buffer> {
  return packToBuffer(async (pack) => {
    for (const e of entries) {
      switch (e.kind) {
        case 'dir':
          await addEntry(pack, { ...owner, name: e.name + '/', type: 'directory', mode: e.mode });
          break;
        case 'file':
          await addEntry(pack, { ...owner, name: e.name, type: 'file', mode: e.mode, size: e.data.length }, e.data);
          break;
        case 'symlink':
          await addEntry(pack, { ...owner, name: e.name, type: 'symlink', linkname: e.target, mode: 0o777 });
          break;
      }
    }
  });
}

function tagOf(name: string): string {
  const afterSlash = name.slice(name.lastIndexOf('/') + 1);
  const at = afterSlash.indexOf('@');
  const base = at >= 0 ? afterSlash.slice(0, at) : afterSlash;
  const colon = base.lastIndexOf(':');
  return colon >= 0 ? base.slice(colon + 1) : 'latest';
}

/**
 * Write an OCI image-layout tar (oci-layout, index.json, blobs/sha256/*) with a
 * single uncompressed layer, in the form `ctr images import` accepts.
 */
export async function buildOciImage(opts: BuildOciImageOptions): Promise<BuiltImage> {
  const layer = await buildLayer(collectEntries(opts.files));
  const layerDigest = sha256(layer);
  const arch = ociArchitecture();

  const imageConfig: Record<string, unknown> = {};
  if (opts.config.entrypoint) imageConfig.Entrypoint = opts.config.entrypoint;
  if (opts.config.cmd) imageConfig.Cmd = opts.config.cmd;
  if (opts.config.env) imageConfig.Env = opts.config.env;
  if (opts.config.workingDir) imageConfig.WorkingDir = opts.config.workingDir;

  const config = Buffer.from(
    JSON.stringify({
      created: EPOCH.toISOString(),
      architecture: arch,
      os: 'linux',
      config: imageConfig,
      // Uncompressed layer: its diff_id is its own digest.
      rootfs: { type: 'layers', diff_ids: [layerDigest] },
      history: [{ created: EPOCH.toISOString(), created_by: 'cgfence buildOciImage' }],
    }),
  );
  const configDigest = sha256(config);

  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config: { mediaType: MEDIA.config, digest: configDigest, size: config.length },
      layers: [{ mediaType: MEDIA.layer, digest: layerDigest, size: layer.length }],
    }),
  );
  const manifestDigest = sha256(manifest);

  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: [
        {
          mediaType: MEDIA.manifest,
          digest: manifestDigest,
          size: manifest.length,
          platform: { architecture: arch, os: 'linux' },
          annotations: {
            // containerd names the imported image from this one...
            'io.containerd.image.name': opts.name,
            // ...and OCI tools from this one, which by convention holds the tag.
            'org.opencontainers.image.ref.name': tagOf(opts.name),
          },
        },
      ],
    }),
  );
  const layout = Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const blobPath = (d: string) => `blobs/sha256/${d.slice('sha256:'.length)}`;
  const archive = await packToBuffer(async (pack) => {
    const f = (name: string, data: Buffer) => addEntry(pack, { ...owner, name, type: 'file', mode: 0o644, size: data.length }, data);
    await addEntry(pack, { ...owner, name: 'blobs/', type: 'directory', mode: 0o755 });
    await addEntry(pack, { ...owner, name: 'blobs/sha256/', type: 'directory', mode: 0o755 });
    await f('oci-layout', layout);
    await f('index.json', index);
    await f(blobPath(configDigest), config);
    await f(blobPath(manifestDigest), manifest);
    await f(blobPath(layerDigest), layer);
  });

  fs.mkdirSync(path.dirname(opts.outFile), { recursive: true });
  // Written to a temporary name first so a concurrent reader never imports half an archive.
  const tmp = `${opts.outFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, archive);
  fs.renameSync(tmp, opts.outFile);

  return { name: opts.name, outFile: opts.outFile, manifestDigest, configDigest, layerDigest };
}

export const TEST_IMAGE_APPLETS = [
  'sh',
  'ls',
  'cat',
  'echo',
  'true',
  'false',
  'sleep',
  'env',
  'id',
  'wc',
  'head',
  'mkdir',
  'touch',
  'rm',
  'cp',
  'ln',
  'chmod',
  'stat',
  'nc',
  'wget',
  'ping',
  'printf',
  'test',
  'grep',
  'sed',
  'uname',
  'hostname',
  'ps',
];

/**
 * The project's test image: busybox with applet symlinks in /bin, and two
 * separate regular-file copies of busybox at /usr/local/bin/tool-a and tool-b.
 * They are copies, not links, so each has its own inode and therefore its own
 * identity for exec allow-lists, while behaving exactly like busybox. busybox picks
 * the applet from argv[0], so run them as `exec -a echo /usr/local/bin/tool-a hi`.
 */
export function testImageFiles(busyboxPath = '/bin/busybox'): ImageFile[] {
  const files: ImageFile[] = [
    { path: '/bin/busybox', source: busyboxPath, mode: 0o755 },
    ...TEST_IMAGE_APPLETS.map((a) => ({ path: `/bin/${a}`, symlink: 'busybox' })),
    { path: '/usr/bin', dir: true as const },
    { path: '/usr/local/bin/tool-a', source: busyboxPath, mode: 0o755 },
    { path: '/usr/local/bin/tool-b', source: busyboxPath, mode: 0o755 },
    { path: '/tmp', dir: true as const, mode: 0o1777 },
    { path: '/etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
    { path: '/etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
    { path: '/root', dir: true as const, mode: 0o700 },
    // runc mounts over these, but they must exist as mount points in some setups.
    { path: '/proc', dir: true as const },
    { path: '/sys', dir: true as const },
    { path: '/dev', dir: true as const },
  ];
  return files;
}

export const TEST_IMAGE_CONFIG: ImageConfig = {
  env: ['PATH=/usr/local/bin:/usr/bin:/bin'],
  cmd: ['/bin/sh'],
};

export function buildTestImage(outFile: string, busyboxPath = '/bin/busybox'): Promise<BuiltImage> {
  return buildOciImage({ name: TEST_IMAGE_NAME, outFile, files: testImageFiles(busyboxPath), config: TEST_IMAGE_CONFIG });
}
