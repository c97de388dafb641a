// Resolves allow-listed paths to file identities inside a process's mount namespace.
//
// Why not just stat("/proc/<pid>/root" + path): the magic /proc/<pid>/root link is only
// followed once; an absolute symlink further down (/bin/sh -> /bin/busybox) would then be
// resolved against *our* root and name a host file. So symlinks are walked by hand and
// every absolute target is re-anchored at the container's root, which is also what keeps
// a hostile image from pointing a path outside its rootfs.
//
// Each resolved file is bound to its state at that moment by its change stamp (the inode's
// ctime, see docs/exec-integrity.md), and the ELF loader (PT_INTERP) of each allowed program
// is added as an entry that allows it only as a loader.
import fs from 'node:fs';
import path from 'node:path';
import { AllowedFile, FileIdentity, kernelDev } from '../kernel/abi';
import { elfInterpreter } from './elf-interp';
import { ResolveError } from './identity-error';
import { mappedFile } from './loader-file';

const MAX_SYMLINKS = 40; // the kernel's own limit

export { ResolveError };

/** Resolves `p` (absolute, inside `root`) to a host path under `root`, following symlinks in-root. */
export function resolveInRoot(root: string, p: string): string {
  if (!p.startsWith('/')) throw new ResolveError(p, 'not an absolute path');
  const pending = p.split('/').filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop(); // never above the root, like the kernel at "/"
      continue;
    }
    const host = path.join(root, ...done, part);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(host);
    } catch (e) {
      throw new ResolveError(p, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file in the container' : (e as Error).message);
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw new ResolveError(p, 'too many levels of symbolic links');
      const target = fs.readlinkSync(host);
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...target.split('/').filter(Boolean));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) throw new ResolveError(p, `${'/' + [...done, part].join('/')} is not a directory`);
    done.push(part);
  }
  return path.join(root, ...done);
}

export function identityOf(hostPath: string): FileIdentity {
  const st = fs.statSync(hostPath, { bigint: true });
  return { dev: kernelDev(st.dev), ino: st.ino };
}

const NS = 1_000_000_000n;
const MS = 1_000_000n;
/**
 * How long after a file's ctime its stamp may be taken: longer than one tick of the kernel's
 * coarse clock (HZ=100 gives the longest, 10 ms) with room for the coarse clock's lag. A ctime
 * whose nanoseconds are 0 is taken to come from a filesystem with whole-second timestamps.
 */
export const STAMP_SETTLE_NS = 20n * MS;
const STAMP_SETTLE_WHOLE_SECONDS_NS = NS + STAMP_SETTLE_NS;
/** A file that keeps changing for this long while being stamped is refused. */
const STAMP_MAX_WAIT_NS = 3n * NS;

function realtimeNs(): bigint {
  return BigInt(Date.now()) * MS;
}

function sleepSync(ns: bigint): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(1, Math.ceil(Number(ns) / 1e6)));
}

/**
 * The identity and change stamp of a file, as the exec fence binds it.
 *
 * A change made later must show as a different ctime. The kernel does not promise that for a
 * change in the same tick of its coarse clock as the file's last change: a filesystem without
 * multigrain timestamps keeps coarse ctimes, and even with them (6.13+) only an inode queried
 * since its last change gets a fine-grained time; an inode that was not, such as the new upper
 * inode an overlayfs copy-up creates, gets max(coarse clock, newest fine-grained time handed
 * out), which can be exactly the ctime stamped here. So a file whose ctime is that recent is
 * stamped only once the clock has moved past it (STAMP_SETTLE_NS, at most once per attach in
 * practice: image files are old), and stat'ed again then, so the stamp is what the file is
 * after the wait. See docs/exec-integrity.md, "Granularity".
 */
export function allowedFileOf(hostPath: string, interpOnly = false, first?: fs.BigIntStats): AllowedFile {
  const started = realtimeNs();
  for (;;) {
    const st = first ?? fs.statSync(hostPath, { bigint: true });
    first = undefined;
    const settle = st.ctimeNs % NS === 0n ? STAMP_SETTLE_WHOLE_SECONDS_NS : STAMP_SETTLE_NS;
    const now = realtimeNs();
    const wait = st.ctimeNs + settle - now;
    // wait > settle + 1 ms: a ctime in the future, the clock was set back; waiting for it to
    // catch up could take any time (see the doc's limits).
    if (wait <= 0n || wait > settle + MS) return { dev: kernelDev(st.dev), ino: st.ino, ctimeNs: st.ctimeNs, interpOnly };
    if (now - started > STAMP_MAX_WAIT_NS)
      throw new ResolveError(hostPath, 'the file keeps changing: no stable change stamp to allow it under');
    sleepSync(wait);
  }
}

/** loaderOf: for an entry added as the PT_INTERP loader of allowed programs, the first of them. */
export interface ResolvedEntry {
  path: string;
  identity: AllowedFile;
  loaderOf?: string;
}

/** An entry with the host path it was resolved to, until its loader is looked up. */
type Found = ResolvedEntry & { host: string };

/** The stamped identity of `host`, which allow-list entry `entry` names; one stat when it is old. */
function regularFile(entry: string, host: string): Found {
  const st = fs.statSync(host, { bigint: true });
  if (!st.isFile()) throw new ResolveError(entry, 'not a regular file');
  return { path: entry, identity: allowedFileOf(host, false, st), host };
}

/**
 * Adds the PT_INTERP loader of each ELF program in `out`, allowed only as a loader and under
 * the identity of the file the kernel maps for it (loader-file.ts: on overlayfs, the layer's).
 */
function addLoaders(found: Found[], root: { pid: number } | { dir: string }, rootDir: string): ResolvedEntry[] {
  const out: ResolvedEntry[] = found.map(({ host: _host, ...e }) => e);
  // A loader also listed by name keeps its full entry (the same identity off overlayfs).
  const have = new Set(out.map((e) => `${e.identity.dev}:${e.identity.ino}`));
  for (const e of found) {
    const interp = elfInterpreter(e.host);
    if (interp === null) continue;
    let host: string;
    try {
      host = resolveInRoot(rootDir, interp);
    } catch {
      continue; // a loader the image lacks: the kernel fails that program's exec itself
    }
    const id = allowedFileOf(mappedFile(root, '/' + path.relative(rootDir, host)), true);
    if (have.has(`${id.dev}:${id.ino}`)) continue;
    have.add(`${id.dev}:${id.ino}`);
    out.push({ path: interp, identity: id, loaderOf: e.path });
  }
  return out;
}

/**
 * Resolves allow-list entries (absolute paths, or `DIR/*` for every regular file directly
 * in DIR at this moment) inside the root of `rootPid` (or an explicit root directory), each
 * with its stamp, then the loaders of the ELF programs among them. Entries that name
 * nothing are errors: a typo in an allow-list must not silently shrink it.
 */
export function resolveAllowList(entries: string[], root: { pid: number } | { dir: string }): ResolvedEntry[] {
  const rootDir = 'pid' in root ? `/proc/${root.pid}/root` : root.dir;
  const out: Found[] = [];
  // Every entry that names nothing is reported, not only the first.
  const missing: ResolveError[] = [];
  for (const entry of entries) {
    try {
      out.push(...resolveEntry(entry, rootDir));
    } catch (e) {
      if (!(e instanceof ResolveError)) throw e;
      missing.push(e);
    }
  }
  if (missing.length === 1) throw missing[0];
  if (missing.length > 1) throw new Error(missing.map((e) => e.message).join('; '));
  return addLoaders(out, root, rootDir);
}

/** One allow-list entry's files (without loaders). */
function resolveEntry(entry: string, rootDir: string): Found[] {
  if (!entry.endsWith('/*')) return [regularFile(entry, resolveInRoot(rootDir, entry))];
  const dir = entry.slice(0, -2) || '/';
  const hostDir = resolveInRoot(rootDir, dir);
  if (!fs.statSync(hostDir).isDirectory()) throw new ResolveError(entry, `${dir} is not a directory`);
  const out: Found[] = [];
  for (const name of fs.readdirSync(hostDir).sort()) {
    const inner = path.posix.join(dir, name);
    let hostPath: string;
    try {
      hostPath = resolveInRoot(rootDir, inner);
    } catch {
      continue; // dangling symlinks in a directory are not the user's typo
    }
    const st = fs.statSync(hostPath, { bigint: true });
    if (st.isFile()) out.push({ path: inner, identity: allowedFileOf(hostPath, false, st), host: hostPath });
  }
  return out;
}
