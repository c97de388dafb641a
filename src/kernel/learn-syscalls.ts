// learn mode's syscall and exec recorder (bpf/learn-syscalls.bpf.c): one global program on
// sys_enter with a per-container record of the syscall numbers it made, and one on
// sched_process_exec with a per-container set of the files it executed. The programs are
// attached only while at least one container learns: attached, sys_enter sends every task on
// the node through the syscall slow path. Maps and links are pinned in pinDir so that a
// restarted daemon keeps what was learned and keeps learning.
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY, BPF_NOEXIST, NativeError } from '../native';
import { u64Key } from './abi';
import {
  CGROUP_CACHE_SIZE,
  EXEC_KEY_SIZE,
  EXEC_VALUE_SIZE,
  LearnedExecRecord,
  LearnedSyscallNumbers,
  SYSCALLS_SIZE,
  decodeExecRecord,
  decodeSyscalls,
} from './learn-abi';
import { closeLinks, closeObject } from './release';
import { AbiSize, attachReplacingPin, checkAbi, loadPinned, removePinnedLink } from './object-steps';

const OBJECT = 'learn-syscalls';
/** Each program and the pin of its link. */
const PROGRAMS = [
  { program: 'learn_sys_enter', pin: 'learn_sys_link' },
  { program: 'learn_sched_exec', pin: 'learn_exec_link' },
] as const;

/** The structs the decoders in learn-abi.ts read. */
const ABI: AbiSize[] = [
  { map: 'learn_sys', valueSize: SYSCALLS_SIZE },
  { map: 'learn_sys_cgrp', valueSize: CGROUP_CACHE_SIZE },
  { map: 'learn_exec', keySize: EXEC_KEY_SIZE, valueSize: EXEC_VALUE_SIZE },
];

export class LearnSyscalls {
  private links: BpfLink[] | null = null;
  private closed = false;

  private constructor(
    private readonly obj: BpfObject,
    private readonly pinDir?: string,
  ) {}

  static open(opts: { pinDir?: string } = {}): LearnSyscalls {
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir });
    try {
      checkAbi(obj, OBJECT, ABI);
      const l = new LearnSyscalls(obj, opts.pinDir);
      // An earlier daemon left containers learning: keep recording for them with our program.
      if (l.fences().length > 0) l.ensureAttached();
      return l;
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  private linkPin(name: string): string | null {
    return this.pinDir ? path.join(this.pinDir, name) : null;
  }

  private ensureAttached(): void {
    if (this.links) return;
    const links: BpfLink[] = [];
    try {
      // Ours is attached before the old one goes: both record into the same maps meanwhile.
      for (const p of PROGRAMS) links.push(attachReplacingPin(this.obj, p.program, this.linkPin(p.pin) ?? undefined).link);
    } catch (e) {
      closeLinks(links, true);
      throw e;
    }
    this.links = links;
  }

  private detachPrograms(): void {
    if (this.links) {
      closeLinks(this.links, true);
      this.links = null;
      return;
    }
    // Links an earlier daemon pinned.
    for (const p of PROGRAMS) {
      const pin = this.linkPin(p.pin);
      if (pin) removePinnedLink(pin);
    }
  }

  /**
   * Starts recording for a fence (a cgroup id) and everything below it, from an empty record;
   * a record already there (an earlier daemon's, found again by a late attach) is kept.
   */
  add(fenceId: bigint): void {
    // One record per learning container, in a table every learner shares: a full one is a
    // clear refusal, not the kernel's E2BIG.
    const cap = this.obj.mapInfo('learn_sys').maxEntries;
    const used = this.fences();
    if (!used.includes(fenceId) && used.length >= cap) {
      throw new Error(`the node's learn_sys table holds ${used.length} of ${cap} learning containers; no room to learn fence ${fenceId}`);
    }
    try {
      this.obj.mapUpdate('learn_sys', u64Key(fenceId), Buffer.alloc(SYSCALLS_SIZE), BPF_NOEXIST);
    } catch (e) {
      if ((e as NativeError).code !== 'EEXIST') throw e;
    }
    // Cgroups cached as "not learning" (the container's own, by runc before the attach) are
    // looked up again.
    const key = Buffer.alloc(4);
    const gen = this.obj.mapLookup('learn_sys_gen', key)?.readBigUInt64LE(0) ?? 0n;
    this.obj.mapUpdate('learn_sys_gen', key, u64Key(gen + 1n), BPF_ANY);
    this.ensureAttached();
  }

  read(fenceId: bigint): LearnedSyscallNumbers | null {
    const v = this.obj.mapLookup('learn_sys', u64Key(fenceId));
    return v ? decodeSyscalls(v) : null;
  }

  /** The files the fence's container executed so far. */
  readExecs(fenceId: bigint): LearnedExecRecord[] {
    const out: LearnedExecRecord[] = [];
    for (const k of this.obj.mapKeys('learn_exec')) {
      if (k.readBigUInt64LE(0) !== fenceId) continue;
      const v = this.obj.mapLookup('learn_exec', k);
      if (v) out.push(decodeExecRecord(k, v));
    }
    return out;
  }

  /** Executables not recorded because the kernel's table was full (all fences together). */
  execDrops(): bigint {
    return this.obj.mapLookup('learn_exec_drops', Buffer.alloc(4))?.readBigUInt64LE(0) ?? 0n;
  }

  /**
   * Stops recording for a fence and returns what it recorded; the programs go with the last
   * fence.
   */
  remove(fenceId: bigint): { syscalls: LearnedSyscallNumbers | null; execs: LearnedExecRecord[] } {
    const last = this.read(fenceId);
    const execs = this.readExecs(fenceId);
    this.obj.mapDelete('learn_sys', u64Key(fenceId));
    for (const k of this.obj.mapKeys('learn_exec')) if (k.readBigUInt64LE(0) === fenceId) this.obj.mapDelete('learn_exec', k);
    // Cached cgroups still pointing at the fence find no record and record nothing; the next
    // fence's generation bump clears them.
    if (this.fences().length === 0) this.detachPrograms();
    return { syscalls: last, execs };
  }

  fences(): bigint[] {
    return this.obj.mapKeys('learn_sys').map((k) => k.readBigUInt64LE(0));
  }

  attached(): boolean {
    return this.links !== null;
  }

  /** The maps' and programs' ids are fixed while this instance holds them (read once); the links come and go. */
  objectIds(): { programs: number[]; links: number[]; maps: Record<string, number> } {
    if (!this.fixedIds) {
      const maps: Record<string, number> = {};
      for (const m of ['learn_sys', 'learn_sys_cgrp', 'learn_sys_gen', 'learn_exec', 'learn_exec_drops', 'learn_exec_scratch'])
        maps[m] = this.obj.mapInfo(m).id;
      this.fixedIds = { programs: PROGRAMS.map((p) => this.obj.programInfo(p.program).id), maps };
    }
    return {
      ...this.fixedIds,
      links: (this.links ?? []).map((l) => l.info()?.id).filter((id): id is number => typeof id === 'number'),
    };
  }

  private fixedIds: { programs: number[]; maps: Record<string, number> } | null = null;

  /**
   * Closes every fd. With `detach` the program is detached and the records and pins go;
   * without it (a daemon restarting) a pinned program keeps recording into pinned maps.
   */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    if (opts.detach) this.detachPrograms();
    else for (const l of this.links ?? []) l.destroy();
    this.links = null;
    closeObject(this.obj, this.pinDir, !!opts.detach);
  }
}
