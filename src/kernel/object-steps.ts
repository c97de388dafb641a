// The steps every kernel-object wrapper takes, written once: load an object with its maps
// pinned, check that the object's structs match the TypeScript decoders, attach a tracing
// program in place of the link an earlier daemon pinned (or link programs to a cgroup with
// their links pinned per fence), and read a ring buffer.
import fs from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfObject, RingBuffer, native } from '../native';

/** The object's struct sizes that a decoder relies on: a mismatch means a stale build. */
export interface AbiSize {
  map: string;
  keySize?: number;
  valueSize?: number;
}

export function checkAbi(obj: BpfObject, object: string, sizes: AbiSize[]): void {
  const wrong: string[] = [];
  for (const s of sizes) {
    const info = obj.mapInfo(s.map);
    if (s.keySize !== undefined && info.keySize !== s.keySize) wrong.push(`${s.map} key ${info.keySize} (want ${s.keySize})`);
    if (s.valueSize !== undefined && info.valueSize !== s.valueSize) wrong.push(`${s.map} value ${info.valueSize} (want ${s.valueSize})`);
  }
  if (wrong.length) throw new Error(`${object} ABI mismatch: ${wrong.join(', ')}; rebuild with \`npm run build\``);
}

/**
 * Creates the pin directory (0700) and loads the object; maps already pinned there by an
 * earlier daemon are reused, so state and unread events survive a restart. `maxEntries`:
 * sizes of maps created here (a pinned map keeps its own); an undefined size is left out.
 */
export function loadPinned(
  object: string,
  opts: { pinDir?: string; programs?: string[]; rodata?: Record<string, Buffer>; maxEntries?: Record<string, number | undefined> } = {},
): BpfObject {
  if (opts.pinDir) fs.mkdirSync(opts.pinDir, { recursive: true, mode: 0o700 });
  const { maxEntries, ...rest } = opts;
  // The addon refuses an undefined size.
  const sizes = maxEntries && Object.fromEntries(Object.entries(maxEntries).filter((e): e is [string, number] => e[1] !== undefined));
  return new (native().BpfObject)(object, sizes ? { ...rest, maxEntries: sizes } : rest);
}

/**
 * Attaches a tracing program and, with a pin path, pins its link there in place of the one
 * an earlier daemon left: ours is attached before the old one goes, so there is no instant
 * without the program (for that instant both run against the same maps and agree).
 * `adopted` says whether an old link was replaced.
 */
export function attachReplacingPin(obj: BpfObject, program: string, pin: string | undefined): { link: BpfLink; adopted: boolean } {
  const link = obj.attachTracing(program);
  let adopted = false;
  if (pin) {
    try {
      adopted = removePinnedLink(pin);
      link.pin(pin);
    } catch (e) {
      link.destroy();
      throw e;
    }
  }
  return { link, adopted };
}

/**
 * Links each program to a cgroup, all or none; with `dir` (created 0700) each link is pinned
 * there under its program's name, so that it outlives the daemon. On failure the links made
 * here are unpinned and destroyed before the error goes on.
 */
export function attachCgroupPinned(obj: BpfObject, programs: readonly string[], cgroupPath: string, dir: string | null): BpfLink[] {
  const links: BpfLink[] = [];
  try {
    if (dir) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const prog of programs) {
      const link = obj.attachCgroup(prog, cgroupPath);
      links.push(link);
      if (dir) link.pin(path.join(dir, prog));
    }
  } catch (e) {
    dropLinks(links);
    throw e;
  }
  return links;
}

/** Unpins (where pinned) and destroys links: what a failed attach leaves is undone. */
export function dropLinks(links: Iterable<BpfLink>): void {
  for (const l of links) {
    try {
      l.unpin();
    } catch {
      /* not pinned, or already gone */
    }
    l.destroy();
  }
}

/** Detaches the link pinned at `pin`, if there is one (an earlier daemon's); true if there was. */
export function removePinnedLink(pin: string): boolean {
  if (!fs.existsSync(pin)) return false;
  const old = native().BpfLink.open(pin);
  old.unpin();
  old.destroy();
  return true;
}

/** Detaches the links pinned in `dir` (this daemon's or an earlier one's) and removes it. */
export function removePinnedLinks(dir: string | null): void {
  if (!dir || !fs.existsSync(dir)) return;
  for (const f of fs.readdirSync(dir)) removePinnedLink(path.join(dir, f));
  fs.rmdirSync(dir);
}

export function linkPin(pinDir: string | undefined, name: string): string | undefined {
  return pinDir ? path.join(pinDir, name) : undefined;
}

/** Reads a ring buffer on a native thread; records shorter than `minSize` are skipped. */
export function readRing<E>(
  obj: BpfObject,
  map: string,
  minSize: number,
  decode: (r: Buffer) => E | null,
  onEvents: (events: E[]) => void,
): RingBuffer {
  return new (native().RingBuffer)(obj, map, (records) => {
    const events: E[] = [];
    for (const r of records) {
      if (r.length < minSize) continue;
      const e = decode(r);
      if (e !== null) events.push(e);
    }
    if (events.length) onEvents(events);
  });
}
