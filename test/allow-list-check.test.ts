// The allow-list and entrypoint check that attach makes in the container's own root
// (policy/identity.ts resolveAllowList, PolicyDecider.entrypointProblem), here against a
// directory standing in for /proc/<init>/root.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../src/daemon/config';
import { PolicyDecider } from '../src/daemon/policy-decider';
import { ResolveError, resolveAllowList } from '../src/policy/identity';
import { mktemp } from './helpers/kernel';

let root: string;

beforeAll(() => {
  root = mktemp('cgfence-allow-list-check');
  for (const d of ['bin', 'mnt/tools', 'opt']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.writeFileSync(path.join(root, 'bin/busybox'), 'x', { mode: 0o755 });
  fs.symlinkSync('busybox', path.join(root, 'bin/sh'));
  fs.writeFileSync(path.join(root, 'bin/['), 'x', { mode: 0o755 });
  fs.writeFileSync(path.join(root, 'mnt/tools/tool'), 'x', { mode: 0o755 });
  fs.symlinkSync('/mnt/tools/tool', path.join(root, 'opt/tool'));
});

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('the allow-list, resolved in the container root', () => {
  it('follows symlinks inside the root', () => {
    const r = resolveAllowList(['/bin/sh', '/opt/tool', '/mnt/tools/*'], { dir: root });
    expect(r.map((e) => e.path)).toEqual(['/bin/sh', '/opt/tool', '/mnt/tools/tool']);
    expect(r[1].identity.ino).toBe(fs.statSync(path.join(root, 'mnt/tools/tool'), { bigint: true }).ino);
  });

  it('names one entry that names nothing, as a ResolveError', () => {
    let err: unknown;
    try {
      resolveAllowList(['/bin/sh', '/bin/nosuch'], { dir: root });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ResolveError);
    expect((err as Error).message).toBe('/bin/nosuch: no such file in the container');
  });

  it('names every entry that names nothing, not only the first', () => {
    expect(() => resolveAllowList(['/bin/nosuch', '/bin/sh', '/opt/none/*', '/bin/busybox/x'], { dir: root })).toThrow(
      '/bin/nosuch: no such file in the container; /opt/none: no such file in the container; /bin/busybox/x: /bin/busybox is not a directory',
    );
  });
});

describe('the entrypoint, judged against the resolved allow-list', () => {
  const decider = new PolicyDecider(DEFAULTS, []);
  const spec = (args: string[], env = ['PATH=/mnt/tools:/bin']) => ({ process: { args, env } });
  const allowed = () => resolveAllowList(['/bin/busybox'], { dir: root });

  it('allows an entrypoint whose file is on the list, by whatever name or link it is called', () => {
    expect(decider.entrypointProblem(root, spec(['/bin/sh']), allowed(), '/bin/busybox')).toBeNull();
    expect(decider.entrypointProblem(root, spec(['sh']), allowed(), '/bin/busybox')).toBeNull();
  });

  it('refuses one that is not, naming the annotation and the entrypoint', () => {
    expect(decider.entrypointProblem(root, spec(['/bin/[']), allowed(), '/bin/busybox')).toBe(
      'cgfence.io/exec-allow="/bin/busybox" does not allow the entrypoint "/bin/["',
    );
    // Found through PATH, first match wins: /mnt/tools/tool is not on the list.
    expect(decider.entrypointProblem(root, spec(['tool']), allowed(), '/bin/busybox')).toBe(
      'cgfence.io/exec-allow="/bin/busybox" does not allow the entrypoint "tool"',
    );
  });

  it('leaves an entrypoint that is not there to runc, which reports it in its own words', () => {
    expect(decider.entrypointProblem(root, spec(['/bin/nosuch']), allowed(), '/bin/busybox')).toBeNull();
    expect(decider.entrypointProblem(root, spec(['nosuch']), allowed(), '/bin/busybox')).toBeNull();
  });
});
