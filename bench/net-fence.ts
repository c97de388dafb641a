// Issue 4's figure: the cost of the network fence on loopback TCP. A static program talks to
// itself over 127.0.0.1 (two threads, so both ends are in its cgroup and every packet meets
// the fence on egress and on ingress), in a fenced cgroup with a realistic rule set (~1,000
// CIDRs per direction, an egress allow list, so every packet takes a full trie lookup and
// the default-deny path is live) and in an unfenced cgroup, interleaved.
import fs from 'node:fs';
import os from 'node:os';
import { FenceMode } from '../src/kernel/abi';
import { NetFence } from '../src/kernel/net-fence';
import { compileNetRules } from '../src/fence/network/network-rules';
import { parseAnnotations } from '../src/policy/annotations';
import { buildFixture, loopIn as runLoop } from './fixture-loop';
import { BenchScratch } from './scratch';
import { BenchResult, interleave, result } from './types';

const TRIPS = Number(process.env.CGFENCE_BENCH_NET_TRIPS ?? 20000);
const MIB = Number(process.env.CGFENCE_BENCH_NET_MIB ?? 256);
const RUNS = Number(process.env.CGFENCE_BENCH_RUNS ?? 15);
const CIDRS = Number(process.env.CGFENCE_BENCH_NET_CIDRS ?? 1000);

/** Deterministic pseudo-random networks, so every run fences with the same tries. */
function cidrs(count: number, seed: number, first: number): string[] {
  let x = seed;
  const next = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const prefix = 16 + (next() % 17); // /16 .. /32
    const a = [first, next() & 0xff, next() & 0xff, next() & 0xff];
    out.push(`${a.join('.')}/${prefix}`);
  }
  return out;
}

// Both threads on one CPU: the fence's cost is CPU time per packet, and on a small shared
// machine an unpinned stream mostly measures where the scheduler put the two threads
// (±30% run to run here, against ±3% pinned).
const CPU = process.env.CGFENCE_BENCH_NET_CPU ?? String(os.cpus().length - 1);

function loopIn(cgroup: string, bin: string, mode: 'rr' | 'stream', n: number): number {
  const pin = CPU === 'none' ? [] : ['taskset', '-c', CPU];
  return runLoop(cgroup, [...pin, bin, mode, String(n)]);
}

export async function run(): Promise<BenchResult[]> {
  const scratch = new BenchScratch('net');
  let fence: NetFence | null = null;
  try {
    const fencedCg = scratch.cgroup('fenced');
    const plainCg = scratch.cgroup('plain');
    const bin = buildFixture(scratch.dir, 'net-bench', { flags: ['-pthread'] });
    const policy = parseAnnotations({
      'cgfence.io/egress-allow': ['127.0.0.0/8', '::1/128', ...cidrs(CIDRS, 1, 10)].join(','),
      'cgfence.io/egress-deny': cidrs(CIDRS / 10, 2, 172).join(','),
      'cgfence.io/ingress-deny': cidrs(CIDRS, 3, 192).join(','),
    });
    const c = compileNetRules(policy);
    fence = NetFence.open({ pinDir: scratch.pinDir });
    fence.attach(fencedCg, { mode: FenceMode.Enforce, defaultDeny: c.defaultDeny, entries: c.entries });
    for (const cg of [fencedCg, plainCg]) {
      loopIn(cg, bin, 'rr', TRIPS / 10);
      loopIn(cg, bin, 'stream', MIB / 8);
    }
    const rr = await interleave(
      RUNS,
      () => loopIn(plainCg, bin, 'rr', TRIPS),
      () => loopIn(fencedCg, bin, 'rr', TRIPS),
    );
    const stream = await interleave(
      RUNS,
      () => loopIn(plainCg, bin, 'stream', MIB),
      () => loopIn(fencedCg, bin, 'stream', MIB),
    );
    const st = fence.stats(BigInt(fs.statSync(fencedCg).ino));
    if (st && (st.denied.egress || st.denied.ingress))
      throw new Error(
        `the benchmark's own traffic was refused (${JSON.stringify(st, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))})`,
      );
    const rules = `${c.entries.length} trie entries`;
    return [
      result(
        'net: loopback TCP request/response',
        'unfenced cgroup (programs loaded)',
        `fenced cgroup, ${rules}`,
        rr,
        `${TRIPS} round trips of 64 bytes per run, µs per round trip${CPU === 'none' ? '' : `, pinned to CPU ${CPU}`}`,
      ),
      result(
        'net: loopback TCP bulk stream',
        'unfenced cgroup (programs loaded)',
        `fenced cgroup, ${rules}`,
        stream,
        `${MIB} MiB per run in 64 KiB writes, µs per MiB${CPU === 'none' ? '' : `, pinned to CPU ${CPU}`}`,
      ),
    ];
  } finally {
    fence?.close({ detach: true });
    await scratch.cleanup();
  }
}
