// What the in-container exec benchmarks share (seccomp-exec, exec-load): a sandbox with an
// image holding the static fixtures, ctr, the exec-mix fixture's output, the daemon's CPU
// time and the notify loop's counters.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TEST_IMAGE_CONFIG, buildOciImage, testImageFiles } from '../src/image/oci-image';
import { importImage } from '../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { NotifyStats, projectRoot } from '../src/native';
import { benchSandboxDir, ctr } from './sandbox';

export const IMAGE = 'cgfence.local/bench-exec:latest';
export const FX = '/opt/fx';
/** exec-allow of a fenced bench container: the loops and the no-op, not /opt/fx/forbidden. */
export const ALLOW = `cgfence.io/exec-allow=/bin/sh,${FX}/exec-loop,${FX}/exec-mix,${FX}/noop`;

export interface BenchSandbox {
  p: SandboxPaths;
  daemonPid: number;
  started: string[];
  down(): Promise<void>;
}

/** A sandbox whose daemon runs with `daemonEnv`, and the bench image in it. */
export async function benchSandbox(daemonEnv: Record<string, string>): Promise<BenchSandbox> {
  const dir = benchSandboxDir();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-bench-cx-'));
  const p = await sandboxUp(dir, undefined, { daemonEnv });
  const sb: BenchSandbox = {
    p,
    daemonPid: Number(fs.readFileSync(p.daemonPid, 'utf8').trim()),
    started: [],
    async down() {
      for (const id of sb.started) {
        spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'task', 'kill', '-s', 'SIGKILL', id]);
        spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'task', 'delete', '--force', id]);
        spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'containers', 'delete', id]);
      }
      await sandboxDown(dir);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
  try {
    const files = [...testImageFiles(), { path: '/opt', dir: true as const }, { path: FX, dir: true as const }];
    const build = (src: string, name: string) => {
      const out = path.join(tmp, name);
      execFileSync('gcc', ['-static', '-O2', '-o', out, src]);
      files.push({ path: `${FX}/${name}`, source: out, mode: 0o755 });
    };
    build(path.join(projectRoot(), 'bench', 'fixtures', 'exec-loop.c'), 'exec-loop');
    build(path.join(projectRoot(), 'bench', 'fixtures', 'noop.c'), 'noop');
    build(path.join(projectRoot(), 'bench', 'fixtures', 'noop.c'), 'forbidden'); // same program, another file
    build(path.join(projectRoot(), 'test', 'fixtures', 'exec-mix.c'), 'exec-mix');
    build(path.join(projectRoot(), 'bench', 'fixtures', 'deny-loop.c'), 'deny-loop');
    build(path.join(projectRoot(), 'bench', 'fixtures', 'syscall-loop.c'), 'syscall-loop');
    const tar = path.join(tmp, 'image.tar');
    await buildOciImage({ name: IMAGE, outFile: tar, files, config: TEST_IMAGE_CONFIG });
    await importImage(p.dir, tar, SANDBOX_NAMESPACE);
  } catch (e) {
    await sb.down();
    throw e;
  }
  return sb;
}

/** A container sleeping in the background, fenced (through cgfence-runc, ALLOW) or plain runc. */
export function startContainer(sb: BenchSandbox, id: string, fenced: boolean, annotations: string[] = [ALLOW]): void {
  const extra = fenced ? ['--runc-binary', sb.p.runc, ...annotations.flatMap((a) => ['--annotation', a])] : [];
  ctr(sb.p, ['run', '-d', ...extra, IMAGE, id, '/bin/sh', '-c', 'sleep 36000']);
  sb.started.push(id);
}

/** The two sides of a comparison: n containers fenced (ALLOW) and n plain, named for tag. */
export function startSides(sb: BenchSandbox, n: number, tag: string): { fenced: string[]; plain: string[] } {
  const fenced = Array.from({ length: n }, (_, i) => `${tag}-f${i}`);
  const plain = Array.from({ length: n }, (_, i) => `${tag}-p${i}`);
  for (let i = 0; i < n; i++) {
    startContainer(sb, fenced[i], true);
    startContainer(sb, plain[i], false);
  }
  return { fenced, plain };
}

let execN = 0;
/** `ctr task exec` without blocking the event loop, so that many containers exec at once. */
export function execAsync(p: SandboxPaths, id: string, argv: string[], timeoutMs = 600_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'task', 'exec', '--exec-id', `b${execN++}`, id, ...argv], {
      timeout: timeoutMs,
    });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('close', (status) =>
      status === 0 ? resolve(out) : reject(new Error(`ctr task exec ${id} ${argv.join(' ')}: status ${status}: ${err}`)),
    );
  });
}

/** One exec-mix line (test/fixtures/exec-mix.c). */
export interface MixRun {
  execs: number;
  allowed: number;
  denied: number;
  killed: number;
  bypass: number;
  other: number;
  seconds: number;
  hist: Map<number, number>;
}

export function parseMix(out: string): MixRun {
  const m = /execs=(\d+) allowed=(\d+) denied=(\d+) killed=(\d+) bypass=(\d+) other=(\d+) .*seconds=([\d.]+) hist=(\S*)/.exec(out);
  if (!m) throw new Error(`exec-mix printed ${JSON.stringify(out)}`);
  const hist = new Map<number, number>();
  for (const kv of m[8].split(',').filter(Boolean)) {
    const [k, v] = kv.split(':').map(Number);
    hist.set(k, v);
  }
  const [execs, allowed, denied, killed, bypass, other] = m.slice(1, 7).map(Number);
  return { execs, allowed, denied, killed, bypass, other, seconds: Number(m[7]), hist };
}

/** Percentile (upper bound of its bucket, µs) of merged { upper bound: count } histograms. */
export function percentile(hists: Array<Map<number, number> | Record<string, number>>, q: number): number {
  const merged = new Map<number, number>();
  for (const h of hists) {
    for (const [k, v] of h instanceof Map ? h : Object.entries(h)) merged.set(Number(k), (merged.get(Number(k)) ?? 0) + v);
  }
  const keys = [...merged.keys()].sort((a, b) => a - b);
  const total = keys.reduce((s, k) => s + merged.get(k)!, 0);
  if (!total) return 0;
  const want = Math.floor(q * (total - 1)) + 1;
  let seen = 0;
  for (const k of keys) {
    seen += merged.get(k)!;
    if (seen >= want) return k;
  }
  return keys[keys.length - 1];
}

/** exec-mix runs of the unfenced (b) and the fenced (f) side. */
export type SideRuns = Record<'b' | 'f', MixRun[]>;

/** Each side's fork+execve+wait p50/p99 over all its runs: `unfenced 510/900 µs, fenced 530/1100 µs`. */
export function sidePercentiles(runs: SideRuns): string {
  const p = (side: 'b' | 'f', q: number) =>
    percentile(
      runs[side].map((x) => x.hist),
      q,
    );
  return `unfenced ${p('b', 0.5)}/${p('b', 0.99)} µs, fenced ${p('f', 0.5)}/${p('f', 0.99)} µs`;
}

/** The histogram of `after` minus `before` ({ upper bound: count }). */
export function histDelta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) d[k] = v - (before[k] ?? 0);
  return d;
}

/** The daemon's CPU time so far (user + system, every thread, the native notify threads included), ms. */
let clkTck = 0;
export function daemonCpuMs(pid: number): number {
  clkTck ||= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
  return (ticks * 1000) / clkTck;
}

export function notifyStats(p: SandboxPaths): NotifyStats | null {
  const out = execFileSync(process.execPath, [path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js'), 'status', '--json'], {
    encoding: 'utf8',
    env: { ...process.env, CGFENCE_SOCKET: p.socket },
  });
  return (JSON.parse(out) as { kernel: { backends: { exec: { notify?: NotifyStats } } } }).kernel.backends.exec.notify ?? null;
}

/** Mean ns per notification of each stage of a decision (native/seccomp-notify.cc, Handle). */
export function profile(n0: NotifyStats, n1: NotifyStats): string {
  const n = n1.notifications - n0.notifications;
  if (!n) return '-';
  return Object.keys(n1.profileNs)
    .map((k) => {
      const key = k as keyof NotifyStats['profileNs'];
      return `${k} ${((n1.profileNs[key] - n0.profileNs[key]) / n).toFixed(0)}`;
    })
    .join(', ');
}
