// What runc itself spends on a seccomp listener hand-off, without containerd or cgfence: the
// price `--exec-deny errno` pays at every start (its config routes execve/execveat to the
// notify loop through listenerPath), which no change of cgfence's can remove.
// `runc create` of the same busybox bundle, interleaved, three ways: no seccomp; an
// execve/execveat rule answered in the kernel (SCMP_ACT_ERRNO); the same rule as
// SCMP_ACT_NOTIFY with a listenerPath, where a socket of this process takes the connection
// (runc waits for no answer). NOTIFY / ERRNO is the hand-off alone: runc's init sends the
// listener fd to its parent, which dials the socket and sends the container's state with it.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BenchScratch } from './scratch';
import { BenchResult, median, result } from './types';

const RUNS = Number(process.env.CGFENCE_BENCH_RUNC_CREATES ?? 41);

type Variant = 'none' | 'errno' | 'notify';

export async function run(): Promise<BenchResult[]> {
  const scratch = new BenchScratch('runc-listener');
  const root = path.join(scratch.dir, 'runc-root');
  const bundle = path.join(scratch.dir, 'bundle');
  const sock = path.join(scratch.dir, 'agent.sock');
  const server = net.createServer((c) => c.on('error', () => undefined).resume());
  const created: string[] = [];
  try {
    // A static busybox is the whole rootfs: /bin/true is all the container would run.
    const rootfs = path.join(bundle, 'rootfs');
    for (const d of ['bin', 'proc', 'dev', 'sys', 'tmp']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
    const busybox = execFileSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).trim();
    fs.copyFileSync(busybox, path.join(rootfs, 'bin', 'busybox'));
    fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    fs.symlinkSync('busybox', path.join(rootfs, 'bin', 'true'));
    execFileSync('runc', ['spec'], { cwd: bundle });
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as {
      process: { args: string[]; terminal: boolean };
      root: { readonly: boolean };
      linux: Record<string, unknown>;
    };
    spec.process.args = ['/bin/true'];
    spec.process.terminal = false;
    spec.root.readonly = false;
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(sock, resolve));
    const rule = (action: string) => ({ names: ['execve', 'execveat'], action });
    const configs: Record<Variant, unknown> = {
      none: spec,
      errno: { ...spec, linux: { ...spec.linux, seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [rule('SCMP_ACT_ERRNO')] } } },
      notify: {
        ...spec,
        linux: {
          ...spec.linux,
          seccomp: {
            defaultAction: 'SCMP_ACT_ALLOW',
            listenerPath: sock,
            listenerMetadata: 'bench/runc-listener',
            syscalls: [rule('SCMP_ACT_NOTIFY')],
          },
        },
      },
    };
    let n = 0;
    const create = async (v: Variant): Promise<number> => {
      fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(configs[v]));
      const id = `cgfence-bench-rl-${process.pid}-${n++}`;
      const t0 = process.hrtime.bigint();
      // No pipes: the container's init inherits runc's stdio and would hold them open.
      const r = spawnSync(
        'runc',
        [
          '--root',
          root,
          '--log',
          path.join(scratch.dir, 'runc.log'),
          'create',
          '--bundle',
          bundle,
          '--pid-file',
          path.join(scratch.dir, 'pid'),
          id,
        ],
        {
          stdio: 'ignore',
        },
      );
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (r.status !== 0)
        throw new Error(
          `runc create (${v}) failed (exit ${r.status}); runc's log: ${fs.readFileSync(path.join(scratch.dir, 'runc.log'), 'utf8').slice(-500)}`,
        );
      created.push(id);
      spawnSync('runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
      created.pop();
      // The listener's connection is taken (and dropped) between runs.
      await new Promise((resolve) => setImmediate(resolve));
      return us;
    };
    const variants: Variant[] = ['none', 'errno', 'notify'];
    for (const v of variants) await create(v); // warm-up
    const t: Record<Variant, number[]> = { none: [], errno: [], notify: [] };
    for (let i = 0; i < RUNS; i++) {
      for (let j = 0; j < variants.length; j++) {
        const v = variants[(i + j) % variants.length];
        t[v].push(await create(v));
      }
    }
    const paired = median(t.notify.map((x, i) => x - t.errno[i])) / 1000;
    return [
      result(
        'runc create: seccomp listener hand-off',
        'execve/execveat SCMP_ACT_ERRNO',
        'the same rule SCMP_ACT_NOTIFY + listenerPath',
        { b: t.errno, f: t.notify },
        `runc alone, µs; +${((median(t.notify) - median(t.errno)) / 1000).toFixed(1)} ms (paired per round: ${paired.toFixed(1)} ms): what --exec-deny errno adds to every start inside runc`,
      ),
      result(
        'runc create: seccomp listener hand-off',
        'no seccomp',
        'execve/execveat SCMP_ACT_NOTIFY + listenerPath',
        { b: t.none, f: t.notify },
        `runc alone, µs; the filter itself (no seccomp → ERRNO rule): ${(median(t.errno) / median(t.none)).toFixed(3)}`,
      ),
    ];
  } finally {
    for (const id of created) spawnSync('runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    server.close();
    await scratch.cleanup();
  }
}
