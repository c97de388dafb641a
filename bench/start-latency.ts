// Issues 3 and 13: `ctr run --rm IMG /bin/true` through cgfence-runc with a policy against
// plain runc, interleaved, in one sandbox (--exec-deny errno, the default: the entrypoint's
// exec goes through the notify loop too). The note splits the difference: the daemon's own
// time in prepare and attach (prepare_ms, attach_ms of the attach records), the rest being
// the launcher's execs, its two round trips, runc's handing of the notify fd and the
// notified entrypoint exec (docs/exec-performance.md).
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { readRecords } from '../src/audit/audit-read';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { BenchResult, interleave, median, result } from './types';

const RUNS = Number(process.env.CGFENCE_BENCH_STARTS ?? 21);

export async function run(): Promise<BenchResult[]> {
  const dir = `/run/cgfb-${crypto.randomBytes(3).toString('hex')}`;
  const p = await sandboxUp(dir);
  try {
    let n = 0;
    const start = (extra: string[]) => {
      const id = `bench-${n++}`;
      const t0 = process.hrtime.bigint();
      const r = spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'run', '--rm', ...extra, TEST_IMAGE_NAME, id, '/bin/true'], { encoding: 'utf8' });
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (r.status !== 0) throw new Error(`ctr run ${extra.join(' ')} failed: ${r.stderr}`);
      return us;
    };
    const plain = () => start([]);
    const fenced = () => start(['--runc-binary', p.runc, '--annotation', 'cgfence.io/exec-allow=/bin/sh']);
    plain();
    fenced();
    const r = await interleave(RUNS, plain, fenced);
    const attaches = (await readRecords(p.auditLog, { type: 'lifecycle' })).filter((x) => x.action === 'attach');
    const ms = (k: string) => median(attaches.map((x) => Number(x[k])).filter((x) => Number.isFinite(x)));
    const delta = (median(r.f) - median(r.b)) / 1000;
    return [result('container start: ctr run --rm /bin/true', 'plain runc', 'cgfence-runc + exec-allow policy', r,
      `wall time of the whole ctr run, µs; +${delta.toFixed(1)} ms, of which the daemon's prepare ${ms('prepare_ms').toFixed(2)} ms and attach ${ms('attach_ms').toFixed(2)} ms (medians of ${attaches.length} attach records)`)];
  } finally {
    await sandboxDown(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
