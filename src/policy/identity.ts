// Resolves allow-listed paths to file identities inside a process's mount namespace.
//
// Why not just stat("/proc/<pid>/root" + path): the magic /proc/<pid>/root link is only
// followed once; an absolute symlink further down (/bin/sh -> /bin/busybox) would then be
// resolved against *our* root and name a host file. So symlinks are walked by hand and
// every absolute target is re-anchored at the container's root, which is also what keeps
// a hostile image from pointing a path outside its rootfs.
import fs from 'node:fs';
import path from 'node:path';
import { FileIdentity, kernelDev } from '../kernel/abi';

const MAX_SYMLINKS = 40; // the kernel's own limit

export class ResolveError extends Error {
  /** The path inside the container at which resolution stopped (symlinks followed), when known. */
  at?: string;
  constructor(public readonly requested: string, reason: string, at?: string) {
    super(`${requested}: ${reason}`);
    this.at = at;
  }
}

/** Resolves `p` (absolute, inside `root`) to a host path under `root`, following symlinks in-root. */
export function resolveInRoot(root: string, p: string): string {
  return resolveInRootDetailed(root, p).host;
}

/** As resolveInRoot, with the path inside the container it ended at (symlinks followed). */
export function resolveInRootDetailed(root: string, p: string): { host: string; inside: string } {
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
      const at = '/' + [...done, part].join('/');
      throw new ResolveError(p, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file in the container' : (e as Error).message, at);
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw new ResolveError(p, 'too many levels of symbolic links');
      const target = fs.readlinkSync(host);
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...target.split('/').filter(Boolean));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) throw new ResolveError(p, `${'/' + [...done, part].join('/')} is not a directory`, '/' + [...done, part].join('/'));
    done.push(part);
  }
  return { host: path.join(root, ...done), inside: '/' + done.join('/') };
}

export function identityOf(hostPath: string): FileIdentity {
  const st = fs.statSync(hostPath, { bigint: true });
  return { dev: kernelDev(st.dev), ino: st.ino };
}

export interface ResolvedEntry { path: string; identity: FileIdentity }

/**
 * Resolves allow-list entries (absolute paths, or `DIR/*` for every regular file directly
 * in DIR) inside the root of `rootPid` (or an explicit root directory). Entries that name
 * nothing are errors: a typo in an allow-list must not silently shrink it.
 */
export function resolveAllowList(entries: string[], root: { pid: number } | { dir: string }): ResolvedEntry[] {
  const rootDir = 'pid' in root ? `/proc/${root.pid}/root` : root.dir;
  const out: ResolvedEntry[] = [];
  for (const entry of entries) {
    if (entry.endsWith('/*')) {
      const dir = entry.slice(0, -2) || '/';
      const hostDir = resolveInRoot(rootDir, dir);
      if (!fs.statSync(hostDir).isDirectory()) throw new ResolveError(entry, `${dir} is not a directory`);
      for (const name of fs.readdirSync(hostDir).sort()) {
        const inner = path.posix.join(dir, name);
        let hostPath: string;
        try {
          hostPath = resolveInRoot(rootDir, inner);
        } catch {
          continue; // dangling symlinks in a directory are not the user's typo
        }
        const st = fs.statSync(hostPath);
        if (st.isFile()) out.push({ path: inner, identity: identityOf(hostPath) });
      }
      continue;
    }
    const hostPath = resolveInRoot(rootDir, entry);
    if (!fs.statSync(hostPath).isFile()) throw new ResolveError(entry, 'not a regular file');
    out.push({ path: entry, identity: identityOf(hostPath) });
  }
  return out;
}

/** True when container path `p` is `mountPoint` or lies below it. */
export function isUnder(p: string, mountPoint: string): boolean {
  const m = mountPoint.replace(/\/+$/, '') || '/';
  return m === '/' || p === m || p.startsWith(`${m}/`);
}

export interface PrepareCheck {
  /** Entries resolved in the bundle's rootfs, nothing of them under a mount point. */
  resolved: ResolvedEntry[];
  /** Entries that name (or lead through a symlink into) a mount point: resolved at attach. */
  deferred: string[];
  /** Entries that name nothing, each as `ENTRY: why`. */
  problems: string[];
}

/**
 * The allow-list check before the container exists: only the bundle's rootfs is there.
 * What the container will see under its mounts (bind mounts from the host, tmpfs...) is not
 * there yet, and what the rootfs holds at those paths is hidden by them. So an entry whose
 * path, or whose resolution after symlinks, reaches a mount point of config.json is left for
 * attach, where it is resolved in the container's own mount namespace; the rest must resolve
 * here, so a typo is still refused before runc creates anything.
 */
export function checkAllowListInRootfs(entries: string[], rootfs: string, mountPoints: string[]): PrepareCheck {
  const out: PrepareCheck = { resolved: [], deferred: [], problems: [] };
  const mounted = (p: string) => mountPoints.some((m) => isUnder(p, m));
  for (const entry of entries) {
    const named = entry.endsWith('/*') ? entry.slice(0, -2) || '/' : entry;
    if (mounted(named)) {
      out.deferred.push(entry);
      continue;
    }
    try {
      const { inside } = resolveInRootDetailed(rootfs, named);
      if (mounted(inside)) {
        out.deferred.push(entry);
        continue;
      }
      out.resolved.push(...resolveAllowList([entry], { dir: rootfs }));
    } catch (e) {
      if (e instanceof ResolveError && e.at !== undefined && mounted(e.at)) out.deferred.push(entry);
      else out.problems.push((e as Error).message);
    }
  }
  return out;
}
