// What the daemon has fenced, keyed by namespace/id, persisted in the state directory so a
// restarted daemon knows which pinned fence belongs to which container. The kernel maps
// stay the truth about what is enforced; this file is the truth about whom it is for.
import fs from 'node:fs';
import path from 'node:path';
import { FencedContainer, containerKey } from '../fence/backend';

export type { ControlState, Controls, FencedContainer } from '../fence/backend';


/**
 * containerd's exit event can overtake a container's last kernel events (still in a ring
 * buffer): for this long after detach they are still attributed to their container. The
 * one grace period for "exit overtakes events".
 */
export const RECENT_OWNER_MS = 10_000;

export class FenceRegistry {
  private readonly byKey = new Map<string, FencedContainer>();
  /** Containers between prepare and attach: reconcile leaves them to their attach. */
  private readonly inFlight = new Set<string>();
  private readonly recent = new Map<string, { entry: FencedContainer; until: number }>();
  private readonly recentByKey = new Map<string, { entry: FencedContainer; until: number }>();
  // Every kernel event is looked up by its key: keep that O(1).
  private readonly byEventKey = new Map<string, FencedContainer>();
  private readonly file: string;
  private saveScheduled = false;

  constructor(stateDir: string) {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.file = path.join(stateDir, 'fences.json');
    try {
      const list = JSON.parse(fs.readFileSync(this.file, 'utf8')) as FencedContainer[];
      for (const f of list) this.index(f);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        // A corrupt state file must not stop the daemon: reconcile rebuilds from containerd.
        fs.renameSync(this.file, `${this.file}.corrupt-${Date.now()}`);
      }
    }
  }

  static key(namespace: string, id: string): string {
    return containerKey(namespace, id);
  }

  private index(f: FencedContainer): void {
    this.byKey.set(FenceRegistry.key(f.namespace, f.id), f);
    for (const k of f.eventKeys) this.byEventKey.set(k, f);
  }

  get(namespace: string, id: string): FencedContainer | undefined {
    return this.byKey.get(FenceRegistry.key(namespace, id));
  }

  byEvent(key: bigint | string): FencedContainer | undefined {
    return this.byEventKey.get(key.toString());
  }

  /** byEvent, or the container that had this key until moments ago (see RECENT_OWNER_MS). */
  ownerOf(key: bigint | string): FencedContainer | undefined {
    const f = this.byEvent(key);
    if (f) return f;
    const r = this.recent.get(key.toString());
    return r && r.until >= Date.now() ? r.entry : undefined;
  }

  /** The entry, or the one removed moments ago (its last records are still being written). */
  lastKnown(namespace: string, id: string): FencedContainer | undefined {
    const k = FenceRegistry.key(namespace, id);
    const f = this.byKey.get(k);
    if (f) return f;
    const r = this.recentByKey.get(k);
    return r && r.until >= Date.now() ? r.entry : undefined;
  }

  setInFlight(namespace: string, id: string, on: boolean): void {
    if (on) this.inFlight.add(containerKey(namespace, id));
    else this.inFlight.delete(containerKey(namespace, id));
  }

  isInFlight(namespace: string, id: string): boolean {
    return this.inFlight.has(containerKey(namespace, id));
  }

  all(): FencedContainer[] {
    return [...this.byKey.values()];
  }

  put(f: FencedContainer): void {
    const old = this.byKey.get(FenceRegistry.key(f.namespace, f.id));
    if (old) for (const k of old.eventKeys) this.byEventKey.delete(k);
    this.index(f);
    this.saveSoon();
  }

  delete(namespace: string, id: string): FencedContainer | undefined {
    const k = FenceRegistry.key(namespace, id);
    const f = this.byKey.get(k);
    if (f) {
      this.byKey.delete(k);
      for (const ek of f.eventKeys) this.byEventKey.delete(ek);
      this.saveSoon();
      const now = Date.now();
      for (const ek of f.eventKeys) this.recent.set(ek, { entry: f, until: now + RECENT_OWNER_MS });
      for (const [ek, v] of this.recent) if (v.until < now) this.recent.delete(ek);
      this.recentByKey.set(k, { entry: f, until: now + RECENT_OWNER_MS });
      for (const [rk, v] of this.recentByKey) if (v.until < now) this.recentByKey.delete(rk);
    }
    return f;
  }

  /**
   * The file is written once the current request is answered (a create's reply does not wait
   * for it; several changes in one turn make one write). Until then a crash loses only the
   * newest entries, which reconcile finds again: a pinned fence with no entry is matched to
   * its running container and re-attached (late attach), and that container's init is still
   * blocked before its entrypoint until `runc start`, which follows the reply.
   */
  private saveSoon(): void {
    if (this.saveScheduled) return;
    this.saveScheduled = true;
    setImmediate(() => this.flush());
  }

  /** Writes pending changes now (the daemon's stop calls it). */
  flush(): void {
    if (!this.saveScheduled) return;
    this.saveScheduled = false;
    this.save();
  }

  private save(): void {
    // Write-then-rename: a crash mid-write leaves the previous state, never half a file.
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.all(), null, 1), { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }
}
