// End-to-end helpers: a per-test sandbox (private containerd + daemon) and ctr.
import { spawnSync, SpawnSyncReturns } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { TEST_IMAGE_NAME } from '../../src/image/oci-image';
import { SANDBOX_NAMESPACE, SandboxPaths } from '../../src/sandbox/sandbox';

export const IMAGE = TEST_IMAGE_NAME;

/** A short sandbox dir: unix socket paths are limited to 108 bytes. */
export function sandboxDir(tag: string): string {
  return `/run/cgft-${tag}-${crypto.randomBytes(3).toString('hex')}`;
}

/**
 * ctr against the sandbox's containerd, in its namespace unless told another. Killed outright on
 * timeout: `ctr run` passes SIGTERM on to the container's init, which ignores it as pid 1, and
 * spawnSync would then wait for ever, where no test timeout can fire.
 */
export function ctr(p: SandboxPaths, args: string[], timeoutMs = 60_000, namespace = SANDBOX_NAMESPACE): SpawnSyncReturns<string> {
  return spawnSync('ctr', ['-a', p.containerdSocket, '-n', namespace, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
  });
}

export function cid(tag: string): string {
  return `${tag}-${crypto.randomBytes(3).toString('hex')}`;
}

/** ctr run --rm through cgfence-runc with the given annotations. */
export function runFenced(
  p: SandboxPaths,
  id: string,
  annotations: Record<string, string>,
  argv: string[],
  extra: string[] = [],
): SpawnSyncReturns<string> {
  const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  return ctr(p, ['run', '--rm', '--runc-binary', p.runc, ...ann, ...extra, IMAGE, id, ...argv]);
}

/**
 * `ctr run -d` through cgfence-runc with the given annotations (extra: more ctr run options,
 * e.g. --mount or --label); removeContainer takes it away.
 */
export function startFenced(
  p: SandboxPaths,
  id: string,
  annotations: Record<string, string>,
  argv: string[],
  opts: { extra?: string[]; timeoutMs?: number; namespace?: string } = {},
): SpawnSyncReturns<string> {
  const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  return ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ann, ...(opts.extra ?? []), IMAGE, id, ...argv], opts.timeoutMs, opts.namespace);
}

export function cli(p: SandboxPaths, args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [`${__dirname}/../../dist/src/cli/main.js`, ...args], {
    encoding: 'utf8',
    env: { ...process.env, CGFENCE_SOCKET: p.socket, CGFENCE_AUDIT_LOG: p.auditLog },
    timeout: 60_000,
  });
}

/** Polls fn (sync or async) until it gives a truthy value; fails after timeoutMs. */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `ctr run --rm` through cgfence-runc that cannot hang the test. A policy that misses a
 * syscall can leave the workload spinning on EPERM, and ctr passes SIGTERM on to a container
 * init that ignores it: on timeout ctr is killed outright and the container removed, so the
 * test fails instead of hanging.
 */
export function runFencedBounded(
  p: SandboxPaths,
  id: string,
  annotations: Record<string, string>,
  argv: string[],
  timeoutMs: number,
): SpawnSyncReturns<string> {
  const ann = Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]);
  const r = ctr(p, ['run', '--rm', '--runc-binary', p.runc, ...ann, IMAGE, id, ...argv], timeoutMs);
  if (r.error || r.signal) {
    ctr(p, ['task', 'kill', '-s', 'SIGKILL', id]);
    ctr(p, ['task', 'delete', '--force', id]);
    ctr(p, ['containers', 'delete', id]);
  }
  return r;
}

/** Kills a container started with `ctr run -d` and removes its task and container, whatever state it is in. */
export async function removeContainer(p: SandboxPaths, id: string, namespace = SANDBOX_NAMESPACE): Promise<void> {
  const run = (args: string[]) => ctr(p, args, undefined, namespace);
  run(['task', 'kill', '-s', 'SIGKILL', id]);
  await waitFor(
    'task to stop',
    () => run(['task', 'delete', id]).status === 0 || !run(['task', 'ls']).stdout.includes(`${id} `),
    20_000,
  ).catch(() => {});
  run(['task', 'delete', '--force', id]);
  run(['containers', 'delete', id]);
}

/** Kills what `ctr run -d` started and removes tasks and containers, in one pass for all of them (afterAll). */
export async function removeContainers(p: SandboxPaths, ids: string[]): Promise<void> {
  for (const id of ids) ctr(p, ['task', 'kill', '-s', 'SIGKILL', id]);
  await new Promise((r) => setTimeout(r, 300));
  for (const id of ids) {
    ctr(p, ['task', 'delete', '--force', id]);
    ctr(p, ['containers', 'delete', id]);
  }
}

/** Pids of a container's processes (from the shim, which does not need the daemon). */
export function containerPids(p: SandboxPaths, id: string): number[] {
  const r = ctr(p, ['task', 'ps', id]);
  return r.stdout
    .split('\n')
    .slice(1)
    .map((l) => Number(l.trim().split(/\s+/)[0]))
    .filter((n) => n > 0);
}

/** Is the process blocked in a seccomp user notification (waiting for an answer)? */
export function waitingInSeccomp(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/wchan`, 'utf8').includes('seccomp_do_user_notification');
  } catch {
    return false;
  }
}
