// The exec fence's kernel side: global BPF programs on sched_process_exec and their maps,
// shared by every fenced container. Two programs find a container's fence two ways: by its
// cgroup v2 ancestry ('cgroup-v2', tp_btf) or by its pid namespace ('pidns', a classic
// tracepoint, the cgroup v1 fallback); both judge against the same maps. A fence is map
// entries, so fencing, changing and unfencing a container never reloads or re-attaches one.
import fs from 'node:fs';
import { closeLinks, closeObject } from './release';
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY, RingBuffer } from '../native';
import { AbiSize, attachReplacingPin, checkAbi, linkPin, loadPinned, readRing } from './object-steps';
import { ensureTracefs } from './tracefs';
import {
  AllowedFile,
  EXEC_ALLOW_SIZE,
  EXEC_EVENT_SIZE,
  EXEC_KEY_SIZE,
  EXEC_RATE_SIZE,
  ExecEvent,
  ExecRate,
  FENCE_SIZE,
  FenceMode,
  FenceState,
  FileIdentity,
  decodeExecAllow,
  decodeExecEvent,
  decodeExecKey,
  decodeExecRate,
  decodeFence,
  encodeExecAllow,
  encodeExecKey,
  encodeFence,
  u64Key,
} from './abi';

const OBJECT = 'exec-fence';

export type ExecProgram = 'cgroup-v2' | 'pidns';

const PROGRAMS: Record<ExecProgram, { name: string; linkPin: string }> = {
  'cgroup-v2': { name: 'exec_fence', linkPin: 'exec_fence_link' },
  pidns: { name: 'exec_fence_pidns', linkPin: 'exec_fence_pidns_link' },
};
const ALL_PROGRAMS = Object.keys(PROGRAMS) as ExecProgram[];

export interface ExecFenceOptions {
  /** bpffs directory for pins. Without it nothing outlives the process. */
  pinDir?: string;
  /** Called on the JS thread with each batch the ring-buffer thread drained. */
  onEvents?: (events: ExecEvent[]) => void;
  /**
   * Which programs to load and attach (default: cgroup-v2 only; none: the maps and events
   * only, for the BPF LSM program of kernel/exec-lsm.ts to judge with). A program whose link an
   * earlier daemon left pinned in pinDir is attached too, whatever is asked: its fences are
   * still in the maps and must keep being enforced.
   */
  programs?: ExecProgram[];
  /** Sizes of the shared tables when they are created (a pinned map keeps its size). */
  sizes?: { fences?: number; exec_allow?: number };
}

export interface FenceEntry extends FenceState {
  fenceId: bigint;
  identities: FileIdentity[];
}

/** Entries in use against a map's capacity (max_entries), for quotas and `status`. */
export interface MapUse {
  used: number;
  capacity: number;
}

/** What a fence holds in the kernel, exactly: taken before a change, put back if it fails. */
export interface FenceSnapshot {
  fenceId: bigint;
  fence: Buffer | null;
  allow: Array<{ key: Buffer; value: Buffer }>;
}

const idKey = (id: FileIdentity) => `${id.dev}:${id.ino}`;

export interface ExecFenceIds {
  programs: Record<string, { program: number; link: number }>;
  maps: Record<string, number>;
}

export class ExecFence {
  private readonly obj: BpfObject;
  private readonly links: Map<ExecProgram, BpfLink>;
  private ring: RingBuffer | null = null;
  private closed = false;
  /** True when this instance took over a program pinned by an earlier process. */
  readonly adopted: boolean;
  /**
   * The allow entries of each fence ("dev:ino"), built from one scan at open (entries pinned
   * by an earlier daemon included) and kept by every write here: quotas are checked against
   * it without walking a shared map of tens of thousands of entries on every attach.
   */
  private readonly index = new Map<bigint, Set<string>>();
  private indexed = 0;
  /** Fence ids in the fences map, kept the same way. */
  private readonly fenceIds = new Set<bigint>();

  private constructor(
    obj: BpfObject,
    links: Map<ExecProgram, BpfLink>,
    adopted: boolean,
    private readonly pinDir?: string,
  ) {
    this.obj = obj;
    this.links = links;
    this.adopted = adopted;
    for (const k of obj.mapKeys('exec_allow')) this.noteAdded(decodeExecKey(k).fenceId, decodeExecKey(k));
    for (const k of obj.mapKeys('fences')) this.fenceIds.add(k.readBigUInt64LE(0));
  }

  private noteAdded(fenceId: bigint, id: FileIdentity): void {
    let set = this.index.get(fenceId);
    if (!set) this.index.set(fenceId, (set = new Set()));
    if (!set.has(idKey(id))) {
      set.add(idKey(id));
      this.indexed++;
    }
  }

  private noteRemoved(fenceId: bigint, id: FileIdentity): void {
    const set = this.index.get(fenceId);
    if (set?.delete(idKey(id))) this.indexed--;
    if (set && set.size === 0) this.index.delete(fenceId);
  }

  /**
   * A fence's allow entries as the index has them: what this process (and, through the scan
   * at open, its predecessors) wrote. Writes use it rather than allowed(), which walks the
   * whole shared map: tens of thousands of entries on a busy node, at every attach.
   */
  private held(fenceId: bigint): FileIdentity[] {
    return [...(this.index.get(fenceId) ?? [])].map((k) => {
      const [dev, ino] = k.split(':');
      return { dev: BigInt(dev), ino: BigInt(ino) };
    });
  }

  /** Allow entries of one fence. */
  allowCount(fenceId: bigint): number {
    return this.index.get(fenceId)?.size ?? 0;
  }

  /** How full the shared maps are: allow entries and fences against their max_entries. */
  usage(): { fences: MapUse; allow: MapUse } {
    return {
      fences: { used: this.fenceIds.size, capacity: this.obj.mapInfo('fences').maxEntries },
      allow: { used: this.indexed, capacity: this.obj.mapInfo('exec_allow').maxEntries },
    };
  }

  /** Entries `ids` would add to a fence that it does not hold yet. */
  newEntries(fenceId: bigint, ids: Iterable<FileIdentity>): number {
    const have = this.index.get(fenceId);
    const seen = new Set<string>();
    for (const id of ids) if (!have?.has(idKey(id))) seen.add(idKey(id));
    return seen.size;
  }

  /** Fence ids that own allow entries, with or without a fence entry. */
  allowOwners(): bigint[] {
    return [...this.index.keys()];
  }

  /**
   * Loads and attaches the exec fence. With a pinDir, maps pinned there by an earlier
   * daemon are reused (fences, allow-lists, counters and unread events survive) and its
   * pinned links are replaced by ours.
   */
  static open(opts: ExecFenceOptions = {}): ExecFence {
    const pinned = (p: ExecProgram) => !!opts.pinDir && fs.existsSync(path.join(opts.pinDir, PROGRAMS[p].linkPin));
    const asked = opts.programs ?? ['cgroup-v2'];
    const programs = ALL_PROGRAMS.filter((p) => asked.includes(p) || pinned(p));
    if (programs.includes('pidns')) ensureTracefs();
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir, programs: programs.map((p) => PROGRAMS[p].name), maxEntries: opts.sizes });
    const links = new Map<ExecProgram, BpfLink>();
    let adopted = false;
    try {
      checkAbi(obj, OBJECT, ABI);
      for (const p of programs) {
        // Ours is attached before the old link goes, so no exec slips through.
        const attached = attachReplacingPin(obj, PROGRAMS[p].name, linkPin(opts.pinDir, PROGRAMS[p].linkPin));
        links.set(p, attached.link);
        adopted ||= attached.adopted;
      }
      const fence = new ExecFence(obj, links, adopted, opts.pinDir);
      if (opts.onEvents) fence.startEvents(opts.onEvents);
      return fence;
    } catch (e) {
      // A link already pinned stays: it replaced the one that was enforcing there.
      for (const l of links.values()) l.destroy();
      obj.close();
      throw e;
    }
  }

  /** The programs this instance attached. */
  programs(): ExecProgram[] {
    return [...this.links.keys()];
  }

  private startEvents(onEvents: (events: ExecEvent[]) => void): void {
    this.ring = readRing(this.obj, 'exec_events', EXEC_EVENT_SIZE, decodeExecEvent, onEvents);
  }

  /** Creates or replaces a fence (a cgroup id or a pidns fence id). New fences start with zero counters. */
  setFence(fenceId: bigint, mode: FenceMode, flags = 0): void {
    const key = u64Key(fenceId);
    const cur = this.obj.mapLookup('fences', key);
    const prev = cur ? decodeFence(cur) : undefined;
    // Updating in place keeps the kernel's counters; only mode and flags change.
    this.obj.mapUpdate('fences', key, encodeFence({ ...prev, mode, flags }), BPF_ANY);
    this.fenceIds.add(fenceId);
  }

  getFence(fenceId: bigint): FenceState | null {
    const v = this.obj.mapLookup('fences', u64Key(fenceId));
    return v ? decodeFence(v) : null;
  }

  /**
   * Adds allow entries with the stamps their files had, all or none: if the kernel refuses one
   * (the map is full), the entries this call added are deleted again before the error goes on.
   * An existing entry takes the new stamp.
   */
  allow(fenceId: bigint, files: Iterable<AllowedFile>): void {
    const added: FileIdentity[] = [];
    try {
      for (const f of files) {
        const fresh = !this.index.get(fenceId)?.has(idKey(f));
        this.obj.mapUpdate('exec_allow', encodeExecKey(fenceId, f), encodeExecAllow(f), BPF_ANY);
        this.noteAdded(fenceId, f);
        if (fresh) added.push(f);
      }
    } catch (e) {
      this.disallow(fenceId, added);
      throw e;
    }
  }

  /** The allow entry of one identity, stamp included (null: not allowed). */
  allowEntry(fenceId: bigint, id: FileIdentity): AllowedFile | null {
    const v = this.obj.mapLookup('exec_allow', encodeExecKey(fenceId, id));
    return v ? { dev: id.dev, ino: id.ino, ...decodeExecAllow(v) } : null;
  }

  disallow(fenceId: bigint, ids: Iterable<FileIdentity>): void {
    for (const id of ids) {
      this.obj.mapDelete('exec_allow', encodeExecKey(fenceId, id));
      this.noteRemoved(fenceId, id);
    }
  }

  /** The fence's kernel state as bytes (its fence value, its allow keys and values). */
  snapshot(fenceId: bigint): FenceSnapshot {
    const allow: FenceSnapshot['allow'] = [];
    for (const id of this.held(fenceId)) {
      const key = encodeExecKey(fenceId, id);
      const value = this.obj.mapLookup('exec_allow', key);
      if (value) allow.push({ key, value });
    }
    return { fenceId, fence: this.obj.mapLookup('fences', u64Key(fenceId)), allow };
  }

  /**
   * Puts a fence back as `snap` holds it: its allow entries first (nothing it had is ever
   * missing), then its fence value (mode and flags; counters are the kernel's and go on),
   * then entries it did not have go.
   */
  restore(snap: FenceSnapshot): void {
    const want = new Set(snap.allow.map((e) => e.key.toString('hex')));
    for (const { key, value } of snap.allow) {
      // Written again only where it differs: the entry is missing, or its value changed.
      if (this.obj.mapLookup('exec_allow', key)?.equals(value)) continue;
      this.obj.mapUpdate('exec_allow', key, value, BPF_ANY);
      this.noteAdded(snap.fenceId, decodeExecKey(key));
    }
    if (snap.fence) {
      const prev = decodeFence(snap.fence);
      this.setFence(snap.fenceId, prev.mode, prev.flags);
    } else {
      this.obj.mapDelete('fences', u64Key(snap.fenceId));
      this.fenceIds.delete(snap.fenceId);
    }
    for (const id of this.held(snap.fenceId)) {
      if (!want.has(encodeExecKey(snap.fenceId, id).toString('hex'))) this.disallow(snap.fenceId, [id]);
    }
  }

  allowed(fenceId: bigint): FileIdentity[] {
    const out: FileIdentity[] = [];
    for (const k of this.obj.mapKeys('exec_allow')) {
      const d = decodeExecKey(k);
      if (d.fenceId === fenceId) out.push({ dev: d.dev, ino: d.ino });
    }
    return out;
  }

  /**
   * Makes the allow-list of a fence exactly `ids`, entry by entry: additions go in before
   * removals, so an identity in both the old and new list is never briefly denied. Every
   * wanted entry is written, not only new ones: a re-resolved file may carry a new stamp.
   */
  replaceAllowList(fenceId: bigint, ids: AllowedFile[]): void {
    const want = new Map(ids.map((i) => [`${i.dev}:${i.ino}`, i]));
    const have = new Map(this.held(fenceId).map((i) => [`${i.dev}:${i.ino}`, i]));
    // Every wanted entry is written: one already there may carry an old stamp.
    this.allow(fenceId, want.values());
    this.disallow(
      fenceId,
      [...have].filter(([k]) => !want.has(k)).map(([, v]) => v),
    );
  }

  /** Removes a fence and every allow entry it had. Returns its final counters. */
  unfence(fenceId: bigint): FenceState | null {
    const last = this.getFence(fenceId);
    this.obj.mapDelete('fences', u64Key(fenceId));
    this.fenceIds.delete(fenceId);
    // The index holds every entry of the fence (the scan at open took an earlier daemon's;
    // nothing but this class writes exec_allow): a detach deletes those, and does not walk
    // the node's whole table (tens of thousands of keys, one syscall each) as it did.
    this.disallow(fenceId, this.held(fenceId));
    return last;
  }

  fences(): FenceEntry[] {
    const byFence = new Map<bigint, FileIdentity[]>();
    for (const k of this.obj.mapKeys('exec_allow')) {
      const d = decodeExecKey(k);
      const list = byFence.get(d.fenceId) ?? [];
      list.push({ dev: d.dev, ino: d.ino });
      byFence.set(d.fenceId, list);
    }
    return this.obj.mapKeys('fences').map((k) => {
      const fenceId = k.readBigUInt64LE(0);
      const v = this.obj.mapLookup('fences', k);
      return {
        fenceId,
        ...(v ? decodeFence(v) : { mode: FenceMode.Off, flags: 0, denied: 0n, audited: 0n, allowed: 0n }),
        identities: byFence.get(fenceId) ?? [],
      };
    });
  }

  /** The rate limiter's state of one fence and identity, or null (none, or evicted). */
  rate(fenceId: bigint, id: FileIdentity): ExecRate | null {
    const v = this.obj.mapLookup('exec_rate', encodeExecKey(fenceId, id));
    return v ? decodeExecRate(v) : null;
  }

  /** Refusals of a fence the rate limiter only counted (monotonic), or null when none yet. */
  suppressed(fenceId: bigint): bigint | null {
    const v = this.obj.mapLookup('exec_suppressed', u64Key(fenceId));
    return v ? decodeExecRate(v).suppressed : null;
  }

  /** Fence ids with rate-limiter counts (their fence may be gone: the last report is pending). */
  rateOwners(): bigint[] {
    return this.obj.mapKeys('exec_suppressed').map((k) => k.readBigUInt64LE(0));
  }

  /** Forgets a fence's rate-limiter state (after its last count was reported). */
  forgetRate(fenceId: bigint): void {
    this.obj.mapDelete('exec_suppressed', u64Key(fenceId));
    for (const k of this.obj.mapKeys('exec_rate')) if (decodeExecKey(k).fenceId === fenceId) this.obj.mapDelete('exec_rate', k);
  }

  /** Events the kernel could not put on the ring buffer since the maps were created. */
  drops(): bigint {
    const v = this.obj.mapLookup('exec_drops', Buffer.alloc(4));
    return v ? v.readBigUInt64LE(0) : 0n;
  }

  /**
   * The kernel ids of the fence's maps, programs and links (status output, leak checks, the
   * tamper watch). An id is fixed for an object's life, and this instance holds every one of
   * them open until close(), so they are read once: the tamper watch asks after every attach.
   */
  objectIds(): ExecFenceIds {
    return (this.ids ??= this.readObjectIds());
  }

  private ids: ExecFenceIds | null = null;

  private readObjectIds(): ExecFenceIds {
    const maps: Record<string, number> = {};
    for (const m of ['fences', 'exec_allow', 'exec_events', 'exec_drops', 'exec_rate', 'exec_suppressed']) maps[m] = this.obj.mapInfo(m).id;
    const programs: Record<string, { program: number; link: number }> = {};
    for (const [p, link] of this.links) programs[p] = { program: this.obj.programInfo(PROGRAMS[p].name).id, link: link.info()?.id ?? 0 };
    return { programs, maps };
  }

  /** Lets the process exit while the ring-buffer thread waits (tests, one-shot CLI use). */
  unref(): void {
    this.ring?.unref();
  }

  /**
   * Stops event delivery and closes every fd. With `detach`, the program is detached and
   * pins are removed: nothing is left in the kernel. Without it (a daemon shutting down for
   * an upgrade) pinned fences keep enforcing.
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

/** The structs the decoders in abi.ts read. */
const ABI: AbiSize[] = [
  { map: 'fences', valueSize: FENCE_SIZE },
  { map: 'exec_allow', keySize: EXEC_KEY_SIZE, valueSize: EXEC_ALLOW_SIZE },
  { map: 'exec_rate', valueSize: EXEC_RATE_SIZE },
  { map: 'exec_suppressed', valueSize: EXEC_RATE_SIZE },
];
