// The cgroup each process had when it exited, by pid (bpf/exited-tasks.bpf.c): how a kernel
// record that names a caller by pid alone is attributed after the caller is gone. Not
// pinned: it only serves the running daemon's reader of the kernel's seccomp log, which
// stops with it.
import { BpfLink, BpfObject } from '../native';
import { attachReplacingPin, loadPinned } from './object-steps';

const OBJECT = 'exited-tasks';
const PROGRAM = 'record_exit';
const MAP = 'exited_cgroup';

export class ExitedTasks {
  private constructor(
    private readonly obj: BpfObject,
    private readonly link: BpfLink,
  ) {}

  static open(): ExitedTasks {
    const obj = loadPinned(OBJECT);
    try {
      // No pin: nothing of it outlives the daemon.
      return new ExitedTasks(obj, attachReplacingPin(obj, PROGRAM, undefined).link);
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** The cgroup v2 id the process `pid` had when it exited, if it exited lately. */
  cgroupOf(pid: number): bigint | null {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(pid >>> 0);
    const v = this.obj.mapLookup(MAP, k);
    return v ? v.readBigUInt64LE(0) : null;
  }

  /** For the tamper watch, which asks after every attach: fixed while this instance holds the objects (until close), so read once. */
  objectIds(): { program: number; maps: number[] } {
    return (this.ids ??= { program: this.obj.programInfo(PROGRAM).id, maps: [this.obj.mapInfo(MAP).id] });
  }

  private ids: { program: number; maps: number[] } | null = null;

  close(): void {
    this.link.destroy();
    this.obj.close();
  }
}
