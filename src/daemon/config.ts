// Daemon settings: flag > environment variable > config file (JSON or YAML) > default.
import fs from 'node:fs';
import YAML from 'yaml';

import { CgroupMode } from '../fence/backend';

export type { CgroupMode } from '../fence/backend';
export type FailMode = 'closed' | 'open';
/**
 * How an exec the allow-list forbids is stopped, node-wide. errno: seccomp user notification
 * refuses it with EACCES before the kernel loads it (the kernel fence stays behind it);
 * kill: no seccomp notification at all, the kernel fence alone kills it before its first
 * instruction (exit 137), and allowed execs pay nothing for the notify round trip.
 */
export type ExecDeny = 'errno' | 'kill';

export interface DaemonConfig {
  containerdSocket: string;
  stateDir: string;
  auditLog: string;
  socket: string;
  cgroupMode: CgroupMode;
  pinDir: string;
  failMode: FailMode;
  profiles: Record<string, Record<string, string>>;
  defaultProfile: string | null;
  auditMaxBytes: number;
  auditKeep: number;
  /** Prometheus endpoint: HOST:PORT (localhost) or a unix socket path; null for none. */
  metricsAddress: string | null;
  /** Where cgfence-runc spools fail-open records while the daemon is unreachable. */
  spoolDir: string;
  execDeny: ExecDeny;
}

export const DEFAULTS: DaemonConfig = {
  containerdSocket: '/run/containerd/containerd.sock',
  stateDir: '/var/lib/cgfence',
  auditLog: '/var/log/cgfence/audit.log',
  socket: '/run/cgfence/cgfence.sock',
  cgroupMode: 'auto',
  pinDir: '/sys/fs/bpf/cgfence',
  failMode: 'closed',
  profiles: {},
  defaultProfile: null,
  auditMaxBytes: 64 * 1024 * 1024,
  auditKeep: 5,
  metricsAddress: null,
  spoolDir: '/run/cgfence/spool',
  execDeny: 'errno',
};

/** flag name → [config key, environment variable] */
export const SETTINGS: Record<string, [keyof DaemonConfig, string]> = {
  'containerd-socket': ['containerdSocket', 'CGFENCE_CONTAINERD_SOCKET'],
  'state-dir': ['stateDir', 'CGFENCE_STATE_DIR'],
  'audit-log': ['auditLog', 'CGFENCE_AUDIT_LOG'],
  socket: ['socket', 'CGFENCE_SOCKET'],
  'cgroup-mode': ['cgroupMode', 'CGFENCE_CGROUP_MODE'],
  'pin-dir': ['pinDir', 'CGFENCE_PIN_DIR'],
  'fail-mode': ['failMode', 'CGFENCE_FAIL_MODE'],
  'metrics-address': ['metricsAddress', 'CGFENCE_METRICS_ADDRESS'],
  'spool-dir': ['spoolDir', 'CGFENCE_SPOOL_DIR'],
  'exec-deny': ['execDeny', 'CGFENCE_EXEC_DENY'],
};

export class ConfigError extends Error {}

export function loadConfigFile(file: string): Partial<DaemonConfig> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  let data: unknown;
  try {
    data = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`config file ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new ConfigError(`config file ${file}: expected a mapping at the top level`);
  const out: Partial<DaemonConfig> = {};
  const known = new Set(Object.keys(DEFAULTS));
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (!known.has(k)) throw new ConfigError(`config file ${file}: unknown setting "${k}" (known: ${[...known].join(', ')})`);
    (out as Record<string, unknown>)[k] = v;
  }
  if (out.profiles !== undefined) {
    if (typeof out.profiles !== 'object' || out.profiles === null) throw new ConfigError(`config file ${file}: profiles must be a mapping of name to annotations`);
    for (const [name, p] of Object.entries(out.profiles)) {
      if (typeof p !== 'object' || p === null || Object.values(p).some((x) => typeof x !== 'string')) {
        throw new ConfigError(`config file ${file}: profile "${name}" must map annotation keys to string values`);
      }
    }
  }
  return out;
}

export function resolveConfig(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  const file = flags.config ?? env.CGFENCE_CONFIG;
  const cfg: DaemonConfig = { ...DEFAULTS, ...(file ? loadConfigFile(file) : {}) };
  for (const [flag, [key, envName]] of Object.entries(SETTINGS)) {
    const v = flags[flag] ?? env[envName];
    if (v !== undefined && v !== '') (cfg as unknown as Record<string, unknown>)[key] = v;
  }
  if (!['auto', 'v2', 'v1'].includes(cfg.cgroupMode)) throw new ConfigError(`--cgroup-mode ${JSON.stringify(cfg.cgroupMode)}: expected auto, v2 or v1`);
  if (!['closed', 'open'].includes(cfg.failMode)) throw new ConfigError(`--fail-mode ${JSON.stringify(cfg.failMode)}: expected closed or open`);
  if (!['errno', 'kill'].includes(cfg.execDeny)) throw new ConfigError(`--exec-deny ${JSON.stringify(cfg.execDeny)}: expected errno or kill`);
  return cfg;
}
