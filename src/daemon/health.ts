// Whether the daemon is healthy (its kernel side works: restarting it would not help
// otherwise) and ready (it can also fence new containers: containerd reachable, its socket
// up, the audit log writable). One list of checks feeds /healthz, /readyz, the socket's
// status op and `cgfence status`'s verdict, so they cannot disagree.
import fs from 'node:fs';

export interface HealthCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** Part of liveness (/healthz) as well as readiness (/readyz). */
  live: boolean;
}

export interface Health {
  live: boolean;
  ready: boolean;
  checks: HealthCheck[];
}

export interface HealthInputs {
  /** The exec fence's status (its `backends` list is empty when no program is attached). */
  execStatus: Record<string, unknown>;
  pinDir: string;
  socket: string;
  containerd: { connected: boolean; lastError?: string | null; address: string };
  audit: { pending: number; writeErrors: number; lastError?: string | null; path: string };
}

export function checkHealth(i: HealthInputs): Health {
  const checks: HealthCheck[] = [];
  const backends = Array.isArray(i.execStatus.backends) ? (i.execStatus.backends as string[]) : [];
  checks.push({
    name: 'kernel',
    live: true,
    ok: backends.length > 0,
    detail:
      backends.length > 0
        ? `exec fence loaded (${backends.join(', ')})`
        : `no exec fence program attached: ${String(i.execStatus.backend ?? 'unknown')}`,
  });
  const pins = fs.existsSync(i.pinDir);
  checks.push({
    name: 'pins',
    live: true,
    ok: pins,
    detail: pins ? `${i.pinDir} present` : `${i.pinDir} is gone (fences no longer pinned)`,
  });
  const sock = fs.existsSync(i.socket);
  checks.push({
    name: 'socket',
    live: false,
    ok: sock,
    detail: sock ? i.socket : `${i.socket} is missing: cgfence-runc cannot reach the daemon`,
  });
  checks.push({
    name: 'containerd',
    live: false,
    ok: i.containerd.connected,
    detail: i.containerd.connected
      ? `event stream connected at ${i.containerd.address}`
      : `not connected at ${i.containerd.address}${i.containerd.lastError ? `: ${i.containerd.lastError}` : ''}`,
  });
  // Records waiting in memory mean the log cannot be written now.
  const auditOk = i.audit.pending === 0;
  checks.push({
    name: 'audit',
    live: false,
    ok: auditOk,
    detail: auditOk
      ? `${i.audit.path} writable`
      : `${i.audit.pending} record(s) waiting: ${i.audit.lastError ?? 'the log cannot be written'}`,
  });
  return { live: checks.filter((c) => c.live).every((c) => c.ok), ready: checks.every((c) => c.ok), checks };
}
