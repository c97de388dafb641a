// The executables one learning container ran, keyed by file identity (what the exec fence
// judges), each with the path an allow-list needs. The exec fence reports the name the
// process passed to exec: it may be relative, a symlink (/bin/ls -> busybox), a #! script
// (the kernel runs, and the fence judges, its interpreter) or a name that no longer exists.
// So a name is only taken once it resolves, inside the container, to the very identity the
// kernel executed; otherwise the process's own /proc links are asked while it still lives.
import fs from 'node:fs';
import path from 'node:path';
import { FileIdentity, formatDev } from '../../kernel/abi';
import { identityOf, resolveInRoot } from '../../policy/identity';
import { LearnedExec } from './learned-policy';

export interface ExecSighting { pid: number; path: string; dev: bigint; ino: bigint }

interface Entry { identity: FileIdentity; path: string | null; names: Set<string>; count: number }

const MAX_NAMES = 16;

function key(id: FileIdentity): string {
  return `${id.dev}:${id.ino}`;
}

/** The container path of `p` (absolute, inside `root`) with symlinks resolved, when it is the file `id`. */
function canonicalIfSame(root: string, p: string, id: FileIdentity): string | null {
  try {
    const host = resolveInRoot(root, p);
    const got = identityOf(host);
    if (got.dev !== id.dev || got.ino !== id.ino) return null;
    const rel = path.relative(root, host);
    return `/${rel.split(path.sep).join('/')}`;
  } catch {
    return null;
  }
}

function readlink(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
}

export class LearnedExecs {
  private readonly byId = new Map<string, Entry>();

  /**
   * Adds a sighting. `rootPid` is a process whose root is the container's (its init);
   * the sighting's own process is used too while it lives. True when the set changed (a new
   * identity, name or path), not merely a count.
   */
  record(s: ExecSighting, rootPid: number): boolean {
    const identity = { dev: s.dev, ino: s.ino };
    let e = this.byId.get(key(identity));
    let changed = false;
    if (!e) {
      e = { identity, path: null, names: new Set(), count: 0 };
      this.byId.set(key(identity), e);
      changed = true;
    }
    e.count++;
    if (e.names.size < MAX_NAMES && !e.names.has(s.path)) {
      e.names.add(s.path);
      changed = true;
    }
    if (e.path === null) {
      e.path = this.resolve(s, rootPid);
      changed ||= e.path !== null;
    }
    return changed;
  }

  private resolve(s: ExecSighting, rootPid: number): string | null {
    const id = { dev: s.dev, ino: s.ino };
    const roots = [`/proc/${rootPid}/root`, `/proc/${s.pid}/root`];
    const names: string[] = [];
    if (s.path.startsWith('/')) names.push(s.path);
    else {
      // Relative to the caller's working directory, which the host sees as a container path.
      const cwd = readlink(`/proc/${s.pid}/cwd`);
      if (cwd?.startsWith('/')) names.push(path.posix.join(cwd, s.path));
    }
    // The file the process runs now; a #! script's interpreter lands here.
    const exe = readlink(`/proc/${s.pid}/exe`);
    if (exe?.startsWith('/')) names.push(exe.replace(/ \(deleted\)$/, ''));
    for (const root of roots) {
      for (const n of names) {
        const c = canonicalIfSame(root, n, id);
        if (c) return c;
      }
    }
    return null;
  }

  /** Retries the names of entries still without a path (the file may be found now that the exec is over). */
  retry(rootPid: number): void {
    for (const e of this.byId.values()) {
      if (e.path !== null) continue;
      for (const n of e.names) {
        if (!n.startsWith('/')) continue;
        const c = canonicalIfSame(`/proc/${rootPid}/root`, n, e.identity);
        if (c) { e.path = c; break; }
      }
    }
  }

  list(): LearnedExec[] {
    return [...this.byId.values()]
      .map((e) => ({ path: e.path, dev: formatDev(e.identity.dev), inode: e.identity.ino.toString(), names: [...e.names].sort(), count: e.count }))
      .sort((a, b) => (a.path ?? '\uffff').localeCompare(b.path ?? '\uffff') || a.inode.localeCompare(b.inode));
  }

  get size(): number {
    return this.byId.size;
  }

  toJSON(): unknown {
    return [...this.byId.values()].map((e) => ({ dev: e.identity.dev.toString(), ino: e.identity.ino.toString(), path: e.path, names: [...e.names], count: e.count }));
  }

  static fromJSON(v: unknown): LearnedExecs {
    const out = new LearnedExecs();
    if (!Array.isArray(v)) return out;
    for (const x of v as Array<{ dev: string; ino: string; path: string | null; names: string[]; count: number }>) {
      const identity = { dev: BigInt(x.dev), ino: BigInt(x.ino) };
      out.byId.set(key(identity), { identity, path: x.path, names: new Set(x.names), count: x.count });
    }
    return out;
  }
}
