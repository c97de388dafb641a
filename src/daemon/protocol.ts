// The daemon socket protocol: one JSON object per line each way, one request per
// connection or several in sequence. Replies always start with {"ok":true or
// {"ok":false,"error": — the native launcher (native/cgfence-runc) relies on that.

export interface PrepareRequest { op: 'prepare'; id: string; bundle: string; runcRoot?: string }
export interface AttachRequest { op: 'attach'; id: string; bundle: string; runcRoot?: string; pid: number }
export interface StatusRequest { op: 'status' }
export interface PsRequest { op: 'ps' }
export interface PolicyCheckRequest { op: 'policy-check'; annotations: Record<string, string> }
export interface ShutdownRequest { op: 'shutdown'; detach?: boolean }

export type Request = PrepareRequest | AttachRequest | StatusRequest | PsRequest | PolicyCheckRequest | ShutdownRequest;

export type Reply = { ok: true; [k: string]: unknown } | { ok: false; error: string };

export const MAX_REQUEST_BYTES = 1024 * 1024;

export function ok(fields: Record<string, unknown> = {}): Reply {
  return { ok: true, ...fields };
}

export function refuse(error: string): Reply {
  return { ok: false, error };
}

/** Validates the shape of a decoded request; returns an error message or null. */
export function checkRequest(r: unknown): string | null {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return 'request must be a JSON object';
  const o = r as Record<string, unknown>;
  const str = (k: string) => (typeof o[k] === 'string' && (o[k] as string).length > 0 && (o[k] as string).length < 4096 ? null : `"${k}" must be a non-empty string`);
  switch (o.op) {
    case 'prepare':
      return str('id') ?? str('bundle');
    case 'attach':
      return str('id') ?? str('bundle') ?? (Number.isInteger(o.pid) && (o.pid as number) > 0 ? null : '"pid" must be a positive integer');
    case 'policy-check':
      if (typeof o.annotations !== 'object' || o.annotations === null || Array.isArray(o.annotations)) return '"annotations" must be an object';
      return Object.values(o.annotations).every((v) => typeof v === 'string') ? null : 'annotation values must be strings';
    case 'status':
    case 'ps':
    case 'shutdown':
      return null;
    default:
      return `unknown op ${JSON.stringify(o.op)} (known: prepare, attach, status, ps, policy-check, shutdown)`;
  }
}
