// The embedded default: a private containerd and a cgfence daemon under one directory, with
// the small test image imported, so cgfence can be tried where no containerd is set up.
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TEST_IMAGE_NAME, buildTestImage } from '../image/oci-image';
import { projectRoot } from '../native';
import { containerdPaths, importImage, isRunning as containerdRunning, startContainerd, stopContainerd } from './containerd-process';
import { request } from '../daemon/daemon-client';

export const DEFAULT_SANDBOX_DIR = '/run/cgfence-sandbox';
export const SANDBOX_NAMESPACE = 'default';

export interface SandboxPaths {
  dir: string;
  socket: string;
  auditLog: string;
  stateDir: string;
  pinDir: string;
  daemonPid: string;
  daemonLog: string;
  env: string;
  runc: string;
  containerdSocket: string;
  imageTar: string;
  metrics: string;
  spoolDir: string;
}

export function sandboxPaths(dirArg: string): SandboxPaths {
  const dir = path.resolve(dirArg);
  const tag = crypto.createHash('sha256').update(dir).digest('hex').slice(0, 10);
  return {
    dir,
    socket: path.join(dir, 'cgfence.sock'),
    auditLog: path.join(dir, 'audit.log'),
    stateDir: path.join(dir, 'state'),
    // Per-sandbox pins: two sandboxes (or a sandbox and a node daemon) never share maps.
    pinDir: `/sys/fs/bpf/cgfence-sbx-${tag}`,
    daemonPid: path.join(dir, 'daemon.pid'),
    daemonLog: path.join(dir, 'daemon.log'),
    env: path.join(dir, 'env'),
    runc: path.join(projectRoot(), 'build', 'Release', 'cgfence-runc'),
    containerdSocket: containerdPaths(dir).socket,
    imageTar: path.join(dir, 'test-image.tar'),
    metrics: path.join(dir, 'metrics.sock'),
    spoolDir: path.join(dir, 'spool'),
  };
}

function pidAlive(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return null;
    process.kill(pid, 0);
    // A recycled pid is not our daemon.
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('daemon') ? pid : null;
  } catch {
    return null;
  }
}

function realRunc(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('runc is not installed (run `bash scripts/setup.sh`)');
  }
}

export type Progress = (msg: string) => void;

// Returns as soon as the daemon answers, and gives up at once if it dies: the long timeout only
// matters on slow machines (an emulated VM takes over 30 s to load every BPF object).
async function waitDaemon(p: SandboxPaths, pid: number, timeoutMs = 180_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < end) {
    try {
      await request(p.socket, { op: 'status' }, 5000);
      return;
    } catch (e) {
      last = (e as Error).message;
    }
    try {
      process.kill(pid, 0);
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = fs.existsSync(p.daemonLog) ? fs.readFileSync(p.daemonLog, 'utf8').split('\n').slice(-15).join('\n') : '';
  throw new Error(`the cgfence daemon did not come up (${last}); last lines of ${p.daemonLog}:\n${tail}`);
}

function writeEnv(p: SandboxPaths): void {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  fs.writeFileSync(
    p.env,
    [
      '# cgfence sandbox: source this file, then e.g.',
      `#   ctr run --rm --runc-binary "$CGFENCE_RUNC" --annotation cgfence.io/exec-allow=/bin/sh ${TEST_IMAGE_NAME} demo sh -c 'echo hi'`,
      `export CONTAINERD_ADDRESS=${q(p.containerdSocket)}`,
      `export CONTAINERD_NAMESPACE=${q(SANDBOX_NAMESPACE)}`,
      `export CGFENCE_RUNC=${q(p.runc)}`,
      `export CGFENCE_SOCKET=${q(p.socket)}`,
      `export CGFENCE_AUDIT_LOG=${q(p.auditLog)}`,
      // `cgfence` itself, as the hints name it.
      `export PATH=${q(path.join(projectRoot(), 'bin'))}:"$PATH"`,
      '',
    ].join('\n'),
  );
}

export interface SandboxOptions {
  /** The daemon's config file (profiles, selectors); it reloads on changes and SIGHUP. */
  config?: string;
  /**
   * Settings for the daemon on top of this process's environment, which the daemon inherits
   * whole: CGFENCE_EXEC_DENY, CGFENCE_FAIL_MODE and the other CGFENCE_* settings reach it,
   * except the paths the sandbox gives as flags (socket, state, audit log, pins, metrics,
   * spool), which are the sandbox's own.
   */
  daemonEnv?: Record<string, string>;
}

/** Starts whatever of containerd and the daemon is not running (idempotent). */
export async function sandboxUp(dir: string, progress: Progress = () => {}, opts: SandboxOptions = {}): Promise<SandboxPaths> {
  const p = sandboxPaths(dir);
  fs.mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  if (!fs.existsSync(p.runc)) throw new Error(`${p.runc} is missing: run \`npm run build\``);

  // The runc.v2 shim inherits containerd's environment and so does cgfence-runc: this is
  // how the launcher finds this sandbox's daemon and the real runc.
  const runtimeEnv = {
    CGFENCE_SOCKET: p.socket,
    CGFENCE_REAL_RUNC: realRunc(),
    CGFENCE_FAIL_MODE: process.env.CGFENCE_FAIL_MODE ?? 'closed',
    CGFENCE_SPOOL_DIR: p.spoolDir,
    CGFENCE_NODE_HINT: path.join(p.stateDir, 'launcher-node.conf'),
  };
  progress(containerdRunning(p.dir) ? 'containerd: already running' : 'containerd: starting');
  const ctd = await startContainerd(p.dir, { env: runtimeEnv });
  progress(`containerd: ${ctd.version} (pid ${ctd.pid}) on ${ctd.socket}`);

  let pid = pidAlive(p.daemonPid);
  if (pid) {
    progress(`daemon: already running (pid ${pid})`);
  } else {
    progress('daemon: starting');
    const main = path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
    const log = fs.openSync(p.daemonLog, 'a');
    const env: NodeJS.ProcessEnv = { ...process.env, ...opts.daemonEnv };
    const child = spawn(
      process.execPath,
      [
        main,
        'daemon',
        '--containerd-socket',
        p.containerdSocket,
        '--state-dir',
        p.stateDir,
        '--audit-log',
        p.auditLog,
        '--socket',
        p.socket,
        '--pin-dir',
        p.pinDir,
        '--metrics-address',
        p.metrics,
        '--spool-dir',
        p.spoolDir,
        ...(opts.config ? ['--config', path.resolve(opts.config)] : []),
      ],
      { detached: true, stdio: ['ignore', log, log], env },
    );
    fs.closeSync(log);
    child.unref();
    pid = child.pid!;
    fs.writeFileSync(p.daemonPid, `${pid}\n`);
    await waitDaemon(p, pid);
    progress(`daemon: running (pid ${pid}) on ${p.socket}`);
  }

  const images = execFileSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, 'images', 'ls', '-q'], { encoding: 'utf8' });
  if (!images.split('\n').includes(TEST_IMAGE_NAME)) {
    progress(`image: building ${TEST_IMAGE_NAME} from busybox-static`);
    await buildTestImage(p.imageTar);
    await importImage(p.dir, p.imageTar, SANDBOX_NAMESPACE);
    progress(`image: imported ${TEST_IMAGE_NAME}`);
  } else {
    progress(`image: ${TEST_IMAGE_NAME} present`);
  }
  writeEnv(p);
  progress(`env: ${p.env}`);
  return p;
}

/** Stops the daemon (detaching every fence) and containerd; leaves nothing attached or pinned. */
export async function sandboxDown(dir: string, progress: Progress = () => {}): Promise<void> {
  const p = sandboxPaths(dir);
  const pid = pidAlive(p.daemonPid);
  if (pid) {
    progress(`daemon: stopping (pid ${pid}), detaching every fence`);
    try {
      await request(p.socket, { op: 'shutdown', detach: true }, 10_000);
    } catch {
      process.kill(pid, 'SIGTERM');
    }
    const end = Date.now() + 15_000;
    while (Date.now() < end) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* exited */
    }
  }
  fs.rmSync(p.daemonPid, { force: true });
  if (containerdRunning(p.dir)) progress('containerd: stopping, with its shims and containers');
  await stopContainerd(p.dir);
  // Whatever a killed daemon left pinned goes too: down means nothing is left attached.
  if (fs.existsSync(p.pinDir)) fs.rmSync(p.pinDir, { recursive: true, force: true });
  progress('sandbox: down');
}

export interface SandboxStatus {
  dir: string;
  daemon: number | null;
  containerd: boolean;
  env: string | null;
}

export function sandboxStatus(dir: string): SandboxStatus {
  const p = sandboxPaths(dir);
  return { dir: p.dir, daemon: pidAlive(p.daemonPid), containerd: containerdRunning(p.dir), env: fs.existsSync(p.env) ? p.env : null };
}
