// The exec fence's kernel side: global BPF programs on sched_process_exec and their maps,
// shared by every fenced container. Two programs find a container's fence two ways: by its
// cgroup v2 ancestry ('cgroup-v2', tp_btf) or by its pid namespace ('pidns', a classic
// tracepoint, the cgroup v1 fallback); both judge against the same maps. A fence is map
// entries, so fencing, changing and unfencing a container never reloads or re-attaches one.
import fs from 'node:fs';
import { closeLinks, closeObject } from './release';
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY, RingBuffer, native } from '../native';
import { ensureTracefs } from './tracefs';
import {
  EXEC_EVENT_SIZE, EXEC_KEY_SIZE, ExecEvent, FENCE_SIZE, FenceMode, FenceState, FileIdentity,
  decodeExecEvent, decodeExecKey, decodeFence, encodeExecKey, encodeFence, u64Key,
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
}

export interface FenceEntry extends FenceState { fenceId: bigint; identities: FileIdentity[] }

export class ExecFence {
  private readonly obj: BpfObject;
  private readonly links: Map<ExecProgram, BpfLink>;
  private ring: RingBuffer | null = null;
  private closed = false;
  /** True when this instance took over a program pinned by an earlier process. */
  readonly adopted: boolean;

  private constructor(obj: BpfObject, links: Map<ExecProgram, BpfLink>, adopted: boolean, private readonly pinDir?: string) {
    this.obj = obj;
    this.links = links;
    this.adopted = adopted;
  }

  /**
   * Loads and attaches the exec fence. With a pinDir, maps pinned there by an earlier
   * daemon are reused (fences, allow-lists, counters and unread events survive) and its
   * pinned links are replaced by ours.
   */
  static open(opts: ExecFenceOptions = {}): ExecFence {
    const addon = native();
    if (opts.pinDir) fs.mkdirSync(opts.pinDir, { recursive: true, mode: 0o700 });
    const pinned = (p: ExecProgram) => !!opts.pinDir && fs.existsSync(path.join(opts.pinDir, PROGRAMS[p].linkPin));
    const asked = opts.programs ?? ['cgroup-v2'];
    const programs = ALL_PROGRAMS.filter((p) => asked.includes(p) || pinned(p));
    if (programs.includes('pidns')) ensureTracefs();
    const obj = new addon.BpfObject(OBJECT, { pinDir: opts.pinDir, programs: programs.map((p) => PROGRAMS[p].name) });
    const links = new Map<ExecProgram, BpfLink>();
    let adopted = false;
    try {
      checkSizes(obj);
      for (const p of programs) {
        const link = obj.attachTracing(PROGRAMS[p].name);
        links.set(p, link);
        if (!opts.pinDir) continue;
        const pin = path.join(opts.pinDir, PROGRAMS[p].linkPin);
        if (fs.existsSync(pin)) {
          // Our link is attached before the old one goes, so no exec slips through; for
          // that instant both programs run against the same maps and agree.
          const old = addon.BpfLink.open(pin);
          old.unpin();
          old.destroy();
          adopted = true;
        }
        link.pin(pin);
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
    this.ring = new (native().RingBuffer)(this.obj, 'exec_events', (records) => {
      const events: ExecEvent[] = [];
      for (const r of records) if (r.length >= EXEC_EVENT_SIZE) events.push(decodeExecEvent(r));
      onEvents(events);
    });
  }

  /** Creates or replaces a fence (a cgroup id or a pidns fence id). New fences start with zero counters. */
  setFence(fenceId: bigint, mode: FenceMode, flags = 0): void {
    const key = u64Key(fenceId);
    const cur = this.obj.mapLookup('fences', key);
    const prev = cur ? decodeFence(cur) : undefined;
    // Updating in place keeps the kernel's counters; only mode and flags change.
    this.obj.mapUpdate('fences', key, encodeFence({ ...prev, mode, flags }), BPF_ANY);
  }

  getFence(fenceId: bigint): FenceState | null {
    const v = this.obj.mapLookup('fences', u64Key(fenceId));
    return v ? decodeFence(v) : null;
  }

  allow(fenceId: bigint, ids: Iterable<FileIdentity>): void {
    const one = Buffer.from([1]);
    for (const id of ids) this.obj.mapUpdate('exec_allow', encodeExecKey(fenceId, id), one, BPF_ANY);
  }

  disallow(fenceId: bigint, ids: Iterable<FileIdentity>): void {
    for (const id of ids) this.obj.mapDelete('exec_allow', encodeExecKey(fenceId, id));
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
   * removals, so an identity in both the old and new list is never briefly denied.
   */
  replaceAllowList(fenceId: bigint, ids: FileIdentity[]): void {
    const want = new Map(ids.map((i) => [`${i.dev}:${i.ino}`, i]));
    const have = new Map(this.allowed(fenceId).map((i) => [`${i.dev}:${i.ino}`, i]));
    this.allow(fenceId, [...want].filter(([k]) => !have.has(k)).map(([, v]) => v));
    this.disallow(fenceId, [...have].filter(([k]) => !want.has(k)).map(([, v]) => v));
  }

  /** Removes a fence and every allow entry it had. Returns its final counters. */
  unfence(fenceId: bigint): FenceState | null {
    const last = this.getFence(fenceId);
    this.obj.mapDelete('fences', u64Key(fenceId));
    for (const k of this.obj.mapKeys('exec_allow')) {
      if (decodeExecKey(k).fenceId === fenceId) this.obj.mapDelete('exec_allow', k);
    }
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
      return { fenceId, ...(v ? decodeFence(v) : { mode: FenceMode.Off, flags: 0, denied: 0n, audited: 0n, allowed: 0n }), identities: byFence.get(fenceId) ?? [] };
    });
  }

  /** Events the kernel could not put on the ring buffer since the maps were created. */
  drops(): bigint {
    const v = this.obj.mapLookup('exec_drops', Buffer.alloc(4));
    return v ? v.readBigUInt64LE(0) : 0n;
  }

  /** Kernel object ids, for status output and leak checks. */
  objectIds(): { programs: Record<string, { program: number; link: number }>; maps: Record<string, number> } {
    const maps: Record<string, number> = {};
    for (const m of ['fences', 'exec_allow', 'exec_events', 'exec_drops']) maps[m] = this.obj.mapInfo(m).id;
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

function checkSizes(obj: BpfObject): void {
  const f = obj.mapInfo('fences');
  const a = obj.mapInfo('exec_allow');
  if (f.valueSize !== FENCE_SIZE || a.keySize !== EXEC_KEY_SIZE) {
    throw new Error(`exec-fence ABI mismatch: fence value ${f.valueSize} (want ${FENCE_SIZE}), allow key ${a.keySize} (want ${EXEC_KEY_SIZE}); rebuild with \`npm run build\``);
  }
}

