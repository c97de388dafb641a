// Compiles a policy's CIDR lists into the network fence's trie entries. The kernel does one
// longest-prefix lookup per decision, so "a deny entry always wins" is settled here: an
// allow entry that lies inside a deny entry is stored with the deny verdict (addresses whose
// longest match is that allow entry are inside the deny network too), and a CIDR in both
// lists is stored once, as a deny.
import { Family, NetDir, NetVerdict, RULE_DEFAULT } from '../../kernel/net-abi';
import { NetRuleEntry } from '../../kernel/net-fence';
import { KEYS } from '../../policy/annotations';
import { Cidr, Policy } from '../../policy/policy';

export interface CompiledNetRules {
  entries: NetRuleEntry[];
  /** Per direction (NetDir index): an -allow list exists, so unmatched addresses are refused. */
  defaultDeny: [boolean, boolean];
  /** ruleId → the annotation and CIDR that decided, for audit records. */
  table: string[];
}

const LISTS: Array<{ dir: NetDir; verdict: NetVerdict; key: string; field: keyof Policy }> = [
  { dir: NetDir.Egress, verdict: NetVerdict.Deny, key: KEYS.egressDeny, field: 'egressDeny' },
  { dir: NetDir.Egress, verdict: NetVerdict.Allow, key: KEYS.egressAllow, field: 'egressAllow' },
  { dir: NetDir.Ingress, verdict: NetVerdict.Deny, key: KEYS.ingressDeny, field: 'ingressDeny' },
  { dir: NetDir.Ingress, verdict: NetVerdict.Allow, key: KEYS.ingressAllow, field: 'ingressAllow' },
];

const V4_MAPPED = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/**
 * The network in the family the kernel judges it in: an IPv6 CIDR inside ::ffff:0:0/96 is
 * the IPv4 network it maps (the kernel judges IPv4-mapped destinations as IPv4). A shorter
 * IPv6 prefix that merely contains the mapped range (::/0) stays IPv6-only.
 */
export function normalizeCidr(c: Cidr): { family: Family; addr: Buffer; prefix: number } {
  if (c.family === 6 && c.prefix >= 96 && c.addr.subarray(0, 12).equals(V4_MAPPED)) {
    return { family: 4, addr: Buffer.from(c.addr.subarray(12, 16)), prefix: c.prefix - 96 };
  }
  return { family: c.family, addr: c.addr, prefix: c.prefix };
}

function covers(outer: { addr: Buffer; prefix: number }, inner: { addr: Buffer; prefix: number }): boolean {
  if (outer.prefix > inner.prefix) return false;
  for (let bit = 0; bit < outer.prefix; bit += 8) {
    const n = Math.min(8, outer.prefix - bit);
    const mask = (0xff << (8 - n)) & 0xff;
    if ((outer.addr[bit / 8] & mask) !== (inner.addr[bit / 8] & mask)) return false;
  }
  return true;
}

export function compileNetRules(policy: Policy): CompiledNetRules {
  const table: string[] = [];
  const byKey = new Map<string, NetRuleEntry>();
  const denies: NetRuleEntry[] = [];
  const defaultDeny: [boolean, boolean] = [policy.egressAllow !== null, policy.ingressAllow !== null];

  // Denies first: a CIDR listed in both lists keeps its deny entry.
  for (const l of LISTS) {
    for (const c of (policy[l.field] as Cidr[] | null) ?? []) {
      const n = normalizeCidr(c);
      const k = `${l.dir}|${n.family}|${n.addr.toString('hex')}|${n.prefix}`;
      if (byKey.has(k)) continue;
      const ruleId = table.length;
      table.push(`${l.key}=${c.text}`);
      const e: NetRuleEntry = { dir: l.dir, family: n.family, addr: n.addr, prefix: n.prefix, verdict: l.verdict, ruleId };
      if (l.verdict === NetVerdict.Allow) {
        const d = denies.find((x) => x.dir === e.dir && x.family === e.family && covers(x, e));
        if (d) {
          e.verdict = NetVerdict.Deny;
          e.ruleId = d.ruleId;
        }
      } else {
        denies.push(e);
      }
      byKey.set(k, e);
    }
  }
  return { entries: [...byKey.values()], defaultDeny, table };
}

export function describeRule(table: readonly string[] | undefined, dir: NetDir, ruleId: number): string | null {
  if (ruleId === RULE_DEFAULT) return `default deny (${dir === NetDir.Egress ? KEYS.egressAllow : KEYS.ingressAllow} is set)`;
  return table?.[ruleId] ?? null;
}
