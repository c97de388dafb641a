// What the daemon has fenced, keyed by namespace/id, persisted in the state directory so a
// restarted daemon knows which pinned fence belongs to which container. The kernel maps
// stay the truth about what is enforced; this file is the truth about whom it is for.
import fs from 'node:fs';
import path from 'node:path';
import { ControlName, ControlState, Controls, FencedContainer, Workload, containerKey } from '../fence/backend';
import { readBackendStates } from '../fence/backend-states';
import { JsonFields, StateFieldError } from '../fence/json-fields';

import { RECENT_OWNER_MS } from '../fence/event-sink';
import { replaceFile } from '../kernel/replace-file';

export type { ControlState, Controls, FencedContainer } from '../fence/backend';

/** Changes since fences.json was written, one JSON line each; folded into it every so often. */
const JOURNAL = 'fences.journal';
const COMPACT_AFTER = 256;
const APPEND_NOFOLLOW = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
export { RECENT_OWNER_MS } from '../fence/event-sink';

export class FenceRegistry {
  private readonly byKey = new Map<string, FencedContainer>();
  /** Containers between prepare and attach: reconcile leaves them to their attach. */
  private readonly inFlight = new Set<string>();
  private readonly recent = new Map<string, { entry: FencedContainer; until: number }>();
  private readonly recentByKey = new Map<string, { entry: FencedContainer; until: number }>();
  // Every kernel event is looked up by its key: keep that O(1).
  private readonly byEventKey = new Map<string, FencedContainer>();
  private readonly file: string;
  private readonly journalFile: string;
  private journalFd: number | null = null;
  /** Changes not yet in the journal (written a turn later), and changes in it since the snapshot. */
  private pending: JournalChange[] = [];
  private journaled = 0;

  /**
   * Reads back what an earlier daemon fenced: the last snapshot, then the journal of changes
   * made since. Every entry is checked field by field (fence and backend states alike); one that
   * is not what a daemon writes is left out and `log` says which field is wrong. A corrupt state
   * file must not stop the daemon: reconcile fences a running container again from containerd
   * (late attach), under the same fence id.
   */
  constructor(
    stateDir: string,
    private readonly log: (m: string) => void = () => {},
  ) {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.file = path.join(stateDir, 'fences.json');
    this.journalFile = path.join(stateDir, JOURNAL);
    this.readSnapshot(log);
    this.replayJournal(log);
  }

  private readSnapshot(log: (m: string) => void): void {
    const text = readIfThere(this.file);
    if (text === null) return;
    const keep = `${this.file}.corrupt-${Date.now()}`;
    let list: unknown;
    try {
      list = JSON.parse(text);
      if (!Array.isArray(list)) throw new Error('not a list');
    } catch (e) {
      fs.renameSync(this.file, keep);
      log(
        `${this.file} is not a list of fenced containers (${(e as Error).message}); moved to ${keep}, reconcile fences running containers again`,
      );
      return;
    }
    const problems: string[] = [];
    list.forEach((v, i) => {
      try {
        this.index(readFencedContainer(v, `${path.basename(this.file)}[${i}]`, (m) => problems.push(m)));
      } catch (e) {
        if (!(e instanceof StateFieldError)) throw e;
        problems.push(`${e.message}: entry left out`);
      }
    });
    if (problems.length) {
      // The file as read, for whoever wants to know what was left out.
      fs.copyFileSync(this.file, keep);
      for (const p of problems) log(`${p} (the file as read is kept as ${keep})`);
    }
  }

  /**
   * The changes after the snapshot, in order. A line that is not a change a daemon writes (the
   * end of a line cut short by a power loss, say) is left out and named; the lines after it
   * still apply. Folded into a new snapshot at once, so the journal starts empty.
   */
  private replayJournal(log: (m: string) => void): void {
    const text = readIfThere(this.journalFile);
    if (text === null) return;
    const problems: string[] = [];
    text.split('\n').forEach((line, i) => {
      if (line === '') return;
      const where = `${JOURNAL}:${i + 1}`;
      try {
        const change = readJournalLine(line, where, (m) => problems.push(m));
        if ('put' in change) {
          const old = this.byKey.get(FenceRegistry.key(change.put.namespace, change.put.id));
          if (old) for (const k of old.eventKeys) this.byEventKey.delete(k);
          this.index(change.put);
        } else {
          this.forget(change.delete.namespace, change.delete.id);
        }
      } catch (e) {
        if (!(e instanceof StateFieldError)) throw e;
        problems.push(`${e.message}: change left out`);
      }
    });
    if (problems.length) {
      const keep = `${this.journalFile}.corrupt-${Date.now()}`;
      fs.copyFileSync(this.journalFile, keep);
      for (const p of problems) log(`${p} (the journal as read is kept as ${keep})`);
    }
    this.compact();
  }

  /**
   * Whom the saved state names (namespace/id keys), read without changing anything: for an
   * uninstall with no daemon running (a dry run must leave the files as they are). Entries and
   * journal lines it cannot read are skipped.
   */
  static savedKeys(stateDir: string): string[] {
    const keys = new Set<string>();
    const named = (v: unknown): { namespace: string; id: string } | null => {
      const o = v as { namespace?: unknown; id?: unknown } | null;
      return o && typeof o.namespace === 'string' && typeof o.id === 'string' ? { namespace: o.namespace, id: o.id } : null;
    };
    try {
      const list = JSON.parse(readIfThere(path.join(stateDir, 'fences.json')) ?? '[]') as unknown;
      for (const v of Array.isArray(list) ? list : []) {
        const n = named(v);
        if (n) keys.add(containerKey(n.namespace, n.id));
      }
    } catch {
      // Not JSON: a daemon would move it aside and start empty.
    }
    for (const line of (readIfThere(path.join(stateDir, JOURNAL)) ?? '').split('\n')) {
      let c: { put?: unknown; delete?: unknown };
      try {
        c = JSON.parse(line) as typeof c;
      } catch {
        continue;
      }
      const put = named(c?.put);
      const del = named(c?.delete);
      if (put) keys.add(containerKey(put.namespace, put.id));
      else if (del) keys.delete(containerKey(del.namespace, del.id));
    }
    return [...keys];
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
    this.change({ put: f });
  }

  private forget(namespace: string, id: string): FencedContainer | undefined {
    const k = FenceRegistry.key(namespace, id);
    const f = this.byKey.get(k);
    if (f) {
      this.byKey.delete(k);
      for (const ek of f.eventKeys) this.byEventKey.delete(ek);
    }
    return f;
  }

  delete(namespace: string, id: string): FencedContainer | undefined {
    const k = FenceRegistry.key(namespace, id);
    const f = this.forget(namespace, id);
    if (f) {
      this.change({ delete: { namespace, id } });
      const now = Date.now();
      for (const ek of f.eventKeys) this.recent.set(ek, { entry: f, until: now + RECENT_OWNER_MS });
      for (const [ek, v] of this.recent) if (v.until < now) this.recent.delete(ek);
      this.recentByKey.set(k, { entry: f, until: now + RECENT_OWNER_MS });
      for (const [rk, v] of this.recentByKey) if (v.until < now) this.recentByKey.delete(rk);
    }
    return f;
  }

  /**
   * A change is appended to the journal once the current request is answered (a create's reply
   * does not wait for it; the changes of one turn make one write). Until then a crash loses only
   * the newest changes, which reconcile finds again: a pinned fence with no entry is matched to
   * its running container and re-attached (late attach), and that container's init is still
   * blocked before its entrypoint until `runc start`, which follows the reply.
   *
   * Why a journal and not the whole file at every change: a new file is a new inode, and on ext4
   * under container churn finding a free inode means stepping over every recently deleted one
   * (`find_inode_bit`, `recently_deleted`): ~0.4 ms of the daemon's CPU per save measured here,
   * two saves per container, on the 2 CPUs that runc and the shim are using to start it. An
   * append is one write to a file that exists (docs/exec-performance.md, "Seventh round").
   */
  private change(c: JournalChange): void {
    this.pending.push(c);
    if (this.pending.length > 1) return;
    setImmediate(() => this.writePending());
  }

  private writePending(): void {
    if (this.pending.length === 0) return;
    // The entries as they are now: a later change to one in this turn is in its line.
    const lines = this.pending.map((c) => `${JSON.stringify(c)}\n`).join('');
    this.journaled += this.pending.length;
    this.pending = [];
    if (this.journaled > COMPACT_AFTER) return this.compact();
    try {
      // Not through a link someone put in its place: the state directory is root's alone, but
      // a write through a link would land in whatever file it names.
      this.journalFd ??= fs.openSync(this.journalFile, APPEND_NOFOLLOW, 0o600);
      fs.writeSync(this.journalFd, lines);
    } catch (e) {
      // The registry in memory is whole; the next fold writes all of it.
      this.log(`cannot append to ${this.journalFile}: ${(e as Error).message}; the whole registry goes to fences.json at the next change`);
      this.journaled = COMPACT_AFTER;
    }
  }

  /**
   * Writes pending changes now; the daemon's stop calls it. `compact` folds the journal into
   * fences.json as well (not at an uninstall's stop: its state directory is being removed). A
   * failure is logged, not thrown: the stop goes on, and the journal still holds what it held.
   */
  flush(opts: { compact?: boolean } = {}): void {
    try {
      if (opts.compact && (this.journaled > 0 || this.pending.length > 0)) {
        this.pending = [];
        this.compact();
      } else {
        this.writePending();
      }
    } catch (e) {
      this.log(`cannot save ${this.journalFile}: ${(e as Error).message}`);
    }
  }

  /**
   * The registry as one file, then the journal emptied. A crash between the two replays the
   * journal over a snapshot that already holds it, which changes nothing: a change is a whole
   * entry put, or an entry deleted.
   */
  private compact(): void {
    // A crash mid-save leaves the previous state, never half a file.
    replaceFile(this.file, JSON.stringify(this.all(), null, 1));
    this.journaled = 0;
    if (this.journalFd !== null) fs.ftruncateSync(this.journalFd, 0);
    else fs.rmSync(this.journalFile, { force: true });
  }
}

/** A file's text, or null when there is no such file. */
function readIfThere(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** One line of the journal: an entry as it now is, or the entry gone. */
type JournalChange = { put: FencedContainer } | { delete: { namespace: string; id: string } };

/** Reads one journal line, checked as a fences.json entry is; throws StateFieldError naming the field. */
function readJournalLine(line: string, where: string, note: (m: string) => void): JournalChange {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new StateFieldError(`${where}: not JSON (${(e as Error).message})`);
  }
  const f = JsonFields.of(v, where);
  if (f.has('put')) return { put: readFencedContainer(f.raw('put'), `${where}.put`, note) };
  if (f.has('delete')) {
    const d = f.obj('delete');
    return { delete: { namespace: d.str('namespace'), id: d.str('id') } };
  }
  throw new StateFieldError(`${where}: a "put" or a "delete" expected`);
}

const CONTROL_NAMES: ControlName[] = ['exec', 'network', 'seccomp'];

function readControlState(f: JsonFields, key: string): ControlState {
  const v = f.str(key);
  if (v === 'enforced' || v === 'audited' || v === 'learning' || v === 'none' || v.startsWith('unenforceable: ')) return v as ControlState;
  throw new StateFieldError(`${f.at(key)}: enforced, audited, learning, none or "unenforceable: ..." expected, found ${JSON.stringify(v)}`);
}

function readWorkload(f: JsonFields): Workload {
  return { pod: f.str('pod'), podNamespace: f.str('podNamespace'), containerName: f.str('containerName') };
}

/**
 * One entry of fences.json, checked against what FenceRegistry writes (any daemon version so
 * far). Throws StateFieldError naming the first wrong field; `note` gets what is left out of
 * an entry that is otherwise kept (the state of a backend this daemon does not have).
 */
export function readFencedContainer(v: unknown, where: string, note: (m: string) => void = () => {}): FencedContainer {
  let f = JsonFields.of(v, where);
  const namespace = f.str('namespace');
  const id = f.str('id');
  // From here on, errors name the container too.
  f = JsonFields.of(v, `${where} (${containerKey(namespace, id)})`);
  const c = f.obj('controls');
  const controls = Object.fromEntries(CONTROL_NAMES.map((n) => [n, readControlState(c, n)])) as Controls;
  const pid = f.num('pid');
  if (!Number.isInteger(pid) || pid < 0) throw new StateFieldError(`${f.at('pid')}: a process id expected, found ${pid}`);
  const entry: FencedContainer = {
    namespace,
    id,
    bundle: f.str('bundle'),
    pid,
    cgroupPath: f.strOrNull('cgroupPath'),
    cgroupId: f.raw('cgroupId') === null ? null : f.decimal('cgroupId'),
    eventKeys: f.strings('eventKeys'),
    annotations: f.stringMap('annotations'),
    mode: f.str('mode'),
    policyHash: f.str('policyHash'),
    controls,
    backends: readBackendStates(f.obj('backends'), (name) =>
      note(`${f.at('backends')}.${name}: no such backend in this version; its state is left out`),
    ),
    attachedAt: f.str('attachedAt'),
    how: f.oneOf('how', ['create', 'late-attach'] as const),
  };
  // Entries of daemons before workloads were recorded have none.
  if (f.has('workload')) entry.workload = f.raw('workload') === null ? null : readWorkload(f.obj('workload'));
  return entry;
}
