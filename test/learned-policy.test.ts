// The annotations made of a learned result: stable order, addresses alone or folded into
// networks on request, RFC 5952 IPv6 text, and every value accepted by the parser.
import { describe, expect, it } from 'vitest';
import { Learned, formatAddress, learnedAnnotations, learnedWarnings } from '../src/fence/learn/learned-policy';
import { parseAnnotations } from '../src/policy/annotations';

function learned(over: Partial<Learned> = {}): Learned {
  return {
    namespace: 'default', id: 'c', running: false, since: '',
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

  it('says what is missing', () => {
    const w = learnedWarnings(learned({ syscalls: { names: [], unnamed: [{ abi: 'compat', nr: 102, name: 'socketcall' }], outOfRange: 2 } }));
    expect(w).toEqual([
      'executable 0:46:3 (run as "./gone") is no file of the container\'s root filesystem: it was created at run time and removed, or lies on a mount outside the image; it is not in cgfence.io/exec-allow',
      'syscalls that cgfence.io/seccomp-allow cannot name on this architecture are not in it: compat 102 (socketcall)',
      '2 syscalls had numbers outside the recorded range (x32?) and are not in cgfence.io/seccomp-allow',
    ]);
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
