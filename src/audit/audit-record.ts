// Audit record types, timestamps and the on-disk line format shared by the
// writer (audit-log.ts), the verifier (audit-verify.ts) and the reader
// (audit-read.ts).
//
// Line format and hash rule (the chain's canonical form):
//
//   {"ts":...,"type":...,...,"seq":N,"prev":"<64 hex>","hash":"<64 hex>"}\n
//
// `hash` is always the last key. The hash is sha256 (lower-case hex) over the
// exact UTF-8 bytes of the line up to, not including, the final
// `,"hash":"<64 hex>"}` suffix, i.e. over `{"ts":...,"prev":"<64 hex>"`.
// Hashing the serialized bytes rather than a re-serialization of the parsed
// object means a verifier never has to reproduce JSON.stringify's choices
// (key order, escaping, number formatting): any change to any byte of the
// line - even whitespace - is detected, and tools in other languages can
// check a line with a substring and sha256.
//
// `prev` is the previous record's `hash`; the first record ever written
// (seq 0) has prev = GENESIS_PREV.

import { createHash, hash as oneShotHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';

export const AUDIT_TYPES = ['exec', 'net', 'seccomp', 'lifecycle', 'tamper', 'agent'] as const;
export type AuditType = (typeof AUDIT_TYPES)[number];

export const GENESIS_PREV = '0'.repeat(64);

/** Who a container is in Kubernetes terms (CRI labels), when it is known. */
export interface Workload {
  pod: string;
  podNamespace: string;
  containerName: string;
}

/**
 * How bad a record is, in syslog's words, so that a shipper can route and alert without
 * knowing every type and action: a tamper is critical, lost records are errors, denials,
 * kills, refusals and fail-open are warnings, audit-mode decisions notices, the rest info.
 */
export type Severity = 'critical' | 'error' | 'warning' | 'notice' | 'info';

export function severityOf(type: string, action: string): Severity {
  if (type === 'tamper') return 'critical';
  if (type === 'agent') {
    if (action === 'dropped' || action === 'ring-buffer-drops' || action === 'write-error') return 'error';
    // Something cgfence could not do or see: enforcement went on, but a part of it is missing.
    if (
      action === 'while-down' ||
      action === 'fail-open' ||
      action === 'torn-tail-truncated' ||
      /-(unavailable|unreadable|lost|unenforceable|failed)$/.test(action)
    )
      return 'warning';
    return 'info';
  }
  if (
    action === 'deny' ||
    action === 'kill' ||
    action === 'refuse' ||
    action === 'policy-refuse' ||
    action === 'late-attach-failed' ||
    action === 'fail-open' ||
    action.endsWith('-failed')
  )
    return 'warning';
  if (action === 'audit') return 'notice';
  return 'info';
}

/** What the writer adds to every record: where it was written, and who a container is. */
export interface RecordContext {
  /** The node's name (Kubernetes node name, else the host name). */
  node?: string;
  hostname?: string;
  workloadOf?: (namespace: string, containerId: string) => Workload | null | undefined;
}

/** What callers hand to AuditLog.write(). Anything beyond the contract fields is kept as a per-type field. */
export interface AuditInput {
  /** ns since the Unix epoch, a Date, or an RFC 3339 string; default: now (monotonic-anchored clock). */
  ts?: bigint | Date | string;
  type: AuditType;
  action: string;
  namespace?: string | null;
  container_id?: string | null;
  /** u64; kept as a decimal string because JSON numbers lose precision above 2^53. */
  cgroup_id?: string | bigint | number | null;
  pid?: number | null;
  comm?: string | null;
  /** Default: severityOf(type, action). */
  severity?: Severity;
  /** Default: the writer's RecordContext.workloadOf(namespace, container_id). */
  workload?: Workload | null;
  [field: string]: unknown;
}

/**
 * A record as it appears in the log. Every field has one JSON type whatever the record: an
 * unknown string is "", an unknown number 0 (pid 0: no process); other fields are left out
 * when they have no value, never null. No key contains a dot (maps keyed by annotation names
 * become [{key, value}] arrays), so shippers never expand a key into nested objects.
 */
export interface AuditRecord {
  ts: string;
  type: AuditType;
  action: string;
  severity: Severity;
  node: string;
  hostname: string;
  namespace: string;
  container_id: string;
  pod: string;
  pod_namespace: string;
  container_name: string;
  cgroup_id: string;
  pid: number;
  comm: string;
  seq: number;
  prev: string;
  hash: string;
  [field: string]: unknown;
}

/** Per-type fields that every record of that type carries ("" or 0 when unknown), and their JSON type. */
export const TYPE_FIELDS: Readonly<Record<string, readonly string[]>> = {
  exec: ['path', 'inode', 'dev'],
  net: ['daddr', 'dport', 'direction', 'proto'],
  seccomp: [],
  agent: [],
  lifecycle: [],
  tamper: [],
};
const NUMBER_FIELDS = new Set(['dport']);

const CONTRACT_KEYS = new Set([
  'ts',
  'type',
  'action',
  'severity',
  'node',
  'hostname',
  'namespace',
  'container_id',
  'pod',
  'pod_namespace',
  'container_name',
  'cgroup_id',
  'pid',
  'comm',
  'workload',
]);
// Chain fields belong to the writer; a caller-supplied `hash` placed before the
// real one would make the line ambiguous to tools that search for the key.
const RESERVED_KEYS = new Set(['seq', 'prev', 'hash']);

// ---------------------------------------------------------------------------
// Time

let wallAnchorNs = BigInt(Date.now()) * 1_000_000n;
let hrAnchor = process.hrtime.bigint();

/**
 * Nanoseconds since the epoch from a monotonic clock anchored to the wall
 * clock once. Records from one process therefore never go backwards in time
 * even if the wall clock is stepped (NTP step, manual date), so the log's
 * order and its timestamps agree. NTP slewing also adjusts CLOCK_MONOTONIC,
 * so drift from wall time only comes from steps.
 */
export function nowNs(): bigint {
  return wallAnchorNs + (process.hrtime.bigint() - hrAnchor);
}

/** For tests and for a daemon that wants to pick up a deliberate clock step. */
export function reanchorClock(wallNs: bigint = BigInt(Date.now()) * 1_000_000n): void {
  wallAnchorNs = wallNs;
  hrAnchor = process.hrtime.bigint();
}

/** `2026-11-25T12:00:00.123456789Z` - fixed width, so strings sort like the instants they name. */
export function formatRfc3339Ns(ns: bigint): string {
  let secs = ns / 1_000_000_000n;
  let frac = ns % 1_000_000_000n;
  if (frac < 0n) {
    frac += 1_000_000_000n;
    secs -= 1n;
  }
  const iso = new Date(Number(secs) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  return `${iso.slice(0, 19)}.${frac.toString().padStart(9, '0')}Z`;
}

const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?(Z|z|[+-]\d{2}:\d{2})$/;

/** RFC 3339 (any offset, 0-9 fraction digits) to ns since the epoch; null when malformed. */
export function parseRfc3339Ns(s: string): bigint | null {
  const m = RFC3339_RE.exec(s);
  if (!m) return null;
  const [, y, mo, d, h, mi, se, frac = '', off] = m;
  const ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +se);
  if (Number.isNaN(ms)) return null;
  let ns = BigInt(ms) * 1_000_000n + BigInt(frac.padEnd(9, '0') || '0');
  if (off !== 'Z' && off !== 'z') {
    const sign = off[0] === '-' ? -1n : 1n;
    const offMin = BigInt(+off.slice(1, 3) * 60 + +off.slice(4, 6));
    ns -= sign * offMin * 60_000_000_000n;
  }
  return ns;
}

function tsOf(v: AuditInput['ts']): string {
  if (typeof v === 'bigint') return formatRfc3339Ns(v);
  if (v instanceof Date && !Number.isNaN(v.getTime())) return formatRfc3339Ns(BigInt(v.getTime()) * 1_000_000n);
  if (typeof v === 'string') {
    const ns = parseRfc3339Ns(v);
    if (ns !== null) return formatRfc3339Ns(ns);
  }
  return formatRfc3339Ns(nowNs());
}

// ---------------------------------------------------------------------------
// Normalization and serialization

function str(v: unknown): string {
  if (v === null || v === undefined) return '';
  return typeof v === 'string' ? v : String(v);
}

function u64str(v: unknown): string {
  if (v === null || v === undefined || v === '') return '';
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number' && Number.isFinite(v)) return Math.trunc(v).toString();
  return String(v);
}

function pidOf(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  return 0;
}

function numberOf(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  return 0;
}

/**
 * Objects whose keys hold a dot (annotation names) become [{key, value}] arrays, at any
 * depth: Elasticsearch and others would expand `cgfence.io/mode` into nested objects.
 */
function undotted(v: unknown, seen?: WeakSet<object>): unknown {
  if (v === null || typeof v !== 'object' || v instanceof Date || ArrayBuffer.isView(v)) return v;
  // Made only for an object: most fields are strings and numbers.
  seen ??= new WeakSet<object>();
  // A cycle is left as it is: serializeBody reports it instead of losing the record.
  if (seen.has(v)) return v;
  seen.add(v);
  if (Array.isArray(v)) return v.map((x) => undotted(x, seen));
  if (typeof (v as { toJSON?: unknown }).toJSON === 'function') return v;
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.some(([k]) => k.includes('.'))) return entries.map(([key, value]) => ({ key, value: undotted(value, seen) }));
  return Object.fromEntries(entries.map(([k, x]) => [k, undotted(x, seen)]));
}

// bigint is how the kernel side hands us u64s (inode, cgroup id, counters);
// JSON.stringify throws on it, and a JSON number would lose precision.
function jsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v === undefined) return null;
  return v;
}

function replacer(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/** The record without chain fields, in canonical key order; never throws. */
export function normalizeRecord(input: AuditInput, ctx: RecordContext = {}): Record<string, unknown> {
  const type = str(input?.type) as AuditType;
  const action = str(input?.action);
  const namespace = str(input?.namespace);
  const containerId = str(input?.container_id);
  let workload: Workload | null | undefined = input?.workload;
  if (workload === undefined && containerId && ctx.workloadOf) {
    try {
      workload = ctx.workloadOf(namespace, containerId);
    } catch {
      workload = null;
    }
  }
  const out: Record<string, unknown> = {
    ts: tsOf(input?.ts),
    type,
    action,
    severity: str(input?.severity) || severityOf(type, action),
    node: str(input?.node ?? ctx.node),
    hostname: str(input?.hostname ?? ctx.hostname),
    namespace,
    container_id: containerId,
    // A record that names the pod itself (a refusal before the container is registered) wins.
    pod: str(input?.pod ?? workload?.pod),
    pod_namespace: str(input?.pod_namespace ?? workload?.podNamespace),
    container_name: str(input?.container_name ?? workload?.containerName),
    cgroup_id: u64str(input?.cgroup_id),
    pid: pidOf(input?.pid),
    comm: str(input?.comm),
  };
  const typeFields = TYPE_FIELDS[type] ?? [];
  for (const k of typeFields) {
    const v = input?.[k];
    out[k] = NUMBER_FIELDS.has(k) ? numberOf(v) : k === 'inode' ? u64str(v) : str(jsonValue(v) ?? '');
  }
  if (input && typeof input === 'object') {
    for (const k of Object.keys(input)) {
      if (CONTRACT_KEYS.has(k) || RESERVED_KEYS.has(k) || typeFields.includes(k)) continue;
      const v = input[k];
      // No value, no field: a field is never null in one record and a string in the next.
      if (v === undefined || v === null) continue;
      out[k.includes('.') ? k.replace(/\./g, '_') : k] = undotted(jsonValue(v));
    }
  }
  return out;
}

/**
 * Serializes the record body (no chain fields) once, at write() time, so a
 * record that sits in the pending queue is not re-serialized on every retry.
 * Returns the JSON text without its closing brace. A value JSON cannot
 * represent (cycle, throwing toJSON) must not cost the record: the per-type
 * extras are replaced by the error and the contract fields are kept.
 */
export function serializeBody(rec: Record<string, unknown>): string {
  let json: string;
  try {
    json = JSON.stringify(rec, replacer);
  } catch (e) {
    const safe: Record<string, unknown> = {};
    for (const k of CONTRACT_KEYS) safe[k] = rec[k];
    safe.serialize_error = e instanceof Error ? e.message : String(e);
    json = JSON.stringify(safe);
  }
  return json.slice(0, -1);
}

export interface ChainedLine {
  line: Buffer;
  hash: string;
}

/** Appends seq/prev to a body from serializeBody() and computes the hash per the rule at the top. */
export function chainLine(body: string, seq: number, prev: string): ChainedLine {
  const prefix = `${body},"seq":${seq},"prev":"${prev}"`;
  // The one-shot hash of the UTF-8 text, and one buffer for the line: the daemon writes a
  // record or two per container with its code cold, where a Hash object and a second buffer
  // cost ~60 µs more per record (docs/exec-performance.md, "Eleventh round").
  const hash = oneShotHash('sha256', prefix, 'hex');
  const line = Buffer.from(`${prefix},"hash":"${hash}"}\n`, 'utf8');
  return { line, hash };
}

// ---------------------------------------------------------------------------
// Parsing

const HASH_SUFFIX_LEN = 9 + 64 + 2; // ,"hash":" + hex + "}
const HASH_KEY = Buffer.from(',"hash":"', 'latin1');

export interface ParsedLine {
  /** The parsed record, or null when the line is not JSON or lacks seq/prev/hash. */
  rec: AuditRecord | null;
  /** The hash rule holds for these bytes. */
  hashOk: boolean;
  seq: number | null;
  prev: string | null;
  hash: string | null;
  error?: string;
}

function isHex64(b: Buffer, start: number): boolean {
  for (let i = start; i < start + 64; i++) {
    const c = b[i];
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** Parses one line (without its newline) as raw bytes, so the hash is checked on exactly what is on disk. */
export function parseLine(line: Buffer): ParsedLine {
  let rec: AuditRecord | null = null;
  let error: string | undefined;
  try {
    const v: unknown = JSON.parse(line.toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) rec = v as AuditRecord;
    else error = 'not a JSON object';
  } catch (e) {
    error = `not JSON: ${e instanceof Error ? e.message : String(e)}`;
  }
  const seq = rec && Number.isSafeInteger(rec.seq) && rec.seq >= 0 ? rec.seq : null;
  const prev = rec && typeof rec.prev === 'string' ? rec.prev : null;
  let hash: string | null = null;
  let hashOk = false;
  const n = line.length;
  if (
    n > HASH_SUFFIX_LEN &&
    line[n - 1] === 0x7d /* } */ &&
    line[n - 2] === 0x22 /* " */ &&
    line.subarray(n - HASH_SUFFIX_LEN, n - HASH_SUFFIX_LEN + HASH_KEY.length).equals(HASH_KEY) &&
    isHex64(line, n - 66)
  ) {
    hash = line.toString('latin1', n - 66, n - 2);
    const digest = createHash('sha256')
      .update(line.subarray(0, n - HASH_SUFFIX_LEN))
      .digest('hex');
    // The parsed `hash` must be the same key we hashed up to, or an inserted
    // duplicate key could make readers and verifiers disagree on the value.
    hashOk = digest === hash && rec !== null && rec.hash === hash;
  }
  if (rec && (seq === null || prev === null || hash === null) && !error) {
    error = 'missing seq/prev/hash';
  }
  return { rec: error ? null : rec, hashOk, seq, prev, hash, error };
}

/** Log files of a rotated set, oldest first: path.N ... path.1, path. Only files that exist. */
export function listLogFiles(path: string): string[] {
  const dir = nodePath.dirname(path);
  const base = nodePath.basename(path);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const rotated: Array<[number, string]> = [];
  let current = false;
  for (const name of names) {
    if (name === base) current = true;
    else if (name.startsWith(base + '.')) {
      const suffix = name.slice(base.length + 1);
      if (/^[1-9]\d*$/.test(suffix)) rotated.push([Number(suffix), name]);
    }
  }
  rotated.sort((a, b) => b[0] - a[0]);
  const out = rotated.map(([, n]) => nodePath.join(dir, n));
  if (current) out.push(path);
  return out;
}

export interface TailRecord {
  seq: number;
  hash: string;
  /** Byte offset just past the record's line. */
  end: number;
}

/**
 * The last line of `file` that carries a seq and a well-formed hash, read from
 * the end in growing windows so a 64 MiB log costs one small read. Whether
 * the hash verifies is deliberately not required: continuing from what is on
 * disk keeps a tampered tail visible to the verifier as "altered" instead of
 * being papered over. Returns null for an empty file or one with no such line.
 */
export function readTailRecord(file: string): TailRecord | null {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    let window = 64 * 1024;
    for (;;) {
      const start = Math.max(0, size - window);
      const buf = Buffer.allocUnsafe(size - start);
      let got = 0;
      while (got < buf.length) {
        const n = fs.readSync(fd, buf, got, buf.length - got, start + got);
        if (n === 0) break;
        got += n;
      }
      const data = buf.subarray(0, got);
      // A window that does not start at 0 begins mid-line; that fragment is
      // re-read whole by the next, larger window if nothing later qualifies.
      let lo = 0;
      if (start > 0) {
        const i = data.indexOf(0x0a);
        if (i < 0) {
          window *= 4;
          continue;
        }
        lo = i + 1;
      }
      let end = data.length;
      while (end > lo) {
        const lineEnd = data[end - 1] === 0x0a ? end - 1 : end;
        const nl = lineEnd > 0 ? data.lastIndexOf(0x0a, lineEnd - 1) : -1;
        const lineStart = nl < lo ? lo : nl + 1;
        const p = parseLine(data.subarray(lineStart, lineEnd));
        if (p.seq !== null && p.hash !== null) return { seq: p.seq, hash: p.hash, end: start + end };
        end = lineStart;
      }
      if (start === 0) return null;
      window *= 4;
    }
  } finally {
    fs.closeSync(fd);
  }
}
