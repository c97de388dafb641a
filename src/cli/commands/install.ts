import fs from 'node:fs';
import path from 'node:path';
import { installFile } from '../../daemon/node-install';
import { projectRoot } from '../../native';
import { UsageError, parseArgs } from '../args';

export const DEFAULT_RUNC_PATH = '/usr/local/bin/cgfence-runc';
export const DEFAULT_RUNC_CONF = '/etc/cgfence/runc.conf';

export const help = `usage: cgfence install [--runc-path PATH] [--runc-conf PATH] [--runc-conf-from FILE]

Puts this build's cgfence-runc at --runc-path (default ${DEFAULT_RUNC_PATH}, where
containerd's cgfence runtime handler names it) and, with --runc-conf-from, its settings
at --runc-conf (default ${DEFAULT_RUNC_CONF}). Each is copied next to its target and renamed
over it: containerd never runs half a file, and a launcher that is running keeps its old
inode, so an upgrade needs no drain. The DaemonSet's init container runs this with the
host's directories mounted.`;

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['runc-path', 'runc-conf', 'runc-conf-from'] });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  if (a.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(a.positionals[0])}`);
  const runc = path.join(projectRoot(), 'build', 'Release', 'cgfence-runc');
  if (!fs.existsSync(runc)) throw new UsageError(`${runc} is missing: run \`npm run build\``);
  const runcPath = a.flags['runc-path'] ?? DEFAULT_RUNC_PATH;
  installFile(runc, runcPath, 0o755);
  console.log(`installed ${runcPath}`);
  const from = a.flags['runc-conf-from'];
  if (from) {
    if (!fs.existsSync(from)) throw new UsageError(`--runc-conf-from ${from}: no such file`);
    const conf = a.flags['runc-conf'] ?? DEFAULT_RUNC_CONF;
    installFile(from, conf, 0o644);
    console.log(`installed ${conf}`);
  } else if (a.flags['runc-conf']) {
    throw new UsageError('--runc-conf needs --runc-conf-from FILE (the settings to install)');
  }
  return 0;
}
