// Issue 5's figure: what seccomp user notification costs an exec. The same static loop
// (fork, execve of a static no-op, wait) runs inside two containers of one sandbox: one
// exec-fenced in enforce mode, so every execve goes through the native notify loop and then
// the kernel fence, and one without a policy. Interleaved runs, medians; the difference of
// the medians is the price of one notified exec.
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TEST_IMAGE_CONFIG, buildOciImage, testImageFiles } from '../src/image/oci-image';
import { importImage } from '../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { projectRoot } from '../src/native';
import { BenchResult, interleave, median, result } from './types';

const ITERATIONS = Number(process.env.CGFENCE_BENCH_EXECS ?? 2000);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 9);
const IMAGE = 'cgfence.local/bench-exec:latest';

async function buildImage(p: SandboxPaths, tmp: string): Promise<void> {
  const files = [...testImageFiles(), { path: '/opt', dir: true as const }, { path: '/opt/fx', dir: true as const }];
  for (const name of ['exec-loop', 'noop']) {
    const out = path.join(tmp, name);
    execFileSync('gcc', ['-static', '-O2', '-o', out, path.join(projectRoot(), 'bench', 'fixtures', `${name}.c`)]);
    files.push({ path: `/opt/fx/${name}`, source: out, mode: 0o755 });
  }
  const tar = path.join(tmp, 'image.tar');
  await buildOciImage({ name: IMAGE, outFile: tar, files, config: TEST_IMAGE_CONFIG });
  await importImage(p.dir, tar, SANDBOX_NAMESPACE);
}

function ctr(p: SandboxPaths, args: string[]): string {
  const r = spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, ...args], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`ctr ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function notifications(p: SandboxPaths): number {
  const out = execFileSync(process.execPath, [path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js'), 'status', '--json'], {
    encoding: 'utf8', env: { ...process.env, CGFENCE_SOCKET: p.socket },
  });
  return (JSON.parse(out) as { kernel: { backends: { exec: { notify: { notifications: number } } } } }).kernel.backends.exec.notify.notifications;
}

export async function run(): Promise<BenchResult[]> {
  const dir = `/run/cgfb-${crypto.randomBytes(3).toString('hex')}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-bench-scx-'));
  const p = await sandboxUp(dir);
  const fencedId = 'bench-fenced';
  const plainId = 'bench-plain';
  try {
    await buildImage(p, tmp);
    ctr(p, ['run', '-d', '--runc-binary', p.runc, '--annotation', 'cgfence.io/exec-allow=/bin/sh,/opt/fx/exec-loop,/opt/fx/noop', IMAGE, fencedId, '/bin/sh', '-c', 'sleep 3600']);
    ctr(p, ['run', '-d', '--runc-binary', p.runc, IMAGE, plainId, '/bin/sh', '-c', 'sleep 3600']);
    let n = 0;
    const loop = (id: string) => Number(ctr(p, ['task', 'exec', '--exec-id', `x${n++}`, id, '/opt/fx/exec-loop', String(ITERATIONS), '/opt/fx/noop']).trim()) / 1000;
    loop(fencedId); // warm both sides
    loop(plainId);
    const before = notifications(p);
    const r = await interleave(RUNS, () => loop(plainId), () => loop(fencedId));
    const perRun = (notifications(p) - before) / RUNS;
    const delta = median(r.f) - median(r.b);
    return [result('exec loop in a container: notify path on vs unfenced', 'unfenced container', 'exec-fenced container (seccomp notify + kernel fence)', r,
      `${ITERATIONS} fork+exec per run, µs per fork+exec+wait; ${perRun.toFixed(0)} notifications per run (each execve, plus ctr's exec); ${delta.toFixed(1)} µs per notified exec`)];
  } finally {
    for (const id of [fencedId, plainId]) {
      spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'task', 'kill', '-s', 'SIGKILL', id]);
      spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'task', 'delete', '--force', id]);
      spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'containers', 'delete', id]);
    }
    await sandboxDown(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
