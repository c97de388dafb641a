// The executables one learning container ran, keyed by file identity (what the exec fence
// judges), each with the path an allow-list needs and where the file came from.
//
// Identities come from the kernel's own record (learn_exec: complete at exit, however short
// the container's life), with the file's path as the kernel saw it at the exec (its dentry
// and parents), and from the exec fence's ring-buffer events (the names it was run by). A
// path is only taken once it resolves, inside the container, to the very identity the kernel
// executed: the kernel's path first, then the names (relative, symlinks like /bin/ls ->
// busybox, a #! script whose interpreter is what runs, or gone). They are resolved in the
// container's root held open since the attach (ContainerRoot), so a container that has exited,
// even one whose snapshot is removed, still maps; while the process lives its /proc links
// (exe, cwd) are asked too; and an identity nothing leads to is looked for in the whole root.
//
// A file born after the container started learning (written to /tmp and run, or an image
// file changed at run time) is "runtime": a fresh container has no such file at that path, so
// no allow-list path can allow it, and it is reported instead of listed.
import fs from 'node:fs';
import path from 'node:path';
import { FileIdentity, formatDev } from '../../kernel/abi';
import type { LearnedExecRecord } from '../../kernel/learn-abi';
import { ContainerRoot, FoundFile } from './container-root';
import { ExecOrigin, LearnedExec } from './learned-policy';

export interface ExecSighting {
  pid: number;
  path: string;
  dev: bigint;
  ino: bigint;
  tsMonoNs?: bigint;
}

/**
 * A file identity the kernel recorded (learn_exec): how often it ran, the name it was opened
 * by, and its path in its own filesystem at the exec. The record as the kernel layer reads
 * it, without the fence id that picked the container out.
 */
export type KernelExec = Omit<LearnedExecRecord, 'fenceId'>;

interface Entry {
  identity: FileIdentity;
  path: string | null;
  origin: ExecOrigin | null;
  names: Set<string>;
  count: number;
  /** The kernel's path at the exec, kept for the report when the file is gone. */
  kernelPath: string | null;
  /** When it first ran (wall clock, ms), if known: a file born after that is another one. */
  ranMs: number | null;
}

const MAX_NAMES = 16;

/**
 * File timestamps come from the coarse clock (up to a tick behind): a file born within this
 * many ms before the attach still counts as born after it. Image files are older by far (the
 * snapshot is made before runc creates the container).
 */
const BORN_SLACK_MS = 20;

/** Converting the kernel's monotonic time to the wall clock is good to about this much. */
const CLOCK_SLACK_MS = 1;

/** CLOCK_MONOTONIC ns (the kernel's bpf_ktime_get_ns) as wall-clock ms. */
function monoNsToWallMs(ns: bigint): number {
  return Date.now() - Number(process.hrtime.bigint() - ns) / 1e6;
}

function key(id: FileIdentity): string {
  return `${id.dev}:${id.ino}`;
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

  /** `startedMs`: when learning started (wall clock); files born after it are runtime files. */
  constructor(readonly startedMs: number) {}

  private entry(identity: FileIdentity): { e: Entry; added: boolean } {
    const k = key(identity);
    const e = this.byId.get(k);
    if (e) return { e, added: false };
    const n: Entry = { identity, path: null, origin: null, names: new Set(), count: 0, kernelPath: null, ranMs: null };
    this.byId.set(k, n);
    return { e: n, added: true };
  }

  private addName(e: Entry, name: string): boolean {
    if (!name || e.names.size >= MAX_NAMES || e.names.has(name)) return false;
    e.names.add(name);
    return true;
  }

  private found(e: Entry, f: FoundFile | null): boolean {
    if (!f) return false;
    // Inode numbers are reused: a file born after the exec has the identity, but is not it.
    // (A file's coarse timestamp is never later than the truth, so no slack but the clocks'.)
    if (e.ranMs !== null && f.bornMs > e.ranMs + CLOCK_SLACK_MS) return false;
    e.path = f.path;
    e.origin = f.bornMs >= this.startedMs - BORN_SLACK_MS ? 'runtime' : 'image';
    return true;
  }

  /**
   * Adds a ring-buffer sighting and resolves it while its process may still live. True when
   * the set changed (a new identity, name or path), not merely a count.
   */
  record(s: ExecSighting, root: ContainerRoot | null): boolean {
    const { e, added } = this.entry({ dev: s.dev, ino: s.ino });
    e.count++;
    if (s.tsMonoNs !== undefined && e.ranMs === null) e.ranMs = monoNsToWallMs(s.tsMonoNs);
    let changed = this.addName(e, s.path) || added;
    if (e.path === null) changed = this.resolveLive(e, s, root) || changed;
    return changed;
  }

  /**
   * The kernel's record, authoritative for the set and the counts (a ring buffer can lose
   * events); its paths are resolved at once. True when it brought something new.
   */
  addKernel(records: KernelExec[], root: ContainerRoot | null): boolean {
    let changed = false;
    for (const r of records) {
      const { e, added } = this.entry({ dev: r.dev, ino: r.ino });
      changed ||= added;
      if (Number(r.count) > e.count) e.count = Number(r.count);
      const ran = monoNsToWallMs(r.firstNs);
      if (e.ranMs === null || ran < e.ranMs) e.ranMs = ran;
      changed = this.addName(e, r.interp) || changed;
      if (r.kernelPath && e.kernelPath === null) e.kernelPath = r.kernelPath;
      if (e.path === null && r.kernelPath && root) changed = this.found(e, root.resolve(r.kernelPath, e.identity)) || changed;
    }
    return changed;
  }

  private resolveLive(e: Entry, s: ExecSighting, root: ContainerRoot | null): boolean {
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
    const roots = [root, ContainerRoot.ofDir(`/proc/${s.pid}/root`)].filter((r): r is ContainerRoot => r !== null);
    for (const r of roots) for (const n of names) if (this.found(e, r.resolve(n, e.identity))) return true;
    return false;
  }

  /**
   * Maps every identity still without a path: its names in the held root, then a search of
   * the root by identity. What is still unmapped after that is in no file of the container's
   * root filesystem: born at run time and removed, or on a mount outside the image.
   */
  resolvePending(root: ContainerRoot | null): void {
    if (!root) return;
    const pending = [...this.byId.values()].filter((e) => e.path === null);
    for (const e of pending) {
      for (const n of e.names) if (n.startsWith('/') && this.found(e, root.resolve(n, e.identity))) break;
    }
    if (pending.some((e) => e.path === null)) {
      // One walk for all of them, of the tree as it is now.
      root.forgetIndex();
      for (const e of pending) if (e.path === null) this.found(e, root.findByIdentity(e.identity));
    }
  }

  /**
   * An identity with no file in the root keeps the path the kernel saw at the exec, as
   * `unknown`: it was there when it ran, it is not now.
   */
  list(): LearnedExec[] {
    return [...this.byId.values()]
      .map((e) => ({
        path: e.path ?? e.kernelPath,
        origin: e.path !== null ? (e.origin ?? 'unknown') : ('unknown' as ExecOrigin),
        dev: formatDev(e.identity.dev),
        inode: e.identity.ino.toString(),
        names: [...e.names].sort(),
        count: e.count,
      }))
      .sort((a, b) => (a.path ?? '\uffff').localeCompare(b.path ?? '\uffff') || a.inode.localeCompare(b.inode));
  }

  get size(): number {
    return this.byId.size;
  }

  /** Identities no path was found for. */
  get unmapped(): number {
    return [...this.byId.values()].filter((e) => e.path === null).length;
  }

  toJSON(): unknown {
    return {
      startedMs: this.startedMs,
      execs: [...this.byId.values()].map((e) => ({
        dev: e.identity.dev.toString(),
        ino: e.identity.ino.toString(),
        path: e.path,
        origin: e.origin,
        names: [...e.names],
        count: e.count,
        kernelPath: e.kernelPath,
        ranMs: e.ranMs,
      })),
    };
  }

  static fromJSON(v: unknown, fallbackStartedMs: number): LearnedExecs {
    // Earlier daemons saved a bare array of entries, without origins.
    const o = (Array.isArray(v) ? { execs: v } : (v ?? {})) as { startedMs?: number; execs?: unknown };
    const out = new LearnedExecs(typeof o.startedMs === 'number' ? o.startedMs : fallbackStartedMs);
    if (!Array.isArray(o.execs)) return out;
    type Saved = {
      dev: string;
      ino: string;
      path: string | null;
      origin?: ExecOrigin | null;
      names: string[];
      count: number;
      kernelPath?: string | null;
      ranMs?: number | null;
    };
    for (const x of o.execs as Saved[]) {
      const identity = { dev: BigInt(x.dev), ino: BigInt(x.ino) };
      out.byId.set(key(identity), {
        identity,
        path: x.path,
        origin: x.origin ?? (x.path ? 'image' : null),
        names: new Set(x.names),
        count: x.count,
        kernelPath: x.kernelPath ?? null,
        ranMs: x.ranMs ?? null,
      });
    }
    return out;
  }
}
