// Which fence backends this daemon runs, in attach order. Each control has one backend;
// the choice can depend on the node (cgroup mode, kernel features).
import path from 'node:path';
import { ExecEvent } from '../kernel/abi';
import { ExecBackend } from '../fence/exec/exec-backend';
import { FenceBackend } from '../fence/backend';
import { LearnBackend } from '../fence/learn/learn-backend';
import { NetworkBackend } from '../fence/network/network-backend';
import { NetworkControl } from '../fence/network/network-control';
import { SeccompBackend } from '../fence/seccomp/seccomp-backend';
import { ExecNotifyBackend } from '../fence/exec/exec-notify-backend';
import { ExecLsmBackend, LSM_HOOK } from '../fence/exec/exec-lsm-backend';
import { ExecLsm, probeExecLsm } from '../kernel/exec-lsm';
import { DaemonConfig } from './config';
import type { FenceManager } from './fence-manager';

export interface Backends {
  exec: ExecBackend;
  network: NetworkBackend;
  learn: LearnBackend;
  all: FenceBackend[];
}

/**
 * `manager` is resolved lazily: backends hand kernel events to the manager, which is
 * created after them.
 */
export function createBackends(cfg: DaemonConfig, manager: () => FenceManager): Backends {
  // Exec events of learning containers go to the learn backend too, once it exists.
  let learnEvents: LearnBackend | undefined;
  // The exec hook is chosen per node, once: BPF LSM where a tiny LSM program loads, attaches
  // and would be called (EACCES inside the kernel); else the tracepoints with seccomp notify.
  const probe = probeExecLsm();
  let lsm: ExecLsm | null = null;
  let lsmUnusable = probe.usable ? undefined : probe.why;
  if (probe.usable) {
    // Attached before the exec fence opens its maps (they are shared through their pins, in
    // either order); if it cannot attach (say, pinned maps of another layout), the node gets
    // the tracepoints instead of no daemon.
    try {
      lsm = ExecLsm.attach({ pinDir: cfg.pinDir });
    } catch (e) {
      lsmUnusable = `the BPF LSM program did not attach: ${(e as Error).message.split('\n')[0]}`;
    }
  }
  const exec = new ExecBackend({
    pinDir: cfg.pinDir, cgroupMode: cfg.cgroupMode,
    kernelHook: lsm ? 'lsm' : 'tracepoint', lsmUnusable,
    onEvents: (evs: ExecEvent[]) => {
      manager().onExecEvents(evs);
      learnEvents?.onExecEvents(evs);
    },
  });
  // Exec first: a container whose exec fence cannot attach is refused before anything
  // else is made for it.
  // Seccomp after exec: both edit config.json at prepare, and its deny/allow rules are
  // merged over whatever exec routing is already there.
  const network = new NetworkBackend({
    pinDir: path.join(cfg.pinDir, 'net'), cgroupMode: cfg.cgroupMode,
    write: (records) => manager().writeAudit(records),
    owner: (fenceId) => manager().registry.byEvent(fenceId),
    toWallNs: (ns) => manager().monoToWallNs(ns),
  });
  // Containers fenced by pid namespace get the connect audit instead (it enforces nothing).
  const networkControl = new NetworkControl(network, cfg.cgroupMode, {
    pinDir: path.join(cfg.pinDir, 'net-v1'),
    writeAudit: (r) => manager().writeAudit(r),
    monoToWallNs: (ns) => manager().monoToWallNs(ns),
    owner: (k) => {
      const f = manager().registry.byEvent(k);
      return f && { namespace: f.namespace, id: f.id, policy: manager().parse(f.annotations) };
    },
  });
  // Learn last: it records for whatever the others attached, and blocks nothing.
  const learn = new LearnBackend({
    pinDir: cfg.pinDir, stateDir: cfg.stateDir, cgroupMode: cfg.cgroupMode,
    execDrops: () => exec.fence.drops(),
    audit: (records) => manager().writeAudit(records),
  });
  learnEvents = learn;
  const execControl = lsm ? new ExecLsmBackend(exec, lsm) : execWithNotify(cfg, exec, manager);
  console.error(`cgfence daemon: exec backend: ${lsm ? `bpf-lsm (${LSM_HOOK})` : `tracepoints with seccomp notify (BPF LSM not used: ${lsmUnusable})`}`);
  const all: FenceBackend[] = [execControl, new SeccompBackend(), networkControl, learn];
  return { exec, network, learn, all };
}

/**
 * The exec control with EACCES for denied execs (seccomp notify) in front of the kernel
 * fence; the kernel fence alone (SIGKILL) when the notify loop cannot start, said in the log.
 */
function execWithNotify(cfg: DaemonConfig, exec: ExecBackend, manager: () => FenceManager): FenceBackend {
  try {
    return new ExecNotifyBackend(exec, cfg.stateDir, {
      lookup: (ns, id) => manager().registry.get(ns, id),
      inFlight: (ns, id) => manager().isInFlight(ns, id),
      write: (records) => manager().writeAudit(records),
      toWallNs: (ns) => manager().monoToWallNs(ns),
      log: (m) => console.error(`cgfence daemon: ${m}`),
    });
  } catch (e) {
    console.error(`cgfence daemon: exec denials stay SIGKILL (the seccomp notify loop did not start: ${(e as Error).message})`);
    return exec;
  }
}
