// What node-config selectors cost a container start: the same profile, once named by the
// container's own cgfence.io/profile annotation (selectors are then not consulted: no
// containerd lookup) and once chosen by a selector on its labels (the daemon reads the
// labels from containerd, picks the profile and writes it into the bundle), interleaved, in
// one sandbox.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { BenchResult, interleave, result } from './types';

const RUNS = Number(process.env.CGFENCE_BENCH_STARTS ?? 21);

export async function run(): Promise<BenchResult[]> {
  const dir = `/run/cgfb-${crypto.randomBytes(3).toString('hex')}`;
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
  const p = await sandboxUp(dir, () => {}, { config });
  try {
    let n = 0;
    const start = (extra: string[]) => {
      const id = `bench-${n++}`;
      const t0 = process.hrtime.bigint();
      const r = spawnSync(
        'ctr',
        [
          '-a',
          p.containerdSocket,
          '-n',
          SANDBOX_NAMESPACE,
          'run',
          '--rm',
          '--runc-binary',
          p.runc,
          ...extra,
          TEST_IMAGE_NAME,
          id,
          '/bin/sh',
          '-c',
          'true',
        ],
        { encoding: 'utf8' },
      );
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (r.status !== 0) throw new Error(`ctr run ${extra.join(' ')} failed: ${r.stderr}`);
      return us;
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
  } finally {
    await sandboxDown(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
