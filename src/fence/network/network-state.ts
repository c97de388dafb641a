// What the network control keeps per container in the registry (fences.json): the cgroup v2
// fence (its id, cgroup and rule summary) or, for a container fenced by pid namespace, the
// connect audit that stands in for it. Written and read back by the network backends only.
import { JsonFields, definedOnly } from '../json-fields';

export const NETWORK_V2_BACKEND = 'cgroup-v2 bpf (sock_addr + cgroup_skb)';
export const NETWORK_V1_BACKEND = 'pidns-tracepoint';

export type NetworkState = {
  backend?: typeof NETWORK_V2_BACKEND | typeof NETWORK_V1_BACKEND;
  /** The fence id (v2: the cgroup id; v1: the pid-namespace key), decimal. */
  fenceId?: string;
  /** v2: the cgroup whose counters and rules it is. */
  cgroupId?: string;
  /** v2: how many CIDR entries the rule set has. */
  entries?: number;
  /** v2: whether what no rule matches is refused, per direction. */
  defaultDeny?: { egress: boolean; ingress: boolean };
  /** v1: `pid:[inode]` of the audited pid namespace. */
  pidns?: string;
  /** v1: what the audit sees (it enforces nothing). */
  audits?: string;
};

export function readNetworkState(f: JsonFields): NetworkState {
  const dd = f.optObj('defaultDeny');
  return definedOnly({
    backend: f.optOneOf('backend', [NETWORK_V2_BACKEND, NETWORK_V1_BACKEND] as const),
    fenceId: f.optDecimal('fenceId'),
    cgroupId: f.optDecimal('cgroupId'),
    entries: f.optNum('entries'),
    defaultDeny: dd && { egress: dd.bool('egress'), ingress: dd.bool('ingress') },
    pidns: f.optStr('pidns'),
    audits: f.optStr('audits'),
  });
}
