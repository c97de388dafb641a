// The daemon's unix socket: root-only, JSON lines, bounded. A malformed or oversized request
// gets a refusal and its connection is closed; nothing it sends reaches other clients.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { native } from '../native';
import { MAX_REQUEST_BYTES, Reply, Request, checkRequest, refuse } from './protocol';

// cgfence-runc sends a request in one write: a line still incomplete after this long is a
// stuck or hostile client (slow loris), not a slow one.
const LINE_DEADLINE_MS = 10_000;
// Requests a connection may have queued; past that, it is not read until they are answered.
const MAX_PIPELINED = 16;

/** Who sent a request: the peer's credentials as the kernel recorded them at connect (SO_PEERCRED). */
export interface Peer {
  pid: number;
  uid: number;
  gid: number;
}

/** The connection a request came on, for what the daemon sends later, unasked. */
export interface Connection {
  /** Writes one line the client did not ask for, after every reply already written. */
  push(line: Record<string, unknown>): void;
  /** Runs `cb` once the connection is gone (at once, a turn later, if it already is). */
  onClose(cb: () => void): void;
}

export type RequestHandler = (req: Request, peer: Peer | null, conn: Connection) => Promise<Reply> | Reply;

/** SO_PEERCRED of a connection; null when the kernel cannot say (the handle has no fd). */
function peerOf(sock: net.Socket): Peer | null {
  // Node keeps the fd on its libuv handle and has no API for the peer's credentials.
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return null;
  try {
    return native().peerCredentials(fd);
  } catch {
    return null;
  }
}

export class SocketServer {
  private server: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();
  /** Connections refused for good: whatever else they send is ignored. */
  private readonly dropped = new WeakSet<net.Socket>();

  constructor(
    private readonly socketPath: string,
    private readonly handle: RequestHandler,
    private readonly log: (m: string) => void,
  ) {}

  async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o755 });
    // A stale socket from a crashed daemon; a live one means another daemon owns it.
    if (fs.existsSync(this.socketPath)) {
      const alive = await new Promise<boolean>((resolve) => {
        const c = net.connect(this.socketPath);
        c.once('connect', () => {
          c.destroy();
          resolve(true);
        });
        c.once('error', () => resolve(false));
      });
      if (alive) throw new Error(`another cgfence daemon is listening on ${this.socketPath}`);
      fs.unlinkSync(this.socketPath);
    }
    this.server = net.createServer((sock) => this.serve(sock));
    const old = process.umask(0o177); // the socket is created 0600 atomically
    try {
      await new Promise<void>((resolve, reject) => {
        this.server!.once('error', reject);
        this.server!.listen(this.socketPath, () => resolve());
      });
    } finally {
      process.umask(old);
    }
    fs.chmodSync(this.socketPath, 0o600);
  }

  private serve(sock: net.Socket): void {
    this.conns.add(sock);
    const peer = peerOf(sock);
    const conn: Connection = {
      push: (line) => this.reply(sock, line as Reply),
      onClose: (cb) => (sock.destroyed ? setImmediate(cb) : sock.once('close', cb)),
    };
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.setTimeout(120_000, () => sock.destroy());
    let buf = Buffer.alloc(0);
    let busy = Promise.resolve();
    let pending = 0;
    let deadline: NodeJS.Timeout | undefined;
    sock.on('close', () => clearTimeout(deadline));
    sock.on('data', (chunk) => {
      if (this.dropped.has(sock)) return;
      buf = Buffer.concat([buf, chunk]);
      let nl: number;
      let lines = 0;
      while ((nl = buf.indexOf(0x0a)) >= 0) {
        // A complete line can arrive in one chunk: the limit holds for it too.
        if (nl > MAX_REQUEST_BYTES) break;
        lines++;
        const line = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 1);
        // One request at a time per connection, answered in order.
        if (++pending >= MAX_PIPELINED) sock.pause();
        // A rejected link would end the chain and, unhandled, the daemon.
        busy = busy
          .then(() => this.answer(sock, line, peer, conn))
          .catch((e) => this.log(`answering a request failed: ${(e as Error).stack ?? e}`))
          .finally(() => {
            if (--pending < MAX_PIPELINED && !this.dropped.has(sock)) sock.resume();
          });
      }
      if (buf.length > MAX_REQUEST_BYTES) {
        this.drop(sock, refuse(`request larger than ${MAX_REQUEST_BYTES} bytes`));
        buf = Buffer.alloc(0);
        return;
      }
      // The deadline runs from a line's first byte: trickling more of it does not extend it.
      if (lines > 0 || buf.length === 0) {
        clearTimeout(deadline);
        deadline = undefined;
      }
      if (buf.length > 0 && deadline === undefined) {
        deadline = setTimeout(
          () => this.drop(sock, refuse(`request line not completed within ${LINE_DEADLINE_MS / 1000} s`)),
          LINE_DEADLINE_MS,
        );
        deadline.unref();
      }
    });
  }

  /** Refuses and closes: once the refusal is written, the connection goes. */
  private drop(sock: net.Socket, r: Reply): void {
    if (this.dropped.has(sock)) return;
    this.dropped.add(sock);
    this.reply(sock, r, () => sock.destroy());
  }

  private async answer(sock: net.Socket, line: string, peer: Peer | null, conn: Connection): Promise<void> {
    if (line.trim() === '' || this.dropped.has(sock) || sock.destroyed) return;
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      this.drop(sock, refuse('request is not valid JSON'));
      return;
    }
    const bad = checkRequest(req);
    if (bad) {
      this.drop(sock, refuse(`bad request: ${bad}`));
      return;
    }
    let reply: Reply;
    try {
      reply = await this.handle(req as Request, peer, conn);
    } catch (e) {
      this.log(`request ${(req as Request).op} failed: ${(e as Error).stack ?? e}`);
      reply = refuse(`internal error: ${(e as Error).message}`);
    }
    this.reply(sock, reply);
    // A client that asks and never reads would have its replies pile up in our memory:
    // its next request waits until this one is taken.
    if (sock.writableNeedDrain) {
      await new Promise<void>((resolve) => {
        const done = () => {
          sock.off('drain', done);
          sock.off('close', done);
          resolve();
        };
        sock.on('drain', done);
        sock.on('close', done);
      });
    }
  }

  private reply(sock: net.Socket, r: Reply, then?: () => void): void {
    if (sock.destroyed || sock.writableEnded) return then?.();
    sock.write(JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n', then);
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* already gone */
    }
  }
}
