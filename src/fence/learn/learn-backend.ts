// learn mode (cgfence.io/mode=learn): records what a container does and blocks nothing.
// Executables, syscalls and network peers are recorded in the kernel (kernel/learn-syscalls.ts,
// kernel/learn-net.ts) and read when asked or at exit, when the result goes to the audit log
// as a lifecycle/learned record, written at once: the kernel's records are complete when the
// container exits, however briefly it lived. The exec fence's ring-buffer events of learning
// containers add the names files were run by while their processes live. Executables are
// mapped to paths in the container's root, held open from the attach (ContainerRoot), so a
// container gone before the daemon looks still maps.
//
// It is no control of its own: it learns the network and seccomp controls on behalf of their
// backends (learns()), so `controls` stays the contract's three.
import fs from 'node:fs';
import path from 'node:path';
import { AuditInput } from '../../audit/audit-record';
import { EventSink } from '../event-sink';
import { ExecEvent, FenceMode } from '../../kernel/abi';
import { cgroupV2Root } from '../../kernel/cgroup';
import { LearnedExecRecord, SyscallAbi } from '../../kernel/learn-abi';
import { LearnNet, LearnedNet } from '../../kernel/learn-net';
import { LearnSyscalls } from '../../kernel/learn-syscalls';
import { native } from '../../native';
import { Policy } from '../../policy/policy';
import { CgroupMode, AttachContext, ControlName, ControlSnapshot, ControlState, FenceBackend, FencedContainer } from '../backend';
import { readBundleConfig } from '../bundle-config';
import { ContainerRoot } from './container-root';
import { LearnedExecs } from './learned-execs';
import { Learned, LearnedFlow, LearnedPeer, PodRef, formatAddress, learnedAnnotations, protoName } from './learned-policy';
import { replaceFile } from '../../kernel/replace-file';

/** The audit record keeps at most this many flows (the peers, which make the policy, are all kept). */
const MAX_RECORDED_FLOWS = 1000;

/** libseccomp's name of the 32-bit ABI a 64-bit node also runs. */
const COMPAT_ARCH: Partial<Record<string, string>> = { x64: 'x86', arm64: 'arm' };

interface Live {
  namespace: string;
  id: string;
  pid: number;
  fenceId: bigint;
  since: string;
  pod?: PodRef;
  /** The kernel's exec-table-full counter at attach: more at the end means execs were missed. */
  execDropsAtStart: string;
  execs: LearnedExecs;
  /** The container's root, held until the learned record is written (not saved: reopened). */
  root: ContainerRoot | null;
}

export interface LearnBackendOptions {
  pinDir: string;
  stateDir: string;
  cgroupMode: CgroupMode;
  /** Where the lifecycle/learned record goes. */
  sink: EventSink;
}

interface Recorders {
  sys: LearnSyscalls;
  net: LearnNet;
}

/** The OCI annotations containerd's CRI puts on every container of a pod. */
const CRI_POD_NAMESPACE = 'io.kubernetes.cri.sandbox-namespace';
const CRI_POD_NAME = 'io.kubernetes.cri.sandbox-name';

/** The pod of a CRI container, from its bundle's spec; none for a container started otherwise. */
function podOf(bundle: string): PodRef | undefined {
  if (!bundle) return undefined;
  try {
    const a = readBundleConfig(bundle).annotations ?? {};
    const namespace = a[CRI_POD_NAMESPACE];
    const name = a[CRI_POD_NAME];
    return namespace && name ? { namespace, name } : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\S+ \(.*\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export class LearnBackend implements FenceBackend<'learn'> {
  readonly control = 'learn' as const;
  /** null when the kernel refused them: learn mode is then unenforceable, the daemon runs on. */
  private readonly rec: Recorders | null = null;
  private readonly loadError: string | null = null;
  private readonly live = new Map<string, Live>();
  private readonly dir: string;

  constructor(private readonly opts: LearnBackendOptions) {
    let sys: LearnSyscalls | null = null;
    try {
      sys = LearnSyscalls.open({ pinDir: path.join(opts.pinDir, 'learn-sys') });
      this.rec = { sys, net: LearnNet.open({ pinDir: path.join(opts.pinDir, 'learn-net') }) };
    } catch (e) {
      sys?.close();
      this.loadError = (e as Error).message;
    }
    this.dir = path.join(opts.stateDir, 'learn');
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.loadSaved();
  }

  private usable(): boolean {
    return this.rec !== null && this.opts.cgroupMode !== 'v1' && cgroupV2Root() !== null;
  }

  private recorders(): Recorders {
    if (!this.rec) throw new Error(`learn mode's kernel recorders could not be loaded: ${this.loadError}`);
    return this.rec;
  }

  controlState(policy: Policy): ControlState {
    if (policy.mode !== 'learn') return 'none';
    if (!this.rec) return `unenforceable: learn mode's kernel recorders could not be loaded: ${this.loadError}`;
    return this.usable() ? 'learning' : "unenforceable: learning needs the container's cgroup v2 (cgroup mode v1 or no v2 hierarchy)";
  }

  /** The controls it learns for their own backends (exec is the exec fence's own learn mode). */
  learns(policy: Policy): ControlName[] {
    return policy.mode === 'learn' && this.usable() ? ['network', 'seccomp'] : [];
  }

  attach(ctx: AttachContext<'learn'>): void {
    if (!ctx.cgroupPath || ctx.cgroupId === null) throw new Error(`pid ${ctx.pid} has no cgroup v2 membership to learn from`);
    const fenceId = ctx.cgroupId;
    const { sys, net } = this.recorders();
    const startedMs = Date.now();
    sys.add(fenceId);
    try {
      net.attach(ctx.cgroupPath, fenceId);
    } catch (e) {
      sys.remove(fenceId);
      throw e;
    }
    const live: Live = {
      namespace: ctx.namespace,
      id: ctx.id,
      pid: ctx.pid,
      fenceId,
      since: new Date(startedMs).toISOString(),
      pod: podOf(ctx.bundle),
      execDropsAtStart: sys.execDrops().toString(),
      execs: new LearnedExecs(startedMs),
      root: ContainerRoot.open(ctx.pid),
    };
    this.live.set(fenceId.toString(), live);
    this.save(live);
    ctx.state.backend = 'learn';
    ctx.state.fenceId = fenceId.toString();
  }

  /**
   * Exec events of the exec fence; those of learning containers add the names files were run
   * by, resolved while the process lives. A set that changed is written before the next batch,
   * so a daemon killed right after loses no name; an exec storm of known programs only changes
   * counts, and writes nothing. (The identities themselves are in the kernel's record.)
   */
  onExecEvents(events: ExecEvent[]): void {
    const changed = new Set<Live>();
    for (const e of events) {
      if (e.mode !== FenceMode.Learn) continue;
      const l = this.live.get(e.fenceId.toString());
      if (l && l.execs.record(e, l.root)) changed.add(l);
    }
    for (const l of changed) this.save(l);
  }

  /**
   * What the learning containers of that id (in that namespace, or any) have done so far.
   * `running` is false for one whose processes are gone but whose exit the daemon has not
   * handled yet: its record is already complete.
   */
  learnedOf(namespace: string | undefined, id: string): Learned[] {
    return [...this.live.values()]
      .filter((x) => x.id === id && (namespace === undefined || x.namespace === namespace))
      .map((l) => {
        const { sys, net } = this.recorders();
        return this.build(l, sys.read(l.fenceId), sys.readExecs(l.fenceId), net.read(l.fenceId), alive(l.pid));
      });
  }

  detach(ctx: AttachContext<'learn'>): Record<string, unknown> | void {
    if (typeof ctx.state.fenceId !== 'string') return;
    const fenceId = BigInt(ctx.state.fenceId);
    const key = ctx.state.fenceId;
    const { sys: sysRec, net: netRec } = this.recorders();
    const l = this.live.get(key) ?? {
      namespace: ctx.namespace,
      id: ctx.id,
      pid: ctx.pid,
      fenceId,
      since: '',
      execDropsAtStart: sysRec.execDrops().toString(),
      // Unknown start: no file is taken for a runtime one.
      execs: new LearnedExecs(Number.POSITIVE_INFINITY),
      root: null,
    };
    // The kernel's records are read now (the cgroup and its maps go with the container), and
    // complete: every exec and syscall of the container happened before its exit.
    const { syscalls: sys, execs } = sysRec.remove(fenceId);
    const net = netRec.detach(fenceId);
    this.live.delete(key);
    let learned: Learned;
    try {
      learned = this.build(l, sys, execs, net, false);
    } finally {
      l.root?.close();
      fs.rmSync(this.file(key), { force: true });
    }
    const flows = learned.network.flows;
    if (flows.length > MAX_RECORDED_FLOWS) {
      learned.network.flows = flows.slice(0, MAX_RECORDED_FLOWS);
      learned.network.flowsTruncated = flows.length - MAX_RECORDED_FLOWS;
    }
    this.opts.sink.write([
      {
        type: 'lifecycle',
        action: 'learned',
        namespace: ctx.namespace,
        container_id: ctx.id,
        cgroup_id: key,
        pid: ctx.pid,
        annotations: learnedAnnotations(learned),
        learned,
      },
    ]);
    return { learned_peers: net.peers.length, learned_syscalls: sys ? 'recorded' : 'none', learned_execs: execs.length };
  }

  private build(l: Live, sys: ReturnType<LearnSyscalls['read']>, execs: LearnedExecRecord[], net: LearnedNet, running: boolean): Learned {
    const incomplete: string[] = [];
    l.execs.addKernel(execs, l.root);
    l.execs.resolvePending(l.root);
    if (!l.root && l.execs.unmapped > 0) {
      incomplete.push(
        "the container's root could not be held (it was gone before the daemon looked): executables not mapped to a path are left out of exec-allow",
      );
    }
    if (l.root?.walkTruncated)
      incomplete.push(
        "the container's root filesystem is too big to be searched whole: an executable run by a name that does not lead to it any more may be left out of exec-allow",
      );
    if (this.recorders().sys.execDrops() > BigInt(l.execDropsAtStart)) {
      incomplete.push("the kernel's exec table was full while the container was learning: executables may be missing from exec-allow");
    }
    if (!sys) incomplete.push('no syscall record was found for the container: seccomp-allow is empty');
    if (net.peerDrops > 0n)
      incomplete.push(
        `${net.peerDrops} network peers were not recorded (the kernel's peer table was full): egress-allow/ingress-allow are incomplete`,
      );
    if (net.flowDrops > 0n)
      incomplete.push(
        `${net.flowDrops} flows were not recorded in the report (the kernel's flow table was full); the policy is not affected`,
      );
    const syscalls = this.syscallNames(sys);
    const peer = (p: LearnedNet['peers'][number]): LearnedPeer => ({
      direction: p.direction,
      family: p.family,
      address: formatAddress(p.addr),
      packets: Number(p.count),
    });
    const order = (a: { direction: string; family: number; address: string }, b: typeof a) =>
      a.direction.localeCompare(b.direction) || a.family - b.family || a.address.localeCompare(b.address, 'en', { numeric: true });
    return {
      namespace: l.namespace,
      id: l.id,
      ...(l.pod ? { pod: l.pod } : {}),
      running,
      since: l.since,
      exec: l.execs.list(),
      network: {
        peers: net.peers.map(peer).sort(order),
        flows: net.flows
          .map((f): LearnedFlow => ({
            direction: f.direction,
            family: f.family,
            address: formatAddress(f.addr),
            proto: protoName(f.proto),
            port: f.port,
            count: Number(f.count),
          }))
          .sort((a, b) => order(a, b) || a.proto.localeCompare(b.proto) || a.port - b.port),
      },
      syscalls,
      incomplete,
    };
  }

  private syscallNames(sys: ReturnType<LearnSyscalls['read']>): Learned['syscalls'] {
    const out: Learned['syscalls'] = { names: [], unnamed: [], outOfRange: Number(sys?.outOfRange ?? 0n) };
    if (!sys) return out;
    const names = new Set<string>();
    const nativeNrs = sys.numbers[SyscallAbi.Native];
    native()
      .syscallNames(nativeNrs)
      .forEach((n, i) => {
        if (n) names.add(n);
        else out.unnamed.push({ abi: 'native', nr: nativeNrs[i] });
      });
    const compatNrs = sys.numbers[SyscallAbi.Compat];
    const compatArch = COMPAT_ARCH[process.arch];
    if (compatNrs.length) {
      const compatNames = compatArch ? native().syscallNames(compatNrs, compatArch) : compatNrs.map(() => null);
      // An annotation's names are checked against the node's architecture, and the filter
      // applies each name to every ABI of the profile. libseccomp knows the 32-bit names there
      // too (socketcall, _llseek: pseudo-syscalls for the native ABI, real ones for the 32-bit
      // one), so only a name it does not know at all is left out.
      const known = native().resolveSyscalls(compatNames.map((n) => n ?? ''));
      compatNames.forEach((n, i) => {
        if (n && known[i] !== null) names.add(n);
        else out.unnamed.push({ abi: 'compat', nr: compatNrs[i], ...(n ? { name: n } : {}) });
      });
    }
    out.names = [...names].sort();
    return out;
  }

  private file(fenceId: string): string {
    return path.join(this.dir, `${fenceId}.json`);
  }

  private save(l: Live): void {
    const { execs, fenceId, root: _root, ...rest } = l;
    replaceFile(this.file(fenceId.toString()), JSON.stringify({ ...rest, fenceId: fenceId.toString(), execs }));
  }

  /**
   * A restarted daemon picks up the containers that were learning: their exec sets from the
   * state directory, their syscall and network records from the pinned maps.
   */
  private loadSaved(): void {
    const recording = new Set(this.recording().map(String));
    for (const name of fs.readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue;
      const file = path.join(this.dir, name);
      try {
        const v = JSON.parse(fs.readFileSync(file, 'utf8')) as Omit<Live, 'fenceId' | 'execs' | 'root'> & {
          fenceId: string;
          execs: unknown;
        };
        if (!recording.has(v.fenceId)) {
          fs.rmSync(file, { force: true });
          continue;
        }
        // An earlier daemon's held root went with it; the container's own is reopened while it runs.
        this.live.set(v.fenceId, {
          ...v,
          fenceId: BigInt(v.fenceId),
          execs: LearnedExecs.fromJSON(v.execs, Date.parse(v.since) || Number.POSITIVE_INFINITY),
          root: ContainerRoot.open(v.pid),
        });
      } catch {
        // A torn state file loses the exec set of one container, which the learned record says.
        fs.rmSync(file, { force: true });
      }
    }
  }

  /** Kernel recorders no learning container claims (a crash between attach and the registry). */
  orphans(known: Set<string>): bigint[] {
    // Learned peers and ports count too: the sweep collects entries of any table.
    const ids = new Set([...this.recording(), ...(this.rec?.net.tableFences() ?? [])]);
    return [...ids].filter((id) => !known.has(id.toString()));
  }

  sweepOrphans(known: Set<string>): AuditInput[] {
    return this.orphans(known).map((id) => {
      this.removeRecorder(id);
      return { type: 'agent', action: 'remove-orphan-learn', cgroup_id: id.toString() };
    });
  }

  /** Fences with a record in the kernel (this daemon's or an earlier one's). */
  private recording(): bigint[] {
    if (!this.rec) return [];
    return [...new Set([...this.rec.sys.fences(), ...this.rec.net.pinnedFences()])];
  }

  removeRecorder(fenceId: bigint): void {
    this.recorders().sys.remove(fenceId);
    this.recorders().net.detach(fenceId);
    this.live.get(fenceId.toString())?.root?.close();
    this.live.delete(fenceId.toString());
    fs.rmSync(this.file(fenceId.toString()), { force: true });
  }

  /** What it learned so far is the learn op's (learnedOf), not a counter. */
  snapshot(f: FencedContainer): ControlSnapshot | null {
    const st = f.backends.learn;
    return st ? { backend: st.backend ?? this.control, ps: {}, decisions: null } : null;
  }

  status(): Record<string, unknown> {
    return {
      backend: this.usable()
        ? 'learn: tp_btf/sys_enter syscall record and tp_btf/sched_process_exec executable record (attached while a container learns) + cgroup_skb/sock_addr peer record; paths in the container root held from attach'
        : 'none (learning needs cgroup v2)',
      learning: this.live.size,
      syscallProgramAttached: this.rec?.sys.attached() ?? false,
      ...(this.loadError ? { error: this.loadError } : {}),
    };
  }

  /** A write to these by anyone else could forge what a container is said to have done. */
  protectedMapIds(): number[] {
    if (!this.rec) return [];
    return [...Object.values(this.rec.sys.objectIds().maps), ...Object.values(this.rec.net.objectIds().maps)];
  }

  protectedProgramIds(): number[] {
    if (!this.rec) return [];
    return [...this.rec.sys.objectIds().programs, ...Object.values(this.rec.net.objectIds().programs)];
  }

  close(opts: { detach: boolean }): void {
    // Counts change without a write; the next daemon gets them as of now.
    for (const l of this.live.values()) {
      if (!opts.detach) this.save(l);
      l.root?.close();
    }
    this.rec?.net.close({ detach: opts.detach });
    this.rec?.sys.close({ detach: opts.detach });
    if (opts.detach) {
      fs.rmSync(this.dir, { recursive: true, force: true });
      // The daemon's pin directory goes too once the last backend's pins are gone.
      try {
        fs.rmdirSync(this.opts.pinDir);
      } catch {
        /* not empty (other objects' pins) or gone */
      }
    }
  }
}
