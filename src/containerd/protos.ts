import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

const PROTO_FILES = [
  'version.proto',
  'namespaces.proto',
  'containers.proto',
  'tasks.proto',
  'events_service.proto',
  'events.proto',
  'runc_options.proto',
];

// tsc does not copy .proto files into dist/, so the compiled module must also
// find them back in the source tree (dist/src/containerd -> src/containerd).
function findProtoDir(): string {
  const candidates = [path.join(__dirname, 'proto'), path.resolve(__dirname, '..', '..', '..', 'src', 'containerd', 'proto')];
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'version.proto'))) return dir;
  }
  throw new Error(`containerd .proto files not found (looked in ${candidates.join(', ')})`);
}

let cached: protobuf.Root | undefined;

/** The containerd API subset, loaded once per process. */
export function containerdProtos(): protobuf.Root {
  if (cached) return cached;
  const dir = findProtoDir();
  const root = new protobuf.Root();
  // Imports between our files are flat names; google/protobuf/* imports are
  // served by protobufjs' bundled well-known types before resolvePath is asked.
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(dir, target));
  root.loadSync(
    PROTO_FILES.map((f) => path.join(dir, f)),
    { keepCase: false },
  );
  root.resolveAll();
  cached = root;
  return root;
}

const types = new Map<string, protobuf.Type>();

/** A message type by its full name; looked up once (a lookup walks the namespace tree, and every event asks). */
export function protoType(name: string): protobuf.Type {
  let t = types.get(name);
  if (!t) {
    t = containerdProtos().lookupType(name);
    types.set(name, t);
  }
  return t;
}

/** protobufjs yields int64 as Long when the `long` package is present, else number. */
export function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v && typeof v === 'object' && 'toNumber' in v && typeof (v as { toNumber: unknown }).toNumber === 'function') {
    return (v as { toNumber(): number }).toNumber();
  }
  if (typeof v === 'string') return Number(v);
  return 0;
}

export interface ProtoTimestamp {
  seconds?: unknown;
  nanos?: number;
}

/**
 * containerd sends the zero Timestamp or Go's zero time (year 1) for "not set";
 * callers get undefined instead of a bogus 1970/0001 date.
 */
export function timestampToDate(ts: ProtoTimestamp | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const seconds = toNumber(ts.seconds);
  const nanos = ts.nanos ?? 0;
  if (seconds <= 0) return undefined;
  return new Date(seconds * 1000 + Math.floor(nanos / 1e6));
}

/**
 * google.protobuf.Any as protobufjs decodes it. The bundled well-known types
 * are JSON definitions that keep proto field names, so the field is `type_url`
 * (not camelCased like the fields of our own .proto files).
 */
export interface ProtoAny {
  type_url?: string;
  value?: Uint8Array;
}

export function anyUrl(any: ProtoAny | null | undefined): string {
  return any?.type_url ?? '';
}

/** Any.type_url may or may not carry a "host/" prefix; the message name is after the last '/'. */
export function anyTypeName(any: ProtoAny | null | undefined): string {
  const url = anyUrl(any);
  const i = url.lastIndexOf('/');
  return i >= 0 ? url.slice(i + 1) : url;
}
