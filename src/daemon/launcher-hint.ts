// What cgfence-runc needs to know about the node while no daemon answers: whether a container
// without cgfence.io/* annotations may be fenced anyway (a defaultProfile, or node selectors
// that pick a profile by pod namespace and labels: then `default_profile=(selectors)`).
// Written at every start and reload, atomically, in the launcher's KEY=VALUE format; see
// docs/launcher.md.
import fs from 'node:fs';
import path from 'node:path';

export const LAUNCHER_HINT_FILE = 'launcher-node.conf';

export const SELECTORS_HINT = '(selectors)';

export function writeLauncherHint(stateDir: string, defaultProfile: string | null, hasSelectors = false): string {
  if (defaultProfile === null && hasSelectors) defaultProfile = SELECTORS_HINT;
  const file = path.join(stateDir, LAUNCHER_HINT_FILE);
  // The launcher reads one line per key; a profile name with a newline could not be written.
  if (defaultProfile !== null && /[\n\r\0]/.test(defaultProfile))
    throw new Error(`defaultProfile ${JSON.stringify(defaultProfile)} contains a line break or NUL`);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(
    tmp,
    `# written by the cgfence daemon (pid ${process.pid}) at start; read by cgfence-runc\ndefault_profile=${defaultProfile ?? ''}\n`,
    { mode: 0o644 },
  );
  fs.renameSync(tmp, file);
  return file;
}
