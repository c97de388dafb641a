// Reads and rewrites an OCI bundle's config.json between containerd writing it and runc
// reading it (prepare): read once, edited by each backend in turn, written back once.
import fs from 'node:fs';
import path from 'node:path';
import { OciSeccomp } from './seccomp/seccomp-profile';

export interface OciSpec {
  annotations?: Record<string, string>;
  linux?: { seccomp?: OciSeccomp; [other: string]: unknown };
  [other: string]: unknown;
}

export function readBundleConfig(bundle: string): OciSpec {
  const file = path.join(bundle, 'config.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as OciSpec;
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/**
 * Rewrites config.json in place: the new bytes over the old from offset 0, then the file cut
 * to their length. Not write-then-rename: on ext4 a rename over an existing file (and a
 * truncate to zero) makes the kernel start writing the data back at once (auto_da_alloc),
 * 0.03-0.2 ms per create here, and this write is on the create's path. Nothing reads the
 * file meanwhile: runc reads it only after prepare's reply, and a prepare whose write fails
 * (or whose daemon dies in it) is refused, or never answered, so runc never runs on half a file.
 */
export function writeBundleConfig(bundle: string, spec: OciSpec): void {
  const file = path.join(bundle, 'config.json');
  const data = Buffer.from(JSON.stringify(spec));
  let fd: number | undefined;
  try {
    // O_NOFOLLOW: the bundle is containerd's, but a link planted in it must not redirect the write.
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
    for (let off = 0; off < data.length;) off += fs.writeSync(fd, data, off, data.length - off, off);
    fs.ftruncateSync(fd, data.length);
  } catch (e) {
    throw new Error(`cannot rewrite ${file}: ${(e as Error).message}`);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
