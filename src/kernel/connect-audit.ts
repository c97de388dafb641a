// The connect audit's kernel side (bpf/connect-audit.bpf.c): one global program on
// sock:inet_sock_set_state that reports outbound TCP connection attempts of watched pid
// namespaces. It never blocks: it is what is left of the network fence without cgroup v2.
// A watch is a map entry; the mirror of bpf/include/connect-audit-abi.h is here too.
import { BpfLink, BpfObject, BPF_ANY, RingBuffer } from '../native';
import { u64Key } from './abi';
import { ensureTracefs } from './tracefs';
import { closeLinks, closeObject } from './release';
import { attachReplacingPin, checkAbi, linkPin, loadPinned, readRing } from './object-steps';

const OBJECT = 'connect-audit';
const PROGRAM = 'connect_audit';
const LINK_PIN = 'connect_audit_link';
const MAPS = ['connect_watch', 'connect_events', 'connect_drops'];

export const EVENT_CONNECT = 16;
export const CONNECT_WATCH_SIZE = 8;
export const CONNECT_EVENT_SIZE = 72;
const COMM_LEN = 16;

export interface ConnectEvent {
  tsMonoNs: bigint;
  fenceId: bigint;
  cgroupId: bigint;
  pid: number;
  uid: number;
  family: 4 | 6;
  /** 4 or 16 bytes. */
  daddr: Buffer;
  dport: number;
  comm: string;
}

export function decodeConnectEvent(b: Buffer): ConnectEvent {
  if (b.length < CONNECT_EVENT_SIZE) throw new Error(`connect event of ${b.length} bytes, want ${CONNECT_EVENT_SIZE}`);
  const family = b.readUInt16LE(4) === 4 ? 4 : 6;
  const end = b.indexOf(0, 56);
  return {
    family,
    dport: b.readUInt16LE(6),
    tsMonoNs: b.readBigUInt64LE(8),
    fenceId: b.readBigUInt64LE(16),
    cgroupId: b.readBigUInt64LE(24),
    pid: b.readUInt32LE(32),
    uid: b.readUInt32LE(36),
    daddr: Buffer.from(b.subarray(40, 40 + (family === 4 ? 4 : 16))),
    comm: b.toString('utf8', 56, end < 0 || end > 56 + COMM_LEN ? 56 + COMM_LEN : end),
  };
}

export class ConnectAudit {
  private ring: RingBuffer | null = null;
  private closed = false;

  private constructor(
    private readonly obj: BpfObject,
    private readonly link: BpfLink,
    readonly adopted: boolean,
    private readonly pinDir?: string,
  ) {}

  /** Loads and attaches; with a pinDir, watches pinned by an earlier daemon carry on. */
  static open(opts: { pinDir?: string; onEvents?: (events: ConnectEvent[]) => void } = {}): ConnectAudit {
    ensureTracefs();
    const obj = loadPinned(OBJECT, { pinDir: opts.pinDir });
    let link: BpfLink | undefined;
    try {
      checkAbi(obj, 'connect-audit', [{ map: 'connect_watch', valueSize: CONNECT_WATCH_SIZE }]);
      // Ours is attached first: no connect of a watched namespace goes unreported.
      const attached = attachReplacingPin(obj, PROGRAM, linkPin(opts.pinDir, LINK_PIN));
      link = attached.link;
      const audit = new ConnectAudit(obj, link, attached.adopted, opts.pinDir);
      const onEvents = opts.onEvents;
      if (onEvents) {
        audit.ring = readRing(
          obj,
          'connect_events',
          CONNECT_EVENT_SIZE,
          (r) => (r.readUInt32LE(0) === EVENT_CONNECT ? decodeConnectEvent(r) : null),
          onEvents,
        );
      }
      return audit;
    } catch (e) {
      link?.destroy();
      obj.close();
      throw e;
    }
  }

  /** Reports the connects of a pid namespace (a pidns fence id) and of namespaces nested in it. */
  watch(fenceId: bigint): void {
    if (this.obj.mapLookup('connect_watch', u64Key(fenceId))) return; // keep its count
    this.obj.mapUpdate('connect_watch', u64Key(fenceId), Buffer.alloc(CONNECT_WATCH_SIZE), BPF_ANY);
  }

  /** Connection attempts reported for a watch so far, or null when it is not watched. */
  seen(fenceId: bigint): bigint | null {
    const v = this.obj.mapLookup('connect_watch', u64Key(fenceId));
    return v ? v.readBigUInt64LE(0) : null;
  }

  /** Stops a watch; returns its final count. */
  unwatch(fenceId: bigint): bigint | null {
    const last = this.seen(fenceId);
    this.obj.mapDelete('connect_watch', u64Key(fenceId));
    return last;
  }

  watched(): bigint[] {
    return this.obj.mapKeys('connect_watch').map((k) => k.readBigUInt64LE(0));
  }

  drops(): bigint {
    const v = this.obj.mapLookup('connect_drops', Buffer.alloc(4));
    return v ? v.readBigUInt64LE(0) : 0n;
  }

  objectIds(): { program: number; link: number; maps: Record<string, number> } {
    const maps: Record<string, number> = {};
    for (const m of MAPS) maps[m] = this.obj.mapInfo(m).id;
    return { program: this.obj.programInfo(PROGRAM).id, link: this.link.info()?.id ?? 0, maps };
  }

  unref(): void {
    this.ring?.unref();
  }

  /** With detach nothing stays in the kernel; without, pinned watches keep reporting into the ring. */
  close(opts: { detach?: boolean } = {}): void {
    if (this.closed) return;
    this.closed = true;
    this.ring?.close();
    this.ring = null;
    closeLinks([this.link], !!opts.detach);
    closeObject(this.obj, this.pinDir, !!opts.detach);
  }
}
