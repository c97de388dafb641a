// The launcher's reading of runc command lines against the real runc (issue 18): a corpus of
// command lines (containerd's shim shapes, the shapes that once slipped through, and seeded
// random mutations) goes through cgfence-runc's parser (native/cgfence-runc/args.c, via
// test/fuzz/args-probe.c) and through /usr/sbin/runc itself, with bundles whose rootfs is
// missing: runc then stops at "invalid rootfs" exactly where a real create, run or restore
// would go on. Wherever runc would start a container, the launcher must fence it (with the
// same bundle) or refuse it; it may never pass it through. Bounded: a few thousand lines.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildStrictC } from './helpers/kernel';

const repo = path.resolve(__dirname, '..');
const LINES = 2500;
const PARALLEL = 4;
let tmp = '';
let probe = '';
let runc = '';
let bundle = '';
let bundle2 = '';

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-runc-diff-'));
  probe = path.join(tmp, 'args-probe');
  buildStrictC(probe, [path.join(repo, 'test/fuzz/args-probe.c'), path.join(repo, 'native/cgfence-runc/args.c')]);
  runc = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
  bundle = path.join(tmp, 'b');
  bundle2 = path.join(tmp, 'b2');
  for (const b of [bundle, bundle2]) {
    fs.mkdirSync(b);
    execFileSync(runc, ['spec'], { cwd: b }); // config.json, and no rootfs
  }
  fs.mkdirSync(path.join(tmp, 'root'));
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** mulberry32: the corpus is the same on every run. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GLOBAL = [
  '--debug',
  '-debug=false',
  '--log',
  'runc.log',
  '--log-format=json',
  '--log-format',
  'text',
  '--systemd-cgroup=0',
  '-h',
  '-h=0',
  '--help=false',
  '-h=1',
  '-help=F',
  '-v',
  '-v=f',
  '--version=0',
  '--version=true',
  '--',
  '-x',
  '--criu=c',
  '---root',
  '-root',
  'r2',
  '--rootless=false',
  '-',
  '-=x',
  'create',
];
const SUBS = [
  'create',
  'create',
  'create',
  'run',
  'run',
  'restore',
  'start',
  'state',
  'delete',
  'kill',
  'help',
  'h',
  'features',
  'crate',
  '',
];
const CMD = [
  'c1',
  'c1',
  'c2',
  '-b',
  '--bundle',
  '../b2',
  '--bundle=../b2',
  '-b=',
  '-bundle',
  '--pid-file',
  'p.pid',
  '--pid-file=p.pid',
  '--no-pivot',
  '--no-pivot=false',
  '--no-new-keyring=T',
  '-d',
  '--detach=t',
  '--keep',
  '-keep=0',
  '--no-subreaper',
  '-h=0',
  '--help=false',
  '-h',
  '--help',
  '-v',
  '-v=f',
  '--version=0',
  '--',
  '--',
  '-pidfd-socket',
  '--pidfd-socket',
  '--preserve-fds=0',
  '--preserve-fds',
  '1',
  '--preserve-fds=0x1',
  '---bundle',
  '-',
  '--console-socket',
  'cs.sock',
  '-b=../b2',
  '-=',
  '--=c1',
  '-c1',
  'run',
  'create',
  '--image-path',
  'img',
];

function corpus(): string[][] {
  const fixed: string[][] = [
    // containerd's runc.v2 shim (go-runc)
    ['--root', 'r', '--log', 'log.json', '--log-format', 'json', 'create', '--bundle', bundle, '--pid-file', 'init.pid', 'c1'],
    [
      '--root',
      'r',
      '--log',
      'log.json',
      '--log-format',
      'json',
      'create',
      '--bundle',
      bundle,
      '--pid-file',
      'init.pid',
      '--console-socket',
      'cs.sock',
      'c1',
    ],
    [
      '--root',
      'r',
      '--log',
      'log.json',
      '--log-format',
      'json',
      'create',
      '--bundle',
      bundle,
      '--pid-file',
      'init.pid',
      '--no-pivot',
      '--preserve-fds',
      '2',
      'c1',
    ],
    ['--root', 'r', '--log', 'log.json', '--log-format', 'json', 'start', 'c1'],
    ['--root', 'r', '--log', 'log.json', '--log-format', 'json', 'delete', '--force', 'c1'],
    ['--root', 'r', '--log', 'log.json', '--log-format', 'json', 'restore', '--detach', '--bundle', bundle, '--image-path', 'img', 'c1'],
    // the four shapes of issue 18
    ['-h=0', 'create', 'c1'],
    ['--help=false', 'create', 'c1'],
    ['-v=f', 'create', 'c1'],
    ['--version=0', 'create', 'c1'],
    ['create', bundle2, 'c1', '--bundle'],
    ['create', '-v', '--'],
    ['create', '--version', '--'],
    ['create', '-pidfd-socket', '--'],
    ['run', 'c1'],
    ['run', '-d', 'c1'],
    ['run', '-h=0', '--', 'c1'],
  ];
  const rnd = prng(18);
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];
  const out = [...fixed];
  // Half are valid lines with one to three mutations (insert, replace, delete a token), so
  // that many of them still start a container and the comparison has something to compare.
  const bases = fixed
    .filter((l) => l.includes('create') || l.includes('run'))
    .concat([
      ['create', 'c1'],
      ['run', '-d', 'c1'],
      ['create', '-b', '../b2', 'c1'],
    ]);
  while (out.length < LINES / 2) {
    const line = [...pick(bases)];
    const m = 1 + Math.floor(rnd() * 3);
    for (let k = 0; k < m; k++) {
      const at = Math.floor(rnd() * (line.length + 1));
      const op = rnd();
      const tok = rnd() < 0.5 ? pick(CMD) : pick(GLOBAL);
      if (op < 0.6) line.splice(at, 0, tok);
      else if (op < 0.85 && at < line.length) line[at] = tok;
      else if (at < line.length) line.splice(at, 1);
    }
    out.push(line);
  }
  while (out.length < LINES) {
    const line: string[] = [];
    const g = Math.floor(rnd() * 3);
    for (let i = 0; i < g; i++) line.push(pick(GLOBAL));
    const sub = pick(SUBS);
    if (sub) line.push(sub);
    const c = Math.floor(rnd() * 6);
    for (let i = 0; i < c; i++) line.push(pick(CMD));
    out.push(line);
  }
  return out;
}

/** runc's verdict: the bundle path it would create from, or null if it would start nothing. */
function realRunc(args: string[]): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(runc, args, { cwd: bundle, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      const m = /invalid rootfs: stat (.*)\/rootfs: no such file or directory/.exec(out);
      resolve(m ? m[1] : null);
    });
  });
}

describe('cgfence-runc command lines against the real runc', () => {
  it(`never passes through a line runc would start a container from (${LINES} lines)`, async () => {
    const lines = corpus().map((l) => ['--root', path.join(tmp, 'root'), ...l]);
    const verdicts = execFileSync(probe, {
      input: lines.map((l) => l.join('\x1f')).join('\n') + '\n',
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    })
      .split('\n')
      .slice(0, -1)
      .map((l) => l.split('\x1f'));
    expect(verdicts).toHaveLength(lines.length);

    const runcSays: (string | null)[] = new Array(lines.length);
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < lines.length) {
          const i = next++;
          runcSays[i] = await realRunc(lines[i]);
        }
      }),
    );

    const wrong: string[] = [];
    let starts = 0;
    let fenced = 0;
    for (let i = 0; i < lines.length; i++) {
      const [kind, b] = verdicts[i];
      const starting = runcSays[i];
      if (starting === null) continue;
      starts++;
      if (kind === 'X') continue;
      if (kind === 'P') {
        wrong.push(`passed through, but runc starts from ${starting}: ${JSON.stringify(lines[i].slice(2))}`);
      } else if (path.resolve(bundle, b) !== starting) {
        wrong.push(`fenced bundle ${path.resolve(bundle, b)}, but runc uses ${starting}: ${JSON.stringify(lines[i].slice(2))}`);
      } else {
        fenced++;
      }
    }
    console.log(
      `differential: ${lines.length} lines, runc starts from ${starts}: ${fenced} fenced with runc's bundle, ${starts - fenced} refused`,
    );
    expect(wrong.slice(0, 20)).toEqual([]);
    // The corpus must exercise both sides, or the comparison proves nothing.
    expect(starts).toBeGreaterThan(150);
    expect(fenced).toBeGreaterThan(100);
    // Every fixed shape that runc starts from was among them.
    for (const i of [0, 6, 7, 8, 9, 10, 11, 13, 14, 15]) expect(runcSays[i], JSON.stringify(lines[i])).not.toBeNull();
  }, 240_000);
});
