// Tamper detection: a report whenever a process other than the daemon writes to cgfence's
// maps, detaches or replaces its programs and links, or unlinks or renames its pins.
// bpf/tamper-watch.bpf.c explains the hooks; what they see and what they do not:
//
// Covered (through bpf(), whatever way the caller got its fd: a pin, *_GET_FD_BY_ID, an
// inherited fd):
//   map-update  BPF_MAP_UPDATE_ELEM, BPF_MAP_UPDATE_BATCH
//   map-delete  BPF_MAP_DELETE_ELEM/_BATCH, BPF_MAP_LOOKUP_AND_DELETE_ELEM/_BATCH
//   map-freeze  BPF_MAP_FREEZE (the daemon could no longer update the map)
//   link-detach BPF_LINK_DETACH, link-update BPF_LINK_UPDATE: of a protected link, or of any
//               link whose program is protected (per-container links need no registration)
//   prog-detach BPF_PROG_DETACH naming a protected program
//   pin-unlink, pin-rename: unlink(at)/rename(at,at2) of a name in the pin directory, given
//               as an absolute path under it, or relative to a dirfd or cwd that is the pin
//               directory (or below it), or relative to its parent ("rm -r", "cd && rm", "mv").
// Also reported: events lost to a full ring buffer and bpf()/path arguments that could not
// be read (a page not faulted in), as counters.
//
// Not covered:
//   - writes through a BPF program that another process loaded with our map in it (no
//     bpf() call per write), and writes to mmap()ed map memory (our maps are not mmapable,
//     but a ring buffer's consumer position is);
//   - a caller that changes the attr or the fd between our read and the kernel's (another
//     thread racing the syscall): we see the value at syscall entry;
//   - pin paths given in other spellings ("//", "/./", "..", a symlink, a bind mount of
//     bpffs or another mount namespace's view) unless a dirfd/cwd check catches them;
//   - closing fds (harmless while pins hold the objects), killing the daemon (the pinned
//     watcher keeps watching and the restarted daemon reports what it saw), and anything by
//     a process with the power to unload BPF programs from the kernel by other means.
//
// Pinned, under the daemon's pin directory: the watcher is most needed while the daemon is
// down (an attacker kills it first), so its links stay attached and its ring buffer keeps the
// events for the restarted daemon. The program itself is reloaded at every start, because
// whom it trusts (the daemon's identity) is baked into its read-only data.
import fs from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY, NativeError, RingBuffer } from '../native';
import { kernelDev } from './abi';
import {
  ObjKind,
  PIN_DIR_LEN,
  TAMPER_EVENT_SIZE,
  TAMPER_KEY_SIZE,
  TamperEvent,
  TamperStat,
  decodeTamperEvent,
  decodeTamperKey,
  encodeTamperKey,
} from './tamper-abi';
import { ensureTracefs } from './tracefs';
import { closeLinks, closeObject } from './release';
import { attachReplacingPin, checkAbi, linkPin, loadPinned, readRing } from './object-steps';

const OBJECT = 'tamper-watch';
const MAPS = ['tamper_protect', 'tamper_events', 'tamper_stats'] as const;
/** Program and the syscall it watches. unlink and rename exist on x86 but not on arm64. */
const PROGRAMS: Array<{ name: string; optional: boolean }> = [
  { name: 'tamper_bpf', optional: false },
  { name: 'tamper_unlinkat', optional: false },
  { name: 'tamper_renameat2', optional: false },
  { name: 'tamper_renameat', optional: true },
  { name: 'tamper_unlink', optional: true },
  { name: 'tamper_rename', optional: true },
];

export interface ProtectedIds {
  maps?: number[];
  programs?: number[];
  links?: number[];
}

/** A process as the watch identifies it: pid in its own pid namespace, and start time. */
export interface ProcessIdentity {
  pidnsIno: number;
  pid: number;
  startTicks: bigint;
}

export interface TamperWatchOptions {
  /** bpffs directory for pins, and the directory whose entries are watched. */
  pinDir?: string;
  /** Called on the JS thread with each batch, the daemon's own actions left out. */
  onEvents?: (events: TamperEvent[]) => void;
}

/** This process, in the figures the BPF program computes for a caller. */
export function selfIdentity(): ProcessIdentity {
  const pidnsIno = Number(fs.statSync('/proc/self/ns/pid').ino);
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  // comm may hold spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTicks = BigInt(fields[22 - 3]);
  return { pidnsIno, pid: process.pid, startTicks };
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

function cstring(s: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(s, 'utf8');
  return b;
}

/** Read-only settings of the program: whom to trust, and which directory holds the pins. */
function rodata(me: ProcessIdentity, pinDir: string | undefined): Record<string, Buffer> {
  const ro: Record<string, Buffer> = {
    daemon_pidns_ino: u32(me.pidnsIno),
    daemon_pid: u32(me.pid),
    daemon_start_ticks: u64(me.startTicks),
  };
  if (!pinDir) return ro;
  const dir = fs.realpathSync(pinDir);
  const st = fs.statSync(dir, { bigint: true });
  const parent = fs.statSync(path.dirname(dir), { bigint: true });
  const base = path.basename(dir);
  // A path too long for the textual check leaves the dirfd/cwd checks, which need no text.
  const textual = Buffer.byteLength(dir) < PIN_DIR_LEN && Buffer.byteLength(base) < PIN_DIR_LEN;
  return {
    ...ro,
    pin_dir_dev: u64(kernelDev(st.dev)),
    pin_dir_ino: u64(st.ino),
    pin_parent_dev: u64(kernelDev(parent.dev)),
    pin_parent_ino: u64(parent.ino),
    pin_dir_len: u32(textual ? Buffer.byteLength(dir) : 0),
    pin_base_len: u32(textual ? Buffer.byteLength(base) : 0),
    pin_dir_path: cstring(textual ? dir : '', PIN_DIR_LEN),
    pin_base: cstring(textual ? base : '', PIN_DIR_LEN),
  };
}

export interface TamperWatchIds {
  maps: Record<string, number>;
  programs: Record<string, number>;
  links: Record<string, number>;
}

export class TamperWatch {
  private ring: RingBuffer | null = null;
  private closed = false;
  private protectedSet: Required<ProtectedIds> = { maps: [], programs: [], links: [] };
  /** The tamper_protect keys (hex) this watch last wrote: an incremental protect writes only the difference. */
  private written = new Set<string>();
  /** Reports of this process's own actions by a predecessor's program (handover at start). */
  private selfReports = 0;
  /** CLOCK_MONOTONIC at open: earlier events happened before this daemon watched. */
  readonly openedAtMonoNs = process.hrtime.bigint();

  private constructor(
    private readonly obj: BpfObject,
    private readonly links: Map<string, BpfLink>,
    readonly adopted: boolean,
    readonly self: ProcessIdentity,
    private readonly pinDir?: string,
  ) {}

  /**
   * Loads and attaches the watch. With a pinDir, maps pinned there by an earlier daemon are
   * reused (unread events survive) and its pinned links are replaced by ours, each only after
   * ours is attached, so there is no moment without a watcher.
   */
  static open(opts: TamperWatchOptions = {}): TamperWatch {
    ensureTracefs();
    const self = selfIdentity();
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir, rodata: rodata(self, opts.pinDir) });
    const links = new Map<string, BpfLink>();
    let adopted = false;
    try {
      checkAbi(obj, 'tamper-watch', [{ map: 'tamper_protect', keySize: TAMPER_KEY_SIZE }]);
      for (const p of PROGRAMS) {
        let attached: { link: BpfLink; adopted: boolean };
        try {
          attached = attachReplacingPin(obj, p.name, linkPin(opts.pinDir, `${p.name}_link`));
        } catch (e) {
          // The syscall does not exist on this architecture: nothing to watch there.
          if (p.optional && (e as NativeError).code === 'ENOENT') continue;
          throw e;
        }
        links.set(p.name, attached.link);
        adopted ||= attached.adopted;
      }
      const w = new TamperWatch(obj, links, adopted, self, opts.pinDir);
      w.protect({});
      if (opts.onEvents) w.startEvents(opts.onEvents);
      return w;
    } catch (e) {
      for (const l of links.values()) {
        l.unpin();
        l.destroy();
      }
      obj.close();
      throw e;
    }
  }

  private startEvents(onEvents: (events: TamperEvent[]) => void): void {
    this.ring = readRing(
      this.obj,
      'tamper_events',
      TAMPER_EVENT_SIZE,
      (r) => {
        const e = decodeTamperEvent(r);
        // Until our program replaced it, a predecessor's program took us for a stranger.
        if (!this.isSelf(e)) return e;
        this.selfReports++;
        return null;
      },
      onEvents,
    );
  }

  private isSelf(e: TamperEvent): boolean {
    return e.nsPid === this.self.pid && e.pidnsIno === this.self.pidnsIno && e.startTicks === this.self.startTicks;
  }

  /**
   * Makes the protected set exactly `ids` plus the watch's own maps, programs and links.
   * Stale entries are harmless (kernel ids are not reused soon) but are removed anyway.
   * `incremental`: writes only the keys added and deletes only the ones dropped since the last
   * call (an attach usually changes none: its container shares the node's maps); the default,
   * a full pass, writes every key and deletes any other the map holds, so it also puts back
   * an entry someone removed (the daemon runs one every few seconds).
   */
  protect(ids: ProtectedIds, opts: { incremental?: boolean } = {}): void {
    const own = this.objectIds();
    const want: Required<ProtectedIds> = {
      maps: uniq([...(ids.maps ?? []), ...Object.values(own.maps)]),
      programs: uniq([...(ids.programs ?? []), ...Object.values(own.programs)]),
      links: uniq([...(ids.links ?? []), ...Object.values(own.links)]),
    };
    // The usual attach adds no kernel object of its own: then there is nothing to write, and
    // encoding every key again was ~0.5 ms of the daemon's CPU per container start here.
    if (opts.incremental === true && sameIds(want, this.protectedSet)) return;
    const keys = new Set<string>();
    const one = Buffer.from([1]);
    const incremental = opts.incremental === true;
    for (const [kind, list] of [
      [ObjKind.Map, want.maps],
      [ObjKind.Prog, want.programs],
      [ObjKind.Link, want.links],
    ] as const) {
      for (const id of list) {
        if (!id) continue;
        const k = encodeTamperKey(kind, id);
        const hex = k.toString('hex');
        keys.add(hex);
        if (!incremental || !this.written.has(hex)) this.obj.mapUpdate('tamper_protect', k, one, BPF_ANY);
      }
    }
    if (incremental) {
      for (const hex of this.written) if (!keys.has(hex)) this.obj.mapDelete('tamper_protect', Buffer.from(hex, 'hex'));
    } else {
      for (const k of this.obj.mapKeys('tamper_protect')) {
        if (!keys.has(k.toString('hex'))) this.obj.mapDelete('tamper_protect', k);
      }
    }
    this.written = keys;
    this.protectedSet = want;
  }

  /** The protected set as the kernel holds it. */
  protectedIds(): Required<ProtectedIds> {
    const out: Required<ProtectedIds> = { maps: [], programs: [], links: [] };
    for (const k of this.obj.mapKeys('tamper_protect')) {
      const { kind, id } = decodeTamperKey(k);
      if (kind === ObjKind.Map) out.maps.push(id);
      else if (kind === ObjKind.Prog) out.programs.push(id);
      else if (kind === ObjKind.Link) out.links.push(id);
    }
    for (const l of Object.values(out)) l.sort((a, b) => a - b);
    return out;
  }

  /** Events lost to a full ring buffer, and arguments the program could not read. */
  stats(): { lost: bigint; unreadable: bigint } {
    const read = (i: TamperStat) => this.obj.mapLookup('tamper_stats', u32(i))?.readBigUInt64LE(0) ?? 0n;
    return { lost: read(TamperStat.Lost), unreadable: read(TamperStat.Unreadable) };
  }

  /** The watch's own ids. Fixed while it holds its objects open (until close), so read once. */
  objectIds(): TamperWatchIds {
    return (this.ids ??= this.readObjectIds());
  }

  private ids: TamperWatchIds | null = null;

  private readObjectIds(): TamperWatchIds {
    const maps: Record<string, number> = {};
    for (const m of MAPS) maps[m] = this.obj.mapInfo(m).id;
    const programs: Record<string, number> = {};
    const links: Record<string, number> = {};
    for (const [name, link] of this.links) {
      programs[name] = this.obj.programInfo(name).id;
      links[name] = link.info()?.id ?? 0;
    }
    return { maps, programs, links };
  }

  status(): Record<string, unknown> {
    const s = this.stats();
    return {
      hooks: [...this.links.keys()].map((p) => `tracepoint/syscalls/sys_enter_${p.replace(/^tamper_/, '')}`),
      pinned: !!this.pinDir,
      adopted: this.adopted,
      protected: {
        maps: this.protectedSet.maps.length,
        programs: this.protectedSet.programs.length,
        links: this.protectedSet.links.length,
      },
      lost: s.lost.toString(),
      unreadable: s.unreadable.toString(),
      selfReports: this.selfReports,
      objects: this.objectIds(),
    };
  }

  /** Lets the process exit while the ring-buffer thread waits (tests, one-shot CLI use). */
  unref(): void {
    this.ring?.unref();
  }

  /**
   * Stops event delivery and closes every fd. With `detach`, links are detached and pins
   * removed; without it the pinned watch keeps watching for the next daemon.
   */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    this.ring?.close();
    this.ring = null;
    closeLinks(this.links.values(), !!opts.detach);
    closeObject(this.obj, this.pinDir, !!opts.detach);
  }
}

function uniq(ids: number[]): number[] {
  return [...new Set(ids)].sort((a, b) => a - b);
}

function sameIds(a: Required<ProtectedIds>, b: Required<ProtectedIds>): boolean {
  const same = (x: number[], y: number[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return same(a.maps, b.maps) && same(a.programs, b.programs) && same(a.links, b.links);
}
