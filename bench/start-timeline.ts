// Where a fenced start spends its extra time: `ctr run --rm IMG /bin/true` with plain runc
// and through cgfence-runc with a policy (--exec-deny errno), interleaved, while the kernel's
// exec and exit tracepoints (sched_process_exec/exit, in a private tracefs instance) stamp
// every process of the start. Each start is cut into the same milestones (ctr's exec, the
// shim's, the runtime's create, runc's own exec, runc init, its parent's exit, runc create's
// exit, the launcher's exit, `runc start`, the entrypoint's exec and exit, the first delete,
// ctr's exit) and each row compares the medians of one segment; the daemon marks its own
// steps into the same trace (bench/daemon-marks.ts), for four rows of a fenced start's
// daemon side. Not in the default run: it
// needs tracefs, and it is a profile (docs/exec-performance.md, "Timeline"), not a target.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TEST_IMAGE_NAME } from '../src/image/oci-image';
import { SANDBOX_NAMESPACE, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { BenchResult, result } from './types';

const RUNS = Number(process.env.CGFENCE_BENCH_TIMELINE_STARTS ?? 80);
const TRACEFS = '/sys/kernel/tracing';

type Arm = 'plain' | 'fenced';
interface Stamp {
  t: number; // ms
  what: string; // "exec NAME" or "exit COMM"
}

const MILESTONES = [
  'ctr',
  'shim',
  'create',
  'runc',
  'init',
  'parent exit',
  'runc exit',
  'create exit',
  'start',
  'entrypoint',
  'entrypoint exit',
  'delete',
  'ctr exit',
] as const;
type Milestone = (typeof MILESTONES)[number];

/** The milestones of one start, or null when one is missing (that start is left out). */
function milestones(ev: Stamp[], arm: Arm): Map<Milestone, number> | null {
  const find = (what: string | string[], after: number) =>
    ev.find((e) => e.t >= after && (Array.isArray(what) ? what.includes(e.what) : e.what === what))?.t;
  const runtime = ['exec cgfence-runc', 'exec runc'];
  const m = new Map<Milestone, number>();
  const set = (k: Milestone, t: number | undefined) => (t === undefined ? false : (m.set(k, t), true));
  const shims = ev.filter((e) => e.what === 'exec containerd-shim-runc-v2');
  if (!set('ctr', find('exec ctr', 0)) || shims.length < 2 || !set('shim', shims[1].t)) return null;
  if (!set('create', find(runtime, m.get('shim')!))) return null;
  if (!set('runc', find('exec runc', m.get('create')!))) return null;
  if (!set('init', find('exec exe', m.get('runc')!))) return null;
  if (!set('parent exit', find('exit runc:[0:PARENT]', m.get('init')!))) return null;
  if (!set('runc exit', find('exit runc', m.get('parent exit')!))) return null;
  const launcherExit = arm === 'fenced' ? find('exit cgfence-runc', m.get('parent exit')!) : m.get('runc exit');
  if (!set('create exit', launcherExit)) return null;
  if (!set('start', find(runtime, m.get('create exit')!))) return null;
  if (!set('entrypoint', find('exec true', m.get('start')!))) return null;
  if (!set('entrypoint exit', find('exit true', m.get('entrypoint')!))) return null;
  if (!set('delete', find(runtime, m.get('entrypoint exit')!))) return null;
  if (!set('ctr exit', find('exit ctr', m.get('delete')!))) return null;
  return m;
}

/** The daemon's side of a fenced start (bench/daemon-marks.ts), cut against the launcher's and runc's milestones. */
const DAEMON_STEPS = [
  'daemon: launcher exec → prepare answered',
  'daemon: prepare answered → runc exec',
  'daemon: listener handed over → attach done',
  'daemon: runc exit → attach outcome pushed (negative: before)',
] as const;

function daemonSteps(ev: Stamp[], m: Map<Milestone, number>): Record<(typeof DAEMON_STEPS)[number], number> | null {
  const after = (what: string, t: number) => ev.find((e) => e.t >= t && e.what === what)?.t;
  const create = m.get('create')!;
  const reply = after('daemon reply', create);
  const handOff = after('daemon hand-off', create);
  const attached = handOff === undefined ? undefined : after('daemon attach-end', handOff);
  const pushed = after('daemon pushed', create);
  if (reply === undefined || attached === undefined || pushed === undefined) return null;
  return {
    [DAEMON_STEPS[0]]: reply - create,
    [DAEMON_STEPS[1]]: m.get('runc')! - reply,
    [DAEMON_STEPS[2]]: attached - handOff!,
    [DAEMON_STEPS[3]]: pushed - m.get('runc exit')!,
  } as Record<(typeof DAEMON_STEPS)[number], number>;
}

/** Stamps per start from a tracefs text buffer: runs between "BEGIN arm i" and "END" markers. */
function parse(trace: string): Array<{ arm: Arm; ev: Stamp[]; total: number }> {
  const out: Array<{ arm: Arm; ev: Stamp[]; total: number }> = [];
  let cur: { arm: Arm; ev: Stamp[]; begin: number } | null = null;
  for (const line of trace.split('\n')) {
    const m = / (\d+\.\d+): (\S+): (.*)$/.exec(line);
    if (!m) continue;
    const t = Number(m[1]) * 1000;
    const [, , ev, rest] = m;
    if (ev === 'tracing_mark_write') {
      if (rest.startsWith('BEGIN ')) cur = { arm: rest.split(' ')[1] as Arm, ev: [], begin: t };
      else if (rest.startsWith('END ') && cur) {
        out.push({ arm: cur.arm, ev: cur.ev, total: t - cur.begin });
        cur = null;
      } else if (rest.startsWith('cgfence ') && cur) {
        // The daemon's own marks (bench/daemon-marks.ts).
        cur.ev.push({ t, what: `daemon ${rest.slice('cgfence '.length).trim()}` });
      }
    } else if (cur && ev === 'sched_process_exec') {
      const f = /filename=(\S+)/.exec(rest)?.[1] ?? '';
      cur.ev.push({ t, what: `exec ${f.slice(f.lastIndexOf('/') + 1)}` });
    } else if (cur && ev === 'sched_process_exit' && rest.includes('group_dead=true')) {
      cur.ev.push({ t, what: `exit ${/comm=(\S+)/.exec(rest)?.[1] ?? ''}` });
    }
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  if (!fs.existsSync(`${TRACEFS}/instances`)) throw new Error(`start-timeline needs tracefs at ${TRACEFS} (run as root)`);
  const tag = crypto.randomBytes(3).toString('hex');
  const dir = `/run/cgfb-${tag}-tl`;
  const inst = `${TRACEFS}/instances/cgfence-bench-${process.pid}`;
  try {
    const p = await sandboxUp(dir, () => {}, {
      daemonEnv: {
        CGFENCE_EXEC_DENY: 'errno',
        NODE_OPTIONS: `--require ${path.join(__dirname, 'daemon-marks.js')}`,
        CGFENCE_BENCH_MARKER: `${inst}/trace_marker`,
      },
    });
    const args: Record<Arm, string[]> = {
      plain: [],
      fenced: ['--runc-binary', p.runc, '--annotation', 'cgfence.io/exec-allow=/bin/sh'],
    };
    let n = 0;
    const start = (arm: Arm) => {
      const r = spawnSync(
        'ctr',
        ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'run', '--rm', ...args[arm], TEST_IMAGE_NAME, `tl-${n++}`, '/bin/true'],
        {
          encoding: 'utf8',
        },
      );
      if (r.status !== 0) throw new Error(`ctr run (${arm}) failed: ${r.stderr}`);
    };
    for (let i = 0; i < 10; i++) start(i % 2 ? 'plain' : 'fenced'); // warm-up
    fs.mkdirSync(inst);
    fs.writeFileSync(`${inst}/buffer_size_kb`, '8192');
    for (const e of ['sched_process_exec', 'sched_process_exit']) fs.writeFileSync(`${inst}/events/sched/${e}/enable`, '1');
    const marker = fs.openSync(`${inst}/trace_marker`, 'w');
    const arms: Arm[] = ['plain', 'fenced'];
    for (let i = 0; i < RUNS; i++) {
      for (let j = 0; j < 2; j++) {
        const a = arms[(i + j) % 2];
        fs.writeSync(marker, `BEGIN ${a} ${i}`);
        start(a);
        fs.writeSync(marker, `END ${a} ${i}`);
      }
    }
    fs.closeSync(marker);
    fs.writeFileSync(`${inst}/tracing_on`, '0');
    const starts = parse(fs.readFileSync(`${inst}/trace`, 'utf8'));
    const seg = new Map<string, Record<Arm, number[]>>();
    let missingDaemonMarks = 0;
    const add = (k: string, arm: Arm, v: number) => {
      if (!seg.has(k)) seg.set(k, { plain: [], fenced: [] });
      seg.get(k)![arm].push(v * 1000);
    };
    for (const s of starts) {
      const m = milestones(s.ev, s.arm);
      if (!m) continue;
      for (let i = 1; i < MILESTONES.length; i++)
        add(`${MILESTONES[i - 1]} → ${MILESTONES[i]}`, s.arm, m.get(MILESTONES[i])! - m.get(MILESTONES[i - 1])!);
      add('whole start', s.arm, s.total);
      // The daemon's steps exist only in a fenced start: plain runc's side of each row is 0.
      if (s.arm === 'plain') for (const k of DAEMON_STEPS) add(k, 'plain', 0);
      else {
        const daemon = daemonSteps(s.ev, m);
        if (!daemon) missingDaemonMarks++;
        for (const k of DAEMON_STEPS) if (daemon) add(k, 'fenced', daemon[k]);
      }
    }
    if (missingDaemonMarks > RUNS / 2)
      throw new Error(
        `${missingDaemonMarks} of ${RUNS} fenced starts have no daemon marks (bench/daemon-marks.ts): is the daemon's profile hook loaded?`,
      );
    return [...seg].map(([k, v]) =>
      result(
        `start timeline: ${k}`,
        'plain runc',
        'cgfence-runc + exec-allow (errno)',
        { b: v.plain, f: v.fenced },
        'µs, medians of the segment over interleaved starts (ftrace exec/exit stamps); segments are medians, so they need not add up to the whole',
      ),
    );
  } finally {
    // The daemon first: it holds the instance's trace_marker open, and an instance in use cannot be removed.
    await sandboxDown(dir).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
    if (fs.existsSync(inst)) fs.rmdirSync(inst);
  }
}
