import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ContainerdClient } from '../containerd/client';

/** Where a private containerd under DIR keeps its files. */
export interface ContainerdPaths {
  dir: string;
  base: string;
  root: string;
  state: string;
  socket: string;
  ttrpcSocket: string;
  config: string;
  log: string;
  pidFile: string;
  /** grpc address: unix://SOCKET */
  address: string;
}

export interface StartContainerdOptions {
  /** Extra environment for containerd; its shims and runtimes inherit it. */
  env?: Record<string, string>;
  containerdBinary?: string;
  healthTimeoutMs?: number;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** TOML appended to the generated config.toml (e.g. CRI runtime handlers). */
  extraConfig?: string;
  /** Load the CRI plugin (off by default: it wants CNI, and nothing else here needs it). */
  enableCri?: boolean;
}

export interface StartedContainerd extends ContainerdPaths {
  pid: number;
  version: string;
  /** false when a containerd for DIR was already running and was reused. */
  started: boolean;
}

export interface StopContainerdOptions {
  /** Grace period after SIGTERM before SIGKILL. */
  timeoutMs?: number;
  /**
   * Also kill the runc.v2 shims of this containerd and their containers, and
   * unmount what is left under DIR (default true). false simulates a containerd
   * restart: the shims keep the containers running and the next containerd
   * reconnects to them.
   */
  killShims?: boolean;
}

// sockaddr_un.sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH = 107;

export function containerdPaths(dir: string): ContainerdPaths {
  const abs = path.resolve(dir);
  const base = path.join(abs, 'containerd');
  const socket = path.join(base, 'containerd.sock');
  return {
    dir: abs,
    base,
    root: path.join(base, 'root'),
    state: path.join(base, 'state'),
    socket,
    ttrpcSocket: socket + '.ttrpc',
    config: path.join(base, 'config.toml'),
    log: path.join(base, 'containerd.log'),
    pidFile: path.join(abs, 'containerd.pid'),
    address: `unix://${socket}`,
  };
}

const tomlString = (s: string) => JSON.stringify(s);

export function containerdConfig(
  p: ContainerdPaths,
  logLevel = 'info',
  extra: Pick<StartContainerdOptions, 'extraConfig' | 'enableCri'> = {},
): string {
  const text = [
    'version = 2',
    `root = ${tomlString(p.root)}`,
    `state = ${tomlString(p.state)}`,
    // CRI needs CNI and network setup; the others are snapshotters that only log
    // errors on hosts without their filesystems. overlayfs stays the default.
    'disabled_plugins = [',
    ...(extra.enableCri ? [] : ['  "io.containerd.grpc.v1.cri",']),
    '  "io.containerd.snapshotter.v1.aufs",',
    '  "io.containerd.snapshotter.v1.btrfs",',
    '  "io.containerd.snapshotter.v1.devmapper",',
    '  "io.containerd.snapshotter.v1.zfs",',
    ']',
    '',
    '[grpc]',
    `  address = ${tomlString(p.socket)}`,
    '',
    '[ttrpc]',
    `  address = ${tomlString(p.ttrpcSocket)}`,
    '',
    // The debug and metrics endpoints default off in 1.6; stated so that a
    // private instance never takes a system-wide address.
    '[debug]',
    '  address = ""',
    `  level = ${tomlString(logLevel)}`,
    '',
    '[metrics]',
    '  address = ""',
    '',
    // The opt plugin otherwise installs into /opt/containerd, shared with the host's containerd.
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${tomlString(path.join(p.base, 'opt'))}`,
    '',
  ].join('\n');
  return extra.extraConfig ? `${text}\n${extra.extraConfig}\n` : text;
}

function readPid(file: string): number | undefined {
  try {
    const n = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function cmdline(pid: number): string[] | undefined {
  try {
    return fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((s) => s !== '');
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is not running anything.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The pid of DIR's containerd if it runs; the pid file alone is not trusted (pids are reused). */
function runningPid(p: ContainerdPaths): number | undefined {
  const pid = readPid(p.pidFile);
  if (pid === undefined || !alive(pid)) return undefined;
  const argv = cmdline(pid);
  if (!argv || !argv.some((a) => path.basename(a) === 'containerd') || !argv.includes(p.config)) return undefined;
  return pid;
}

export function isRunning(dir: string): boolean {
  return runningPid(containerdPaths(dir)) !== undefined;
}

function tail(file: string, lines = 30): string {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .slice(-lines - 1)
      .join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitHealthy(p: ContainerdPaths, pid: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (!alive(pid)) {
      throw new Error(`containerd (pid ${pid}) exited during startup; log tail (${p.log}):\n${tail(p.log)}`);
    }
    if (fs.existsSync(p.socket)) {
      const client = new ContainerdClient(p.address, { timeoutMs: 2000 });
      try {
        return (await client.version()).version;
      } catch (e) {
        last = e;
      } finally {
        client.close();
      }
    }
    await sleep(100);
  }
  throw new Error(
    `containerd at ${p.socket} not healthy after ${timeoutMs} ms (${last instanceof Error ? last.message : 'socket never appeared'}); log tail (${p.log}):\n${tail(p.log)}`,
  );
}

/**
 * Start a private containerd for DIR, or reuse the one already running there.
 * It runs detached in its own process group so that it outlives the caller.
 */
export async function startContainerd(dir: string, opts: StartContainerdOptions = {}): Promise<StartedContainerd> {
  const p = containerdPaths(dir);
  if (p.ttrpcSocket.length > MAX_SOCKET_PATH) {
    throw new Error(
      `containerd socket path too long for a unix socket (${p.ttrpcSocket.length} > ${MAX_SOCKET_PATH}): ${p.ttrpcSocket}; use a shorter --dir`,
    );
  }
  const timeoutMs = opts.healthTimeoutMs ?? 20_000;
  const existing = runningPid(p);
  if (existing !== undefined) {
    const version = await waitHealthy(p, existing, timeoutMs);
    return { ...p, pid: existing, version, started: false };
  }

  fs.mkdirSync(p.base, { recursive: true, mode: 0o711 });
  fs.writeFileSync(p.config, containerdConfig(p, opts.logLevel, opts));
  // A socket file left by a killed containerd would make the health check talk to nothing.
  for (const s of [p.socket, p.ttrpcSocket]) fs.rmSync(s, { force: true });

  const logFd = fs.openSync(p.log, 'a');
  let pid: number;
  try {
    const child = spawn(opts.containerdBinary ?? 'containerd', ['--config', p.config], {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, ...opts.env },
      cwd: p.base,
    });
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      throw new Error(`cannot start containerd: ${err.message}`);
    }
    pid = child.pid;
    // The child is not ours to reap once we return; without this, node would wait for it.
    child.unref();
  } finally {
    fs.closeSync(logFd);
  }
  fs.writeFileSync(p.pidFile, `${pid}\n`);
  try {
    const version = await waitHealthy(p, pid, timeoutMs);
    return { ...p, pid, version, started: true };
  } catch (e) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    throw e;
  }
}

interface ShimInfo {
  pid: number;
  namespace: string;
  id: string;
  bundle?: string;
}

/** runc.v2 shims started by DIR's containerd: their -address is DIR's socket. */
function findShims(p: ContainerdPaths): ShimInfo[] {
  const shims: ShimInfo[] = [];
  for (const ent of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    const argv = cmdline(pid);
    if (!argv || !argv[0] || !path.basename(argv[0]).startsWith('containerd-shim')) continue;
    const arg = (name: string) => {
      const i = argv.indexOf(name);
      return i >= 0 ? argv[i + 1] : undefined;
    };
    const references = argv.some((a) => a === p.socket || a === p.address || a.startsWith(p.state + '/') || a.startsWith(p.base + '/'));
    let bundle: string | undefined;
    try {
      bundle = fs.readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      bundle = undefined;
    }
    const inState = bundle !== undefined && bundle.startsWith(p.state + '/');
    if (!references && !inState) continue;
    shims.push({ pid, namespace: arg('-namespace') ?? '', id: arg('-id') ?? '', bundle });
  }
  return shims;
}

function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && !stderr ? err.message : '') });
    });
  });
}

/** Which runc binary and root the shim used, from the options.json it keeps in the bundle. */
function runcFor(shim: ShimInfo): { binary: string; root: string } {
  let binary = 'runc';
  let root = path.join('/run/containerd/runc', shim.namespace);
  if (shim.bundle) {
    try {
      const o = JSON.parse(fs.readFileSync(path.join(shim.bundle, 'options.json'), 'utf8')) as { binary_name?: string; root?: string };
      if (o.binary_name) binary = o.binary_name;
      if (o.root) root = path.join(o.root, shim.namespace);
    } catch {
      /* no options.json: runc defaults */
    }
  }
  return { binary, root };
}

async function killShims(p: ContainerdPaths): Promise<void> {
  const shims = findShims(p);
  for (const shim of shims) {
    if (shim.id && shim.namespace) {
      // Killing only the shim would leave the container running, reparented to
      // init, in its cgroup, with runc state that blocks reusing the id.
      // The real runc is used even when the container ran under a wrapper binary:
      // the wrapper may need a daemon that is already gone.
      const { root } = runcFor(shim);
      await run('runc', ['--root', root, 'delete', '--force', shim.id]);
    }
    try {
      process.kill(shim.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 5000;
  while (shims.some((s) => alive(s.pid)) && Date.now() < deadline) await sleep(50);
}

/** Mount points at or below DIR, deepest first. */
function mountsUnder(dir: string): string[] {
  let info: string;
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mp = unescape(fields[4]);
    if (mp === dir || mp.startsWith(dir + '/')) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

export async function unmountUnder(dir: string): Promise<string[]> {
  const failed: string[] = [];
  const abs = path.resolve(dir);
  for (let pass = 0; pass < 3; pass++) {
    const mps = mountsUnder(abs);
    if (mps.length === 0) return [];
    failed.length = 0;
    for (const mp of mps) {
      // Lazy: a shim or container that still holds the mount must not block teardown.
      const r = await run('umount', ['-l', mp]);
      if (r.code !== 0 && mountsUnder(abs).includes(mp)) failed.push(`${mp}: ${r.stderr.trim()}`);
    }
  }
  return mountsUnder(abs).length === 0 ? [] : failed;
}

/** Stop DIR's containerd (SIGTERM, then SIGKILL) and, by default, everything it left behind. */
export async function stopContainerd(dir: string, opts: StopContainerdOptions = {}): Promise<void> {
  const p = containerdPaths(dir);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const pid = runningPid(p);
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    const deadline = Date.now() + timeoutMs;
    while (alive(pid) && Date.now() < deadline) await sleep(50);
    if (alive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      const hard = Date.now() + 5000;
      while (alive(pid) && Date.now() < hard) await sleep(50);
    }
  }
  fs.rmSync(p.pidFile, { force: true });
  if (opts.killShims ?? true) {
    await killShims(p);
    const failed = await unmountUnder(p.dir);
    if (failed.length > 0) throw new Error(`could not unmount under ${p.dir}:\n${failed.join('\n')}`);
  }
}

/** `ctr images import`: the path for hand-built OCI tars (see image/oci-image.ts). */
export async function importImage(dir: string, tarPath: string, namespace: string): Promise<void> {
  const p = containerdPaths(dir);
  const r = await run('ctr', ['-a', p.socket, '-n', namespace, 'images', 'import', tarPath], 120_000);
  if (r.code !== 0) {
    throw new Error(`ctr images import ${tarPath} into ${namespace} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
}
