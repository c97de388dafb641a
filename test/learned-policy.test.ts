// The annotations made of a learned result: stable order, addresses alone or folded into
// networks on request, RFC 5952 IPv6 text, every value accepted by the parser, files created
// at run time left out, empty lists explained; several results merged into one; the CLI's
// format flags.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { mergeLearned } from '../src/fence/learn/learned-merge';
import { Learned, annotationMeanings, formatAddress, learnedAnnotations, learnedWarnings } from '../src/fence/learn/learned-policy';
import { parseAnnotations } from '../src/policy/annotations';

function learned(over: Partial<Learned> = {}): Learned {
  return {
    namespace: 'default',
    id: 'c',
    running: false,
    since: '',
    exec: [
      { path: '/usr/local/bin/tool-a', dev: '0:46', inode: '2', names: ['/usr/local/bin/tool-a'], count: 1 },
      { path: '/bin/busybox', dev: '0:46', inode: '1', names: ['/bin/sh', '/proc/self/exe'], count: 9 },
      { path: null, dev: '0:46', inode: '3', names: ['./gone'], count: 1 },
    ],
    network: {
      peers: [
        { direction: 'egress', family: 4, address: '10.1.2.3', packets: 1 },
        { direction: 'egress', family: 4, address: '10.1.9.9', packets: 1 },
        { direction: 'egress', family: 6, address: '2001:db8::1', packets: 1 },
        { direction: 'ingress', family: 4, address: '127.0.0.1', packets: 1 },
      ],
      flows: [],
    },
    syscalls: { names: ['write', 'read', 'execve'], unnamed: [], outOfRange: 0 },
    incomplete: [],
    ...over,
  };
}

describe('learnedAnnotations', () => {
  it('lists each executable by its path, each peer alone, syscalls sorted', () => {
    expect(learnedAnnotations(learned())).toEqual({
      'cgfence.io/exec-allow': '/bin/busybox,/usr/local/bin/tool-a',
      'cgfence.io/egress-allow': '10.1.2.3/32,10.1.9.9/32,2001:db8::1/128',
      'cgfence.io/ingress-allow': '127.0.0.1/32',
      'cgfence.io/seccomp-allow': 'execve,read,write',
    });
  });

  it('folds addresses into networks only when asked', () => {
    const a = learnedAnnotations(learned(), { prefixLen4: 16, prefixLen6: 32 });
    expect(a['cgfence.io/egress-allow']).toBe('10.1.0.0/16,2001:db8::/32');
    expect(a['cgfence.io/ingress-allow']).toBe('127.0.0.0/16');
  });

  it('keeps an empty list for a direction with no peer: nothing is allowed there', () => {
    const a = learnedAnnotations(learned({ network: { peers: [], flows: [] } }));
    expect(a['cgfence.io/egress-allow']).toBe('');
    expect(parseAnnotations(a).egressAllow).toEqual([]);
  });

  it('makes annotations the parser accepts as an enforce policy', () => {
    const p = parseAnnotations(learnedAnnotations(learned()), { resolveSyscalls: (names) => names.map(() => 1) });
    expect(p.mode).toBe('enforce');
    expect(p.execAllow).toEqual(['/bin/busybox', '/usr/local/bin/tool-a']);
  });

  it('leaves out files created at run time and files gone, and says so', () => {
    const l = learned({
      exec: [
        { path: '/bin/busybox', origin: 'image', dev: '0:46', inode: '1', names: ['/bin/sh'], count: 1 },
        { path: '/tmp/job', origin: 'runtime', dev: '0:46', inode: '7', names: ['/tmp/job'], count: 1 },
        { path: '/tmp/once', origin: 'unknown', dev: '0:46', inode: '8', names: ['./once'], count: 1 },
      ],
    });
    expect(learnedAnnotations(l)['cgfence.io/exec-allow']).toBe('/bin/busybox');
    expect(learnedWarnings(l)).toEqual([
      'executable /tmp/job (run as "/tmp/job") was created or changed at run time, after the container started: a fresh container has no such file, so no path can allow it; it is not in cgfence.io/exec-allow',
      'executable /tmp/once (run as "./once") was there when it ran, but no such file is in the container\'s root filesystem any more: it was created at run time and removed, or lies on a mount outside the image; it is not in cgfence.io/exec-allow',
    ]);
  });

  it('says what an empty list means once applied', () => {
    const a = learnedAnnotations(learned({ network: { peers: [], flows: [] } }));
    const m = annotationMeanings(a);
    expect(Object.keys(m)).toEqual(['cgfence.io/egress-allow', 'cgfence.io/ingress-allow']);
    expect(m['cgfence.io/egress-allow']).toMatch(/denies all egress/);
    expect(annotationMeanings(learnedAnnotations(learned()))).toEqual({});
  });

  it('says what is missing', () => {
    const w = learnedWarnings(
      learned({ syscalls: { names: [], unnamed: [{ abi: 'compat', nr: 102, name: 'socketcall' }], outOfRange: 2 } }),
    );
    expect(w).toEqual([
      'executable 0:46:3 (run as "./gone") is no file of the container\'s root filesystem: it was created at run time and removed, or lies on a mount outside the image; it is not in cgfence.io/exec-allow',
      'syscalls that cgfence.io/seccomp-allow cannot name on this architecture are not in it: compat 102 (socketcall)',
      '2 syscalls had numbers outside the recorded range (x32?) and are not in cgfence.io/seccomp-allow',
    ]);
  });
});

describe('mergeLearned', () => {
  it('is the union of several runs, each item with the containers it was seen in and how often', () => {
    const one = learned({ id: 'run1' });
    // Another run: its own root filesystem (another device), a second peer, one more syscall.
    const two = learned({
      id: 'run2',
      exec: [{ path: '/bin/busybox', origin: 'image', dev: '0:51', inode: '1', names: ['/bin/ls'], count: 4 }],
      network: {
        peers: [
          { direction: 'egress', family: 4, address: '10.1.2.3', packets: 5 },
          { direction: 'egress', family: 4, address: '10.9.9.9', packets: 1 },
        ],
        flows: [],
      },
      syscalls: { names: ['read', 'openat'], unnamed: [], outOfRange: 0 },
      incomplete: ["the kernel's exec table was full"],
    });
    const m = mergeLearned([one, two]);
    expect(m.sources.map((s) => s.id)).toEqual(['run1', 'run2']);
    const busybox = m.exec.find((e) => e.path === '/bin/busybox')!;
    expect(busybox.count).toBe(13);
    expect(busybox.names).toEqual(['/bin/ls', '/bin/sh', '/proc/self/exe']);
    expect(busybox.seenIn).toEqual([
      { container: 'default/run1', count: 9 },
      { container: 'default/run2', count: 4 },
    ]);
    expect(m.exec.find((e) => e.path === '/usr/local/bin/tool-a')!.seenIn).toEqual([{ container: 'default/run1', count: 1 }]);
    expect(m.network.peers.find((x) => x.address === '10.1.2.3')!.seenIn).toEqual([
      { container: 'default/run1', count: 1 },
      { container: 'default/run2', count: 5 },
    ]);
    expect(m.syscalls.names).toEqual(['execve', 'openat', 'read', 'write']);
    expect(m.syscalls.seenIn.read).toEqual(['default/run1', 'default/run2']);
    expect(m.syscalls.seenIn.openat).toEqual(['default/run2']);
    expect(m.incomplete).toEqual(["default/run2: the kernel's exec table was full"]);
    expect(learnedAnnotations(m)).toEqual({
      'cgfence.io/exec-allow': '/bin/busybox,/usr/local/bin/tool-a',
      'cgfence.io/egress-allow': '10.1.2.3/32,10.1.9.9/32,10.9.9.9/32,2001:db8::1/128',
      'cgfence.io/ingress-allow': '127.0.0.1/32',
      'cgfence.io/seccomp-allow': 'execve,openat,read,write',
    });
  });

  it('refuses to merge nothing', () => {
    expect(() => mergeLearned([])).toThrow(/nothing to merge/);
  });
});

describe('cgfence learn flags', () => {
  const cgfence = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js'), 'learn', ...args], {
      encoding: 'utf8',
      env: { ...process.env, CGFENCE_SOCKET: '/nonexistent/cgfence.sock', CGFENCE_AUDIT_LOG: '/nonexistent/audit.log' },
    });

  it('names the bad value in one line', () => {
    expect(cgfence('x', '--format', 'toml').stderr).toMatch(/--format "toml": expected ctr, yaml or json/);
    expect(cgfence('x', '--json', '--format', 'yaml').stderr).toMatch(/--json and --format yaml disagree/);
    expect(cgfence('--pod', 'a/b/c').stderr).toMatch(/--pod "a\/b\/c": expected NAMESPACE\/NAME/);
    expect(cgfence().stderr).toMatch(/expected a CONTAINER id \(or several\), or --pod NAMESPACE\/NAME/);
    const down = cgfence('gone-job');
    expect(down.status).toBe(1);
    expect(down.stderr).toMatch(
      /^cgfence learn: nothing learned for container "gone-job": cannot reach the cgfence daemon .*, and \/nonexistent\/audit.log has no learned record of it/,
    );
  });
});

describe('formatAddress', () => {
  it('writes RFC 5952 text', () => {
    const v6 = (s: string) => Buffer.from(s.replace(/:/g, ''), 'hex');
    expect(formatAddress(Buffer.from([127, 0, 0, 1]))).toBe('127.0.0.1');
    expect(formatAddress(v6('0000:0000:0000:0000:0000:0000:0000:0001'))).toBe('::1');
    expect(formatAddress(v6('20010db8000000000000000000000000'))).toBe('2001:db8::');
    expect(formatAddress(v6('20010db8000000010000000000000001'))).toBe('2001:db8:0:1::1');
    expect(formatAddress(v6('20010db8000100000001000000000000'))).toBe('2001:db8:1:0:1::');
    expect(formatAddress(v6('00000000000000000000000000000000'))).toBe('::');
    expect(formatAddress(v6('20010db8000100010001000100010001'))).toBe('2001:db8:1:1:1:1:1:1');
  });
});
