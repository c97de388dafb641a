// learn mode's syscall recorder (bpf/learn-syscalls.bpf.c): one global program on sys_enter
// and a per-container record of the syscall numbers it made. The program is attached only
// while at least one container learns: attached, it sends every task on the node through
// the syscall slow path. Maps and the link are pinned in pinDir so that a restarted daemon
// keeps what was learned and keeps learning.
import fs from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfObject, BPF_ANY, BPF_NOEXIST, NativeError, native } from '../native';
import { u64Key } from './abi';
import { CGROUP_CACHE_SIZE, LearnedSyscallNumbers, SYSCALLS_SIZE, decodeSyscalls } from './learn-abi';
import { closeObject } from './release';

const OBJECT = 'learn-syscalls';
const PROGRAM = 'learn_sys_enter';
const LINK_PIN = 'learn_sys_link';

export class LearnSyscalls {
  private link: BpfLink | null = null;
  private closed = false;

  private constructor(private readonly obj: BpfObject, private readonly pinDir?: string) {}

  static open(opts: { pinDir?: string } = {}): LearnSyscalls {
    if (opts.pinDir) fs.mkdirSync(opts.pinDir, { recursive: true, mode: 0o700 });
    const obj = new (native().BpfObject)(OBJECT, { pinDir: opts.pinDir });
    try {
      const s = obj.mapInfo('learn_sys');
      const c = obj.mapInfo('learn_sys_cgrp');
      if (s.valueSize !== SYSCALLS_SIZE || c.valueSize !== CGROUP_CACHE_SIZE) {
        throw new Error(`learn-syscalls ABI mismatch: learn_sys value ${s.valueSize} (want ${SYSCALLS_SIZE}), learn_sys_cgrp value ${c.valueSize} (want ${CGROUP_CACHE_SIZE}); rebuild with \`npm run build\``);
      }
      const l = new LearnSyscalls(obj, opts.pinDir);
      // An earlier daemon left containers learning: keep recording for them with our program.
      if (l.fences().length > 0) l.ensureAttached();
      return l;
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  private linkPin(): string | null {
    return this.pinDir ? path.join(this.pinDir, LINK_PIN) : null;
  }

  private ensureAttached(): void {
    if (this.link) return;
    const link = this.obj.attachTracing(PROGRAM);
    const pin = this.linkPin();
    if (pin) {
      if (fs.existsSync(pin)) {
        // Ours is attached before the old one goes: both record into the same maps meanwhile.
        const old = native().BpfLink.open(pin);
        old.unpin();
        old.destroy();
      }
      link.pin(pin);
    }
    this.link = link;
  }

  private detachProgram(): void {
    const pin = this.linkPin();
    if (this.link) {
      this.link.unpin();
      this.link.destroy();
      this.link = null;
    } else if (pin && fs.existsSync(pin)) {
      const old = native().BpfLink.open(pin);
      old.unpin();
      old.destroy();
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

  /** Stops recording for a fence and returns what it recorded; the program goes with the last fence. */
  remove(fenceId: bigint): LearnedSyscallNumbers | null {
    const last = this.read(fenceId);
    this.obj.mapDelete('learn_sys', u64Key(fenceId));
    // Cached cgroups still pointing at the fence find no record and record nothing; the next
    // fence's generation bump clears them.
    if (this.fences().length === 0) this.detachProgram();
    return last;
  }

  fences(): bigint[] {
    return this.obj.mapKeys('learn_sys').map((k) => k.readBigUInt64LE(0));
  }

  attached(): boolean {
    return this.link !== null;
  }

  objectIds(): { program: number; link: number | null; maps: Record<string, number> } {
    const maps: Record<string, number> = {};
    for (const m of ['learn_sys', 'learn_sys_cgrp', 'learn_sys_gen']) maps[m] = this.obj.mapInfo(m).id;
    return { program: this.obj.programInfo(PROGRAM).id, link: this.link?.info()?.id ?? null, maps };
  }

  /**
   * Closes every fd. With `detach` the program is detached and the records and pins go;
   * without it (a daemon restarting) a pinned program keeps recording into pinned maps.
   */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    if (opts.detach) this.detachProgram();
    else this.link?.destroy();
    this.link = null;
    closeObject(this.obj, this.pinDir, !!opts.detach);
  }
}
