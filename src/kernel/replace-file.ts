// Replaces a small state file so that a crash of the daemon leaves either the old contents or
// the new, never half of each: the new text goes to a fresh FILE.tmp, which is then swapped
// with FILE in one step (renameat2 RENAME_EXCHANGE) and unlinked, holding the old text.
//
// Why not write-then-rename over FILE: on ext4 (this machine's /run and /var/lib) a rename
// that replaces a file starts the new data's writeback there and then (auto_da_alloc), ~0.1 ms
// of the caller's thread and a disk write per save; the fence registry saves at every attach
// and detach. The exchange costs ~9 µs, and the old data, unlinked, is often never written.
// What auto_da_alloc gave, and this gives up: after a power loss (not a daemon crash) FILE may
// come back empty. Every caller reads a file it cannot parse as "no saved state" (the fence
// registry moves it aside and reconcile fences running containers again), and after a power
// loss no container and no pinned fence is left for it to describe anyway.
import fs from 'node:fs';
import { native } from '../native';

export function replaceFile(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  try {
    fs.writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    // A leftover from a crash is removed, not truncated: ext4 flushes a truncated file at close.
    fs.rmSync(tmp, { force: true });
    fs.writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  }
  // No FILE yet (nothing to replace, so nothing to flush), or a filesystem without exchange.
  if (!native().renameExchange(tmp, file)) return fs.renameSync(tmp, file);
  fs.unlinkSync(tmp);
}
