// Calls back when a config file's content changes. It watches the file's directory, not the
// file: editors write-and-rename, and a Kubernetes ConfigMap mounted without subPath swaps a
// `..data` symlink, so the file's own inode never changes. Content is compared by hash, so
// directory noise does not reload.
import fs from 'node:fs';
import path from 'node:path';
import { configHash } from './config';

export class ConfigWatcher {
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private last: string | null;

  constructor(
    private readonly file: string,
    private readonly onChange: () => void,
    private readonly settleMs = 300,
    pollMs = 10_000,
  ) {
    this.last = this.hash();
    try {
      this.watcher = fs.watch(path.dirname(file), () => this.schedule());
      this.watcher.on('error', () => undefined);
    } catch {
      this.watcher = null; // the poll below still sees changes
    }
    // inotify misses changes made through another mount of the same files (and any error above).
    this.poll = setInterval(() => this.check(), pollMs);
    this.poll.unref();
  }

  private hash(): string | null {
    try {
      return configHash(this.file);
    } catch {
      return null;
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), this.settleMs);
    this.timer.unref();
  }

  private check(): void {
    this.timer = null;
    const h = this.hash();
    if (h === null || h === this.last) return; // gone mid-swap: the next event brings it back
    this.last = h;
    this.onChange();
  }

  /** The reload was done by other means (SIGHUP): the current content is the known one. */
  sync(): void {
    this.last = this.hash();
  }

  close(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
    if (this.poll) clearInterval(this.poll);
  }
}
