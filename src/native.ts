// The one loader of the native addon, and the typed interface of what it exports.
// Keys and values are Buffers laid out per bpf/include/cgfence-abi.h (see kernel/abi.ts).
import path from 'node:path';

export interface MapInfo { id: number; fd: number; keySize: number; valueSize: number; maxEntries: number }
export interface LinkInfo { id: number; progId: number; fd: number; pinPath?: string }

export interface BpfLink {
  pin(path: string): void;
  unpin(): void;
  /** Detaches unless still pinned; idempotent. */
  destroy(): void;
  info(): LinkInfo | null;
}

export interface BpfObject {
  mapUpdate(map: string, key: Buffer, value: Buffer, flags?: number): void;
  mapLookup(map: string, key: Buffer): Buffer | null;
  mapDelete(map: string, key: Buffer): boolean;
  mapKeys(map: string): Buffer[];
  mapInfo(map: string): MapInfo;
  programInfo(program: string): { id: number; fd: number };
  attachTracing(program: string): BpfLink;
  attachCgroup(program: string, cgroupPath: string): BpfLink;
  close(opts?: { unpin?: boolean }): void;
}

export interface RingBuffer {
  close(): void;
  ref(): void;
  unref(): void;
}

export interface NativeAddon {
  BpfObject: new (name: string, opts?: { pinDir?: string }) => BpfObject;
  BpfLink: { open(pinPath: string): BpfLink };
  RingBuffer: new (obj: BpfObject, map: string, onBatch: (records: Buffer[]) => void) => RingBuffer;
  resolveSyscalls(names: string[], arch?: string): Array<number | null>;
  libbpfVersion: string;
}

/** Errors thrown by the addon: Node's SystemError shape, plus the verifier log of a failed load. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
  verifierLog?: string;
}

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

let addon: NativeAddon | undefined;

export function projectRoot(): string {
  // dist/src/native.js and src/native.ts (under vitest) both sit two levels below the root
  // or one; walk up to the directory holding package.json.
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (require('node:fs').existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`cannot find the cgfence project root above ${__dirname}`);
}

export function native(): NativeAddon {
  if (!addon) {
    const file = path.join(projectRoot(), 'build', 'Release', 'cgfence.node');
    try {
      addon = require(file) as NativeAddon;
    } catch (e) {
      throw new Error(`cannot load the cgfence addon at ${file} (run \`npm run build\`): ${(e as Error).message}`);
    }
  }
  return addon;
}
