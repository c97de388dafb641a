// `npm run bench [NAME...]`: every benchmark side by side (interleaved, medians, ratios),
// printed as a table and written to bench/RESULTS.md with the command that reproduces it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../src/native';
import { BenchResult } from './types';

const BENCHES: Record<string, string> = {
  'exec-loop': './exec-loop',
  'start-latency': './start-latency',
  'runc-listener': './runc-listener',
  'start-timeline': './start-timeline',
  'net-fence': './net-fence',
  'seccomp-exec': './seccomp-exec',
  'seccomp-deny': './seccomp-deny',
  'exec-load': './exec-load',
  churn: './churn',
  learn: './learn',
  'selector-latency': './selector-latency',
  'exited-tasks': './exited-tasks',
  'exec-lsm': './exec-lsm',
  'vm-exec-lsm': './vm-exec-lsm',
};

function fmt(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`;
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  // exec-lsm needs a kernel with BPF LSM; the full run measures it in the VM (vm-exec-lsm).
  // start-timeline is a profile of start-latency's difference, run when asked for.
  const names = wanted.length ? wanted : Object.keys(BENCHES).filter((n) => n !== 'exec-lsm' && n !== 'start-timeline');
  const all: BenchResult[] = [];
  for (const name of names) {
    const mod = BENCHES[name];
    if (!mod) throw new Error(`unknown benchmark ${name} (known: ${Object.keys(BENCHES).join(', ')})`);
    if (!fs.existsSync(path.join(__dirname, `${mod}.js`))) {
      console.log(`(${name}: not built in this version)`);
      continue;
    }
    console.log(`running ${name}...`);
    const res = await (require(mod) as { run(): Promise<BenchResult[]> }).run();
    for (const r of res)
      console.log(
        `  ${r.name}: ${fmt(r.medianBaselineUs)} -> ${fmt(r.medianFencedUs)}  ratio ${r.ratio.toFixed(3)}  (${r.runs} interleaved runs)`,
      );
    all.push(...res);
  }
  const lines = [
    '# Benchmark results',
    '',
    `Measured ${new Date().toISOString()} on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, kernel ${os.release()}.`,
    `Reproduce with \`npm run bench${wanted.length ? ' ' + wanted.join(' ') : ''}\`. Each row: baseline and fenced runs interleaved, medians, ratio = fenced / baseline.`,
    '',
    '| benchmark | baseline | fenced | baseline median | fenced median | ratio | runs | unit |',
    '|---|---|---|---|---|---|---|---|',
    ...all.map(
      (r) =>
        `| ${r.name} | ${r.baseline} | ${r.fenced} | ${fmt(r.medianBaselineUs)} | ${fmt(r.medianFencedUs)} | **${r.ratio.toFixed(3)}** | ${r.runs} | ${r.note ?? ''} |`,
    ),
    '',
  ];
  const out = path.join(projectRoot(), 'bench', wanted.length ? `RESULTS-${wanted.join('-')}.md` : 'RESULTS.md'); // partial runs never overwrite the full table
  fs.writeFileSync(out, lines.join('\n'));
  console.log(`\n${lines.slice(5).join('\n')}\nwritten to ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
