// Every parser of the launcher and the fd-holder under libFuzzer with ASan and UBSan, each for
// a bounded time (FUZZ_SECONDS, default 10), from the seeds in test/fuzz/corpus/TARGET.
// A crash, a sanitizer report or a broken invariant (the targets abort) fails the test, and
// the input is left in build/fuzz/crash-TARGET-*.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const repo = path.resolve(__dirname, '..', '..');
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 10);
const TARGETS = ['args', 'reply', 'json-escape', 'config', 'runc-state', 'bundle-config', 'node-hint'];

/**
 * Runs a command without blocking the worker: compiling and fuzzing a target can take longer
 * than vitest's 60 s worker RPC timeout on a busy machine, and a synchronous wait would trip it.
 */
function run(cmd: string, args: string[], timeoutMs: number): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'], timeout: timeoutMs });
    let stderr = '';
    c.stderr.setEncoding('utf8');
    c.stderr.on('data', (d: string) => {
      stderr = (stderr + d).slice(-256 * 1024);
    });
    c.on('close', (status) => resolve({ status, stderr }));
  });
}

describe('fuzzing the C parsers (libFuzzer, ASan, UBSan)', () => {
  for (const target of TARGETS) {
    it(
      `${target}: ${SECONDS} s without a finding`,
      async () => {
        const r = await run('bash', [path.join(repo, 'scripts/fuzz.sh'), target, String(SECONDS)], (SECONDS + 90) * 1000);
        const runs = /stat::number_of_executed_units: (\d+)/.exec(r.stderr);
        expect(r.status, r.stderr.split('\n').slice(-40).join('\n')).toBe(0);
        // It really ran: a target that exits at once proves nothing.
        expect(Number(runs?.[1] ?? 0)).toBeGreaterThan(1000);
      },
      (SECONDS + 120) * 1000,
    );
  }
});
