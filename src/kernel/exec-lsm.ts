// The exec fence as a BPF LSM program (bpf/exec-lsm.bpf.c, lsm/bprm_check_security): a
// forbidden exec fails with EACCES inside the kernel. It judges the exec fence's own maps
// (kernel/exec-fence.ts), reused through their pins, so an ExecFence opened on the same pin
// directory (with or without its tracepoint programs) does every map write and reads the events.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfObject } from '../native';
import { attachReplacingPin, linkPin, loadPinned } from './object-steps';
import { closeLinks } from './release';

const OBJECT = 'exec-lsm';
/** The hooks and their link pins: exec itself, and opens for writing (allow-listed files, /proc/PID/mem). */
const PROGRAMS = [
  { name: 'exec_lsm', hook: 'lsm/bprm_check_security', linkPin: 'exec_lsm_link' },
  { name: 'exec_lsm_file_open', hook: 'lsm/file_open', linkPin: 'exec_lsm_file_open_link' },
  { name: 'exec_lsm_mmap_file', hook: 'lsm/mmap_file', linkPin: 'exec_lsm_mmap_file_link' },
  { name: 'exec_lsm_file_mprotect', hook: 'lsm/file_mprotect', linkPin: 'exec_lsm_file_mprotect_link' },
];
const SINCE_MAP = 'exec_fence_since';
const PROBE = 'exec_lsm_probe';
const LSM_LIST = '/sys/kernel/security/lsm';

export type LsmProbe = { usable: true } | { usable: false; why: string };

/** The active LSMs; with `mount`, securityfs is mounted first where the host has not. */
export function activeLsms(mount: boolean): string[] | null {
  if (mount && !fs.existsSync(LSM_LIST)) {
    try {
      execFileSync('mount', ['-t', 'securityfs', 'securityfs', '/sys/kernel/security'], { stdio: 'pipe' });
    } catch {
      /* reported by the caller as "cannot read" */
    }
  }
  try {
    return fs.readFileSync(LSM_LIST, 'utf8').trim().split(',').filter(Boolean);
  } catch {
    return null;
  }
}

/**
 * Can this kernel refuse execs with a BPF LSM program? A tiny LSM program must load and attach
 * (some environments refuse them with EPERM), and "bpf" must be an active LSM: a kernel built
 * with CONFIG_BPF_LSM but booted without bpf in its LSM list (Ubuntu, Flatcar) loads and
 * attaches LSM programs that are never called. The probe program changes nothing and is
 * detached at once. The load comes first so that a host where it fails is left as it was;
 * only where it works is securityfs mounted (if it is not) to read the LSM list.
 */
export function probeExecLsm(): LsmProbe {
  let obj: BpfObject | undefined;
  try {
    obj = loadPinned(OBJECT, { programs: [PROBE] });
    attachReplacingPin(obj, PROBE, undefined).link.destroy();
  } catch (e) {
    return { usable: false, why: `a BPF LSM program does not load or attach here: ${(e as Error).message.split('\n')[0]}` };
  } finally {
    obj?.close({ unpin: false });
  }
  const lsms = activeLsms(true);
  if (!lsms)
    return {
      usable: false,
      why: `cannot read ${LSM_LIST} (securityfs not mounted and not mountable), so whether BPF LSM programs are called is unknown`,
    };
  if (!lsms.includes('bpf'))
    return {
      usable: false,
      why: `"bpf" is not an active LSM (${LSM_LIST}: ${lsms.join(',')}); boot with lsm=${[...lsms, 'bpf'].join(',')}`,
    };
  return { usable: true };
}

export class ExecLsm {
  private closed = false;

  private constructor(
    private readonly obj: BpfObject,
    private readonly links: BpfLink[],
    readonly adopted: boolean,
    private readonly pinDir?: string,
  ) {}

  /**
   * Loads lsm/bprm_check_security over the maps pinned in pinDir (created and pinned here if
   * no ExecFence made them yet) and attaches it; its link is pinned, so the fence keeps
   * refusing while the daemon is down. A link an earlier daemon pinned is replaced after ours
   * is attached, so no exec slips through between the two.
   */
  static attach(opts: { pinDir: string; sizes?: { fences?: number; exec_allow?: number } }): ExecLsm {
    if (!opts.pinDir)
      throw new Error("ExecLsm.attach: a pin directory is required (the LSM program shares the exec fence's maps through their pins)");
    // The same sizes as the exec fence's: whichever object opens first creates the shared
    // maps, and a pinned map of another size is not reused.
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir, programs: PROGRAMS.map((p) => p.name), maxEntries: opts.sizes });
    const links: BpfLink[] = [];
    try {
      let adopted = false;
      for (const p of PROGRAMS) {
        const attached = attachReplacingPin(obj, p.name, linkPin(opts.pinDir, p.linkPin));
        links.push(attached.link);
        adopted ||= attached.adopted;
      }
      return new ExecLsm(obj, links, adopted, opts.pinDir);
    } catch (e) {
      // A link already pinned stays: it replaced the one that was enforcing there.
      for (const l of links) l.destroy();
      obj.close({ unpin: false });
      throw e;
    }
  }

  /** Is an LSM link pinned in pinDir (an earlier daemon ran this backend)? */
  static pinned(pinDir: string): boolean {
    return PROGRAMS.some((p) => fs.existsSync(path.join(pinDir, p.linkPin)));
  }

  /**
   * Records when a fence was set (now, unless it has a time already: a live policy update
   * keeps it): files whose inode changed after it may not be mapped executable unless
   * allow-listed.
   */
  setSince(fenceId: bigint, wallNs = BigInt(Date.now()) * 1_000_000n): void {
    const key = Buffer.alloc(8);
    key.writeBigUInt64LE(fenceId);
    if (this.obj.mapLookup(SINCE_MAP, key)) return;
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(wallNs);
    this.obj.mapUpdate(SINCE_MAP, key, v);
  }

  clearSince(fenceId: bigint): void {
    const key = Buffer.alloc(8);
    key.writeBigUInt64LE(fenceId);
    this.obj.mapDelete(SINCE_MAP, key);
  }

  /** Kernel ids per hook, for status output and the tamper watch: fixed until close(), so read once. */
  objectIds(): Record<string, { program: number; link: number }> {
    return (this.ids ??= this.readObjectIds());
  }

  private ids: Record<string, { program: number; link: number }> | null = null;

  private readObjectIds(): Record<string, { program: number; link: number }> {
    return Object.fromEntries(
      PROGRAMS.map((p, i) => [p.hook, { program: this.obj.programInfo(p.name).id, link: this.links[i].info()?.id ?? 0 }]),
    );
  }

  /**
   * With detach the program is detached and its link pin removed. The maps' pins are never
   * removed here: they belong to the ExecFence that shares them.
   */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    closeLinks(this.links, !!opts.detach);
    // Its own map's pin goes with the program; the shared maps' pins belong to the ExecFence.
    if (opts.detach && this.pinDir) {
      try {
        fs.unlinkSync(path.join(this.pinDir, SINCE_MAP));
      } catch {
        /* not pinned */
      }
    }
    this.obj.close({ unpin: false });
  }
}
