// TypeScript mirror of bpf/include/tamper-abi.h. The addon static_asserts the C sizes; the
// sizes here are checked against the maps' key/value sizes when the object loads.

export const EVENT_TAMPER = 32;
export const PIN_DIR_LEN = 128;

export const TAMPER_KEY_SIZE = 8;
export const TAMPER_EVENT_SIZE = 360;
const COMM_LEN = 16;
const PATH_LEN = 256;

export enum ObjKind {
  Map = 1,
  Prog = 2,
  Link = 3,
  Pin = 4,
}

export type TamperObject = 'map' | 'prog' | 'link' | 'pin';
const OBJECT_NAMES: Record<number, TamperObject> = { 1: 'map', 2: 'prog', 3: 'link', 4: 'pin' };

export type TamperAction =
  'map-update' | 'map-delete' | 'map-freeze' | 'prog-detach' | 'link-detach' | 'link-update' | 'pin-unlink' | 'pin-rename';
const ACTIONS: Record<number, TamperAction> = {
  1: 'map-update',
  2: 'map-delete',
  3: 'map-freeze',
  4: 'prog-detach',
  5: 'link-detach',
  6: 'link-update',
  7: 'pin-unlink',
  8: 'pin-rename',
};

export enum TamperStat {
  Lost = 0,
  Unreadable = 1,
}

/** The bpf() commands the watch reports, by number (enum bpf_cmd, UAPI). */
const BPF_CMDS: Record<number, string> = {
  2: 'BPF_MAP_UPDATE_ELEM',
  3: 'BPF_MAP_DELETE_ELEM',
  9: 'BPF_PROG_DETACH',
  21: 'BPF_MAP_LOOKUP_AND_DELETE_ELEM',
  22: 'BPF_MAP_FREEZE',
  25: 'BPF_MAP_LOOKUP_AND_DELETE_BATCH',
  26: 'BPF_MAP_UPDATE_BATCH',
  27: 'BPF_MAP_DELETE_BATCH',
  29: 'BPF_LINK_UPDATE',
  34: 'BPF_LINK_DETACH',
};

export function encodeTamperKey(kind: ObjKind, id: number): Buffer {
  const b = Buffer.alloc(TAMPER_KEY_SIZE);
  b.writeUInt32LE(kind, 0);
  b.writeUInt32LE(id, 4);
  return b;
}

export function decodeTamperKey(b: Buffer): { kind: ObjKind; id: number } {
  return { kind: b.readUInt32LE(0), id: b.readUInt32LE(4) };
}

export interface TamperEvent {
  kind: 'tamper';
  action: TamperAction;
  tsMonoNs: bigint;
  cgroupId: bigint;
  /** tgid in the initial pid namespace. */
  pid: number;
  tid: number;
  uid: number;
  /** The bpf() command's name; null for a path operation. */
  bpfCmd: string | null;
  object: TamperObject;
  /** Map, program or link id; 0 for a pin. */
  objectId: number;
  /** A link's program, or the program itself. */
  progId: number;
  /** The map's name, or the program's. */
  objectName: string;
  /** Path operations: the path as the caller passed it (relative to its dirfd or cwd). */
  path: string;
  /** The caller in its own pid namespace, and its start time in USER_HZ ticks since boot. */
  pidnsIno: number;
  nsPid: number;
  startTicks: bigint;
  comm: string;
}

function cstr(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

export function decodeTamperEvent(b: Buffer): TamperEvent {
  if (b.length < TAMPER_EVENT_SIZE) throw new Error(`tamper event of ${b.length} bytes, want ${TAMPER_EVENT_SIZE}`);
  const action = b.readUInt32LE(4);
  const cmd = b.readUInt32LE(36);
  const obj = b.readUInt32LE(40);
  return {
    kind: 'tamper',
    action: ACTIONS[action] ?? (`unknown-${action}` as TamperAction),
    tsMonoNs: b.readBigUInt64LE(8),
    cgroupId: b.readBigUInt64LE(16),
    pid: b.readUInt32LE(24),
    tid: b.readUInt32LE(28),
    uid: b.readUInt32LE(32),
    bpfCmd: obj === ObjKind.Pin ? null : (BPF_CMDS[cmd] ?? `bpf-cmd-${cmd}`),
    object: OBJECT_NAMES[obj] ?? 'pin',
    objectId: b.readUInt32LE(44),
    progId: b.readUInt32LE(48),
    pidnsIno: b.readUInt32LE(52),
    nsPid: b.readUInt32LE(56),
    startTicks: b.readBigUInt64LE(64),
    comm: cstr(b, 72, COMM_LEN),
    objectName: cstr(b, 88, COMM_LEN),
    path: cstr(b, 104, PATH_LEN),
  };
}
