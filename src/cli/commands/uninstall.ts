import { DEFAULTS } from '../../daemon/config';
import { UninstallRefused, uninstall } from '../../daemon/node-install';
import { UsageError, parseArgs } from '../args';
import { DEFAULT_RUNC_CONF, DEFAULT_RUNC_PATH } from './install';

export const help = `usage: cgfence uninstall [--socket PATH] [--pin-dir DIR] [--state-dir DIR] [--spool-dir DIR]
                         [--runc-path PATH] [--runc-conf PATH] [--audit-log FILE] [--force] [--dry-run]

Removes cgfence from this node: stops the daemon with every fence detached, then removes
its pins (maps, programs, links under --pin-dir), state, spool, socket, runc.conf and
cgfence-runc. Paths default to the daemon's defaults and CGFENCE_* variables. The audit
log is kept.

Refused while containers are fenced: stop them first (kubectl delete the pods of the
cgfence RuntimeClass), or pass --force: they run on unfenced, and cgfence-runc is kept
because their shims run it to stop them. --dry-run says what would go.`;

/** The flags `cgfence uninstall` takes (oci-config/uninstall.yaml is checked against them). */
export const UNINSTALL_FLAGS = {
  values: ['socket', 'pin-dir', 'state-dir', 'spool-dir', 'runc-path', 'runc-conf', 'audit-log'],
  bools: ['force', 'dry-run'],
};

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, UNINSTALL_FLAGS);
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  if (a.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(a.positionals[0])}`);
  const env = process.env;
  const targets = {
    socket: a.flags.socket ?? env.CGFENCE_SOCKET ?? DEFAULTS.socket,
    pinDir: a.flags['pin-dir'] ?? env.CGFENCE_PIN_DIR ?? DEFAULTS.pinDir,
    stateDir: a.flags['state-dir'] ?? env.CGFENCE_STATE_DIR ?? DEFAULTS.stateDir,
    spoolDir: a.flags['spool-dir'] ?? env.CGFENCE_SPOOL_DIR ?? DEFAULTS.spoolDir,
    runcPath: a.flags['runc-path'] ?? DEFAULT_RUNC_PATH,
    runcConf: a.flags['runc-conf'] ?? DEFAULT_RUNC_CONF,
    auditLog: a.flags['audit-log'] ?? env.CGFENCE_AUDIT_LOG ?? DEFAULTS.auditLog,
  };
  if (!targets.pinDir.startsWith('/sys/fs/bpf/'))
    throw new UsageError(`--pin-dir ${targets.pinDir}: expected a directory under /sys/fs/bpf/`);
  let steps;
  try {
    steps = await uninstall(targets, { force: a.bools.has('force'), dryRun: a.bools.has('dry-run') });
  } catch (e) {
    if (e instanceof UninstallRefused) throw new UsageError(e.message);
    throw e;
  }
  for (const s of steps) console.log(`${s.done.padEnd(12)} ${s.what.padEnd(13)} ${s.path}${s.why ? ` (${s.why})` : ''}`);
  return 0;
}
