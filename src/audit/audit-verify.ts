// Verification of the audit log's hash chain (format and hash rule in
// audit-record.ts), for `cgfence audit verify [FILE]`.
//
// What the chain can and cannot show:
// - altered record: its bytes no longer hash to its `hash`, or (if the hash
//   was recomputed) the next record's `prev` no longer matches it;
// - removed record: a seq gap (and a prev mismatch) where it was;
// - inserted line: it does not hash, or the record after it chains to the
//   record before it;
// - the first record of the oldest surviving file is trusted as the anchor,
//   because older files are rotated away in normal operation - so cutting
//   records off the *start* of the oldest file, or off the *end* of the
//   newest, cannot be detected from the files alone (seq 0 must still carry
//   the genesis prev). Compare `firstSeq`/`lastSeq` against what you expect,
//   or ship lines off the node, to close those ends.
//
// Synchronous, reading in 1 MiB chunks so memory stays flat on a full 6 x 64
// MiB set; callers on an event loop that must stay responsive should run it
// in a worker.

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { GENESIS_PREV, type ParsedLine, listLogFiles, parseLine } from './audit-record';

export type VerifyTarget = string | readonly string[] | { dir: string; basename: string };

export interface VerifyOk {
  ok: true;
  records: number;
  files: string[];
  firstSeq: number | null;
  lastSeq: number | null;
  /** 'genesis': starts at seq 0; 'rotated': starts later (older files rotated away); 'empty': no records. */
  anchor: 'genesis' | 'rotated' | 'empty';
}

export interface VerifyFail {
  ok: false;
  /** The file and 1-based line of the offending record (for a removal: where the missing record should be). */
  file: string;
  line: number;
  /** seq of the offending record, or the first missing seq for a removal; null if the line has none. */
  seq: number | null;
  reason: string;
  /** Records that verified before the failure. */
  records: number;
  files: string[];
}

export type VerifyResult = VerifyOk | VerifyFail;

interface Item {
  file: string;
  line: number;
  p: ParsedLine;
  /** The line ended with a newline. */
  complete: boolean;
}

function* linesOf(file: string): Generator<{ line: number; buf: Buffer; complete: boolean }> {
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 20);
    let carry: Buffer = Buffer.alloc(0);
    let lineNo = 0;
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      const data = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
      let start = 0;
      for (;;) {
        const nl = data.indexOf(0x0a, start);
        if (nl < 0) break;
        lineNo++;
        yield { line: lineNo, buf: Buffer.from(data.subarray(start, nl)), complete: true };
        start = nl + 1;
      }
      carry = Buffer.from(data.subarray(start));
    }
    if (carry.length > 0) yield { line: lineNo + 1, buf: carry, complete: false };
  } finally {
    fs.closeSync(fd);
  }
}

function resolveFiles(target: VerifyTarget): string[] {
  if (typeof target === 'string') return listLogFiles(target);
  if (Array.isArray(target)) return [...(target as readonly string[])];
  const t = target as { dir: string; basename: string };
  return listLogFiles(nodePath.join(t.dir, t.basename));
}

/**
 * Walks the log oldest to newest and names the first record that breaks the
 * chain. `target` is the log path (its rotated siblings path.N are found),
 * an explicit list of files in oldest-to-newest order, or {dir, basename}.
 */
export function verifyAuditLog(target: VerifyTarget): VerifyResult {
  const files = resolveFiles(target);
  let records = 0;

  const fail = (file: string, line: number, seq: number | null, reason: string): VerifyFail => ({
    ok: false,
    file,
    line,
    seq,
    reason,
    records,
    files,
  });

  if (files.length === 0) {
    const name = typeof target === 'string' ? target : Array.isArray(target) ? '(none)' : JSON.stringify(target);
    return fail(name, 0, null, 'no log files found');
  }

  // One-item lookahead over every line of every file, in order.
  const readError: { v: VerifyFail | null } = { v: null };
  function* items(): Generator<Item> {
    for (const file of files) {
      try {
        for (const l of linesOf(file)) yield { file, line: l.line, p: parseLine(l.buf), complete: l.complete };
      } catch (e) {
        readError.v = fail(file, 0, null, `cannot read: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
    }
  }
  const it = items();
  let nextRes = it.next();

  const chains = (a: Item, b: Item): boolean =>
    a.p.hashOk && a.p.seq !== null && b.p.seq !== null && a.p.seq === b.p.seq + 1 && a.p.prev === b.p.hash;

  let beforeLast: Item | null = null;
  let last: Item | null = null;
  let first: Item | null = null;

  while (!nextRes.done) {
    const cur = nextRes.value;
    nextRes = it.next();
    const next = nextRes.done ? null : nextRes.value;
    const seq = cur.p.seq;

    if (cur.p.rec === null || !cur.p.hashOk) {
      if (last && next && chains(next, last)) {
        return fail(
          cur.file,
          cur.line,
          seq,
          'inserted: this line is not part of the chain (the record after it follows the record before it)',
        );
      }
      if (!cur.complete) {
        return fail(cur.file, cur.line, seq, 'incomplete last line: a write was cut off (crash?) or the line was damaged');
      }
      if (cur.p.rec === null) return fail(cur.file, cur.line, seq, `malformed: ${cur.p.error ?? 'unparseable line'}`);
      return fail(cur.file, cur.line, seq, 'altered: the record does not match its hash');
    }

    if (last === null) {
      if (seq === 0 && cur.p.prev !== GENESIS_PREV) {
        return fail(cur.file, cur.line, seq, 'altered: seq 0 must carry the genesis prev');
      }
      first = cur;
    } else if (!chains(cur, last)) {
      const lastSeq = last.p.seq!;
      if (next && chains(next, last)) {
        return fail(
          cur.file,
          cur.line,
          seq,
          'inserted: this record is not part of the chain (the record after it follows the record before it)',
        );
      }
      if (beforeLast && chains(cur, beforeLast)) {
        return fail(
          last.file,
          last.line,
          lastSeq,
          'inserted: this record is not part of the chain (the record after it follows the record before it)',
        );
      }
      if (seq === lastSeq + 1) {
        // cur's own hash holds, so its prev is authentic: the record it
        // points back to is the one that changed (and was re-hashed).
        return fail(last.file, last.line, lastSeq, "altered: the record's hash was recomputed; the next record's prev does not match it");
      }
      if (seq! > lastSeq + 1) {
        const a = lastSeq + 1;
        const b = seq! - 1;
        return fail(cur.file, cur.line, a, `removed: record${a === b ? ` seq ${a} is` : `s seq ${a}..${b} are`} missing before this line`);
      }
      return fail(cur.file, cur.line, seq, `out of order: seq ${seq} after seq ${lastSeq}`);
    }
    beforeLast = last;
    last = cur;
    records++;
  }
  if (readError.v) return readError.v;

  return {
    ok: true,
    records,
    files,
    firstSeq: first ? first.p.seq : null,
    lastSeq: last ? last.p.seq : null,
    anchor: first === null ? 'empty' : first.p.seq === 0 ? 'genesis' : 'rotated',
  };
}
