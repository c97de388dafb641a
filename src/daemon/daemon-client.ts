// Talks to the daemon over its unix socket: one JSON line out, one back. Used by the CLI and
// the sandbox; its errors are the user's to fix (daemon down, request refused), so the CLI
// prints them as one line.
import net from 'node:net';

/** The daemon is unreachable, did not answer, or refused the request. */
export class DaemonClientError extends Error {}

export const DEFAULT_SOCKET = '/run/cgfence/cgfence.sock';

export function socketPath(flag?: string): string {
  return flag ?? process.env.CGFENCE_SOCKET ?? DEFAULT_SOCKET;
}

export async function request<T = Record<string, unknown>>(socket: string, req: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const c = net.connect(socket);
    let buf = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new DaemonClientError(`the cgfence daemon at ${socket} did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    c.on('connect', () => c.write(JSON.stringify(req) + '\n'));
    c.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      c.end();
      const reply = JSON.parse(buf.slice(0, nl)) as { ok: boolean; error?: string };
      if (!reply.ok) reject(new DaemonClientError(reply.error ?? 'the daemon refused the request'));
      else resolve(reply as T);
    });
    c.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'is it running? (`cgfence daemon`, or `cgfence sandbox up`)' : e.message;
      reject(new DaemonClientError(`cannot reach the cgfence daemon at ${socket}: ${why}`));
    });
  });
}
