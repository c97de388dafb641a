// The daemon's unix socket: root-only, JSON lines, bounded. A malformed or oversized request
// gets a refusal and its connection is closed; nothing it sends reaches other clients.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { MAX_REQUEST_BYTES, Reply, Request, checkRequest, refuse } from './protocol';

export type RequestHandler = (req: Request) => Promise<Reply> | Reply;

export class SocketServer {
  private server: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();

  constructor(private readonly socketPath: string, private readonly handle: RequestHandler, private readonly log: (m: string) => void) {}

  async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o755 });
    // A stale socket from a crashed daemon; a live one means another daemon owns it.
    if (fs.existsSync(this.socketPath)) {
      const alive = await new Promise<boolean>((resolve) => {
        const c = net.connect(this.socketPath);
        c.once('connect', () => { c.destroy(); resolve(true); });
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
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.setTimeout(120_000, () => sock.destroy());
    let buf = Buffer.alloc(0);
    let busy = Promise.resolve();
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let nl: number;
      while ((nl = buf.indexOf(0x0a)) >= 0) {
        const line = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 1);
        // One request at a time per connection, answered in order.
        busy = busy.then(() => this.answer(sock, line));
      }
      if (buf.length > MAX_REQUEST_BYTES) {
        this.reply(sock, refuse(`request larger than ${MAX_REQUEST_BYTES} bytes`));
        sock.end();
        buf = Buffer.alloc(0);
      }
    });
  }

  private async answer(sock: net.Socket, line: string): Promise<void> {
    if (line.trim() === '') return;
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      this.reply(sock, refuse('request is not valid JSON'));
      sock.end();
      return;
    }
    const bad = checkRequest(req);
    if (bad) {
      this.reply(sock, refuse(`bad request: ${bad}`));
      sock.end();
      return;
    }
    let reply: Reply;
    try {
      reply = await this.handle(req as Request);
    } catch (e) {
      this.log(`request ${(req as Request).op} failed: ${(e as Error).stack ?? e}`);
      reply = refuse(`internal error: ${(e as Error).message}`);
    }
    this.reply(sock, reply);
  }

  private reply(sock: net.Socket, r: Reply): void {
    if (!sock.destroyed) sock.write(JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    try { fs.unlinkSync(this.socketPath); } catch { /* already gone */ }
  }
}
