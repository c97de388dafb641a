// The loops the node-level benchmarks time: C programs of bench/fixtures/ that repeat one
// operation (fork+exec, a syscall, a round trip) and print what one took in ns, built into a
// scratch directory and run inside a cgroup, so that only the cgroup's fence judges them.
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from '../src/native';

/** fork+execs in one run of the exec loop, and interleaved runs per figure. */
export const EXECS = Number(process.env.CGFENCE_BENCH_EXECS ?? 2000);
export const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);

export interface FixtureBuild {
  /** Linked against the host's libc and loader instead of static; the output gets `-dynamic`. */
  dynamic?: boolean;
  /** More gcc flags (e.g. -pthread). */
  flags?: string[];
}

/** Compiles bench/fixtures/NAME.c into dir; returns the program's path. */
export function buildFixture(dir: string, name: string, opts: FixtureBuild = {}): string {
  const out = path.join(dir, opts.dynamic ? `${name}-dynamic` : name);
  execFileSync('gcc', [
    ...(opts.dynamic ? [] : ['-static']),
    '-O2',
    ...(opts.flags ?? []),
    '-o',
    out,
    path.join(projectRoot(), 'bench', 'fixtures', `${name}.c`),
  ]);
  return out;
}

/** argv run with its process moved into cgroup first (null: where this process is). */
function inCgroup(cgroup: string | null, argv: string[]): [string, string[]] {
  if (cgroup === null) return [argv[0], argv.slice(1)];
  return ['/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...argv]];
}

/** Runs a fixture loop and returns what it printed (ns per operation) in µs. */
export function loopIn(cgroup: string | null, argv: string[]): number {
  const [file, args] = inCgroup(cgroup, argv);
  return Number(execFileSync(file, args, { encoding: 'utf8' }).trim()) / 1000;
}

/** The exec loop (bench/fixtures/exec-loop.c): EXECS fork+exec+wait of target; µs per one. */
export function execLoopIn(cgroup: string | null, loop: string, target: string): number {
  return loopIn(cgroup, [loop, String(EXECS), target]);
}

const execFileAsync = promisify(execFile);

/** loopIn without blocking this process: events the loop causes can be taken meanwhile. */
export async function loopInAsync(cgroup: string | null, argv: string[]): Promise<number> {
  const [file, args] = inCgroup(cgroup, argv);
  const { stdout } = await execFileAsync(file, args, { encoding: 'utf8' });
  return Number(stdout.trim()) / 1000;
}
