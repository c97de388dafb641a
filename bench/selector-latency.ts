// What node-config selectors cost a container start: the same profile, once named by the
// container's own cgfence.io/profile annotation (selectors are then not consulted: no
// containerd lookup) and once chosen by a selector on its labels (the daemon reads the
// labels from containerd, picks the profile and writes it into the bundle), interleaved, in
// one sandbox.
import fs from 'node:fs';
import path from 'node:path';
import { benchSandboxDir, runThroughLauncher, withSandbox } from './sandbox';
import { BenchResult, interleave, result } from './types';

const RUNS = Number(process.env.CGFENCE_BENCH_STARTS ?? 21);

export async function run(): Promise<BenchResult[]> {
  const dir = benchSandboxDir();
  fs.mkdirSync(dir, { recursive: true });
  const config = path.join(dir, 'daemon-config.yaml');
  fs.writeFileSync(
    config,
    [
      'profiles:',
      '  sh:',
      '    cgfence.io/exec-allow: /bin/sh',
      'selectors:',
      '  - podLabels: {app: bench}',
      '    profile: sh',
      // More selectors than a node is likely to have, none matching first.
      ...Array.from({ length: 50 }, (_, i) => `  - {namespace: ns${i}, podLabels: {app: bench}, profile: sh}`),
      '',
    ].join('\n'),
  );
  return withSandbox(dir, { config }, async (p) => {
    let n = 0;
    const start = (extra: string[]) => {
      const t0 = process.hrtime.bigint();
      runThroughLauncher(p, `bench-${n++}`, extra, ['/bin/sh', '-c', 'true']);
      return Number(process.hrtime.bigint() - t0) / 1000;
    };
    const annotated = () => start(['--annotation', 'cgfence.io/profile=sh']);
    const selected = () => start(['--label', 'app=bench']);
    annotated();
    selected();
    const r = await interleave(RUNS, annotated, selected);
    return [
      result(
        'container start: profile from a selector vs named by the container',
        'cgfence.io/profile annotation',
        'selector on its labels (51 selectors)',
        r,
        'wall time of the whole ctr run, µs',
      ),
    ];
  });
}
