// The network fence's kernel side (bpf/net-fence.bpf.c): six programs loaded once, linked to
// each fenced cgroup, and rule tries shared by every fence. A fence is its links (pinned in
// <pinDir>/<fenceId>/), its cgroup's local storage (config and counters, created by the
// kernel with the first link and freed with the last) and its trie entries.
import fs from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY, RingBuffer } from '../native';
import { AbiSize, attachCgroupPinned, checkAbi, dropLinks, loadPinned, readRing, removePinnedLinks } from './object-steps';
import { closeLinks } from './release';
import { cgroupId as cgroupIdOf } from './cgroup';
import { FenceMode, u64Key } from './abi';
import {
  CONFIG_SIZE,
  FLOW_KEY_SIZE,
  FlowKey,
  FlowState,
  Family,
  KEY4_SIZE,
  KEY6_SIZE,
  NET_EVENT_SIZE,
  NetConfig,
  NetDir,
  NetEvent,
  NetStats,
  NetVerdict,
  STATS_SIZE,
  decodeConfig,
  decodeFlow,
  decodeFlowKey,
  decodeNetEvent,
  decodeRuleKey,
  decodeStats,
  encodeConfig,
  encodeFlowKey,
  encodeRule,
  encodeRuleKey,
} from './net-abi';

const OBJECT = 'net-fence';
/** Attach order: the packet backstop first; the policy turns on for all six at once anyway. */
export const NET_PROGRAMS = ['net_egress', 'net_ingress', 'net_connect4', 'net_connect6', 'net_sendmsg4', 'net_sendmsg6'] as const;
const RULE_MAPS = ['net_rules4', 'net_rules6'] as const;
type RuleMap = (typeof RULE_MAPS)[number];
const MAPS = ['net_config', 'net_stats', 'net_rules4', 'net_rules6', 'net_flows', 'net_events', 'net_drops'] as const;

export interface NetRuleEntry {
  dir: NetDir;
  family: Family;
  addr: Buffer;
  prefix: number;
  verdict: NetVerdict;
  ruleId: number;
}

export interface NetRuleSet {
  mode: FenceMode.Enforce | FenceMode.Audit;
  /** Per direction (NetDir index): unmatched addresses are refused. */
  defaultDeny: [boolean, boolean];
  entries: NetRuleEntry[];
}

export interface NetFenceOptions {
  /** bpffs directory for the maps and the per-fence link directories. */
  pinDir?: string;
  /** Sizes of the rule tries when they are created (a pinned map keeps its size). */
  sizes?: { net_rules4?: number; net_rules6?: number };
  onEvents?: (events: NetEvent[]) => void;
}

export interface NetFenceInfo {
  fenceId: bigint;
  cgroupId: bigint;
  config: NetConfig;
}

export class NetFence {
  private readonly links = new Map<bigint, BpfLink[]>();
  /**
   * The trie keys of each fence and generation. Built from one scan when the object opens
   * (entries pinned by an earlier daemon included), then kept: attach, update and detach
   * touch their own entries only, however many other containers are fenced.
   */
  private readonly index = new Map<string, Array<[RuleMap, Buffer]>>();
  private ring: RingBuffer | null = null;
  private closed = false;

  private constructor(
    private readonly obj: BpfObject,
    private readonly pinDir?: string,
  ) {}

  static open(opts: NetFenceOptions = {}): NetFence {
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir, maxEntries: opts.sizes });
    try {
      checkAbi(obj, OBJECT, ABI);
      const f = new NetFence(obj, opts.pinDir);
      f.buildIndex();
      if (opts.onEvents) f.startEvents(opts.onEvents);
      return f;
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  private startEvents(onEvents: (events: NetEvent[]) => void): void {
    this.ring = readRing(this.obj, 'net_events', NET_EVENT_SIZE, decodeNetEvent, onEvents);
  }

  private fenceDir(fenceId: bigint): string | null {
    return this.pinDir ? path.join(this.pinDir, fenceId.toString()) : null;
  }

  /** True when the fence has links, in this process or pinned by an earlier one. */
  isAttached(fenceId: bigint): boolean {
    const dir = this.fenceDir(fenceId);
    return this.links.has(fenceId) || (dir !== null && fs.existsSync(dir) && fs.readdirSync(dir).length > 0);
  }

  /**
   * Fences a cgroup: rules first, then the six links, then the config that turns the policy
   * on for all of them in one update. The fence id is the cgroup id unless told otherwise.
   * Attaching an attached fence replaces its rules.
   */
  attach(cgroupPath: string, rules: NetRuleSet, fenceId: bigint = cgroupIdOf(cgroupPath)): void {
    const cgid = cgroupIdOf(cgroupPath);
    if (this.isAttached(fenceId)) {
      this.setRules(fenceId, rules, cgid);
      return;
    }
    this.deleteEntries(fenceId, null);
    let links: BpfLink[] = [];
    const dir = this.fenceDir(fenceId);
    try {
      this.writeEntries(fenceId, 0, rules.entries);
      links = attachCgroupPinned(this.obj, NET_PROGRAMS, cgroupPath, dir);
      this.obj.mapUpdate(
        'net_config',
        u64Key(cgid),
        encodeConfig({ fenceId, mode: rules.mode, gen: 0, defaultDeny: rules.defaultDeny, active: activeDirs(rules) }),
        BPF_ANY,
      );
    } catch (e) {
      dropLinks(links);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      this.deleteEntries(fenceId, null);
      throw e;
    }
    this.links.set(fenceId, links);
  }

  /**
   * Replaces a fence's policy atomically for traffic: the new entries go in under the other
   * generation, one config update switches to them, then the old entries go.
   */
  setRules(fenceId: bigint, rules: NetRuleSet, cgid: bigint = this.cgroupOf(fenceId)): void {
    const cur = this.config(cgid);
    if (!cur) throw new Error(`network fence ${fenceId} is not attached (no config for cgroup ${cgid})`);
    const gen = cur.gen ^ 1;
    this.deleteEntries(fenceId, gen);
    try {
      this.writeEntries(fenceId, gen, rules.entries);
      this.obj.mapUpdate(
        'net_config',
        u64Key(cgid),
        encodeConfig({ fenceId, mode: rules.mode, gen, defaultDeny: rules.defaultDeny, active: activeDirs(rules) }),
        BPF_ANY,
      );
    } catch (e) {
      this.deleteEntries(fenceId, gen);
      throw e;
    }
    this.deleteEntries(fenceId, cur.gen);
  }

  /**
   * Unfences: every link detached and unpinned (the kernel frees the cgroup's storage with
   * the last one), every rule entry deleted. Returns the final counters, or null when there
   * was nothing attached. Flow entries stay for the rate limiter's last report
   * (deleteFlows()).
   */
  detach(fenceId: bigint): NetStats | null {
    let cgid: bigint | null = null;
    try {
      cgid = this.cgroupOf(fenceId);
    } catch {
      /* no config: links may still be pinned */
    }
    const last = cgid !== null ? this.stats(cgid) : null;
    closeLinks(this.links.get(fenceId) ?? [], true);
    this.links.delete(fenceId);
    // Links pinned by an earlier daemon.
    removePinnedLinks(this.fenceDir(fenceId));
    // The kernel keeps a cgroup's local storage until the cgroup itself goes: mode 0 is
    // "not fenced" to the programs, to fences(), and to a later attach.
    if (cgid !== null) {
      try {
        this.obj.mapUpdate(
          'net_config',
          u64Key(cgid),
          encodeConfig({ fenceId: 0n, mode: FenceMode.Off, gen: 0, defaultDeny: [false, false], active: [false, false] }),
          BPF_ANY,
        );
      } catch {
        /* the storage went with its cgroup */
      }
    }
    this.deleteEntries(fenceId, null);
    return last;
  }

  private buildIndex(): void {
    for (const map of RULE_MAPS) {
      for (const k of this.obj.mapKeys(map)) {
        const d = decodeRuleKey(k);
        this.indexed(d.fenceId, d.gen).push([map, k]);
      }
    }
  }

  private indexed(fenceId: bigint, gen: number): Array<[RuleMap, Buffer]> {
    const id = `${fenceId}|${gen}`;
    let list = this.index.get(id);
    if (!list) this.index.set(id, (list = []));
    return list;
  }

  private writeEntries(fenceId: bigint, gen: number, entries: NetRuleEntry[]): void {
    const list = this.indexed(fenceId, gen);
    for (const e of entries) {
      const map: RuleMap = e.family === 4 ? 'net_rules4' : 'net_rules6';
      const key = encodeRuleKey({ dir: e.dir, gen, fenceId, family: e.family, addr: e.addr, prefix: e.prefix });
      this.obj.mapUpdate(map, key, encodeRule(e.verdict, e.ruleId), BPF_ANY);
      list.push([map, key]);
    }
  }

  /** Deletes a fence's trie entries of one generation, or of both (null). */
  private deleteEntries(fenceId: bigint, gen: number | null): void {
    for (const g of gen === null ? [0, 1] : [gen]) {
      for (const [map, key] of this.index.get(`${fenceId}|${g}`) ?? []) this.obj.mapDelete(map, key);
      this.index.delete(`${fenceId}|${g}`);
    }
  }

  /** Fence ids that own rule entries (attached or not: a crash can leave entries behind). */
  ruleOwners(): bigint[] {
    const ids = new Set<bigint>();
    for (const [id, list] of this.index) if (list.length) ids.add(BigInt(id.slice(0, id.indexOf('|'))));
    return [...ids];
  }

  /** Rule entries of one fence per family (both generations). */
  ruleCount(fenceId: bigint): { 4: number; 6: number } {
    const out = { 4: 0, 6: 0 };
    for (const g of [0, 1]) for (const [map] of this.index.get(`${fenceId}|${g}`) ?? []) out[map === 'net_rules4' ? 4 : 6]++;
    return out;
  }

  /** How full each rule trie is, against its max_entries. */
  usage(): { 4: { used: number; capacity: number }; 6: { used: number; capacity: number } } {
    const used = { 4: 0, 6: 0 };
    for (const list of this.index.values()) for (const [map] of list) used[map === 'net_rules4' ? 4 : 6]++;
    return {
      4: { used: used[4], capacity: this.obj.mapInfo('net_rules4').maxEntries },
      6: { used: used[6], capacity: this.obj.mapInfo('net_rules6').maxEntries },
    };
  }

  /** Trie entries of a fence (both generations), for tests and status. */
  entries(fenceId: bigint): Array<NetRuleEntry & { gen: number }> {
    const out: Array<NetRuleEntry & { gen: number }> = [];
    for (const map of ['net_rules4', 'net_rules6'] as const) {
      for (const k of this.obj.mapKeys(map)) {
        const d = decodeRuleKey(k);
        if (d.fenceId !== fenceId) continue;
        const v = this.obj.mapLookup(map, k);
        if (v)
          out.push({
            dir: d.dir,
            family: d.family,
            addr: d.addr,
            prefix: d.prefix,
            gen: d.gen,
            verdict: v.readUInt32LE(0),
            ruleId: v.readUInt32LE(4),
          });
      }
    }
    return out;
  }

  /** The config of a fenced cgroup, or null when it is not fenced. */
  config(cgid: bigint): NetConfig | null {
    const v = this.obj.mapLookup('net_config', u64Key(cgid));
    const c = v ? decodeConfig(v) : null;
    return c && c.mode !== FenceMode.Off ? c : null;
  }

  /**
   * Counters of a cgroup that is or was fenced (summed over CPUs), or null. They count from
   * the cgroup's first fence: the kernel keeps them as long as the cgroup exists.
   */
  stats(cgid: bigint): NetStats | null {
    const v = this.obj.mapLookup('net_stats', u64Key(cgid));
    return v ? decodeStats(v) : null;
  }

  /** Fenced cgroups, found through their local storage (so also those of an earlier daemon). */
  fences(): NetFenceInfo[] {
    const out: NetFenceInfo[] = [];
    for (const k of this.obj.mapKeys('net_config')) {
      const v = this.obj.mapLookup('net_config', k);
      if (!v) continue;
      const config = decodeConfig(v);
      if (config.mode === FenceMode.Off) continue;
      out.push({ fenceId: config.fenceId, cgroupId: k.readBigUInt64LE(0), config });
    }
    return out;
  }

  private cgroupOf(fenceId: bigint): bigint {
    const f = this.fences().find((x) => x.fenceId === fenceId);
    if (!f) throw new Error(`network fence ${fenceId} is not attached`);
    return f.cgroupId;
  }

  /** Fence ids that have pinned link directories (attached by this or an earlier daemon). */
  pinnedFences(): bigint[] {
    if (!this.pinDir || !fs.existsSync(this.pinDir)) return [];
    return fs
      .readdirSync(this.pinDir)
      .filter((n) => /^\d+$/.test(n))
      .map((n) => BigInt(n));
  }

  flow(key: FlowKey): FlowState | null {
    const v = this.obj.mapLookup('net_flows', encodeFlowKey(key));
    return v ? decodeFlow(v) : null;
  }

  /** Forgets the rate limiter's flows of a fence (after its last report). */
  deleteFlows(fenceId: bigint): void {
    for (const k of this.obj.mapKeys('net_flows')) if (decodeFlowKey(k).fenceId === fenceId) this.obj.mapDelete('net_flows', k);
  }

  /** Events the kernel could not put on the ring buffer since the maps were created. */
  drops(): bigint {
    const v = this.obj.mapLookup('net_drops', Buffer.alloc(4));
    return v ? v.readBigUInt64LE(0) : 0n;
  }

  /** The node-level programs' and maps' ids: fixed while this instance holds them (until close), so read once. */
  objectIds(): { programs: Record<string, number>; maps: Record<string, number> } {
    return (this.ids ??= this.readObjectIds());
  }

  private ids: { programs: Record<string, number>; maps: Record<string, number> } | null = null;

  private readObjectIds(): { programs: Record<string, number>; maps: Record<string, number> } {
    const programs: Record<string, number> = {};
    for (const p of NET_PROGRAMS) programs[p] = this.obj.programInfo(p).id;
    const maps: Record<string, number> = {};
    for (const m of MAPS) maps[m] = this.obj.mapInfo(m).id;
    return { programs, maps };
  }

  /** Link ids of a fence attached by this process. */
  linkIds(fenceId: bigint): number[] {
    return (this.links.get(fenceId) ?? []).map((l) => l.info()?.id ?? 0);
  }

  unref(): void {
    this.ring?.unref();
  }

  /**
   * Stops events and closes every fd. With `detach`, every fence is detached and every pin
   * removed; without it, pinned fences keep enforcing for the next daemon.
   */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    this.ring?.close();
    this.ring = null;
    if (opts.detach) {
      const ids = new Set([...this.links.keys(), ...this.pinnedFences()]);
      for (const id of ids) this.detach(id);
    } else {
      // Unpinned links detach when their fd closes; pinned ones stay attached.
      for (const ls of this.links.values()) for (const l of ls) l.destroy();
      this.links.clear();
    }
    this.obj.close({ unpin: !!opts.detach });
    if (opts.detach && this.pinDir) {
      for (const d of [this.pinDir, path.dirname(this.pinDir)]) {
        try {
          fs.rmdirSync(d);
        } catch {
          break; /* not empty: other objects are still pinned there */
        }
      }
    }
  }
}

function activeDirs(rules: NetRuleSet): [boolean, boolean] {
  const on = (d: NetDir) => rules.defaultDeny[d] || rules.entries.some((e) => e.dir === d);
  return [on(NetDir.Egress), on(NetDir.Ingress)];
}

/** The structs the decoders in net-abi.ts read. */
const ABI: AbiSize[] = [
  { map: 'net_config', valueSize: CONFIG_SIZE },
  { map: 'net_stats', valueSize: STATS_SIZE },
  { map: 'net_rules4', keySize: KEY4_SIZE },
  { map: 'net_rules6', keySize: KEY6_SIZE },
  { map: 'net_flows', keySize: FLOW_KEY_SIZE },
];
