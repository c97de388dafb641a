// How every kernel-object wrapper lets go of what it loaded. Without detach (a daemon
// stopping for an upgrade, or killed) pins keep programs attached and maps alive for the
// next daemon; with detach nothing of it stays in the kernel.
import fs from 'node:fs';
import { BpfLink, BpfObject } from '../native';

/** Global (tracing) links: unpinned and detached with detach; else only our fds close. */
export function closeLinks(links: Iterable<BpfLink>, detach: boolean): void {
  for (const l of links) {
    if (detach) l.unpin();
    l.destroy();
  }
}

/** Closes the object's fds; with detach its map pins and (when empty) its pin directory go. */
export function closeObject(obj: BpfObject, pinDir: string | undefined, detach: boolean): void {
  obj.close({ unpin: detach });
  if (detach && pinDir) {
    try {
      fs.rmdirSync(pinDir);
    } catch {
      /* not empty: other objects are still pinned there */
    }
  }
}
