// Issue 8's figures: what learn mode costs. A learning cgroup gets what the daemon gives a
// cgfence.io/mode=learn container (the exec fence in learn mode with the learn backend taking
// its events, the syscall recorder, the network recorder); an unfenced cgroup runs the same
// loops while that learning goes on, interleaved. The loops run asynchronously so that the
// events of the learning side are taken in this process while they run, as the daemon would.
// Then the node-wide price of the sys_enter program: an unfenced cgroup's syscall loop with
// some other cgroup learning against the same loop with no learner at all.
// Last, how executables are mapped to image paths (docs/learn-mode.md, "Short-lived
// containers"): what the chosen way costs at attach (hold the container's root: one open)
// against the alternative, an index of the root filesystem taken at attach (a walk of the
// whole tree before the entrypoint may run). Host trees stand in for image roots.
import path from 'node:path';
import { cgroupId } from '../src/kernel/cgroup';
import { ExecFence } from '../src/kernel/exec-fence';
import { LearnSyscalls } from '../src/kernel/learn-syscalls';
import { fenceCgroupExecs } from '../src/fence/exec/cgroup-exec-fence';
import { ContainerRoot } from '../src/fence/learn/container-root';
import { LearnBackend } from '../src/fence/learn/learn-backend';
import { emptyPolicy } from '../src/policy/policy';
import { EXECS, RUNS, buildFixture, loopInAsync as loopIn } from './fixture-loop';
import { BenchScratch } from './scratch';
import { BenchResult, interleave, result } from './types';

const SYSCALLS = Number(process.env.CGFENCE_BENCH_SYSCALLS ?? 2_000_000);

function timeUs(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1000;
}

/** Per attach: holding the root, against walking it into an index (the alternative not taken). */
async function mappingAtAttach(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  for (const tree of ['/usr/bin', '/usr']) {
    let files = 0;
    const r = await interleave(
      RUNS,
      () =>
        timeUs(() => {
          ContainerRoot.open(process.pid)?.close();
        }),
      () =>
        timeUs(() => {
          const root = ContainerRoot.ofDir(tree);
          // An identity that is nowhere: the walk reads the whole tree, as an index at attach would.
          if (root.findByIdentity({ dev: 0n, ino: 0n }) !== null) throw new Error('learn bench: found an impossible identity');
          files = root.indexedFiles;
        }),
    );
    out.push(
      result(
        `learn: mapping at attach, ${tree} as the image`,
        'root held (open /proc/PID/root)',
        'root filesystem indexed (walk)',
        r,
        `µs per container start; ${files} regular files indexed`,
      ),
    );
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  const scratch = new BenchScratch('learn');
  const { dir, pinDir } = scratch;
  let learn: LearnBackend | null = null;
  let exec: ExecFence | null = null;
  let execEvents = 0;
  try {
    const learnCg = scratch.cgroup('learning');
    const plainCg = scratch.cgroup('plain');
    const execLoop = buildFixture(dir, 'exec-loop');
    const noop = buildFixture(dir, 'noop');
    const sysLoop = buildFixture(dir, 'syscall-loop');
    const l = new LearnBackend({
      pinDir: path.join(pinDir, 'learn'),
      stateDir: path.join(dir, 'state'),
      cgroupMode: 'auto',
      sink: { write: () => {}, toWallNs: (n) => n, owner: () => undefined },
    });
    learn = l;
    exec = ExecFence.open({
      pinDir: path.join(pinDir, 'exec'),
      onEvents: (evs) => {
        execEvents += evs.length;
        l.onExecEvents(evs);
      },
    });
    fenceCgroupExecs(exec, { cgroupPath: learnCg, rootPid: process.pid, mode: 'learn', execAllow: [] });
    const policy = { ...emptyPolicy(), mode: 'learn' as const };
    const ctx = {
      namespace: 'bench',
      id: 'learning',
      bundle: '',
      pid: process.pid,
      cgroupPath: learnCg,
      cgroupId: cgroupId(learnCg),
      policy,
      annotations: {},
      state: {},
    };
    l.attach(ctx);

    const execArgs = [execLoop, String(EXECS), noop];
    const sysArgs = [sysLoop, String(SYSCALLS)];
    await loopIn(learnCg, execArgs); // warm caches on both sides
    await loopIn(plainCg, execArgs);
    const execs = await interleave(
      RUNS,
      () => loopIn(plainCg, execArgs),
      () => loopIn(learnCg, execArgs),
    );
    const syscalls = await interleave(
      RUNS,
      () => loopIn(plainCg, sysArgs),
      () => loopIn(learnCg, sysArgs),
    );
    const learned = l.learnedOf('bench', 'learning')[0];
    if (!learned?.exec.some((e) => e.path === noop))
      throw new Error(`learn bench: the learning side did not learn ${noop} (${execEvents} exec events)`);
    if (!learned.syscalls.names.includes('getppid')) throw new Error('learn bench: the learning side did not learn getppid');
    l.detach(ctx);
    exec.unfence(cgroupId(learnCg));

    // The sys_enter and sched_process_exec programs are attached only while something
    // learns: their node-wide price, on syscalls and on execs.
    const sys = LearnSyscalls.open({ pinDir: path.join(pinDir, 'sys-only') });
    let nodeWide;
    let nodeWideExecs;
    try {
      const other = cgroupId(learnCg);
      const withLearner = async (argv: string[]) => {
        sys.add(other);
        try {
          return await loopIn(plainCg, argv);
        } finally {
          sys.remove(other);
        }
      };
      nodeWide = await interleave(
        RUNS,
        () => loopIn(plainCg, sysArgs),
        () => withLearner(sysArgs),
      );
      nodeWideExecs = await interleave(
        RUNS,
        () => loopIn(plainCg, execArgs),
        () => withLearner(execArgs),
      );
    } finally {
      sys.close({ detach: true });
    }
    return [
      result(
        'learn: exec loop',
        'unfenced cgroup',
        'learning cgroup (exec events taken, kernel exec record with path, path resolved)',
        execs,
        `${EXECS} fork+exec per run, µs per fork+exec+wait; ${execEvents} exec events learned`,
      ),
      result(
        'learn: syscall loop',
        'unfenced cgroup',
        'learning cgroup (syscall and network recorders)',
        syscalls,
        `${SYSCALLS} getppid per run, µs per 1000 syscalls`,
      ),
      result(
        'learn: syscall loop, node-wide',
        'no container learning',
        'another cgroup learning (sys_enter attached)',
        nodeWide,
        `${SYSCALLS} getppid per run in an unfenced cgroup, µs per 1000 syscalls`,
      ),
      result(
        'learn: exec loop, node-wide',
        'no container learning',
        'another cgroup learning (sys_enter and sched_process_exec attached)',
        nodeWideExecs,
        `${EXECS} fork+exec per run in an unfenced cgroup, µs per fork+exec+wait`,
      ),
      ...(await mappingAtAttach()),
    ];
  } finally {
    exec?.close({ detach: true });
    learn?.close({ detach: true });
    await scratch.cleanup();
  }
}
