// learn mode's network recorder (bpf/learn-net.bpf.c): six record-only programs linked to a
// learning container's cgroup, and shared maps of the peers and flows each container used.
// A recorder is its links (pinned in <pinDir>/<fenceId>/), its cgroup's local storage (the
// fence id and drop counters) and its entries in learn_peers and learn_ports.
import fs from 'node:fs';
import { closeObject } from './release';
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY } from '../native';
import { AbiSize, attachCgroupPinned, checkAbi, dropLinks, loadPinned, removePinnedLinks } from './object-steps';
import { closeLinks } from './release';
import { u64Key } from './abi';
import { cgroupId as cgroupIdOf } from './cgroup';
import {
  LearnDir,
  NET_CONFIG_SIZE,
  PEER_KEY_SIZE,
  PORT_KEY_SIZE,
  decodeNetConfig,
  decodePeerKey,
  decodePortKey,
  encodeNetConfig,
} from './learn-abi';

const OBJECT = 'learn-net';
export const LEARN_NET_PROGRAMS = [
  'learn_egress',
  'learn_ingress',
  'learn_connect4',
  'learn_connect6',
  'learn_sendmsg4',
  'learn_sendmsg6',
] as const;

export interface LearnedPeer {
  direction: 'egress' | 'ingress';
  family: 4 | 6;
  addr: Buffer;
  count: bigint;
}
export interface LearnedFlow extends LearnedPeer {
  proto: number;
  port: number;
}

export interface LearnedNet {
  peers: LearnedPeer[];
  flows: LearnedFlow[];
  /** Peers the kernel could not record (learn_peers full): the learned policy would deny them. */
  peerDrops: bigint;
  /** Flows the kernel could not record (learn_ports full): only the report is short. */
  flowDrops: bigint;
}

function dirName(d: LearnDir): 'egress' | 'ingress' {
  return d === LearnDir.Ingress ? 'ingress' : 'egress';
}

/** The structs the decoders in learn-abi.ts read. */
const ABI: AbiSize[] = [
  { map: 'learn_net_cfg', valueSize: NET_CONFIG_SIZE },
  { map: 'learn_peers', keySize: PEER_KEY_SIZE },
  { map: 'learn_ports', keySize: PORT_KEY_SIZE },
];

export class LearnNet {
  private readonly links = new Map<bigint, BpfLink[]>();
  private closed = false;

  private constructor(
    private readonly obj: BpfObject,
    private readonly pinDir?: string,
  ) {}

  static open(opts: { pinDir?: string } = {}): LearnNet {
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir });
    try {
      checkAbi(obj, OBJECT, ABI);
      return new LearnNet(obj, opts.pinDir);
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  private fenceDir(fenceId: bigint): string | null {
    return this.pinDir ? path.join(this.pinDir, fenceId.toString()) : null;
  }

  /** Links the recorder to a cgroup; the fence id (default: the cgroup id) turns it on. */
  attach(cgroupPath: string, fenceId: bigint = cgroupIdOf(cgroupPath)): void {
    if (this.links.has(fenceId)) return;
    const cgid = cgroupIdOf(cgroupPath);
    this.forget(fenceId);
    const dir = this.fenceDir(fenceId);
    let links: BpfLink[] = [];
    try {
      links = attachCgroupPinned(this.obj, LEARN_NET_PROGRAMS, cgroupPath, dir);
      // The storage exists once the first link does; until this update it records nothing.
      this.obj.mapUpdate('learn_net_cfg', u64Key(cgid), encodeNetConfig({ fenceId, peerDrops: 0n, portDrops: 0n }), BPF_ANY);
    } catch (e) {
      dropLinks(links);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    this.links.set(fenceId, links);
  }

  /** What a fence has recorded so far. `cgid` (default: the fence id) finds its drop counters. */
  read(fenceId: bigint, cgid: bigint = fenceId): LearnedNet {
    const peers: LearnedPeer[] = [];
    for (const k of this.obj.mapKeys('learn_peers')) {
      const d = decodePeerKey(k);
      if (d.fenceId !== fenceId) continue;
      const v = this.obj.mapLookup('learn_peers', k);
      peers.push({ direction: dirName(d.dir), family: d.family, addr: d.addr, count: v ? v.readBigUInt64LE(0) : 0n });
    }
    const flows: LearnedFlow[] = [];
    for (const k of this.obj.mapKeys('learn_ports')) {
      const d = decodePortKey(k);
      if (d.fenceId !== fenceId) continue;
      const v = this.obj.mapLookup('learn_ports', k);
      flows.push({
        direction: dirName(d.dir),
        family: d.family,
        addr: d.addr,
        proto: d.proto,
        port: d.port,
        count: v ? v.readBigUInt64LE(0) : 0n,
      });
    }
    let peerDrops = 0n;
    let flowDrops = 0n;
    try {
      const c = this.obj.mapLookup('learn_net_cfg', u64Key(cgid));
      if (c) ({ peerDrops, portDrops: flowDrops } = decodeNetConfig(c));
    } catch {
      /* the storage went with its cgroup */
    }
    return { peers, flows, peerDrops, flowDrops };
  }

  /**
   * Unlinks a fence's programs (also those an earlier daemon pinned) and returns what it
   * recorded; its map entries go.
   */
  detach(fenceId: bigint, cgid: bigint = fenceId): LearnedNet {
    const last = this.read(fenceId, cgid);
    closeLinks(this.links.get(fenceId) ?? [], true);
    this.links.delete(fenceId);
    // Links pinned by an earlier daemon.
    removePinnedLinks(this.fenceDir(fenceId));
    try {
      this.obj.mapUpdate('learn_net_cfg', u64Key(cgid), encodeNetConfig({ fenceId: 0n, peerDrops: 0n, portDrops: 0n }), BPF_ANY);
    } catch {
      /* the storage went with its cgroup or its last link */
    }
    this.forget(fenceId);
    return last;
  }

  private forget(fenceId: bigint): void {
    for (const map of ['learn_peers', 'learn_ports'] as const) {
      for (const k of this.obj.mapKeys(map)) if (k.readBigUInt64LE(0) === fenceId) this.obj.mapDelete(map, k);
    }
  }

  /** Fence ids that own learned peers or ports (their recorder may be gone: a crash). */
  tableFences(): bigint[] {
    const ids = new Set<bigint>();
    for (const map of ['learn_peers', 'learn_ports'] as const) for (const k of this.obj.mapKeys(map)) ids.add(k.readBigUInt64LE(0));
    return [...ids];
  }

  /** Fence ids with pinned link directories (attached by this or an earlier daemon). */
  pinnedFences(): bigint[] {
    if (!this.pinDir || !fs.existsSync(this.pinDir)) return [];
    return fs
      .readdirSync(this.pinDir)
      .filter((n) => /^\d+$/.test(n))
      .map((n) => BigInt(n));
  }

  /** Fixed while this instance holds its programs and maps (until close), so read once. */
  objectIds(): { programs: Record<string, number>; maps: Record<string, number> } {
    return (this.ids ??= this.readObjectIds());
  }

  private ids: { programs: Record<string, number>; maps: Record<string, number> } | null = null;

  private readObjectIds(): { programs: Record<string, number>; maps: Record<string, number> } {
    const programs: Record<string, number> = {};
    for (const p of LEARN_NET_PROGRAMS) programs[p] = this.obj.programInfo(p).id;
    const maps: Record<string, number> = {};
    for (const m of ['learn_net_cfg', 'learn_peers', 'learn_ports']) maps[m] = this.obj.mapInfo(m).id;
    return { programs, maps };
  }

  linkIds(fenceId: bigint): number[] {
    return (this.links.get(fenceId) ?? []).map((l) => l.info()?.id ?? 0);
  }

  /** With `detach`, every recorder is unlinked and every pin removed. */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    if (opts.detach) {
      for (const id of new Set([...this.links.keys(), ...this.pinnedFences()])) this.detach(id);
    } else {
      for (const ls of this.links.values()) for (const l of ls) l.destroy();
      this.links.clear();
    }
    closeObject(this.obj, this.pinDir, !!opts.detach);
  }
}
