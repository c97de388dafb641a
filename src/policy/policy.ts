// The effective policy of one container, after annotations, profile and node defaults.
// Everything the kernel side needs is here; nothing here knows about annotations.

export type Mode = 'enforce' | 'audit' | 'learn' | 'off';

export interface Cidr {
  family: 4 | 6;
  addr: Buffer;
  prefix: number;
  text: string;
}

export interface Policy {
  mode: Mode;
  /** null: no exec fence. [] with mode enforce: nothing may be executed. */
  execAllow: string[] | null;
  egressAllow: Cidr[] | null;
  egressDeny: Cidr[] | null;
  ingressAllow: Cidr[] | null;
  ingressDeny: Cidr[] | null;
  seccompDeny: string[] | null;
  seccompAllow: string[] | null;
  profile: string | null;
}

export function emptyPolicy(): Policy {
  return {
    mode: 'off',
    execAllow: null,
    egressAllow: null,
    egressDeny: null,
    ingressAllow: null,
    ingressDeny: null,
    seccompDeny: null,
    seccompAllow: null,
    profile: null,
  };
}

/** True when the policy asks for any fence at all. */
export function hasRules(p: Policy): boolean {
  return (
    p.execAllow !== null ||
    p.egressAllow !== null ||
    p.egressDeny !== null ||
    p.ingressAllow !== null ||
    p.ingressDeny !== null ||
    p.seccompDeny !== null ||
    p.seccompAllow !== null
  );
}
