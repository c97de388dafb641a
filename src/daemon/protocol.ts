// The daemon socket protocol: one JSON object per line each way, one request per
// connection or several in sequence. Replies always start with {"ok":true or
// {"ok":false,"error": — the native launcher (native/cgfence-runc) relies on that.

export interface PrepareRequest {
  op: 'prepare';
  id: string;
  bundle: string;
  runcRoot?: string;
  /**
   * The client takes the attach's outcome unasked: when the reply says `push: true`, a line
   * `{"ok":...,"pushed":"attach","pid":N}` follows on the connection once the attach that
   * began at the seccomp listener hand-off is done, and no attach request is needed.
   */
  push?: boolean;
}
export interface AttachRequest {
  op: 'attach';
  id: string;
  bundle: string;
  runcRoot?: string;
  pid: number;
}
export interface StatusRequest {
  op: 'status';
}
export interface PsRequest {
  op: 'ps';
}
export interface PolicyCheckRequest {
  op: 'policy-check';
  annotations: Record<string, string>;
}
export interface ShutdownRequest {
  op: 'shutdown';
  detach?: boolean;
}
/** Live policy change: annotations merged into the container's; a null value removes the key. */
export interface PolicySetRequest {
  op: 'policy-set';
  namespace?: string;
  id: string;
  annotations: Record<string, string | null>;
}

/** What a learn-mode container has done so far (`running: false` when no such container learns here). */
export interface LearnRequest {
  op: 'learn';
  namespace?: string;
  id: string;
}

/** The fenced container a full id or unique id prefix names: {namespace, id, workload}. */
export interface ResolveRequest {
  op: 'resolve';
  namespace?: string;
  id: string;
}

export type Request =
  | PrepareRequest
  | AttachRequest
  | StatusRequest
  | PsRequest
  | PolicyCheckRequest
  | ShutdownRequest
  | PolicySetRequest
  | LearnRequest
  | ResolveRequest;

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
  const str = (k: string) =>
    typeof o[k] === 'string' && (o[k] as string).length > 0 && (o[k] as string).length < 4096 ? null : `"${k}" must be a non-empty string`;
  // Optional fields are checked too: a wrong type would otherwise surface as a handler crash.
  const optStr = (k: string) => (o[k] === undefined ? null : str(k));
  switch (o.op) {
    case 'prepare':
      return (
        str('id') ??
        str('bundle') ??
        optStr('runcRoot') ??
        (o.push === undefined || typeof o.push === 'boolean' ? null : '"push" must be true or false')
      );
    case 'attach':
      return (
        str('id') ??
        str('bundle') ??
        optStr('runcRoot') ??
        (Number.isInteger(o.pid) && (o.pid as number) > 0 && (o.pid as number) <= 0x7fffffff ? null : '"pid" must be a positive integer')
      );
    case 'policy-check':
      if (typeof o.annotations !== 'object' || o.annotations === null || Array.isArray(o.annotations))
        return '"annotations" must be an object';
      return Object.values(o.annotations).every((v) => typeof v === 'string') ? null : 'annotation values must be strings';
    case 'shutdown':
      return o.detach === undefined || typeof o.detach === 'boolean' ? null : '"detach" must be true or false';
    case 'policy-set':
      if (optStr('namespace')) return optStr('namespace');
      if (typeof o.annotations !== 'object' || o.annotations === null || Array.isArray(o.annotations))
        return '"annotations" must be an object';
      if (Object.keys(o.annotations).length === 0) return '"annotations" must name at least one annotation';
      if (!Object.values(o.annotations).every((v) => typeof v === 'string' || v === null))
        return 'annotation values must be strings (or null to remove one)';
      return str('id');
    case 'learn':
    case 'resolve':
      return optStr('namespace') ?? str('id');
    case 'status':
    case 'ps':
      return null;
    default: {
      // The refusal echoes the op; a megabyte of it must not come back.
      const op = JSON.stringify(o.op) ?? 'undefined';
      return `unknown op ${op.length > 64 ? `${op.slice(0, 64)}...` : op} (known: prepare, attach, status, ps, policy-check, policy-set, learn, resolve, shutdown)`;
    }
  }
}
