import { Daemon } from '../../daemon/daemon';
import { SETTINGS, configFileOf, resolveConfig } from '../../daemon/config';
import { parseArgs } from '../args';

export const help = `usage: cgfence daemon [flags]

Runs the node agent: fences containers that cgfence-runc creates, follows containerd's
events to clean up at exit, and writes the audit log.

flags (each also from an environment variable, or a config file):
  --containerd-socket PATH  containerd's socket          (CGFENCE_CONTAINERD_SOCKET, /run/containerd/containerd.sock)
  --state-dir DIR           daemon state                 (CGFENCE_STATE_DIR, /var/lib/cgfence)
  --audit-log FILE          JSON-lines audit log         (CGFENCE_AUDIT_LOG, /var/log/cgfence/audit.log)
  --socket PATH             the daemon's own socket      (CGFENCE_SOCKET, /run/cgfence/cgfence.sock)
  --cgroup-mode MODE        auto | v2 | v1               (CGFENCE_CGROUP_MODE, auto)
  --pin-dir DIR             bpffs directory for pins     (CGFENCE_PIN_DIR, /sys/fs/bpf/cgfence)
  --fail-mode MODE          closed | open                (CGFENCE_FAIL_MODE, closed)
  --metrics-address ADDR    Prometheus endpoint, HOST:PORT or a socket path (CGFENCE_METRICS_ADDRESS, none)
  --spool-dir DIR           fail-open records from cgfence-runc (CGFENCE_SPOOL_DIR, /run/cgfence/spool)
  --exec-deny HOW           errno | kill: a forbidden exec fails with EACCES (seccomp notify in
                            front of the kernel fence), or is killed by the kernel fence alone
                            before its first instruction, with no notify cost  (CGFENCE_EXEC_DENY, errno)
  --config FILE             JSON or YAML with the same settings plus profiles, defaultProfile and selectors (CGFENCE_CONFIG)

SIGTERM stops the daemon and leaves fences pinned and enforcing; a restarted daemon adopts them.
SIGHUP, or a change of the config file (a ConfigMap update included), reloads profiles,
defaultProfile and selectors; each reload is an agent/config-reload audit record with the
file's hash, and a file that does not load changes nothing.`;

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: [...Object.keys(SETTINGS), 'config'] });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  const cfg = resolveConfig(a.flags);
  const configFile = configFileOf(a.flags);
  const daemon = new Daemon(cfg, undefined, { configFile, reloadConfig: () => resolveConfig(a.flags) });
  await daemon.start();
  const stop = () => void daemon.stop();
  const hup = () => void daemon.reload('sighup');
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.on('SIGHUP', hup);
  await daemon.done;
  process.off('SIGHUP', hup);
  return 0;
}
