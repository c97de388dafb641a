// Daemon settings: flag > environment variable > config file (JSON or YAML) > default.
import fs from 'node:fs';
import crypto from 'node:crypto';
import YAML from 'yaml';
import { ProfileSelector, parseSelectors } from './profile-selectors';

import { CgroupMode } from '../fence/backend';
import { DEFAULT_LIMITS, DEFAULT_TABLE_SIZES, Limits, TableSizes, parseLimits, parseTableSizes } from '../fence/quota';
import { BUILTIN_PROFILES } from './builtin-profiles';

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
  /** Kubernetes namespace and pod labels → profile; reloaded with profiles (profile-selectors.ts). */
  selectors: ProfileSelector[];
  auditMaxBytes: number;
  auditKeep: number;
  /** Prometheus endpoint: HOST:PORT (localhost) or a unix socket path; null for none. */
  metricsAddress: string | null;
  /** Where cgfence-runc spools fail-open records while the daemon is unreachable. */
  spoolDir: string;
  execDeny: ExecDeny;
  /** Per-container quotas on the shared kernel tables (fence/quota.ts). */
  limits: Limits;
  /** Capacities of the shared kernel tables, when their maps are created (fence/quota.ts). */
  tableSizes: TableSizes;
}

export const DEFAULTS: DaemonConfig = {
  containerdSocket: '/run/containerd/containerd.sock',
  stateDir: '/var/lib/cgfence',
  auditLog: '/var/log/cgfence/audit.log',
  socket: '/run/cgfence/cgfence.sock',
  cgroupMode: 'auto',
  pinDir: '/sys/fs/bpf/cgfence',
  failMode: 'closed',
  profiles: structuredClone(BUILTIN_PROFILES) as Record<string, Record<string, string>>,
  defaultProfile: null,
  selectors: [],
  auditMaxBytes: 64 * 1024 * 1024,
  auditKeep: 5,
  metricsAddress: null,
  spoolDir: '/run/cgfence/spool',
  execDeny: 'errno',
  limits: DEFAULT_LIMITS,
  tableSizes: DEFAULT_TABLE_SIZES,
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

/** Settings a running daemon takes from a reloaded file (SIGHUP, or the file changing); the rest need a restart. */
export const RELOADABLE: ReadonlyArray<keyof DaemonConfig> = ['profiles', 'defaultProfile', 'selectors'];

/** The config file a daemon reads: flag, else environment; null for none. */
export function configFileOf(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv = process.env): string | null {
  return flags.config ?? (env.CGFENCE_CONFIG || null);
}

/** sha256 of the file's bytes, as reload records carry it ("sha256:<hex>"). */
export function configHash(file: string): string {
  return `sha256:${crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')}`;
}

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
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new ConfigError(`config file ${file}: expected a mapping at the top level`);
  const out: Partial<DaemonConfig> = {};
  const known = new Set(Object.keys(DEFAULTS));
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (!known.has(k)) throw new ConfigError(`config file ${file}: unknown setting "${k}" (known: ${[...known].join(', ')})`);
    (out as Record<string, unknown>)[k] = v;
  }
  if (out.limits !== undefined) {
    try {
      out.limits = parseLimits(out.limits, `config file ${file}`);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  if (out.tableSizes !== undefined) {
    try {
      out.tableSizes = parseTableSizes(out.tableSizes, `config file ${file}`);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  if (out.profiles !== undefined) {
    if (typeof out.profiles !== 'object' || out.profiles === null)
      throw new ConfigError(`config file ${file}: profiles must be a mapping of name to annotations`);
    for (const [name, p] of Object.entries(out.profiles)) {
      if (typeof p !== 'object' || p === null || Object.values(p).some((x) => typeof x !== 'string')) {
        throw new ConfigError(`config file ${file}: profile "${name}" must map annotation keys to string values`);
      }
    }
  }
  if (
    out.defaultProfile !== undefined &&
    out.defaultProfile !== null &&
    (typeof out.defaultProfile !== 'string' || !Object.prototype.hasOwnProperty.call(out.profiles ?? {}, out.defaultProfile))
  ) {
    throw new ConfigError(
      `config file ${file}: defaultProfile ${JSON.stringify(out.defaultProfile)} is not one of its profiles (${Object.keys(out.profiles ?? {}).join(', ') || 'none'})`,
    );
  }
  try {
    out.selectors = parseSelectors((data as Record<string, unknown>).selectors, out.profiles ?? {});
  } catch (e) {
    throw new ConfigError(`config file ${file}: ${(e as Error).message}`);
  }
  return out;
}

export function resolveConfig(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  const file = configFileOf(flags, env);
  const fromFile = file ? loadConfigFile(file) : {};
  // Built-in profiles stay available next to the file's; a file's profile of the same name wins.
  const cfg: DaemonConfig = { ...DEFAULTS, ...fromFile, profiles: { ...DEFAULTS.profiles, ...(fromFile.profiles ?? {}) } };
  for (const [flag, [key, envName]] of Object.entries(SETTINGS)) {
    const v = flags[flag] ?? env[envName];
    if (v !== undefined && v !== '') (cfg as unknown as Record<string, unknown>)[key] = v;
  }
  if (!['auto', 'v2', 'v1'].includes(cfg.cgroupMode))
    throw new ConfigError(`--cgroup-mode ${JSON.stringify(cfg.cgroupMode)}: expected auto, v2 or v1`);
  if (cfg.metricsAddress) {
    try {
      parseMetricsAddress(cfg.metricsAddress);
    } catch (e) {
      throw new ConfigError(`--${(e as Error).message}`);
    }
  }
  if (!['closed', 'open'].includes(cfg.failMode))
    throw new ConfigError(`--fail-mode ${JSON.stringify(cfg.failMode)}: expected closed or open`);
  if (!['errno', 'kill'].includes(cfg.execDeny))
    throw new ConfigError(`--exec-deny ${JSON.stringify(cfg.execDeny)}: expected errno or kill`);
  return cfg;
}

/** HOST:PORT ([::1]:9464 for IPv6) or an absolute socket path; anything else is named in the error. */
export function parseMetricsAddress(address: string): { path: string } | { host: string; port: number } {
  if (address.startsWith('/')) return { path: address };
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]*):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new Error(
      `metrics-address ${JSON.stringify(address)}: expected HOST:PORT (like 127.0.0.1:9464 or 0.0.0.0:9464) or an absolute unix socket path`,
    );
  return { host: m[1].replace(/^\[|\]$/g, '') || '0.0.0.0', port };
}
