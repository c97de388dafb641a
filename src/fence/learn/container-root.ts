// The root directory of a learning container, held open from the attach until its learned
// record is written. A container that lives a few milliseconds is gone (and `ctr run --rm`
// has unmounted and removed its snapshot) before the daemon maps what it executed to paths:
// the held directory keeps that file tree reachable, lower image layers and files written at
// run time alike, for as long as the daemon needs it. Opening it costs one open() at attach;
// the tree is only walked when a name does not lead to a file (findByIdentity).
import fs from 'node:fs';
import path from 'node:path';
import { FileIdentity } from '../../kernel/abi';
import { identityOf, resolveInRoot } from '../../policy/identity';

/** How many directory entries findByIdentity reads at most (a bound on a huge image). */
export const MAX_WALK_ENTRIES = 200_000;

export interface FoundFile {
  /** The file's own path inside the container, symlinks resolved. */
  path: string;
  /** When the file came into being (birth time where the filesystem has one, else ctime), ms. */
  bornMs: number;
}

export class ContainerRoot {
  private index: Map<string, string> | null = null;
  /** True when the last walk stopped at MAX_WALK_ENTRIES. */
  walkTruncated = false;

  /** Regular files the walk indexed (0 before any walk). */
  get indexedFiles(): number {
    return this.index?.size ?? 0;
  }

  private constructor(
    private fd: number | null,
    private readonly dir: string,
  ) {}

  /** Holds the root of `pid` (its init); null when the process is gone already. */
  static open(pid: number): ContainerRoot | null {
    try {
      const fd = fs.openSync(`/proc/${pid}/root`, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      return new ContainerRoot(fd, `/proc/self/fd/${fd}`);
    } catch {
      return null;
    }
  }

  /** A root given as a directory (tests, a bundle's rootfs): nothing is held. */
  static ofDir(dir: string): ContainerRoot {
    return new ContainerRoot(null, dir);
  }

  /** The container path `p` (absolute) resolved in this root, when it is the file `id`. */
  resolve(p: string, id: FileIdentity): FoundFile | null {
    try {
      const host = resolveInRoot(this.dir, p);
      const got = identityOf(host);
      if (got.dev !== id.dev || got.ino !== id.ino) return null;
      return { path: `/${path.relative(this.dir, host).split(path.sep).join('/')}`, bornMs: bornMs(host) };
    } catch {
      return null;
    }
  }

  /**
   * The file of that identity anywhere in the root's own filesystem (mounts inside it, like
   * /proc, are not walked), by a walk made on first use and kept until forgetIndex(). For
   * names that no longer lead to the file: relative ones whose working directory is gone, a
   * renamed file.
   */
  findByIdentity(id: FileIdentity): FoundFile | null {
    if (!this.index) this.index = this.walk();
    const rel = this.index.get(`${id.dev}:${id.ino}`);
    return rel === undefined ? null : this.resolve(rel, id);
  }

  /** A running container's files change: the next search walks again. */
  forgetIndex(): void {
    this.index = null;
  }

  private walk(): Map<string, string> {
    const out = new Map<string, string>();
    let rootDev: bigint;
    try {
      rootDev = fs.statSync(this.dir, { bigint: true }).dev;
    } catch {
      return out;
    }
    const pending = ['/'];
    let seen = 0;
    this.walkTruncated = false;
    while (pending.length > 0) {
      const rel = pending.pop()!;
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(path.join(this.dir, rel), { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        if (++seen > MAX_WALK_ENTRIES) {
          this.walkTruncated = true;
          return out;
        }
        const child = path.posix.join(rel, e.name);
        if (e.isDirectory()) {
          try {
            if (fs.lstatSync(path.join(this.dir, child), { bigint: true }).dev === rootDev) pending.push(child);
          } catch {
            /* gone meanwhile */
          }
        } else if (e.isFile()) {
          try {
            const id = identityOf(path.join(this.dir, child));
            const k = `${id.dev}:${id.ino}`;
            if (!out.has(k)) out.set(k, child);
          } catch {
            /* gone meanwhile */
          }
        }
      }
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* already closed */
      }
      this.fd = null;
    }
    this.index = null;
  }
}

function bornMs(host: string): number {
  const st = fs.statSync(host);
  // statx gives a birth time on ext4, xfs, btrfs, tmpfs; where it is missing, Node reports 0
  // and ctime (creation, or the last change of the inode) stands in.
  return st.birthtimeMs > 0 ? st.birthtimeMs : st.ctimeMs;
}
