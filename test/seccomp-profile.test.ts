// The OCI seccomp merges: pure JSON in, JSON out, checked rule by rule. The real filter
// (runc + libseccomp + kernel) is exercised in seccomp.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readBundleConfig } from '../src/fence/bundle-config';
import { SeccompBackend } from '../src/fence/seccomp/seccomp-backend';
import {
  OciSeccomp,
  RUNC_INIT_SYSCALLS,
  denyRouteRefusal,
  libseccompArch,
  nativeArchitectures,
  withAllowedOnly,
  withDenied,
  withExecNotify,
} from '../src/fence/seccomp/seccomp-profile';
import { native } from '../src/native';
import { emptyPolicy } from '../src/policy/policy';

const dockerLike = (): OciSeccomp => ({
  defaultAction: 'SCMP_ACT_ERRNO',
  defaultErrnoRet: 1,
  architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
  syscalls: [
    { names: ['read', 'write', 'mkdir', 'execve', 'execveat'], action: 'SCMP_ACT_ALLOW' },
    { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }] },
    { names: ['reboot'], action: 'SCMP_ACT_KILL' },
  ],
});

const actionsOf = (p: OciSeccomp, name: string) => (p.syscalls ?? []).filter((r) => r.names.includes(name)).map((r) => r.action);

describe('seccomp-deny merge', () => {
  it('creates an allow-by-default profile for the node architecture when there is none', () => {
    const p = withDenied(undefined, ['mkdir', 'mkdir'], 'errno');
    expect(p.defaultAction).toBe('SCMP_ACT_ALLOW');
    expect(p.architectures).toEqual(nativeArchitectures());
    expect(p.syscalls).toEqual([{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }]);
  });

  it('keeps an existing profile, takes the name out of its allow rules, and leaves its own blocks', () => {
    const before = dockerLike();
    const p = withDenied(before, ['mkdir', 'reboot', 'personality'], 'errno');
    expect(before).toEqual(dockerLike()); // not mutated
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_ERRNO']);
    expect(actionsOf(p, 'read')).toEqual(['SCMP_ACT_ALLOW']);
    expect(actionsOf(p, 'reboot')).toEqual(['SCMP_ACT_KILL']);
    // A conditional allow becomes an unconditional deny.
    expect(actionsOf(p, 'personality')).toEqual(['SCMP_ACT_ERRNO']);
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
  });

  it('in audit mode logs only what the profile would let run, and blocks nothing new', () => {
    const p = withDenied(dockerLike(), ['mkdir', 'personality', 'chmod'], 'log');
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_LOG']);
    expect(actionsOf(p, 'personality')).toEqual(['SCMP_ACT_ALLOW']); // conditions kept
    expect(actionsOf(p, 'chmod')).toEqual([]); // the profile's default (errno) decides, as before
    expect(withDenied(undefined, ['chmod'], 'log').syscalls).toEqual([{ names: ['chmod'], action: 'SCMP_ACT_LOG' }]);
  });
});

describe('seccomp-allow merge', () => {
  it('without a profile: EPERM by default, the list and what runc needs allowed', () => {
    const p = withAllowedOnly(undefined, ['write', 'brk'], 'errno');
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(p.defaultErrnoRet).toBe(1);
    const allowed = new Set(p.syscalls!.filter((r) => r.action === 'SCMP_ACT_ALLOW').flatMap((r) => r.names));
    expect(allowed.has('brk')).toBe(true);
    for (const n of RUNC_INIT_SYSCALLS) expect(allowed.has(n), n).toBe(true);
  });

  it('intersects with an existing profile: what it blocks stays blocked, conditions stay', () => {
    const p = withAllowedOnly(dockerLike(), ['personality', 'reboot', 'brk'], 'errno');
    expect(actionsOf(p, 'personality')).toEqual(['SCMP_ACT_ALLOW']);
    expect(p.syscalls!.find((r) => r.names.includes('personality'))!.args).toHaveLength(1);
    expect(actionsOf(p, 'reboot')).toEqual(['SCMP_ACT_KILL']);
    // mkdir was allowed by the profile and is not on the list: same rule, our verdict.
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_ERRNO']);
    // brk was blocked by the profile's default and stays so.
    expect(actionsOf(p, 'brk')).toEqual([]);
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
  });

  it('in audit mode logs instead of failing', () => {
    const p = withAllowedOnly(undefined, ['write'], 'log');
    expect(p.defaultAction).toBe('SCMP_ACT_LOG');
    expect(p.defaultErrnoRet).toBeUndefined();
  });

  it('lists only syscalls libseccomp knows for this node', () => {
    const nrs = native().resolveSyscalls([...RUNC_INIT_SYSCALLS]);
    expect(RUNC_INIT_SYSCALLS.filter((_, i) => nrs[i] === null)).toEqual([]);
  });
});

describe('exec notify merge', () => {
  it('routes execve and execveat to the listener, with the container key as metadata', () => {
    const m = withExecNotify(undefined, '/run/x.sock', 'default/c1');
    expect(m.notified).toEqual(['execve', 'execveat']);
    expect(m.profile.listenerPath).toBe('/run/x.sock');
    expect(m.profile.listenerMetadata).toBe('default/c1');
    expect(m.profile.syscalls).toEqual([{ names: ['execve', 'execveat'], action: 'SCMP_ACT_NOTIFY' }]);
    expect(m.profile.defaultAction).toBe('SCMP_ACT_ALLOW');
  });

  it('moves the exec syscalls out of an allow rule; is idempotent', () => {
    const m = withExecNotify(dockerLike(), '/run/x.sock', 'k');
    expect(actionsOf(m.profile, 'execve')).toEqual(['SCMP_ACT_NOTIFY']);
    expect(actionsOf(m.profile, 'read')).toEqual(['SCMP_ACT_ALLOW']);
    expect(withExecNotify(m.profile, '/run/x.sock', 'k').profile).toEqual(m.profile);
  });

  it('leaves alone what the profile blocks, and a profile with another agent', () => {
    const blocked = dockerLike();
    blocked.syscalls![0].names = ['read'];
    blocked.syscalls!.push({
      names: ['execveat'],
      action: 'SCMP_ACT_ERRNO',
      args: [{ index: 4, value: 0x1000, op: 'SCMP_CMP_MASKED_EQ' }],
    });
    const m = withExecNotify(blocked, '/run/x.sock', 'k');
    expect(m.notified).toEqual([]);
    expect(m.skipped.join('\n')).toMatch(/execve: .*blocks it by default/);
    expect(m.skipped.join('\n')).toMatch(/execveat: .*blocks it/);
    const other = withExecNotify({ ...dockerLike(), listenerPath: '/run/other.sock' }, '/run/x.sock', 'k');
    expect(other.notified).toEqual([]);
    expect(other.profile.listenerPath).toBe('/run/other.sock');
  });

  it('a later seccomp-deny of execve wins over the notify rule', () => {
    const m = withExecNotify(undefined, '/run/x.sock', 'k');
    const p = withDenied(m.profile, ['execve'], 'errno');
    expect(actionsOf(p, 'execve')).toEqual(['SCMP_ACT_ERRNO']);
    expect(actionsOf(p, 'execveat')).toEqual(['SCMP_ACT_NOTIFY']);
  });
});

describe('names checked for the container architecture', () => {
  it('maps OCI architectures to libseccomp names and rejects junk', () => {
    expect(libseccompArch('SCMP_ARCH_X86_64')).toBe('x86_64');
    expect(libseccompArch('SCMP_ARCH_AARCH64')).toBe('aarch64');
    expect(() => libseccompArch('x86_64; rm')).toThrow(/not an OCI seccomp architecture/);
  });

  it("refuses a name the container profile's architecture lacks, naming the annotation", () => {
    const bundle = fs.mkdtempSync(path.join(os.tmpdir(), 'cgft-scarch-'));
    try {
      const spec = { linux: { seccomp: { defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_AARCH64'], syscalls: [] } } };
      fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
      const policy = { ...emptyPolicy(), mode: 'enforce' as const, seccompDeny: ['open', 'mkdirat'] };
      const ctx = {
        namespace: 'default',
        id: 'a',
        bundle,
        rootfs: path.join(bundle, 'rootfs'),
        policy,
        annotations: {},
        spec: readBundleConfig(bundle),
        specChanged: () => {},
      };
      // x86_64 has open(2); aarch64 only openat(2).
      expect(() => new SeccompBackend().prepare(ctx)).toThrow(
        /cgfence\.io\/seccomp-deny: unknown syscall "open" for the container's architecture aarch64/,
      );
      let changed = false;
      const ok = {
        ...ctx,
        policy: { ...policy, seccompDeny: ['mkdirat'] },
        spec: readBundleConfig(bundle),
        specChanged: () => (changed = true),
      };
      new SeccompBackend().prepare(ok);
      // The backend edits the spec the manager read; the manager writes it once, after every backend.
      expect(changed).toBe(true);
      const after = ok.spec as { linux: { seccomp: { architectures: string[]; syscalls: unknown[] } } };
      expect(after.linux.seccomp.architectures).toEqual(['SCMP_ARCH_AARCH64']);
      expect(after.linux.seccomp.syscalls).toEqual([{ names: ['mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }]);
    } finally {
      fs.rmSync(bundle, { recursive: true, force: true });
    }
  });
});

describe('enforce-mode denials routed to the notify listener', () => {
  const L = { path: '/run/cgfence/seccomp-agent.sock', metadata: 'default/c1' };

  it("seccomp-deny: notifies the denied names, keeps exec syscalls and runc's own calls SCMP_ACT_ERRNO", () => {
    const p = withDenied(undefined, ['mkdir', 'execveat', 'close', 'write', 'mkdirat'], 'errno', L);
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_NOTIFY']);
    expect(actionsOf(p, 'mkdirat')).toEqual(['SCMP_ACT_NOTIFY']);
    // A notified exec would be let on by the loop and the fd-holder; runc's init would wait on
    // an agent that has no fd yet; runc refuses NOTIFY for write.
    for (const n of ['execveat', 'close', 'write']) expect(actionsOf(p, n)).toEqual(['SCMP_ACT_ERRNO']);
    expect(p).toMatchObject({ listenerPath: L.path, listenerMetadata: L.metadata });
  });

  it('seccomp-deny of execve over the exec route: the exec is never notified (EPERM, never CONTINUE)', () => {
    const routed = withExecNotify(undefined, L.path, L.metadata).profile;
    const p = withDenied(routed, ['execve', 'mkdir'], 'errno', L);
    expect(actionsOf(p, 'execve')).toEqual(['SCMP_ACT_ERRNO']);
    expect(actionsOf(p, 'execveat')).toEqual(['SCMP_ACT_NOTIFY']);
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_NOTIFY']);
  });

  it('without a listener (or with audit) nothing is notified and no listener is set', () => {
    expect(withDenied(undefined, ['mkdir'], 'errno').listenerPath).toBeUndefined();
    const a = withDenied(undefined, ['mkdir'], 'log', L);
    expect(actionsOf(a, 'mkdir')).toEqual(['SCMP_ACT_LOG']);
    expect(a.listenerPath).toBeUndefined();
  });

  it('seccomp-allow: every other known name is notified (runc refuses NOTIFY as the default), the default stays EPERM, execveat stays SCMP_ACT_ERRNO', () => {
    const routed = withExecNotify(undefined, L.path, L.metadata).profile;
    const p = withAllowedOnly(routed, ['mkdir'], 'errno', { listener: L, allNames: ['mkdir', 'uname', 'execveat', 'close', 'reboot'] });
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(actionsOf(p, 'uname')).toEqual(['SCMP_ACT_NOTIFY']);
    expect(actionsOf(p, 'reboot')).toEqual(['SCMP_ACT_NOTIFY']);
    expect(actionsOf(p, 'execveat')).toEqual(['SCMP_ACT_ERRNO']);
    expect(actionsOf(p, 'execve')).toEqual(['SCMP_ACT_NOTIFY']); // the exec route, kept (runc starts the entrypoint with it)
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_ALLOW']);
    expect(actionsOf(p, 'close')).toEqual(['SCMP_ACT_ALLOW']);
  });

  it('seccomp-allow over a deny-by-default profile: what it allowed and we leave out is notified, the rest stays its own', () => {
    const p = withAllowedOnly(dockerLike(), ['read'], 'errno', { listener: L, allNames: ['mkdir', 'uname'] });
    expect(actionsOf(p, 'mkdir')).toEqual(['SCMP_ACT_NOTIFY']);
    expect(actionsOf(p, 'uname')).toEqual([]); // the profile's default (EPERM), not ours: not notified
    expect(actionsOf(p, 'reboot')).toEqual(['SCMP_ACT_KILL']);
    expect(actionsOf(p, 'execveat')).toEqual(['SCMP_ACT_ERRNO']);
  });

  it('a profile that sends its notifications elsewhere is not routed', () => {
    expect(denyRouteRefusal({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/other.sock' }, L.path)).toContain('/other.sock');
    expect(denyRouteRefusal({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: L.path }, L.path)).toBeNull();
    expect(denyRouteRefusal(undefined, L.path)).toBeNull();
  });
});
