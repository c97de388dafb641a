// Install, upgrade and uninstall on a node, through a sandbox (private containerd + daemon):
// `cgfence install` puts cgfence-runc where the runtime handler names it; an upgrade
// (daemon stopped, new daemon started) adopts the pinned fences and a running container stays
// fenced throughout; `cgfence uninstall` refuses while containers are fenced, then removes
// pins, state, spool, socket, runc.conf and cgfence-runc, and keeps the audit log. And the
// DaemonSet's image (`npm run image`): built by src/image, imported, its node runs the CLI
// and the addon, and its install command is the init container's.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { buildDaemonImage, daemonImageName } from '../src/image/daemon-image';
import { importImage } from '../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { alive, daemonPid as daemonPidOf } from './helpers/daemon-restart';
import { pidsByArgv } from './helpers/kernel';
import { IMAGE, cid, cli, ctr, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('life');
let p: SandboxPaths;
let host: string;

beforeAll(async () => {
  p = await sandboxUp(dir);
  host = path.join(p.dir, 'host');
});

afterAll(async () => {
  await sandboxDown(dir);
  fs.rmSync(dir, { recursive: true, force: true });
});

const daemonPid = () => daemonPidOf(p);

/** Pids of cgfence-fd-holder processes whose sockets are under dir. */
function holders(dir: string): number[] {
  return pidsByArgv((argv) => argv[0]?.endsWith('cgfence-fd-holder') === true && argv.some((a) => a.startsWith(`${dir}/`)));
}

/** tool-a in the running container: 126 when the fence refuses it. */
function toolA(id: string): number | null {
  const r = ctr(p, ['tasks', 'exec', '--exec-id', `t${Date.now()}`, id, '/bin/sh', '-c', '/usr/local/bin/tool-a true; echo "rc=$?"']);
  const m = /rc=(\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : null;
}

describe('install, upgrade, uninstall', () => {
  const runcPath = () => path.join(host, 'usr/local/bin/cgfence-runc');
  const runcConf = () => path.join(host, 'etc/cgfence/runc.conf');
  const id = cid('life');

  it('install puts cgfence-runc and runc.conf in place, and containers run fenced through it', () => {
    const src = path.join(p.dir, 'runc.conf.src');
    fs.writeFileSync(src, `socket=${p.socket}\n`);
    const r = cli(p, ['install', '--runc-path', runcPath(), '--runc-conf', runcConf(), '--runc-conf-from', src]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`installed ${runcPath()}`);
    expect(fs.statSync(runcPath()).mode & 0o777).toBe(0o755);
    expect(fs.readFileSync(runcPath()).equals(fs.readFileSync(p.runc))).toBe(true);
    expect(fs.readFileSync(runcConf(), 'utf8')).toBe(`socket=${p.socket}\n`);
    const run = ctr(p, [
      'run',
      '-d',
      '--runc-binary',
      runcPath(),
      '--annotation',
      'cgfence.io/exec-allow=/bin/sh,/bin/*',
      IMAGE,
      id,
      '/bin/sh',
      '-c',
      'sleep 600',
    ]);
    expect(run.status, run.stderr).toBe(0);
    expect(toolA(id)).toBe(126);
  });

  it('upgrade: a new daemon adopts the pinned fences; the container stays fenced; install again replaces cgfence-runc under it', async () => {
    const old = daemonPid();
    process.kill(old, 'SIGTERM');
    await waitFor('the old daemon to exit', () => !alive(old), 20_000);
    const again = cli(p, ['install', '--runc-path', runcPath()]);
    expect(again.status, again.stderr).toBe(0);
    await sandboxUp(dir);
    expect(daemonPid()).not.toBe(old);
    const starts = await readRecords(p.auditLog, { type: 'agent', action: 'start' });
    expect(starts[starts.length - 1]).toMatchObject({ adopted: true, pid: daemonPid() });
    const ps = JSON.parse(cli(p, ['ps', '-o', 'json']).stdout) as Array<{ id: string; controls: { exec: string } }>;
    expect(ps.find((c) => c.id === id)?.controls.exec).toBe('enforced');
    expect(toolA(id)).toBe(126);
  });

  it('uninstall refuses while a container is fenced, then removes pins, state, spool, socket, runc.conf and cgfence-runc, keeping the audit log', async () => {
    const args = [
      'uninstall',
      '--pin-dir',
      p.pinDir,
      '--state-dir',
      p.stateDir,
      '--spool-dir',
      p.spoolDir,
      '--runc-path',
      runcPath(),
      '--runc-conf',
      runcConf(),
    ];
    const refused = cli(p, args);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim()).toMatch(
      new RegExp(
        `^cgfence uninstall: 1 container\\(s\\) are still fenced \\(${SANDBOX_NAMESPACE}/${id}\\): stop them first, or pass --force`,
      ),
    );
    expect(fs.existsSync(p.pinDir)).toBe(true);

    ctr(p, ['tasks', 'kill', '-s', 'SIGKILL', id]);
    await waitFor('detach', () => (JSON.parse(cli(p, ['ps', '-o', 'json']).stdout) as unknown[]).length === 0, 30_000);
    ctr(p, ['containers', 'rm', id]);

    const dry = cli(p, [...args, '--dry-run']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/would stop\s+daemon/);
    expect(fs.existsSync(p.pinDir)).toBe(true);

    expect(holders(p.stateDir).length).toBe(1);
    const pid = daemonPid();
    const r = cli(p, args);
    expect(r.status, r.stderr).toBe(0);
    for (const what of ['daemon', 'pins', 'state', 'runc.conf', 'cgfence-runc'])
      expect(r.stdout).toMatch(new RegExp(`^(removed|stopped)\\s+${what}\\s`, 'm'));
    expect(r.stdout).toMatch(/^kept\s+audit log/m);
    await waitFor('the daemon to exit', () => !alive(pid), 20_000);
    for (const gone of [p.pinDir, p.stateDir, p.spoolDir, p.socket, runcPath(), runcConf()]) expect(fs.existsSync(gone), gone).toBe(false);
    // The seccomp-notify fd-holder (cgfence-fd-holder CONTROL AGENT, both in the state dir) went with it.
    await waitFor('the fd-holder to exit', () => !holders(p.stateDir).length, 10_000).catch(() => undefined);
    expect(holders(p.stateDir)).toEqual([]);
    expect(fs.existsSync(p.auditLog)).toBe(true);
    const stop = await readRecords(p.auditLog, { type: 'agent', action: 'stop' });
    expect(stop[stop.length - 1]).toMatchObject({ pid, detach: true });
  });
});

describe('the DaemonSet image', () => {
  it('npm run image builds it from src/image; node, the CLI, the addon and the install step work inside it', async () => {
    const tar = path.join(p.dir, 'cgfence-image.tar');
    const img = await buildDaemonImage(tar);
    expect(img.name).toBe(daemonImageName());
    // The sandbox may be down after the uninstall test: bring it up again for the import.
    p = await sandboxUp(dir);
    await importImage(p.dir, tar, SANDBOX_NAMESPACE);
    const run = (name: string, argv: string[], extra: string[] = []) =>
      ctr(p, ['run', '--rm', ...extra, img.name, `${name}-${cid('img')}`, ...argv], 120_000);
    const version = run('ver', ['cgfence', '--version']);
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version);
    // The addon loads (libbpf, libseccomp from the image) and resolves syscall names.
    const check = run('chk', ['cgfence', 'policy', 'check', 'cgfence.io/seccomp-deny=mkdir,ptrace', 'cgfence.io/egress-deny=10.0.0.0/8']);
    expect(check.status, check.stderr).toBe(0);
    expect(check.stdout).toContain('valid: mode enforce');
    // The init container's step: cgfence-runc and runc.conf onto the host's directories.
    const hostDir = path.join(p.dir, 'image-host');
    fs.mkdirSync(path.join(hostDir, 'conf'), { recursive: true });
    fs.writeFileSync(path.join(hostDir, 'conf', 'runc.conf'), 'fail_mode=closed\n');
    const inst = run(
      'inst',
      [
        'cgfence',
        'install',
        '--runc-path',
        '/host/bin/cgfence-runc',
        '--runc-conf',
        '/host/etc/runc.conf',
        '--runc-conf-from',
        '/host/conf/runc.conf',
      ],
      ['--mount', `type=bind,src=${hostDir},dst=/host,options=rbind:rw`],
    );
    expect(inst.status, inst.stderr).toBe(0);
    expect(fs.readFileSync(path.join(hostDir, 'bin', 'cgfence-runc')).equals(fs.readFileSync(p.runc))).toBe(true);
    expect(fs.readFileSync(path.join(hostDir, 'etc', 'runc.conf'), 'utf8')).toBe('fail_mode=closed\n');
    ctr(p, ['images', 'rm', img.name]);
  });
});
