// Live reload of the node config: re-reads the settings as at start (flags, environment,
// file), applies what can change live (profiles, defaultProfile, selectors) into the config
// object the manager and backends share, and says what would need a restart. A bad file
// changes nothing. Every attempt is an agent/config-reload record with the file's hash.
// Triggered by SIGHUP (the daemon command) and by the file changing (ConfigWatcher).
import { AuditLog } from '../audit/audit-log';
import { PolicyError } from '../policy/annotations';
import { DaemonConfig, RELOADABLE, configHash } from './config';
import { ConfigWatcher } from './config-watcher';

export interface ReloadState {
  at: string;
  trigger: string;
  ok: boolean;
  hash: string | null;
  error?: string;
}

export interface ConfigReloaderOptions {
  /** The running config; reloads change it in place. */
  cfg: DaemonConfig;
  configFile: string;
  reloadConfig: () => DaemonConfig;
  /** Throws (a PolicyError, say) when the new config must not be taken. */
  validate: (next: DaemonConfig) => void;
  audit: AuditLog;
  log: (m: string) => void;
  /** After a reload is taken (the launcher's node hint follows the new profiles and selectors). */
  applied?: (cfg: DaemonConfig) => void;
}

export class ConfigReloader {
  private watcher: ConfigWatcher | null = null;
  /** sha256 of the file the running config came from. */
  hash: string | null = null;
  last: ReloadState | null = null;

  constructor(private readonly o: ConfigReloaderOptions) {
    try {
      this.hash = configHash(o.configFile);
    } catch {
      /* loaded a moment ago; a reload says if it is gone */
    }
  }

  watch(): void {
    this.watcher = new ConfigWatcher(this.o.configFile, () => this.reload('file-change'));
  }

  reload(trigger: 'sighup' | 'file-change'): boolean {
    const { cfg, configFile: file } = this.o;
    let hash: string | null = null;
    try {
      hash = configHash(file);
      const next = this.o.reloadConfig();
      this.o.validate(next);
      const changed = RELOADABLE.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(cfg[k]));
      const restartNeeded = (Object.keys(next) as Array<keyof DaemonConfig>).filter(
        (k) => !RELOADABLE.includes(k) && JSON.stringify(next[k]) !== JSON.stringify(cfg[k]),
      );
      for (const k of RELOADABLE) (cfg as unknown as Record<string, unknown>)[k] = next[k];
      this.o.applied?.(cfg);
      this.hash = hash;
      this.last = { at: new Date().toISOString(), trigger, ok: true, hash };
      this.watcher?.sync();
      this.o.audit.write({
        type: 'agent',
        action: 'config-reload',
        trigger,
        ok: true,
        config_file: file,
        config_hash: hash,
        changed,
        restart_needed: restartNeeded,
        profiles: Object.keys(next.profiles),
        selectors: next.selectors.length,
        default_profile: next.defaultProfile,
      });
      this.o.log(
        `config reloaded (${trigger}, ${hash}): ${changed.length ? `changed ${changed.join(', ')}` : 'no change'}${restartNeeded.length ? `; needs a restart to change ${restartNeeded.join(', ')}` : ''}`,
      );
      return true;
    } catch (e) {
      const msg = e instanceof PolicyError ? e.problems.join('; ') : (e as Error).message;
      this.o.audit.write({ type: 'agent', action: 'config-reload', trigger, ok: false, config_file: file, config_hash: hash, error: msg });
      this.last = { at: new Date().toISOString(), trigger, ok: false, hash, error: msg };
      this.o.log(`config reload (${trigger}) refused, the running config stays: ${msg}`);
      return false;
    }
  }

  close(): void {
    this.watcher?.close();
  }
}
