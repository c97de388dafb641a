// Several learned records, one policy: the union of what several containers did (several runs
// of a job, the replicas of a deployment, the containers of a pod). Every item says which
// containers it was seen in and how often, so a reader can tell a path every run takes from
// one a single run took. Pure: the CLI merges what the daemon and the audit log return.
//
// Executables are merged by path, not identity: each container has its own root filesystem
// (an overlay mount has its own device), so the same image file has one identity per
// container but one path in all of them.
import { containerKey } from '../backend';
import { ExecOrigin, Learned, LearnedExec, LearnedFlow, LearnedPeer, LearnedPolicyInput, PodRef } from './learned-policy';

export interface LearnedSource {
  namespace: string;
  id: string;
  running: boolean;
  since: string;
  pod?: PodRef;
}

/** Where an item was seen: "namespace/id" and how often there (execs, packets, flows). */
export interface Sighting {
  container: string;
  count: number;
}

export type MergedExec = LearnedExec & { seenIn: Sighting[] };
export type MergedPeer = LearnedPeer & { seenIn: Sighting[] };
export type MergedFlow = LearnedFlow & { seenIn: Sighting[] };

export interface MergedLearned extends LearnedPolicyInput {
  sources: LearnedSource[];
  exec: MergedExec[];
  network: { peers: MergedPeer[]; flows: MergedFlow[]; flowsTruncated?: number };
  syscalls: Learned['syscalls'] & {
    /** Per syscall name, the containers that made it (the kernel records whether, not how often). */
    seenIn: Record<string, string[]>;
  };
}

function containerName(l: Learned): string {
  return containerKey(l.namespace, l.id);
}

function execKey(e: LearnedExec): string {
  const origin: ExecOrigin = e.origin ?? (e.path === null ? 'unknown' : 'image');
  return e.path !== null ? `${origin}\0${e.path}` : `unknown\0${[...e.names].sort().join('\0')}`;
}

/** Adds `item` under `key`, summing `count` into the merged one and recording the sighting. */
function add<T extends { seenIn: Sighting[] }>(
  into: Map<string, T>,
  key: string,
  make: () => T,
  container: string,
  count: number,
  sum: (m: T, n: number) => void,
): T {
  let m = into.get(key);
  if (!m) {
    m = make();
    into.set(key, m);
  } else {
    sum(m, count);
  }
  const s = m.seenIn.find((x) => x.container === container);
  if (s) s.count += count;
  else m.seenIn.push({ container, count });
  return m;
}

export function mergeLearned(list: Learned[]): MergedLearned {
  if (list.length === 0) throw new Error('nothing to merge: no learned record');
  const execs = new Map<string, MergedExec>();
  const peers = new Map<string, MergedPeer>();
  const flows = new Map<string, MergedFlow>();
  const syscalls = new Map<string, string[]>();
  const unnamed = new Map<string, Learned['syscalls']['unnamed'][number]>();
  const incomplete: string[] = [];
  let outOfRange = 0;
  let flowsTruncated = 0;
  const several = list.length > 1;

  for (const l of list) {
    const c = containerName(l);
    for (const e of l.exec) {
      add(
        execs,
        execKey(e),
        () => ({ ...e, names: [...e.names], seenIn: [] }),
        c,
        e.count,
        (m, n) => {
          m.count += n;
          for (const name of e.names) if (!m.names.includes(name)) m.names.push(name);
        },
      );
    }
    for (const p of l.network.peers) {
      add(
        peers,
        `${p.direction} ${p.address}`,
        () => ({ ...p, seenIn: [] }),
        c,
        p.packets,
        (m, n) => {
          m.packets += n;
        },
      );
    }
    for (const f of l.network.flows) {
      add(
        flows,
        `${f.direction} ${f.address} ${f.proto} ${f.port}`,
        () => ({ ...f, seenIn: [] }),
        c,
        f.count,
        (m, n) => {
          m.count += n;
        },
      );
    }
    for (const n of l.syscalls.names) syscalls.set(n, [...(syscalls.get(n) ?? []), c]);
    for (const u of l.syscalls.unnamed) unnamed.set(`${u.abi} ${u.nr}`, u);
    outOfRange += l.syscalls.outOfRange;
    flowsTruncated += l.network.flowsTruncated ?? 0;
    for (const w of l.incomplete) incomplete.push(several ? `${c}: ${w}` : w);
  }

  const bySeen = (a: Sighting, b: Sighting) => a.container.localeCompare(b.container);
  const exec = [...execs.values()]
    .map((e) => ({ ...e, names: e.names.sort(), seenIn: e.seenIn.sort(bySeen) }))
    .sort((a, b) => (a.path ?? '\uffff').localeCompare(b.path ?? '\uffff') || a.inode.localeCompare(b.inode));
  const order = (a: { direction: string; family: number; address: string }, b: typeof a) =>
    a.direction.localeCompare(b.direction) || a.family - b.family || a.address.localeCompare(b.address, 'en', { numeric: true });
  return {
    sources: list.map((l) => ({ namespace: l.namespace, id: l.id, running: l.running, since: l.since, ...(l.pod ? { pod: l.pod } : {}) })),
    exec,
    network: {
      peers: [...peers.values()].map((p) => ({ ...p, seenIn: p.seenIn.sort(bySeen) })).sort(order),
      flows: [...flows.values()]
        .map((f) => ({ ...f, seenIn: f.seenIn.sort(bySeen) }))
        .sort((a, b) => order(a, b) || a.proto.localeCompare(b.proto) || a.port - b.port),
      ...(flowsTruncated ? { flowsTruncated } : {}),
    },
    syscalls: {
      names: [...syscalls.keys()].sort(),
      seenIn: Object.fromEntries([...syscalls.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([n, cs]) => [n, cs.sort()])),
      unnamed: [...unnamed.values()],
      outOfRange,
    },
    incomplete,
  };
}
