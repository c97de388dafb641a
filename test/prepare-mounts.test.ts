// The prepare-time rule for allow-lists and mounts (policy/identity.ts checkAllowListInRootfs,
// PolicyDecider.entrypointProblem): what lies under a mount point of config.json, directly or
// through a symlink, is left for attach; everything else must resolve in the rootfs now.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../src/daemon/config';
import { PolicyDecider, mountPointsOf } from '../src/daemon/policy-decider';
import { checkAllowListInRootfs } from '../src/policy/identity';
import { mktemp } from './helpers/kernel';

let rootfs: string;

beforeAll(() => {
  rootfs = mktemp('cgfence-prepare-mounts');
  for (const d of ['bin', 'mnt/tools', 'opt']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.writeFileSync(path.join(rootfs, 'bin/busybox'), 'x', { mode: 0o755 });
  fs.symlinkSync('busybox', path.join(rootfs, 'bin/sh'));
  fs.writeFileSync(path.join(rootfs, 'bin/['), 'x', { mode: 0o755 });
  // What the rootfs has under a mount point is hidden at run time.
  fs.writeFileSync(path.join(rootfs, 'mnt/tools/shadowed'), 'x', { mode: 0o755 });
  // A symlink outside the mount that leads into it.
  fs.symlinkSync('/mnt/tools/tool', path.join(rootfs, 'opt/tool'));
});

afterAll(() => {
  if (rootfs) fs.rmSync(rootfs, { recursive: true, force: true });
});

describe('allow-lists at prepare', () => {
  const mounts = ['/mnt/tools', '/proc'];

  it('defers entries under a mount point, directly or through a symlink; refuses typos elsewhere', () => {
    const r = checkAllowListInRootfs(
      ['/bin/sh', '/bin/[', '/mnt/tools/tool', '/mnt/tools/shadowed', '/mnt/tools/*', '/opt/tool', '/bin/nosuch'],
      rootfs,
      mounts,
    );
    expect(r.resolved.map((e) => e.path)).toEqual(['/bin/sh', '/bin/[']);
    expect(r.deferred).toEqual(['/mnt/tools/tool', '/mnt/tools/shadowed', '/mnt/tools/*', '/opt/tool']);
    expect(r.problems).toEqual(['/bin/nosuch: no such file in the container']);
    // /mnt/toolsX is not under /mnt/tools.
    expect(checkAllowListInRootfs(['/mnt/toolsX'], rootfs, mounts).problems).toEqual(['/mnt/toolsX: no such file in the container']);
  });

  it('judges the entrypoint when it can, and defers it when it lies under a mount', () => {
    const decider = new PolicyDecider(DEFAULTS, []);
    const spec = (args: string[]) => ({
      process: { args, env: ['PATH=/mnt/tools:/bin'] },
      mounts: [{ destination: '/mnt/tools/', type: 'bind', source: '/x' }],
    });
    const allowed = checkAllowListInRootfs(['/bin/busybox'], rootfs, []).resolved;
    expect(mountPointsOf(spec([]))).toEqual(['/mnt/tools/']);
    const m = mountPointsOf(spec([]));
    expect(decider.entrypointProblem(rootfs, spec(['/bin/sh']), allowed, '/bin/busybox', m)).toBeNull();
    expect(decider.entrypointProblem(rootfs, spec(['/mnt/tools/tool']), allowed, '/bin/busybox', m)).toBe('deferred');
    // Searched in PATH, whose first directory is a mount: the rootfs cannot say.
    expect(decider.entrypointProblem(rootfs, spec(['sh']), allowed, '/bin/busybox', m)).toBe('deferred');
    expect(decider.entrypointProblem(rootfs, spec(['/bin/[']), allowed, '/bin/busybox', m)).toBe(
      'cgfence.io/exec-allow="/bin/busybox" does not allow the entrypoint "/bin/["',
    );
  });
});
