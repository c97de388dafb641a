// The node-level audit log writer: JSON lines with a sha256 hash chain (see
// audit-record.ts for the line format and hash rule), size-based rotation,
// and a write path that never throws.
//
// Why it never throws: the writer sits on the daemon's hot paths (ring-buffer
// consumer, attach/detach). A full or read-only disk must not take the fences
// down with it; instead records wait in memory, and whatever cannot be kept is
// counted and announced in the log itself once writing works again.
//
// One writer per log file is assumed (the daemon); two writers would fork the
// chain, which the verifier reports.

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import {
  type AuditInput,
  type RecordContext,
  GENESIS_PREV,
  chainLine,
  formatRfc3339Ns,
  listLogFiles,
  normalizeRecord,
  nowNs,
  parseLine,
  readTailRecord,
  serializeBody,
} from './audit-record';

export interface AuditLogOptions {
  path: string;
  /** Rotate before a write would take the file past this size. Default 64 MiB. */
  maxBytes?: number;
  /** Rotated files kept: path.1 (newest) ... path.keep (oldest). Default 5. */
  keep?: number;
  /** Records held in memory while writing fails; beyond this the oldest are dropped (and counted). Default 10,000. */
  maxPending?: number;
  /** File mode for new log files. Default 0o640: records name paths, addresses and commands of every container. */
  mode?: number;
  /** While records are pending, retry on a timer as well as on the next write. 0 disables. Default 1000 ms. */
  retryIntervalMs?: number;
  /** Added to every record: node, hostname, and the workload of the container it names. */
  context?: RecordContext;
}

export interface AuditLogStats {
  /** Records written (including the writer's own agent/tamper records). */
  written: number;
  writeErrors: number;
  /** Records lost because the pending queue was full (or written after close()). */
  dropped: number;
  /** Records waiting in memory. */
  pending: number;
  lastError: string | null;
  /** Bytes written by this writer since it was constructed. */
  bytes: number;
  /** Size of the current log file as the writer knows it. */
  fileBytes: number;
  rotations: number;
  rotateErrors: number;
  /** seq the next record will get; null until the chain's tail has been read. */
  nextSeq: number | null;
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

function errText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return code && !e.message.startsWith(code) ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}

type RotateResult = 'ok' | 'skipped' | 'lost';

export class AuditLog {
  readonly path: string;
  readonly maxBytes: number;
  readonly keep: number;
  readonly maxPending: number;
  private readonly mode: number;
  private readonly retryIntervalMs: number;
  private readonly context: RecordContext;

  private fd: number | null = null;
  private ino = 0n;
  private dev = 0n;
  private fileBytes = 0;

  private chainLoaded = false;
  private seq = 0;
  private prev = GENESIS_PREV;

  // Pending record bodies (serialized once, chained at write time), a deque
  // as array + head index: dropping the oldest must be O(1) during an outage.
  private queue: string[] = [];
  private head = 0;
  // The writer's own records about the log itself; written ahead of the queue
  // and never dropped, so the reason for a gap is always in the log.
  private notices: string[] = [];
  private unreportedDrops = 0;
  private firstDropTs: string | null = null;
  // After a failure only one line is attempted per retry, so an outage costs
  // O(1) per write instead of re-chaining the whole queue every time.
  private degraded = false;
  private closed = false;
  private retryTimer: NodeJS.Timeout | null = null;

  private st = {
    written: 0,
    writeErrors: 0,
    dropped: 0,
    lastError: null as string | null,
    bytes: 0,
    rotations: 0,
    rotateErrors: 0,
  };

  constructor(opts: AuditLogOptions) {
    this.path = opts.path;
    this.maxBytes = Math.max(1, opts.maxBytes ?? DEFAULT_MAX_BYTES);
    this.keep = Math.max(0, Math.floor(opts.keep ?? 5));
    this.maxPending = Math.max(0, Math.floor(opts.maxPending ?? 10_000));
    this.mode = opts.mode ?? 0o640;
    this.retryIntervalMs = opts.retryIntervalMs ?? 1000;
    this.context = opts.context ?? {};
    // Open eagerly so a bad --audit-log shows up in stats at startup, not at
    // the first denied exec; failure is only recorded, as everywhere else.
    this.prepare();
  }

  get stats(): AuditLogStats {
    return {
      ...this.st,
      pending: this.queue.length - this.head + this.notices.length,
      fileBytes: this.fileBytes,
      nextSeq: this.chainLoaded ? this.seq : null,
    };
  }

  write(rec: AuditInput): void {
    this.writeBatch([rec]);
  }

  /** Appends records in order; one write(2) per batch unless a rotation falls inside it. */
  writeBatch(recs: readonly AuditInput[]): void {
    try {
      if (this.closed) {
        this.st.dropped += recs.length;
        this.st.lastError = 'write after close';
        return;
      }
      for (const r of recs) this.queue.push(serializeBody(normalizeRecord(r, this.context)));
      this.flushInternal();
      this.trimQueue();
      this.armRetry();
    } catch (e) {
      // Only a bug can get here; it is still not the caller's problem.
      this.st.writeErrors++;
      this.st.lastError = errText(e);
    }
  }

  /** Ring-buffer drops reported by the kernel side, so lost events are never silent. */
  noteKernelDrops(n: number | bigint): void {
    if (typeof n === 'bigint' ? n <= 0n : !(n > 0)) return;
    // A JSON number where it is exact, so consumers can add counts up.
    const count = typeof n === 'bigint' && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    this.write({ type: 'agent', action: 'ring-buffer-drops', count, pid: process.pid, comm: 'cgfence' });
  }

  /** Retries pending records now. True when nothing is left pending. */
  flush(): boolean {
    try {
      if (this.closed) return this.stats.pending === 0;
      const done = this.flushInternal();
      this.trimQueue();
      this.armRetry();
      return done;
    } catch (e) {
      this.st.writeErrors++;
      this.st.lastError = errText(e);
      return false;
    }
  }

  /** Final flush attempt, then the file is closed; records still pending are counted as dropped. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const left = this.queue.length - this.head;
    if (left > 0) {
      this.st.dropped += left;
      this.queue = [];
      this.head = 0;
    }
    this.closeFd();
  }

  // -------------------------------------------------------------------------

  private armRetry(): void {
    if (this.retryIntervalMs <= 0 || this.retryTimer || this.closed) return;
    if (this.stats.pending === 0 && this.unreportedDrops === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.flush();
    }, this.retryIntervalMs);
    // A daemon shutting down must not be kept alive by a log retry.
    this.retryTimer.unref();
  }

  private trimQueue(): void {
    const over = this.queue.length - this.head - this.maxPending;
    if (over <= 0) return;
    if (this.firstDropTs === null) this.firstDropTs = tsOfBody(this.queue[this.head]);
    this.head += over;
    this.st.dropped += over;
    this.unreportedDrops += over;
    this.compact();
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private fail(e: unknown): void {
    this.st.writeErrors++;
    this.st.lastError = errText(e);
    this.degraded = true;
  }

  private notice(rec: AuditInput): void {
    this.notices.push(serializeBody(normalizeRecord({ pid: process.pid, comm: 'cgfence', ...rec }, this.context)));
  }

  private closeFd(): void {
    if (this.fd === null) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      // Nothing useful to do: the descriptor is gone either way.
    }
    this.fd = null;
  }

  /** Opens the file and loads the chain tail if not done yet; false (error recorded) when that fails. */
  private prepare(): boolean {
    try {
      if (this.fd !== null) {
        // Writing to an unlinked inode succeeds and vanishes, so check that
        // the path still names our file (directory removed, file deleted or
        // replaced). Someone else's rotation is an event worth logging.
        const cur = fs.statSync(this.path, { bigint: true, throwIfNoEntry: false });
        if (!cur || cur.ino !== this.ino || cur.dev !== this.dev) {
          this.closeFd();
          this.notice({
            type: 'tamper',
            action: cur ? 'log-file-replaced' : 'log-file-missing',
            file: this.path,
          });
        }
      }
      if (this.fd === null) this.openCurrent();
      if (!this.chainLoaded) this.loadChain();
      return true;
    } catch (e) {
      this.fail(e);
      return false;
    }
  }

  private openCurrent(): void {
    // a+ rather than a: the torn-tail check below needs to read.
    const fd = fs.openSync(this.path, 'a+', this.mode);
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      if (!st.isFile()) throw new Error(`${this.path}: not a regular file`);
      const size = this.repairTail(fd, Number(st.size));
      this.fd = fd;
      this.ino = st.ino;
      this.dev = st.dev;
      this.fileBytes = size;
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /**
   * A file that does not end in a newline was cut mid-write (crash, power
   * loss, or a failed write whose truncation also failed). A complete record
   * just lacks its newline; anything else is a fragment that was never a
   * record, and is cut off - with a notice, so the cut is itself on record -
   * because appending after it would corrupt the next record's line too.
   */
  private repairTail(fd: number, size: number): number {
    if (size === 0) return 0;
    const last = Buffer.alloc(1);
    fs.readSync(fd, last, 0, 1, size - 1);
    if (last[0] === 0x0a) return size;
    let window = 4096;
    for (;;) {
      const start = Math.max(0, size - window);
      const buf = Buffer.alloc(size - start);
      fs.readSync(fd, buf, 0, buf.length, start);
      const nl = buf.lastIndexOf(0x0a);
      if (nl < 0 && start > 0) {
        window *= 4;
        continue;
      }
      const fragStart = start + nl + 1;
      const frag = buf.subarray(nl + 1);
      if (parseLine(frag).hashOk) {
        fs.writeSync(fd, '\n');
        return size + 1;
      }
      fs.ftruncateSync(fd, fragStart);
      this.notice({ type: 'agent', action: 'torn-tail-truncated', file: this.path, bytes: size - fragStart });
      return fragStart;
    }
  }

  /**
   * Continues seq and prev from the newest record on disk: the current file,
   * or - right after a rotation, or if the current file was lost - the newest
   * rotated one. Only when none holds a record does the chain start at
   * genesis; by then the directory is known to exist (the current file was
   * just opened), so a missing mount cannot masquerade as a fresh log.
   */
  private loadChain(): void {
    const files = listLogFiles(this.path).reverse();
    if (!files.includes(this.path)) files.unshift(this.path);
    for (const f of files) {
      let tail;
      try {
        tail = readTailRecord(f);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        // An unreadable old file must not stop logging for good; say so and
        // look further back.
        this.notice({ type: 'tamper', action: 'chain-tail-unreadable', file: f, error: errText(e) });
        continue;
      }
      if (tail) {
        this.seq = tail.seq + 1;
        this.prev = tail.hash;
        this.chainLoaded = true;
        return;
      }
      let size = 0;
      try {
        size = fs.statSync(f).size;
      } catch {
        // Gone since the listing: same as empty.
      }
      if (size > 0) this.notice({ type: 'tamper', action: 'chain-tail-unreadable', file: f, error: 'no record found' });
    }
    this.seq = 0;
    this.prev = GENESIS_PREV;
    this.chainLoaded = true;
  }

  private dropNoticeBody(): string {
    return serializeBody(
      normalizeRecord(
        {
          type: 'agent',
          action: 'dropped',
          count: this.unreportedDrops,
          since: this.firstDropTs,
          reason: this.st.lastError,
          pid: process.pid,
          comm: 'cgfence',
        },
        this.context,
      ),
    );
  }

  private flushInternal(): boolean {
    const pendingCount = () => this.queue.length - this.head;
    if (pendingCount() === 0 && this.notices.length === 0 && this.unreportedDrops === 0) return true;
    if (!this.prepare()) return false;
    let limit = this.degraded ? 1 : Infinity;
    let ignoreRoom = false;
    for (;;) {
      const drop = this.unreportedDrops > 0 ? this.dropNoticeBody() : null;
      const nDrop = drop ? 1 : 0;
      const nNotices = this.notices.length;
      const total = nDrop + nNotices + pendingCount();
      if (total === 0) return true;

      const room = ignoreRoom ? Infinity : this.maxBytes - this.fileBytes;
      const lines: Buffer[] = [];
      let size = 0;
      let seq = this.seq;
      let prev = this.prev;
      for (let i = 0; i < total && lines.length < limit; i++) {
        const body = i < nDrop ? drop! : i < nDrop + nNotices ? this.notices[i - nDrop] : this.queue[this.head + i - nDrop - nNotices];
        const { line, hash } = chainLine(body, seq, prev);
        // A single record larger than maxBytes still goes into a file of its own.
        if (size + line.length > room && (size > 0 || this.fileBytes > 0)) break;
        lines.push(line);
        size += line.length;
        seq++;
        prev = hash;
      }
      if (lines.length === 0) {
        const r = this.rotate();
        if (r === 'lost') return false;
        if (r === 'skipped') ignoreRoom = true;
        continue;
      }

      const buf = lines.length === 1 ? lines[0] : Buffer.concat(lines, size);
      const { written, error } = this.writeAll(buf);
      // Commit whole lines that reached the file, even from a failed write, so
      // their seq is not reused.
      let n = 0;
      let committed = 0;
      seq = this.seq;
      prev = this.prev;
      while (n < lines.length && committed + lines[n].length <= written) {
        committed += lines[n].length;
        prev = lines[n].toString('latin1', lines[n].length - 67, lines[n].length - 3);
        seq++;
        n++;
      }
      if (n > 0) {
        this.seq = seq;
        this.prev = prev;
        this.fileBytes += committed;
        this.st.bytes += committed;
        this.st.written += n;
        this.consume(n, nDrop, nNotices);
      }
      if (error) {
        if (written > committed) this.cutPartial();
        this.fail(error);
        return false;
      }
      this.degraded = false;
      limit = Infinity;
    }
  }

  private consume(n: number, nDrop: number, nNotices: number): void {
    let left = n;
    if (nDrop && left > 0) {
      this.unreportedDrops = 0;
      this.firstDropTs = null;
      left--;
    }
    const fromNotices = Math.min(left, nNotices);
    if (fromNotices > 0) this.notices.splice(0, fromNotices);
    left -= fromNotices;
    this.head += left;
    this.compact();
  }

  /** A write(2) can be short (ENOSPC part-way); keep going until it all lands or an error stops it. */
  private writeAll(buf: Buffer): { written: number; error: unknown } {
    let off = 0;
    try {
      while (off < buf.length) {
        const n = fs.writeSync(this.fd!, buf, off, buf.length - off);
        if (n <= 0) throw new Error('write returned 0');
        off += n;
      }
      return { written: off, error: null };
    } catch (e) {
      return { written: off, error: e };
    }
  }

  /** Removes the partial line a failed write left behind, so the file only ever holds whole records. */
  private cutPartial(): void {
    try {
      fs.ftruncateSync(this.fd!, this.fileBytes);
    } catch {
      // The fragment stays; reopening runs repairTail, which cuts it (or
      // records why it could not) before anything else is appended.
      this.closeFd();
    }
  }

  /**
   * path -> path.1 -> ... -> path.keep; the oldest falls off. Renames come
   * before reopening so that a rename failure leaves us appending to the
   * current file (oversized, but nothing lost) instead of losing records.
   */
  private rotate(): RotateResult {
    try {
      const dir = nodePath.dirname(this.path);
      const base = nodePath.basename(this.path);
      // Also files beyond `keep` from an earlier, larger setting: left in
      // place they would sit in front of the chain with a seq gap behind them.
      for (const f of listLogFiles(this.path)) {
        const m = nodePath.basename(f).slice(base.length + 1);
        if (f !== this.path && Number(m) >= this.keep) fs.rmSync(f, { force: true });
      }
      for (let i = this.keep - 1; i >= 1; i--) {
        try {
          fs.renameSync(nodePath.join(dir, `${base}.${i}`), nodePath.join(dir, `${base}.${i + 1}`));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        }
      }
      if (this.keep >= 1) fs.renameSync(this.path, `${this.path}.1`);
      else fs.unlinkSync(this.path);
    } catch (e) {
      this.st.rotateErrors++;
      this.st.lastError = `rotate: ${errText(e)}`;
      return 'skipped';
    }
    this.closeFd();
    this.st.rotations++;
    try {
      this.openCurrent();
      return 'ok';
    } catch (e) {
      this.fail(e);
      return 'lost';
    }
  }
}

// Bodies start with {"ts":"<30 chars>" because normalizeRecord puts ts first
// and formatRfc3339Ns is fixed-width; parsing the whole body to learn when
// the first dropped record happened would be wasted work during an outage.
function tsOfBody(body: string | undefined): string {
  if (body && body.startsWith('{"ts":"')) return body.slice(7, 37);
  return formatRfc3339Ns(nowNs());
}
