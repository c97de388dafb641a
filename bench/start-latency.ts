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
//   default seccomp plain runc and the headline arm again, both with containerd's default
//                   seccomp profile (`ctr run --seccomp`, what Kubernetes' RuntimeDefault
//                   gives): runc pays for a seccomp filter in both, as on most nodes, and the
//                   notify route only adds its two rules and the listener (bench/runc-listener.ts
//                   times a filter at all against none, ~2 ms of runc's own here);
// so errno − kill is what the seccomp notify route costs a start. The headline pair then runs
// HEADLINE_EXTRA more rounds on its own, and its row gives a bootstrap interval of its ratio. Each row's note also gives
// the daemon's CPU time per start of that arm (utime+stime of the daemon across its starts, and
// its main thread's from schedstat: the daemon's work competes with runc and the shim for this
// machine's 2 CPUs, and costs a start nearly its length there; docs/exec-performance.md), and a last
// row times one pass-through call (`state`, which the shim runs as `start`, `delete`... are
// run): the launcher's exec before runc's, paid by every runc call but create.
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { readRecords } from '../src/audit/audit-read';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { BenchResult, median, pairedRatio, ratioInterval, result } from './types';

// 101: with 31 rounds one arm's median moved by ~2 ms from run to run on this 2-core VM.
const RUNS = Number(process.env.CGFENCE_BENCH_STARTS ?? 101);
const POLICY = ['--annotation', 'cgfence.io/exec-allow=/bin/sh'];
const PASS_THROUGH_CALLS = Number(process.env.CGFENCE_BENCH_PASSTHROUGH ?? 200);
// More rounds of the headline pair alone (plain runc and the default node), interleaved after
// the others: one ctr run scatters by ~8 ms (σ) here, so 101 rounds leave a median ±1 ms.
const HEADLINE_EXTRA = Number(process.env.CGFENCE_BENCH_STARTS_HEADLINE ?? 200);

interface Arm {
  name: string;
  start: () => number;
}

/**
 * The daemon's CPU so far, ms: all its threads' (utime + stime from /proc: 10 ms ticks, so only
 * a sum over many starts means anything) and its main thread's, where the JavaScript runs
 * (schedstat's sum_exec_runtime, in ns: a per-start figure that two arms can be compared on).
 */
function daemonCpuMs(pidFile: string): { all: number; main: number } {
  const pid = fs.readFileSync(pidFile, 'utf8').trim();
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  const main = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
  return { all: (Number(rest[11]) + Number(rest[12])) * (1000 / 100), main };
}

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
    const cpu = new Map<string, { all: number; main: number }>();
    const start = (arm: string, s: SandboxPaths, extra: string[]) => () => {
      const id = `bench-${n++}`;
      const c0 = daemonCpuMs(s.daemonPid);
      const t0 = process.hrtime.bigint();
      const r = spawnSync(
        'ctr',
        ['-a', s.containerdSocket, '-n', SANDBOX_NAMESPACE, 'run', '--rm', ...extra, TEST_IMAGE_NAME, id, '/bin/true'],
        { encoding: 'utf8' },
      );
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (r.status !== 0) throw new Error(`ctr run ${extra.join(' ')} failed: ${r.stderr}`);
      const c1 = daemonCpuMs(s.daemonPid);
      const was = cpu.get(arm) ?? { all: 0, main: 0 };
      cpu.set(arm, { all: was.all + c1.all - c0.all, main: was.main + c1.main - c0.main });
      return us;
    };
    const arms: Arm[] = [
      { name: 'plain', start: start('plain', p, []) },
      { name: 'errno', start: start('errno', p, ['--runc-binary', p.runc, ...POLICY]) },
      { name: 'launcher', start: start('launcher', p, ['--runc-binary', p.runc]) },
      { name: 'norules', start: start('norules', p, ['--runc-binary', p.runc, '--annotation', 'cgfence.io/mode=enforce']) },
      { name: 'off', start: start('off', p, ['--runc-binary', p.runc, ...POLICY, '--annotation', 'cgfence.io/mode=off']) },
      { name: 'kill', start: start('kill', k, ['--runc-binary', k.runc, ...POLICY]) },
      { name: 'plain-seccomp', start: start('plain-seccomp', p, ['--seccomp']) },
      { name: 'errno-seccomp', start: start('errno-seccomp', p, ['--seccomp', '--runc-binary', p.runc, ...POLICY]) },
    ];
    for (const a of arms) a.start(); // warm-up: image layers, page cache, the daemons' first attach
    cpu.clear();
    const t = rounds(RUNS, arms);
    const extra = rounds(HEADLINE_EXTRA, [arms[0], arms[1]]);
    const headline = { b: [...t.get('plain')!, ...extra.get('plain')!], f: [...t.get('errno')!, ...extra.get('errno')!] };
    const starts = (arm: string) => RUNS + (arm === 'plain' || arm === 'errno' ? HEADLINE_EXTRA : 0);
    const per = (arm: string) => ({ all: cpu.get(arm)!.all / starts(arm), main: cpu.get(arm)!.main / starts(arm) });
    const cpuNote = (arm: string) =>
      `; daemon CPU ${per(arm).all.toFixed(1)} ms per start, its main thread ${per(arm).main.toFixed(2)} ms ` +
      `(plain runc ${per('plain').all.toFixed(1)} / ${per('plain').main.toFixed(2)})`;
    const pair = (f: string, base = 'plain') => ({ b: t.get(base)!, f: t.get(f)! });
    const e = await attachMedians(p);
    const kd = await attachMedians(k);
    // Also the median of per-round differences: an arm and plain runc ran in the same round,
    // seconds apart, so the load's drift cancels better than in a difference of medians.
    const paired = (f: string, base = 'plain') => median(t.get(f)!.map((x, i) => x - t.get(base)![i])) / 1000;
    const delta = (f: string, base = 'plain') =>
      `+${((median(t.get(f)!) - median(t.get(base)!)) / 1000).toFixed(1)} ms (paired per round: ${paired(f, base).toFixed(1)} ms)`;
    const name = 'container start: ctr run --rm /bin/true';
    // Each round ran both arms: resampled as pairs (the headline interval), and each arm on its own.
    const [lo, hi] = ratioInterval(headline.b, headline.f, 0.9, 2000, true);
    const [ulo, uhi] = ratioInterval(headline.b, headline.f);
    if (process.env.CGFENCE_BENCH_RAW)
      fs.writeFileSync(process.env.CGFENCE_BENCH_RAW, JSON.stringify(Object.fromEntries([...t, ['headline', headline]])));
    const headlinePaired = median(headline.f.map((x, i) => x - headline.b[i])) / 1000;
    const pr = pairedRatio(headline.b, headline.f);

    // One pass-through call, runc's own against through the launcher, interleaved.
    const realRunc = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
    const call = (bin: string) => () => {
      const t0 = process.hrtime.bigint();
      spawnSync(bin, ['--root', `${dirs[0]}/no-runc-root`, 'state', 'none'], {
        env: { ...process.env, CGFENCE_REAL_RUNC: realRunc },
        stdio: 'ignore',
      });
      return Number(process.hrtime.bigint() - t0) / 1000;
    };
    const pt = rounds(PASS_THROUGH_CALLS, [
      { name: 'runc', start: call(realRunc) },
      { name: 'launcher', start: call(p.runc) },
    ]);

    return [
      result(
        name,
        'plain runc',
        'cgfence-runc + exec-allow policy',
        headline,
        `wall time of the whole ctr run, µs; +${((median(headline.f) - median(headline.b)) / 1000).toFixed(1)} ms (paired per round: ${headlinePaired.toFixed(1)} ms, as a ratio ${pr.ratio.toFixed(3)}, 90 % interval ${pr.lo.toFixed(3)}–${pr.hi.toFixed(3)}), 90 % bootstrap interval of the ratio ${lo.toFixed(3)}–${hi.toFixed(3)} (rounds resampled as pairs; each arm on its own: ${ulo.toFixed(3)}–${uhi.toFixed(3)}); of which the daemon's prepare ${e.prepare.toFixed(2)} ms and attach ${e.attach.toFixed(2)} ms (medians of ${e.n} attach records)${cpuNote('errno')}`,
      ),
      result(
        `${name} (split)`,
        'plain runc',
        'cgfence-runc, no annotation',
        pair('launcher'),
        `the launcher alone, no daemon asked; ${delta('launcher')}${cpuNote('launcher')}`,
      ),
      result(
        `${name} (split)`,
        'plain runc',
        'cgfence-runc, cgfence.io/mode=enforce (no rules)',
        pair('norules'),
        `prepare answers fence:false; ${delta('norules')}${cpuNote('norules')}`,
      ),
      result(
        `${name} (split)`,
        'plain runc',
        'cgfence-runc, exec-allow + mode=off',
        pair('off'),
        `prepare and attach, no fence; ${delta('off')}${cpuNote('off')}`,
      ),
      result(
        `${name} (split)`,
        'plain runc',
        'cgfence-runc + exec-allow, --exec-deny kill',
        pair('kill'),
        `no notify route; ${delta('kill')}, of which prepare ${kd.prepare.toFixed(2)} ms and attach ${kd.attach.toFixed(2)} ms; errno − kill = ${((median(t.get('errno')!) - median(t.get('kill')!)) / 1000).toFixed(1)} ms (paired ${paired('errno', 'kill').toFixed(1)} ms)${cpuNote('kill')}`,
      ),
      result(
        `${name} --seccomp`,
        'plain runc, default seccomp profile',
        'cgfence-runc + exec-allow policy, default seccomp profile',
        pair('errno-seccomp', 'plain-seccomp'),
        `both with containerd's default profile (ctr run --seccomp; Kubernetes' RuntimeDefault): ${delta('errno-seccomp', 'plain-seccomp')}${cpuNote('errno-seccomp')}`,
      ),
      result(
        'runc pass-through call (runc state)',
        'runc',
        'cgfence-runc → runc',
        { b: pt.get('runc')!, f: pt.get('launcher')! },
        `µs per call; +${((median(pt.get('launcher')!) - median(pt.get('runc')!)) / 1000).toFixed(2)} ms; ctr run --rm makes 3 (start, delete, delete) besides the create`,
      ),
    ];
  } finally {
    for (const d of dirs) {
      await sandboxDown(d).catch(() => undefined);
      fs.rmSync(d, { recursive: true, force: true });
    }
  }
}
