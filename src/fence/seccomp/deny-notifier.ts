// The notify loop and fd-holder for enforce-mode seccomp denials on a node whose exec
// control has none (the BPF-LSM exec backend, --exec-deny kill): the same ExecNotifier,
// opened only when a container first needs it, with no exec allow sets. Every container's
// fds are let through for execs (the exec control there is the kernel's alone); only the
// denials are answered (EPERM) and counted.
import { EventSink } from '../event-sink';
import { ExecNotifier } from '../exec/exec-notify';

export function openDenyNotifier(stateDir: string, sink: EventSink, log: (m: string) => void): ExecNotifier {
  const n: ExecNotifier = ExecNotifier.open({
    stateDir,
    // No exec is routed here, so none is ever denied by the loop.
    onDenied: () => {},
    // A container's fds (at start, or back from the fd-holder after a restart): nothing to
    // wait for, its execs go on to the kernel.
    onNeed: (key) => n.passThrough(key),
    audit: (r) => sink.write([r]),
    log,
  });
  return n;
}
