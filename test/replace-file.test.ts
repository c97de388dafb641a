// kernel/replace-file.ts: a reader never sees half a state file, whatever it races with.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { replaceFile } from '../src/kernel/replace-file';
import { mktemp } from './helpers/kernel';

let dir: string;
beforeEach(() => {
  dir = mktemp('cgfence-replace-file');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('replaceFile', () => {
  it('creates the file, then replaces it by exchange: a new inode each time, no .tmp left', () => {
    const f = path.join(dir, 'state.json');
    replaceFile(f, '[1]');
    expect(fs.readFileSync(f, 'utf8')).toBe('[1]');
    const before = fs.statSync(f).ino;
    replaceFile(f, '[2]');
    expect(fs.readFileSync(f, 'utf8')).toBe('[2]');
    expect(fs.statSync(f).ino).not.toBe(before);
    expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir)).toEqual(['state.json']);
  });

  it('a .tmp left by a crash (even a symlink) is replaced, never written through', () => {
    const f = path.join(dir, 'state.json');
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'keep');
    fs.symlinkSync(victim, `${f}.tmp`);
    replaceFile(f, '[3]');
    expect(fs.readFileSync(f, 'utf8')).toBe('[3]');
    expect(fs.readFileSync(victim, 'utf8')).toBe('keep');
    expect(fs.readdirSync(dir).sort()).toEqual(['state.json', 'victim']);
  });

  it('a reader racing 400 saves always reads one whole version', async () => {
    const f = path.join(dir, 'state.json');
    const version = (i: number) => JSON.stringify({ i, pad: 'x'.repeat(20_000 + (i % 7) * 3000) });
    replaceFile(f, version(0));
    // A separate process, so that the reads really interleave with the saves; it says when it
    // reads, and reports when told to stop.
    const reader = spawn(
      process.execPath,
      [
        '-e',
        `const fs = require('fs'); let bad = 0, n = 0, stop = false;
         process.stdin.on('data', () => { stop = true; });
         process.stdout.write('reading\\n');
         (function loop() { for (let k = 0; k < 20; k++) { n++; try { const v = JSON.parse(fs.readFileSync(${JSON.stringify(f)}, 'utf8')); if (typeof v.i !== 'number') bad++; } catch { bad++; } }
           if (stop) { process.stdout.write(JSON.stringify({ n, bad })); process.exit(0); } setImmediate(loop); })();`,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    try {
      let out = '';
      reader.stdout!.on('data', (d) => (out += d));
      await new Promise<void>((resolve) => reader.stdout!.once('data', () => resolve()));
      for (let i = 1; i <= 400; i++) replaceFile(f, version(i));
      const exited = new Promise<void>((resolve) => reader.on('exit', () => resolve()));
      reader.stdin!.write('stop\n');
      await exited;
      const r = JSON.parse(out.slice(out.indexOf('\n') + 1)) as { n: number; bad: number };
      expect(r.n).toBeGreaterThan(100);
      expect(r.bad).toBe(0);
      expect(JSON.parse(fs.readFileSync(f, 'utf8')).i).toBe(400);
    } finally {
      reader.kill('SIGKILL');
    }
  });
});
