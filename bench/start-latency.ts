// Issues 3 and 13: `ctr run --rm IMG /bin/true` through cgfence-runc with a policy against
// plain runc, interleaved. The headline row is the default node (--exec-deny errno: the
// entrypoint's exec goes through the notify loop too). The other rows split the difference,
// each against the same plain-runc runs (docs/exec-performance.md, "The start path"):
//   launcher only   cgfence-runc, no annotation: its own execs (create and every
//                   pass-through subcommand), no daemon asked;
//   no rules        cgfence.io/mode=enforce alone: prepare answers fence:false, nothing else;
//   mode=off        exec-allow with mode=off: both round trips, no kernel fence, no notify;
//   kill            the same policy on a daemon with --exec-deny kill (its own sandbox):
//                   the kernel fence, no notify route, no listener hand-off;
// so errno − kill is what the seccomp notify route costs a start.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { readRecords } from '../src/audit/audit-read';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { BenchResult, median, result } from './types';

const RUNS = Number(process.env.CGFENCE_BENCH_STARTS ?? 21);
const POLICY = ['--annotation', 'cgfence.io/exec-allow=/bin/sh'];

interface Arm { name: string; start: () => number }

/** Every arm once per round, the order rotated each round, so that drift falls on all alike. */
function rounds(runs: number, arms: Arm[]): Map<string, number[]> {
  const out = new Map(arms.map((a) => [a.name, [] as number[]]));
  for (let i = 0; i < runs; i++) {
    for (let j = 0; j < arms.length; j++) {
      const a = arms[(i + j) % arms.length];
      out.get(a.name)!.push(a.start());
    }
  }
  return out;
}

async function attachMedians(p: SandboxPaths): Promise<{ n: number; prepare: number; attach: number }> {
  const attaches = (await readRecords(p.auditLog, { type: 'lifecycle' })).filter((x) => x.action === 'attach' && x.mode === 'enforce');
  const ms = (k: string) => median(attaches.map((x) => Number(x[k])).filter((x) => Number.isFinite(x)));
  return { n: attaches.length, prepare: ms('prepare_ms'), attach: ms('attach_ms') };
}

export async function run(): Promise<BenchResult[]> {
  const tag = crypto.randomBytes(3).toString('hex');
  const dirs = [`/run/cgfb-${tag}`, `/run/cgfb-${tag}-kill`];
  try {
    const p = await sandboxUp(dirs[0], () => {}, { daemonEnv: { CGFENCE_EXEC_DENY: 'errno' } });
    const k = await sandboxUp(dirs[1], () => {}, { daemonEnv: { CGFENCE_EXEC_DENY: 'kill' } });
    let n = 0;
    const start = (s: SandboxPaths, extra: string[]) => () => {
      const id = `bench-${n++}`;
      const t0 = process.hrtime.bigint();
      const r = spawnSync('ctr', ['-a', s.containerdSocket, '-n', SANDBOX_NAMESPACE, 'run', '--rm', ...extra, TEST_IMAGE_NAME, id, '/bin/true'], { encoding: 'utf8' });
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (r.status !== 0) throw new Error(`ctr run ${extra.join(' ')} failed: ${r.stderr}`);
      return us;
    };
    const arms: Arm[] = [
      { name: 'plain', start: start(p, []) },
      { name: 'errno', start: start(p, ['--runc-binary', p.runc, ...POLICY]) },
      { name: 'launcher', start: start(p, ['--runc-binary', p.runc]) },
      { name: 'norules', start: start(p, ['--runc-binary', p.runc, '--annotation', 'cgfence.io/mode=enforce']) },
      { name: 'off', start: start(p, ['--runc-binary', p.runc, ...POLICY, '--annotation', 'cgfence.io/mode=off']) },
      { name: 'kill', start: start(k, ['--runc-binary', k.runc, ...POLICY]) },
    ];
    for (const a of arms) a.start(); // warm-up: image layers, page cache, the daemons' first attach
    const t = rounds(RUNS, arms);
    const pair = (f: string) => ({ b: t.get('plain')!, f: t.get(f)! });
    const e = await attachMedians(p);
    const kd = await attachMedians(k);
    const delta = (f: string) => `+${((median(t.get(f)!) - median(t.get('plain')!)) / 1000).toFixed(1)} ms`;
    const name = 'container start: ctr run --rm /bin/true';
    return [
      result(name, 'plain runc', 'cgfence-runc + exec-allow policy', pair('errno'),
        `wall time of the whole ctr run, µs; ${delta('errno')}, of which the daemon's prepare ${e.prepare.toFixed(2)} ms and attach ${e.attach.toFixed(2)} ms (medians of ${e.n} attach records)`),
      result(`${name} (split)`, 'plain runc', 'cgfence-runc, no annotation', pair('launcher'), `the launcher alone, no daemon asked; ${delta('launcher')}`),
      result(`${name} (split)`, 'plain runc', 'cgfence-runc, cgfence.io/mode=enforce (no rules)', pair('norules'), `prepare answers fence:false; ${delta('norules')}`),
      result(`${name} (split)`, 'plain runc', 'cgfence-runc, exec-allow + mode=off', pair('off'), `prepare and attach, no fence; ${delta('off')}`),
      result(`${name} (split)`, 'plain runc', 'cgfence-runc + exec-allow, --exec-deny kill', pair('kill'),
        `no notify route; ${delta('kill')}, of which prepare ${kd.prepare.toFixed(2)} ms and attach ${kd.attach.toFixed(2)} ms; errno − kill = ${((median(t.get('errno')!) - median(t.get('kill')!)) / 1000).toFixed(1)} ms`),
    ];
  } finally {
    for (const d of dirs) {
      await sandboxDown(d).catch(() => undefined);
      fs.rmSync(d, { recursive: true, force: true });
    }
  }
}
