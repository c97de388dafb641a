// The daemon's HTTP endpoints (/metrics, /healthz, /readyz), read over the sandbox's metrics socket.
import http from 'node:http';
import { SandboxPaths } from '../../src/sandbox/sandbox';

/** GET pathName from the daemon's metrics socket: the status and the whole body. */
export function daemonGet(p: SandboxPaths, pathName: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: p.metrics, path: pathName }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** The Prometheus text the daemon serves at /metrics. */
export async function scrapeMetrics(p: SandboxPaths): Promise<string> {
  return (await daemonGet(p, '/metrics')).body;
}
