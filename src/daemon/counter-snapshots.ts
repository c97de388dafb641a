// The kernel keeps per-fence decision counters in pinned maps, so they survive the daemon.
// The daemon records what it last saw; the difference at the next start is what happened
// while no daemon was there to log it.
import fs from 'node:fs';
import path from 'node:path';
import { JsonFields } from '../fence/json-fields';
import { replaceFile } from '../kernel/replace-file';

export type Counts = { denied: number; audited: number };

export class CounterSnapshots {
  private readonly file: string;
  private last: Record<string, Counts> = {};
  private lastText = '';

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'counters.json');
    try {
      this.lastText = fs.readFileSync(this.file, 'utf8');
      this.last = readCounts(JSON.parse(this.lastText));
    } catch {
      // Missing or not what a daemon writes: every count is then "since the fence was set".
      this.last = {};
    }
  }

  /** Decisions counted by the kernel since the snapshot (all of them for a fence never seen). */
  missed(fenceId: string, now: Counts): Counts {
    const was = this.last[fenceId] ?? { denied: 0, audited: 0 };
    return { denied: Math.max(0, now.denied - was.denied), audited: Math.max(0, now.audited - was.audited) };
  }

  save(cur: Record<string, Counts>): void {
    const text = JSON.stringify(cur);
    this.last = cur;
    if (text === this.lastText) return; // idle nodes do not rewrite the file every tick
    replaceFile(this.file, text);
    this.lastText = text;
  }
}

/** counters.json as save() writes it, checked (a wrong field throws, naming it). */
function readCounts(v: unknown): Record<string, Counts> {
  const f = JsonFields.of(v, 'counters.json');
  const out: Record<string, Counts> = {};
  for (const key of f.keys()) {
    const c = f.obj(key);
    out[key] = { denied: c.num('denied'), audited: c.num('audited') };
  }
  return out;
}
