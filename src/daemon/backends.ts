// Which fence backends this daemon runs, in attach order. Each control has one backend;
// the choice can depend on the node (cgroup mode, kernel features). The shared sinks (audit
// and clock, container lookups) exist before the backends and are handed to them.
import path from 'node:path';
import { ExecEvent } from '../kernel/abi';
import { ExecBackend } from '../fence/exec/exec-backend';
import { FenceBackend, FencedContainer } from '../fence/backend';
import { EventSink } from '../fence/event-sink';
import { LearnBackend } from '../fence/learn/learn-backend';
import { NetworkBackend } from '../fence/network/network-backend';
import { NetworkControl } from '../fence/network/network-control';
import { SeccompBackend } from '../fence/seccomp/seccomp-backend';
import { openDenyNotifier } from '../fence/seccomp/deny-notifier';
import { ExecNotifyBackend } from '../fence/exec/exec-notify-backend';
import { Policy } from '../policy/policy';
import { ExecLsmBackend, LSM_HOOK } from '../fence/exec/exec-lsm-backend';
import { ExecLsm, probeExecLsm } from '../kernel/exec-lsm';
import { DaemonConfig } from './config';

export interface Backends {
  exec: ExecBackend;
  network: NetworkBackend;
  learn: LearnBackend;
  seccomp: SeccompBackend;
  all: FenceBackend[];
}

export interface BackendDeps {
  sink: EventSink;
  /** A container's policy from its (effective) annotations, with the node's profiles. */
  policyOf: (annotations: Record<string, string>) => Policy;
  /** The registry entry of a fenced container. */
  lookup: (namespace: string, id: string) => FencedContainer | undefined;
  /** A container between prepare and attach. */
  inFlight: (namespace: string, id: string) => boolean;
  /** runc handed over the seccomp listener of a container between prepare and attach (its init's pid). */
  initReady?: (namespace: string, id: string, pid: number) => void;
  log: (m: string) => void;
}

export function createBackends(cfg: DaemonConfig, deps: BackendDeps): Backends {
  const { sink } = deps;
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
      lsm = ExecLsm.attach({ pinDir: cfg.pinDir, sizes: { fences: cfg.tableSizes.exec_fences, exec_allow: cfg.tableSizes.exec_allow } });
    } catch (e) {
      lsmUnusable = `the BPF LSM program did not attach: ${(e as Error).message.split('\n')[0]}`;
    }
  }
  const exec = new ExecBackend({
    pinDir: cfg.pinDir,
    cgroupMode: cfg.cgroupMode,
    limits: cfg.limits,
    sizes: cfg.tableSizes,
    sink,
    kernelHook: lsm ? 'lsm' : 'tracepoint',
    lsmUnusable,
    onEvents: (evs: ExecEvent[]) => learnEvents?.onExecEvents(evs),
  });
  // Exec first: a container whose exec fence cannot attach is refused before anything
  // else is made for it.
  // Seccomp after exec: both edit config.json at prepare, and its deny/allow rules are
  // merged over whatever exec routing is already there.
  const network = new NetworkBackend({
    pinDir: path.join(cfg.pinDir, 'net'),
    cgroupMode: cfg.cgroupMode,
    sink,
    limits: cfg.limits,
    sizes: cfg.tableSizes,
  });
  // Containers fenced by pid namespace get the connect audit instead (it enforces nothing).
  const networkControl = new NetworkControl(network, cfg.cgroupMode, {
    pinDir: path.join(cfg.pinDir, 'net-v1'),
    sink,
    policyOf: deps.policyOf,
  });
  // Learn last: it records for whatever the others attached, and blocks nothing.
  const learn = new LearnBackend({
    pinDir: cfg.pinDir,
    stateDir: cfg.stateDir,
    cgroupMode: cfg.cgroupMode,
    sink,
  });
  learnEvents = learn;
  // BPF LSM refuses inside the kernel with EACCES: no notify loop, no fd-holder, nothing routed.
  const execControl = lsm ? new ExecLsmBackend(exec, lsm) : execWithNotify(cfg, exec, deps);
  // Enforce-mode seccomp denials are answered and recorded by the exec control's notify loop.
  const seccomp = new SeccompBackend(
    execControl instanceof ExecNotifyBackend
      ? { sink, log: deps.log, notifier: execControl.notify }
      : { sink, log: deps.log, openNotifier: () => openDenyNotifier(cfg.stateDir, sink, deps.log) },
  );
  deps.log(
    `exec backend: ${lsm ? `bpf-lsm (${LSM_HOOK})` : `tracepoints${cfg.execDeny === 'kill' ? ' (exec-deny kill)' : ' with seccomp notify'} (BPF LSM not used: ${lsmUnusable})`}`,
  );
  const all: FenceBackend[] = [execControl, seccomp, networkControl, learn];
  return { exec, network, learn, seccomp, all };
}

/**
 * The exec control with EACCES for denied execs (seccomp notify) in front of the kernel
 * fence; the kernel fence alone (SIGKILL) when the notify loop cannot start, said in the log.
 */
function execWithNotify(cfg: DaemonConfig, exec: ExecBackend, deps: BackendDeps): FenceBackend {
  // --exec-deny kill: no notify loop, no fd-holder, nothing routed at prepare. An fd-holder
  // left by an earlier errno-mode daemon goes on answering its containers CONTINUE.
  if (cfg.execDeny === 'kill') return exec;
  try {
    return new ExecNotifyBackend(exec, cfg.stateDir, {
      lookup: deps.lookup,
      inFlight: deps.inFlight,
      initReady: deps.initReady,
      sink: deps.sink,
      log: deps.log,
    });
  } catch (e) {
    deps.log(`exec denials stay SIGKILL (the seccomp notify loop did not start: ${(e as Error).message})`);
    return exec;
  }
}
