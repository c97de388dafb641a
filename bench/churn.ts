// Issue 7's churn figure: 200 fenced containers started and exited through the sandbox;
// BPF objects, pins, the daemon's fds and RSS before and after, and the time per container.
import fs from 'node:fs';
import { footprint } from '../src/sandbox/footprint';
import { request } from '../src/daemon/daemon-client';
import { benchSandboxDir, runThroughLauncher, withSandbox } from './sandbox';
import { BenchResult } from './types';

const N = Number(process.env.CGFENCE_BENCH_CHURN ?? 200);

export async function run(): Promise<BenchResult[]> {
  return withSandbox(benchSandboxDir(), {}, async (p) => {
    const pid = Number(fs.readFileSync(p.daemonPid, 'utf8'));
    const start = (i: number) =>
      runThroughLauncher(
        p,
        `churn-${i < 0 ? 'warm' : i}`,
        ['--annotation', 'cgfence.io/exec-allow=/bin/sh'],
        ['/bin/sh', '-c', '/usr/local/bin/tool-a; true'],
      );
    start(-1);
    const idle = async () => {
      for (let i = 0; i < 200; i++) {
        const ps = await request<{ containers: unknown[] }>(p.socket, { op: 'ps' });
        if (ps.containers.length === 0) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await idle();
    const before = footprint(p.pinDir, pid);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) start(i);
    const perContainerUs = Number(process.hrtime.bigint() - t0) / 1000 / N;
    await idle();
    await new Promise((r) => setTimeout(r, 3000)); // the kernel frees objects after an RCU grace period
    const after = footprint(p.pinDir, pid);
    const note = `${N} containers; before → after: progs ${before.progs}→${after.progs}, maps ${before.maps}→${after.maps}, links ${before.links}→${after.links}, pins ${before.pins.length}→${after.pins.length}, daemon fds ${before.daemonFds}→${after.daemonFds}, daemon RSS ${(before.daemonRssKb / 1024).toFixed(1)}→${(after.daemonRssKb / 1024).toFixed(1)} MiB`;
    console.log(`  ${note}`);
    return [
      {
        name: 'churn: fenced containers started and exited',
        baseline: '-',
        fenced: 'ctr run --rm with a policy and one denied exec',
        medianBaselineUs: perContainerUs,
        medianFencedUs: perContainerUs,
        ratio: 1,
        runs: N,
        note,
      },
    ];
  });
}
