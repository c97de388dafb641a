// What cgfence holds on a node, for leak checks (churn test and benchmark): BPF objects,
// pins, and the daemon's fds and memory.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface Footprint {
  progs: number;
  maps: number;
  links: number;
  pins: string[];
  daemonFds: number;
  daemonRssKb: number;
}

function bpftoolCount(kind: 'prog' | 'map' | 'link'): number {
  return (JSON.parse(execFileSync('bpftool', ['-j', kind, 'show'], { encoding: 'utf8' }) || '[]') as unknown[]).length;
}

function listPins(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listPins(p).map((x) => x));
    else out.push(p);
  }
  return out.sort();
}

export function footprint(pinDir: string, daemonPid: number): Footprint {
  const status = fs.readFileSync(`/proc/${daemonPid}/status`, 'utf8');
  return {
    progs: bpftoolCount('prog'),
    maps: bpftoolCount('map'),
    links: bpftoolCount('link'),
    pins: listPins(pinDir),
    daemonFds: fs.readdirSync(`/proc/${daemonPid}/fd`).length,
    daemonRssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0),
  };
}
