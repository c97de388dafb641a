// Reading the audit log for the CLI (`cgfence audit [--follow]`): filtering,
// following across rotation, and one readable line per record.
//
// Reading does not check the hash chain (that is `audit verify`); lines that
// are not JSON objects are skipped, so a torn or damaged line does not hide
// the rest of the log from an operator in the middle of an incident.

import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { containerKey } from '../policy/container-key';
import { escapeBytes, nameBytes } from './exact-name';
import { type AuditRecord, listLogFiles, nowNs, parseRfc3339Ns, readTailRecord } from './audit-record';

export interface AuditFilter {
  type?: string | readonly string[];
  action?: string | readonly string[];
  namespace?: string;
  /** The container id, or a prefix of it (people type short ids). */
  container?: string;
  cgroupId?: string | bigint;
  pid?: number;
  /** ns since the epoch, a Date, an RFC 3339 string, or a duration back from now: `90s`, `10m`, `2h`, `1d`. */
  since?: bigint | Date | string;
  until?: bigint | Date | string;
  /** Only the last N matching records (for followRecords: the history shown before following). */
  tail?: number;
  where?: (r: AuditRecord) => boolean;
}

export interface FollowOptions {
  /** How often to look for new lines and rotation. Default 200 ms. */
  pollMs?: number;
  /** Emit every existing matching record before following (otherwise only `filter.tail` of them). */
  fromStart?: boolean;
}

const DURATION_UNIT_NS: Record<string, bigint> = {
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
  d: 86_400_000_000_000n,
};

function instantNs(v: bigint | Date | string, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new RangeError(`${what}: invalid date`);
    return BigInt(v.getTime()) * 1_000_000n;
  }
  const rel = /^(\d+)([smhd])$/.exec(v.trim());
  if (rel) return nowNs() - BigInt(rel[1]) * DURATION_UNIT_NS[rel[2]];
  const ns = parseRfc3339Ns(v.trim());
  if (ns === null) throw new RangeError(`${what}: '${v}' is neither RFC 3339 nor a duration like 10m`);
  return ns;
}

/** Turns a filter into a predicate; throws RangeError for a malformed since/until. */
export function compileFilter(filter: AuditFilter = {}): (r: AuditRecord) => boolean {
  const asSet = (v: string | readonly string[] | undefined) => (v === undefined ? null : new Set(typeof v === 'string' ? [v] : v));
  const types = asSet(filter.type);
  const actions = asSet(filter.action);
  const since = filter.since !== undefined ? instantNs(filter.since, 'since') : null;
  const until = filter.until !== undefined ? instantNs(filter.until, 'until') : null;
  const cgroup = filter.cgroupId !== undefined ? String(filter.cgroupId) : null;
  return (r) => {
    if (types && !types.has(r.type)) return false;
    if (actions && !actions.has(r.action)) return false;
    if (filter.namespace !== undefined && r.namespace !== filter.namespace) return false;
    if (filter.container !== undefined && !(typeof r.container_id === 'string' && r.container_id.startsWith(filter.container)))
      return false;
    if (cgroup !== null && r.cgroup_id !== cgroup) return false;
    if (filter.pid !== undefined && r.pid !== filter.pid) return false;
    if (since !== null || until !== null) {
      const t = typeof r.ts === 'string' ? parseRfc3339Ns(r.ts) : null;
      if (t === null) return false;
      if (since !== null && t < since) return false;
      if (until !== null && t > until) return false;
    }
    if (filter.where && !filter.where(r)) return false;
    return true;
  };
}

function parseRecord(line: Buffer): AuditRecord | null {
  if (line.length === 0) return null;
  try {
    const v: unknown = JSON.parse(line.toString('utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as AuditRecord) : null;
  } catch {
    return null;
  }
}

/** Incremental reader of one open file: returns the complete lines appended since the last call. */
class FileTail {
  private carry: Buffer = Buffer.alloc(0);
  private readonly chunk = Buffer.allocUnsafe(1 << 20);

  constructor(
    readonly path: string,
    readonly fh: FileHandle,
    readonly ino: bigint,
    public pos: number,
  ) {}

  static async open(path: string, pos: number | 'end' = 0): Promise<FileTail | null> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const st = await fh.stat({ bigint: true });
    return new FileTail(path, fh, st.ino, pos === 'end' ? Number(st.size) : pos);
  }

  reset(): void {
    this.pos = 0;
    this.carry = Buffer.alloc(0);
  }

  /** Complete lines up to EOF; a trailing fragment waits for its newline (includeFragment: treat EOF as its end). */
  async read(includeFragment = false): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (;;) {
      const { bytesRead } = await this.fh.read(this.chunk, 0, this.chunk.length, this.pos);
      if (bytesRead === 0) break;
      this.pos += bytesRead;
      const data = this.carry.length ? Buffer.concat([this.carry, this.chunk.subarray(0, bytesRead)]) : this.chunk.subarray(0, bytesRead);
      let start = 0;
      for (;;) {
        const nl = data.indexOf(0x0a, start);
        if (nl < 0) break;
        out.push(Buffer.from(data.subarray(start, nl)));
        start = nl + 1;
      }
      this.carry = Buffer.from(data.subarray(start));
    }
    if (includeFragment && this.carry.length) {
      out.push(this.carry);
      this.carry = Buffer.alloc(0);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

/**
 * Every record of the log and its rotated files, oldest first, that matches
 * `filter`. All files are opened before reading starts, so a rotation while
 * reading neither skips nor repeats records.
 */
export async function* iterateRecords(path: string, filter: AuditFilter = {}): AsyncGenerator<AuditRecord> {
  const match = compileFilter({ ...filter, tail: undefined });
  const tails: FileTail[] = [];
  try {
    const cur = await FileTail.open(path);
    tails.push(...(await openRotated(path, cur ? [cur.ino] : [], null)));
    if (cur) tails.push(cur);
    for (const t of tails) {
      for (const line of await t.read(true)) {
        const r = parseRecord(line);
        if (r && match(r)) yield r;
      }
    }
  } finally {
    for (const t of tails) await t.close();
  }
}

/** Scans of the rotated files redone at most this often when rotations keep interrupting them. */
const MAX_SCAN_ATTEMPTS = 50;

/**
 * The current file (opened first) and the rotated files between `stopIno` and it, oldest
 * first, as one view: redone while a rotation came in between, that is while the path names
 * another file than the one opened, or none was there to open (the writer between its rename
 * and its reopen, after which it may rotate again before the next look).
 */
async function openCurrentAndRotated(path: string, stopIno: bigint | null): Promise<{ current: FileTail | null; rotated: FileTail[] }> {
  for (let attempt = 1; ; attempt++) {
    const current = await FileTail.open(path, 0);
    const rotated = await openRotated(path, current ? [current.ino] : [], stopIno);
    let now: bigint | null = null;
    try {
      now = (await fsp.stat(path, { bigint: true })).ino;
    } catch {
      now = null; // between the writer's rename and its reopen: a rotation under way
    }
    // A writer rotating faster than a scan, this many times running, is not waited for.
    if ((current ? current.ino : null) === now || attempt >= MAX_SCAN_ATTEMPTS) return { current, rotated };
    for (const t of rotated) await t.close();
    if (current) await current.close();
  }
}

/**
 * Opens the rotated files newest first (path.1, path.2, ...) and returns them
 * oldest first. Newest first matters: a rotation while we open shifts every
 * name one step older, so walking in that direction can meet a file twice
 * (deduplicated by inode) but never step over one. Stops at `stopIno`, the
 * file a follower has already read.
 */
async function openRotated(path: string, skipIno: bigint[], stopIno: bigint | null): Promise<FileTail[]> {
  const seen = new Set<bigint>(skipIno);
  const out: FileTail[] = [];
  for (const f of listLogFiles(path).reverse()) {
    if (f === path) continue;
    const t = await FileTail.open(f);
    if (!t) continue;
    if (t.ino === stopIno) {
      await t.close();
      break;
    }
    if (seen.has(t.ino)) {
      await t.close();
      continue;
    }
    seen.add(t.ino);
    out.push(t);
  }
  return out.reverse();
}

/** Matching records as an array (only the last `filter.tail` if set). */
export async function readRecords(path: string, filter: AuditFilter = {}): Promise<AuditRecord[]> {
  const tail = filter.tail;
  const out: AuditRecord[] = [];
  for await (const r of iterateRecords(path, filter)) {
    out.push(r);
    if (tail !== undefined && out.length > tail * 2 + 1024) out.splice(0, out.length - tail);
  }
  return tail !== undefined ? out.slice(Math.max(0, out.length - tail)) : out;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Like `tail -F` for the audit log: calls onRecord for each new matching
 * record until `signal` aborts, then resolves. Survives rotation: the old
 * file is drained through the still-open descriptor, any rotated file that
 * went by between two polls is read, and `seq` (monotonic across rotation)
 * keeps a record from being delivered twice.
 */
export async function followRecords(
  path: string,
  filter: AuditFilter,
  onRecord: (r: AuditRecord) => void | Promise<void>,
  signal: AbortSignal,
  opts: FollowOptions = {},
): Promise<void> {
  const match = compileFilter(filter);
  const pollMs = opts.pollMs ?? 200;
  let lastSeq = -1;
  // Seq-less lines (not written by AuditLog) are passed through undeduplicated.
  const fresh = (r: AuditRecord): boolean => {
    if (typeof r.seq !== 'number') return true;
    if (r.seq <= lastSeq) return false;
    lastSeq = r.seq;
    return true;
  };
  const deliver = async (lines: Buffer[]) => {
    for (const line of lines) {
      const r = parseRecord(line);
      if (r && fresh(r) && match(r)) await onRecord(r);
    }
  };

  let cur: FileTail | null = null;
  try {
    const history = opts.fromStart || (filter.tail !== undefined && filter.tail > 0);
    if (history) {
      const limit = opts.fromStart ? Infinity : filter.tail!;
      const kept: AuditRecord[] = [];
      // Current file first, so a rotation while the rest are opened cannot
      // put records between what we read and where following resumes.
      const scan = await openCurrentAndRotated(path, null);
      cur = scan.current;
      const opened = scan.rotated;
      try {
        if (cur) opened.push(cur);
        for (const t of opened) {
          // The current file is read without its trailing fragment: following
          // picks the line up whole once its writer finishes it.
          for (const line of await t.read(t !== cur)) {
            const r = parseRecord(line);
            if (r && fresh(r) && match(r)) {
              kept.push(r);
              if (kept.length > limit) kept.shift();
            }
          }
        }
      } finally {
        for (const t of opened) if (t !== cur) await t.close();
      }
      for (const r of kept) {
        if (signal.aborted) return;
        await onRecord(r);
      }
    } else {
      // Start after the last complete record, not at EOF, so a line being
      // written right now is not cut in half.
      const tailRec = safeTail(path);
      cur = await FileTail.open(path, tailRec ? tailRec.end : 'end');
      const seqSrc = tailRec ?? newestRotatedTail(path);
      if (seqSrc) lastSeq = seqSrc.seq;
    }

    // The newest file read to its end, once the current one has gone: a writer between its
    // rename and its reopen leaves no current file, and by the time one is there it may have
    // rotated again; the files since this one are read first.
    let lastIno: bigint | null = null;
    // Rotated files, oldest first, each read to its end and closed: the newest read becomes lastIno.
    const drainRotated = async (tails: FileTail[]) => {
      for (const t of tails) {
        try {
          await deliver(await t.read(true));
          lastIno = t.ino;
        } finally {
          await t.close();
        }
      }
    };
    while (!signal.aborted) {
      if (!cur) {
        if (lastIno === null) cur = await FileTail.open(path, 0);
        else {
          const scan = await openCurrentAndRotated(path, lastIno);
          await drainRotated(scan.rotated);
          cur = scan.current;
        }
        if (!cur) {
          await sleep(pollMs, signal);
          continue;
        }
        lastIno = null;
      }
      await deliver(await cur.read());
      if (signal.aborted) break;

      let st: fs.BigIntStats | null = null;
      try {
        st = await fsp.stat(path, { bigint: true });
      } catch {
        st = null; // between the rename and the writer's reopen
      }
      if (st && st.ino !== cur.ino) {
        // Rotated: whatever the writer put in the old file before renaming it
        // is still reachable through our descriptor.
        await deliver(await cur.read(true));
        // Files between the one we held and the new current went by unseen
        // (more than one rotation between polls). The new current is opened
        // first so nothing can slip in behind the catch-up; if the held file
        // already fell off the end, all rotated files are candidates and seq
        // sorts out what was delivered.
        const { current: next, rotated: between } = await openCurrentAndRotated(path, cur.ino);
        lastIno = cur.ino;
        await drainRotated(between);
        await cur.close();
        cur = next;
        continue;
      }
      if (st && Number(st.size) < cur.pos) cur.reset(); // truncated in place (copytruncate)
      await sleep(pollMs, signal);
    }
  } finally {
    if (cur) await cur.close();
  }
}

function safeTail(file: string) {
  try {
    return readTailRecord(file);
  } catch {
    return null;
  }
}

function newestRotatedTail(path: string) {
  for (const f of listLogFiles(path).reverse()) {
    if (f === path) continue;
    const t = safeTail(f);
    if (t) return t;
  }
  return null;
}

// ---------------------------------------------------------------------------
// Human-readable form

// Paths, comm and addresses come from inside containers: a file named with
// terminal escape sequences or bidi overrides must not be able to rewrite
// what an operator sees. Backslash is escaped too so the output is unambiguous.
// eslint-disable-next-line no-control-regex
const UNSAFE_RE = /[\\\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;

export function sanitize(s: string): string {
  return s.replace(UNSAFE_RE, (c) => {
    if (c === '\\') return '\\\\';
    const code = c.charCodeAt(0);
    // \xNN is an ASCII byte here (NN < 80); \x80 and up is reserved for bytes that are not
    // UTF-8 (exact-name.ts), so a C1 control character is shown as \u0080..\u009f.
    return code < 0x80 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * A name field as an operator should see it: from its exact bytes when the record has them
 * (`<field>_raw`: not UTF-8), every byte that is no UTF-8 character shown as \xNN (>= \x80,
 * which sanitize never prints for a character), so two different names never look alike.
 */
function nameText(r: AuditRecord, field: string, used: Set<string>): string {
  used.add(field);
  used.add(`${field}_raw`);
  if (typeof r[`${field}_raw`] === 'string') {
    const bytes = nameBytes(r as Record<string, unknown>, field);
    if (bytes) return escapeBytes(bytes, sanitize);
  }
  return text(r[field]);
}

function text(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return sanitize(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return sanitize(JSON.stringify(v));
}

/**
 * Numeric devices come from the kernel side (BPF reads the superblock's
 * dev_t), which encodes major<<20 | minor - not the userspace st_dev layout.
 */
function devText(v: unknown): string {
  if (typeof v === 'number' || typeof v === 'bigint') {
    const d = BigInt(v);
    return `${(d >> 20n).toString(16)}:${(d & 0xfffffn).toString(16)}`;
  }
  return text(v);
}

function shortId(id: string): string {
  return /^[0-9a-f]{64}$/.test(id) ? id.slice(0, 12) : id;
}

const SHOWN = new Set(['ts', 'type', 'action', 'namespace', 'container_id', 'cgroup_id', 'pid', 'comm', 'seq', 'prev', 'hash']);

export interface FormatOptions {
  /** Full RFC 3339 timestamp instead of the time of day (UTC). */
  date?: boolean;
  /** How to show `ts` (the CLI shows local date, time and zone); overrides `date`. */
  time?: (ts: string) => string;
  /** Whole 64-hex container ids instead of their first 12 characters. */
  fullIds?: boolean;
}

/**
 * One line for humans, e.g.
 * `12:00:01.123 deny  exec  ns/ctr-id  pid 42 (ls) /bin/ls [dev 0:1a ino 1234]`.
 * Times are UTC, like the log, so the line can be matched against it.
 */
export function formatRecord(r: AuditRecord, opts: FormatOptions = {}): string {
  const ts = typeof r.ts === 'string' ? r.ts : '';
  const time = opts.time
    ? sanitize(opts.time(ts))
    : opts.date || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}/.test(ts)
      ? sanitize(ts)
      : ts.slice(11, 23);
  const parts: string[] = [time, text(r.action).padEnd(5), text(r.type).padEnd(5)];
  const ns = text(r.namespace);
  const cid = typeof r.container_id === 'string' ? r.container_id : '';
  const ctr = text(opts.fullIds ? cid : shortId(cid));
  let line = `${parts.join(' ')} ${ns || ctr ? containerKey(ns, ctr) : '-'}`;

  const used = new Set(SHOWN);
  const who: string[] = [];
  if (typeof r.pid === 'number' && r.pid > 0) who.push(`pid ${r.pid}`);
  if (r.comm) who.push(`(${nameText(r, 'comm', used)})`);
  if (who.length) line += `  ${who.join(' ')}`;

  const detail: string[] = [];
  const take = (k: string): unknown => {
    used.add(k);
    return r[k];
  };
  if (r.type === 'exec') {
    const path = take('path');
    const dev = take('dev');
    const ino = take('inode');
    if (path) detail.push(nameText(r, 'path', used));
    const id: string[] = [];
    if (dev !== null && dev !== undefined && dev !== '') id.push(`dev ${devText(dev)}`);
    if (ino !== null && ino !== undefined && ino !== '') id.push(`ino ${text(ino)}`);
    if (id.length) detail.push(`[${id.join(' ')}]`);
  } else if (r.type === 'net') {
    const dir = take('direction');
    const proto = take('proto');
    const daddr = take('daddr');
    const dport = take('dport');
    if (dir) detail.push(text(dir));
    if (proto !== null && proto !== undefined && proto !== '') detail.push(text(proto));
    if (daddr) {
      const a = text(daddr);
      const host = a.includes(':') && dport !== null && dport !== undefined ? `[${a}]` : a;
      detail.push(dport !== null && dport !== undefined && dport !== '' ? `${host}:${text(dport)}` : host);
    }
  }
  for (const k of Object.keys(r)) {
    if (used.has(k)) continue;
    const v = r[k];
    if (v === null || v === undefined || v === '') continue;
    const s = text(v);
    detail.push(`${sanitize(k)}=${/\s/.test(s) || s === '' ? JSON.stringify(s) : s}`);
  }
  if (detail.length) line += ` ${detail.join(' ')}`;
  return line;
}

/**
 * A map field as a record carries it: an object, or, when its keys hold dots (annotation
 * names), the [{key, value}] array the writer makes of it so log shippers do not expand the
 * keys into nested objects. Either way, the map.
 */
export function mapField(v: unknown): Record<string, unknown> {
  if (Array.isArray(v)) {
    const out: Record<string, unknown> = {};
    for (const e of v)
      if (e && typeof e === 'object' && typeof (e as { key?: unknown }).key === 'string')
        out[(e as { key: string }).key] = (e as { value?: unknown }).value;
    return out;
  }
  return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
}
