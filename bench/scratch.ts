// A benchmark's own scratch space: a temporary directory, a cgroup subtree and a BPF pin
// directory, all named for this process so that nothing collides with a daemon or another
// benchmark on the node, and removed together however the benchmark ends.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createCgroup, removeCgroup } from '../src/kernel/cgroup';

export class BenchScratch {
  readonly dir: string;
  /** The name of the cgroup subtree and of the pin directory. */
  readonly tag: string;
  readonly pinDir: string;
  private cgroupRoot: string | null = null;

  constructor(kind: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `cgfence-bench-${kind}-`));
    this.tag = `cgfence-bench-${kind}-${process.pid}`;
    this.pinDir = `/sys/fs/bpf/${this.tag}`;
  }

  /** A cgroup v2 of this benchmark's subtree; returns its path. */
  cgroup(name: string): string {
    const cg = createCgroup(`${this.tag}/${name}`);
    this.cgroupRoot = path.dirname(cg);
    return cg;
  }

  /** Kills what still runs in the subtree and removes it, the directory and the pins. */
  async cleanup(): Promise<void> {
    if (this.cgroupRoot) await removeCgroup(this.cgroupRoot).catch((e) => console.error(`bench: removing ${this.cgroupRoot}:`, e));
    fs.rmSync(this.dir, { recursive: true, force: true });
    try {
      fs.rmSync(this.pinDir, { recursive: true, force: true });
    } catch {
      /* pins already gone */
    }
  }
}
