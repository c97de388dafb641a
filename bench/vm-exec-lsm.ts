// bench/exec-lsm.ts inside the VM (scripts/vm-run.sh: Debian 12's stock 6.1 kernel, BPF LSM
// active) for hosts without BPF LSM. Measured under emulation (QEMU TCG): every instruction
// is emulated, so absolute times are tens of times the native ones; only the ratio, fenced
// against unfenced in the same VM and the same run, means anything.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from '../src/native';
import { BenchResult } from './types';

const EXECS = process.env.CGFENCE_BENCH_EXECS ?? '300';
const RUNS = process.env.CGFENCE_BENCH_RUNS ?? '9';
const MARK = 'CGFENCE-BENCH-RESULT ';

export async function run(): Promise<BenchResult[]> {
  const root = projectRoot();
  const script = `require(${JSON.stringify(path.join(root, 'dist/bench/exec-lsm.js'))}).run().then((r) => console.log(${JSON.stringify(MARK)} + JSON.stringify(r)), (e) => { console.error(e); process.exit(1); })`;
  const r = spawnSync(
    'bash',
    [
      path.join(root, 'scripts/vm-run.sh'),
      '--env',
      `CGFENCE_BENCH_EXECS=${EXECS}`,
      '--env',
      `CGFENCE_BENCH_RUNS=${RUNS}`,
      '--',
      process.execPath,
      '-e',
      script,
    ],
    {
      cwd: root,
      encoding: 'utf8',
      timeout: 3_600_000,
      maxBuffer: 64 << 20,
    },
  );
  const line = r.stdout.split('\n').find((l) => l.startsWith(MARK));
  if (r.status !== 0 || !line) throw new Error(`the VM benchmark failed (status ${r.status}):\n${r.stdout}\n${r.stderr}`);
  const kernel = spawnSync('bash', ['-c', 'ls /boot/vmlinuz-*-amd64 | grep -v "$(uname -r)" | sort -V | tail -1'], {
    encoding: 'utf8',
  }).stdout.trim();
  return (JSON.parse(line.slice(MARK.length)) as BenchResult[]).map((x) => ({
    ...x,
    name: `${x.name} [QEMU TCG emulation, ${path.basename(kernel)}]`,
    note: `${x.note ?? ''}; measured under emulation`,
  }));
}
