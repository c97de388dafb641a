// Issue 3's figure: `ctr run --rm IMG /bin/true` through cgfence-runc with a policy
// against plain runc, interleaved, in one sandbox.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { BenchResult, interleave, result } from './types';

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
    return [result('container start: ctr run --rm /bin/true', 'plain runc', 'cgfence-runc + exec-allow policy', r, 'wall time of the whole ctr run, µs')];
  } finally {
    await sandboxDown(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
