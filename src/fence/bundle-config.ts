// Reads and rewrites an OCI bundle's config.json between containerd writing it and runc
// reading it (prepare). Backends that change it each read the current file, so their edits
// compose in attach order.
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

/** Write-then-rename: runc never reads half a file, and a failed write leaves the original. */
export function writeBundleConfig(bundle: string, spec: OciSpec): void {
  const file = path.join(bundle, 'config.json');
  const tmp = path.join(bundle, `.config.json.cgfence-${process.pid}`);
  const mode = fs.statSync(file).mode & 0o777;
  try {
    fs.writeFileSync(tmp, JSON.stringify(spec), { mode });
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new Error(`cannot rewrite ${file}: ${(e as Error).message}`);
  }
}
