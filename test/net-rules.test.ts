// How CIDR lists become the network fence's trie entries: "a deny entry always wins" baked
// into the verdicts, IPv4-mapped IPv6 rules turned into IPv4 ones, default-deny flags.
import { describe, expect, it } from 'vitest';
import { NetDir, NetVerdict, RULE_DEFAULT } from '../src/kernel/net-abi';
import { compileNetRules, describeRule } from '../src/fence/network/network-rules';
import { parseAnnotations } from '../src/policy/annotations';

const compile = (a: Record<string, string>) => compileNetRules(parseAnnotations(a));
const text = (e: { family: number; addr: Buffer; prefix: number }) =>
  `${e.family === 4 ? [...e.addr].join('.') : e.addr.toString('hex')}/${e.prefix}`;

describe('compileNetRules', () => {
  it('stores an allow entry that lies inside a deny entry as a deny, naming the deny rule', () => {
    const c = compile({ 'cgfence.io/egress-deny': '10.0.0.0/8', 'cgfence.io/egress-allow': '10.1.2.3/32,192.168.0.0/16' });
    const byText = Object.fromEntries(c.entries.map((e) => [text(e), e]));
    expect(byText['10.1.2.3/32']).toMatchObject({ verdict: NetVerdict.Deny, dir: NetDir.Egress });
    expect(describeRule(c.table, NetDir.Egress, byText['10.1.2.3/32'].ruleId)).toBe('cgfence.io/egress-deny=10.0.0.0/8');
    expect(byText['192.168.0.0/16'].verdict).toBe(NetVerdict.Allow);
    expect(c.defaultDeny).toEqual([true, false]);
  });

  it('keeps one deny entry for a CIDR in both lists, and directions apart', () => {
    const c = compile({
      'cgfence.io/ingress-allow': '10.0.0.0/8',
      'cgfence.io/ingress-deny': '10.0.0.0/8',
      'cgfence.io/egress-allow': '10.0.0.0/8',
    });
    expect(c.entries.filter((e) => e.dir === NetDir.Ingress)).toHaveLength(1);
    expect(c.entries.find((e) => e.dir === NetDir.Ingress)!.verdict).toBe(NetVerdict.Deny);
    expect(c.entries.find((e) => e.dir === NetDir.Egress)!.verdict).toBe(NetVerdict.Allow);
    expect(c.defaultDeny).toEqual([true, true]);
  });

  it('turns IPv4-mapped IPv6 rules into IPv4 rules; a shorter IPv6 prefix stays IPv6', () => {
    const c = compile({ 'cgfence.io/egress-deny': '::ffff:10.0.0.0/104,::/0' });
    expect(c.entries.map((e) => [e.family, text(e)])).toEqual([
      [4, '10.0.0.0/8'],
      [6, `${'00'.repeat(16)}/0`],
    ]);
  });

  it('zeroes host bits and describes the default verdict', () => {
    const c = compile({ 'cgfence.io/egress-allow': '10.1.2.3/8' });
    expect(text(c.entries[0])).toBe('10.0.0.0/8');
    expect(describeRule(c.table, NetDir.Ingress, RULE_DEFAULT)).toBe('default deny (cgfence.io/ingress-allow is set)');
  });
});
