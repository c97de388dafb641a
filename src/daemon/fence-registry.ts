// What the daemon has fenced, keyed by namespace/id, persisted in the state directory so a
// restarted daemon knows which pinned fence belongs to which container. The kernel maps
// stay the truth about what is enforced; this file is the truth about whom it is for.
import fs from 'node:fs';
import path from 'node:path';

export type ControlState = 'enforced' | 'audited' | 'learning' | 'none' | `unenforceable: ${string}`;

export interface Controls { exec: ControlState; network: ControlState; seccomp: ControlState }

export interface FencedContainer {
  namespace: string;
  id: string;
  bundle: string;
  cgroupPath: string;
  /** u64 as a decimal string (JSON has no 64-bit integers). */
  cgroupId: string;
  pid: number;
  /** The container's effective cgfence.io/* annotations (profile merged). */
  annotations: Record<string, string>;
  mode: string;
  policyHash: string;
  controls: Controls;
  backend: 'cgroup-v2';
  execAllow: Array<{ path: string; dev: string; ino: string }>;
  attachedAt: string;
  how: 'create' | 'late-attach' | 'adopted';
}

export class FenceRegistry {
  private readonly byKey = new Map<string, FencedContainer>();
  // Every kernel event is looked up by its fence's cgroup id: keep that O(1).
  private readonly byCgroup = new Map<string, FencedContainer>();
  private readonly file: string;

  constructor(stateDir: string) {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.file = path.join(stateDir, 'fences.json');
    try {
      const list = JSON.parse(fs.readFileSync(this.file, 'utf8')) as FencedContainer[];
      for (const f of list) {
        this.byKey.set(FenceRegistry.key(f.namespace, f.id), f);
        this.byCgroup.set(f.cgroupId, f);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        // A corrupt state file must not stop the daemon: reconcile rebuilds from containerd.
        fs.renameSync(this.file, `${this.file}.corrupt-${Date.now()}`);
      }
    }
  }

  static key(namespace: string, id: string): string {
    return `${namespace}/${id}`;
  }

  get(namespace: string, id: string): FencedContainer | undefined {
    return this.byKey.get(FenceRegistry.key(namespace, id));
  }

  byCgroupId(cgroupId: bigint): FencedContainer | undefined {
    return this.byCgroup.get(cgroupId.toString());
  }

  all(): FencedContainer[] {
    return [...this.byKey.values()];
  }

  put(f: FencedContainer): void {
    const old = this.byKey.get(FenceRegistry.key(f.namespace, f.id));
    if (old) this.byCgroup.delete(old.cgroupId);
    this.byKey.set(FenceRegistry.key(f.namespace, f.id), f);
    this.byCgroup.set(f.cgroupId, f);
    this.save();
  }

  delete(namespace: string, id: string): FencedContainer | undefined {
    const k = FenceRegistry.key(namespace, id);
    const f = this.byKey.get(k);
    if (f) {
      this.byKey.delete(k);
      this.byCgroup.delete(f.cgroupId);
      this.save();
    }
    return f;
  }

  private save(): void {
    // Write-then-rename: a crash mid-write leaves the previous state, never half a file.
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.all(), null, 1), { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }
}
