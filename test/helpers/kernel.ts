// Test helpers for the real kernel: fixtures compiled with gcc, processes started inside a
// cgroup, counts of cgfence's BPF objects from bpftool, per-test names so leftovers never collide.
import { execFileSync, spawnSync, SpawnSyncReturns } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');

export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
}

/** Compiles a test/fixtures/*.c program statically into dir. */
export function buildFixture(name: string, dir: string): string {
  const out = path.join(dir, name);
  execFileSync('gcc', ['-static', '-O2', '-o', out, path.join(FIXTURES, `${name}.c`)], { stdio: 'pipe' });
  return out;
}

/**
 * Compiles C sources into out as the build compiles the launcher: -Werror, so a probe that
 * warns fails the test instead of testing something else; libs last (e.g. -ljson-c).
 */
export function buildStrictC(out: string, sources: string[], libs: string[] = []): string {
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-std=gnu11', ...sources, ...libs, '-o', out]);
  return out;
}

/** Compiles a test/fixtures/*.c program dynamically linked (the host's loader and libc). */
export function buildDynamicFixture(name: string, dir: string): string {
  const out = path.join(dir, name);
  execFileSync('gcc', ['-O2', '-o', out, path.join(FIXTURES, `${name}.c`)], { stdio: 'pipe' });
  return out;
}

/** Compiles a freestanding test/fixtures/*.c program: no libc, entry _start, static. */
export function buildFreestandingFixture(name: string, dir: string): string {
  const out = path.join(dir, name);
  execFileSync('gcc', ['-static', '-nostdlib', '-fno-stack-protector', '-O2', '-o', out, path.join(FIXTURES, `${name}.c`)], {
    stdio: 'pipe',
  });
  return out;
}

/** Runs argv with its pid moved into the cgroup first, so its exec is the one fenced. */
export function runInCgroup(cgroupPath: string, argv: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 20000): SpawnSyncReturns<string> {
  return spawnSync('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroupPath, ...argv], {
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin', ...env },
    timeout: timeoutMs,
  });
}

export interface BpfCounts {
  progs: number;
  maps: number;
  links: number;
}

let ourNames: Set<string> | undefined;

/**
 * The names of cgfence's programs and maps, from the BTF of the built BPF objects (the kernel
 * keeps the first 15 bytes of a name). The counts below take only these: other loaders on a
 * shared node (systemd's per-unit programs, someone's bpftrace) come and go at any time, and
 * a leak of ours still shows, since every object we load has one of these names.
 */
function cgfenceObjectNames(): Set<string> {
  if (ourNames) return ourNames;
  const dir = path.join(__dirname, '..', '..', '.output', 'bpf');
  const names = new Set<string>();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.bpf.o'))) {
    const btf = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', path.join(dir, f)], { encoding: 'utf8' })) as {
      types: Array<{ id: number; kind: string; name: string; vars?: Array<{ type_id: number }> }>;
    };
    const byId = new Map(btf.types.map((t) => [t.id, t]));
    for (const t of btf.types) {
      if (t.kind === 'FUNC') names.add(t.name.slice(0, 15));
      if (t.kind === 'DATASEC' && t.name === '.maps') for (const v of t.vars ?? []) names.add(byId.get(v.type_id)!.name.slice(0, 15));
    }
  }
  if (names.size === 0) throw new Error(`no BPF program or map names in ${dir}: is the project built?`);
  return (ourNames = names);
}

/** How many of cgfence's programs and maps are loaded, and links to its programs. */
export function bpfCounts(): BpfCounts {
  const names = cgfenceObjectNames();
  const show = <T>(kind: string) => JSON.parse(execFileSync('bpftool', ['-j', kind, 'show'], { encoding: 'utf8' }) || '[]') as T[];
  const progs = show<{ id: number; name?: string }>('prog').filter((p) => names.has(p.name ?? ''));
  const progIds = new Set(progs.map((p) => p.id));
  const maps = show<{ name?: string }>('map').filter((m) => names.has(m.name ?? ''));
  const links = show<{ prog_id?: number }>('link').filter((l) => progIds.has(l.prog_id ?? -1));
  return { progs: progs.length, maps: maps.length, links: links.length };
}

/** Pids of the processes whose command line (argv) pred accepts; those that exit meanwhile are left out. */
export function pidsByArgv(pred: (argv: string[]) => boolean): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return pred(fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0'));
      } catch {
        return false;
      }
    })
    .map(Number);
}

export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

export function mktemp(prefix: string, base = '/var/tmp'): string {
  return fs.mkdtempSync(path.join(base, `${prefix}-`));
}

/** The kernel frees programs and maps after an RCU grace period: wait for the counts. */
export async function waitForBpfCounts(want: Partial<BpfCounts>, timeoutMs = 5000): Promise<BpfCounts> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const c = bpfCounts();
    const done = (Object.keys(want) as Array<keyof BpfCounts>).every((k) => c[k] === want[k]);
    if (done || Date.now() > end) return c;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * runc makes a parent cgroup per containerd namespace (/<ns>/<id>) in every hierarchy and
 * nobody removes it: a test with its own namespace removes it (empty dirs, deepest first).
 */
export function removeNamespaceCgroups(namespace: string): void {
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    const top = path.join('/sys/fs/cgroup', h, namespace);
    if (!fs.existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
      dirs.push(d);
    };
    walk(top);
    for (const d of dirs) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* still in use: left for the system */
      }
    }
  }
}
