// cgroup v2 facts cgfence needs: where the unified hierarchy is mounted (/sys/fs/cgroup on
// pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones), a cgroup's id (the kernfs inode
// number, which is what bpf_get_current_cgroup_id() returns) and a process's v2 cgroup.
import fs from 'node:fs';
import path from 'node:path';

let cachedRoot: string | null | undefined;

/** Mount point of the cgroup v2 hierarchy, or null when the host has none. */
export function cgroupV2Root(): string | null {
  if (cachedRoot !== undefined) return cachedRoot;
  cachedRoot = null;
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2') {
      cachedRoot = mnt.replace(/\\040/g, ' ');
      break;
    }
  }
  return cachedRoot;
}

export function requireCgroupV2Root(): string {
  const r = cgroupV2Root();
  if (!r) throw new Error('no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/self/mounts)');
  return r;
}

export function cgroupId(cgroupPath: string): bigint {
  return fs.statSync(cgroupPath, { bigint: true }).ino;
}

/** The v2 cgroup of a process as a path under the hierarchy's mount, or null (v1 only). */
export function cgroupV2PathOfPid(pid: number): string | null {
  const root = cgroupV2Root();
  if (!root) return null;
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the cgroup of pid ${pid}: ${(e as Error).message}`);
  }
  for (const line of text.split('\n')) {
    if (line.startsWith('0::')) return path.join(root, line.slice(3));
  }
  return null;
}

/** Creates a cgroup below the v2 root (for tests, benchmarks and the demo). */
export function createCgroup(relative: string): string {
  const p = path.join(requireCgroupV2Root(), relative);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

/** Kills what runs in a cgroup subtree and removes it; missing cgroups are fine. */
export async function removeCgroup(cgroupPath: string): Promise<void> {
  if (!fs.existsSync(cgroupPath)) return;
  for (const entry of fs.readdirSync(cgroupPath, { withFileTypes: true })) {
    if (entry.isDirectory()) await removeCgroup(path.join(cgroupPath, entry.name));
  }
  const procs = () => {
    try {
      return fs.readFileSync(path.join(cgroupPath, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  for (let i = 0; i < 100 && procs().length > 0; i++) {
    try {
      fs.writeFileSync(path.join(cgroupPath, 'cgroup.kill'), '1'); // kernel >= 5.14
    } catch {
      for (const pid of procs()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  for (let i = 0; i < 50; i++) {
    try {
      fs.rmdirSync(cgroupPath);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || i === 49) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
