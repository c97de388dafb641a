// The sandbox a container benchmark runs in: a directory of its own under /run (unix socket
// paths are limited to 108 bytes, so not under a long temporary directory), up for the
// length of the benchmark and down however it ends, and ctr against its containerd.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, SandboxOptions, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';

/** A new sandbox directory's path (not made yet). */
export function benchSandboxDir(): string {
  return `/run/cgfb-${crypto.randomBytes(3).toString('hex')}`;
}

/** Brings a sandbox up in dir, runs body with it, and takes it down and removes dir however body ends. */
export async function withSandbox<T>(dir: string, opts: SandboxOptions, body: (p: SandboxPaths) => Promise<T>): Promise<T> {
  const p = await sandboxUp(dir, () => {}, opts);
  try {
    return await body(p);
  } finally {
    await sandboxDown(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** ctr in the sandbox's namespace; throws with ctr's stderr when it fails. */
export function ctr(p: SandboxPaths, args: string[]): string {
  const r = spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, ...args], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`ctr ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** `ctr run --rm` of the test image through cgfence-runc (extra: its annotations, labels…), to the end of argv. */
export function runThroughLauncher(p: SandboxPaths, id: string, extra: string[], argv: string[]): void {
  ctr(p, ['run', '--rm', '--runc-binary', p.runc, ...extra, TEST_IMAGE_NAME, id, ...argv]);
}
