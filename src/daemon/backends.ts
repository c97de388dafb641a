// Which fence backends this daemon runs, in attach order. Each control has one backend;
// the choice can depend on the node (cgroup mode, kernel features).
import { ExecEvent } from '../kernel/abi';
import { ExecBackend } from '../fence/exec-backend';
import { FenceBackend } from '../fence/backend';
import { DaemonConfig } from './config';
import type { FenceManager } from './fence-manager';

export interface Backends {
  exec: ExecBackend;
  all: FenceBackend[];
}

/**
 * `manager` is resolved lazily: backends hand kernel events to the manager, which is
 * created after them.
 */
export function createBackends(cfg: DaemonConfig, manager: () => FenceManager): Backends {
  const exec = new ExecBackend({
    pinDir: cfg.pinDir, cgroupMode: cfg.cgroupMode,
    onEvents: (evs: ExecEvent[]) => manager().onExecEvents(evs),
  });
  // Exec first: a container whose exec fence cannot attach is refused before anything
  // else is made for it.
  const all: FenceBackend[] = [exec];
  return { exec, all };
}
