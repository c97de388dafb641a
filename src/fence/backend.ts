// A fence backend applies one control (exec, network, seccomp) to a container. The fence
// manager decides *whether* and *when*; backends know *how*, each over its own BPF object
// or kernel mechanism. New controls plug in here without touching the lifecycle logic.
import { AuditInput, Workload } from '../audit/audit-record';

export type { Workload } from '../audit/audit-record';
import { Policy } from '../policy/policy';

export { containerKey } from '../policy/container-key';
import type { BackendStateMap, BackendStates } from './backend-states';
import type { OciSpec } from './bundle-config';

export type { BackendStateMap, BackendStates } from './backend-states';

/** How a container's cgroup is fenced: `v2` cgroup programs, `v1` tracepoints, `auto` per container. */
export type CgroupMode = 'auto' | 'v2' | 'v1';

export type ControlName = 'exec' | 'network' | 'seccomp';

/** Backends that are no control of their own (learn mode) have a name outside ControlName. */
export type BackendName = ControlName | 'learn';

/** Every backend name has a state type (fence/backend-states.ts), and nothing else has one. */
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const statesCoverBackends: SameKeys<keyof BackendStates, BackendName> = true;
void statesCoverBackends;

export function isControl(n: BackendName): n is ControlName {
  return n !== 'learn';
}

export type ControlState = 'enforced' | 'audited' | 'learning' | 'none' | `unenforceable: ${string}`;

export type Controls = Record<ControlName, ControlState>;

export interface PrepareContext {
  namespace: string;
  id: string;
  /** The OCI bundle. */
  bundle: string;
  /** The bundle's rootfs on the host (mounted by containerd before create). */
  rootfs: string;
  policy: Policy;
  annotations: Record<string, string>;
  /**
   * The bundle's config.json as this prepare read it, once. A backend that changes what runc
   * will get (seccomp) edits it here and calls specChanged(); the manager writes the file back
   * once, after every backend, so edits compose in backend order and a refused create leaves
   * the file as it was.
   */
  spec: OciSpec;
  specChanged: () => void;
  /**
   * Called by a backend whose edit routes the container's execs to the seccomp notify loop:
   * runc will hand the init over with the listener before create returns, and the attach can
   * begin there (FenceManager.attachOnHandOff).
   */
  handOff?: () => void;
}

export interface AttachContext<N extends BackendName = BackendName> {
  namespace: string;
  id: string;
  bundle: string;
  /** The container's init pid: blocked before the entrypoint at create, running at late attach. */
  pid: number;
  /** The init's cgroup v2 directory, or null when it has none. */
  cgroupPath: string | null;
  cgroupId: bigint | null;
  policy: Policy;
  annotations: Record<string, string>;
  /** This backend's persisted state for the container; mutate it, the manager saves it. */
  state: BackendStates[N];
}

export type DecisionAction = 'deny' | 'audit' | 'allow';

/**
 * What one backend holds for one fenced container, as `cgfence ps`, the metrics and the
 * while-down record show it: the daemon asks for this instead of reading a backend's state.
 */
export interface ControlSnapshot {
  /** Which backend serves the control for this container (ps's `backend` column). */
  backend: string;
  /** This control's fields of the container's `cgfence ps` entry (exec: execAllow, execDeny, counters; network: networkCounters). */
  ps: Record<string, unknown>;
  /** What the kernel decided for the container so far, per action (the decision metrics); null when it counts nothing. */
  decisions: Partial<Record<DecisionAction, number>> | null;
}

/** Decisions the kernel counts in pinned maps, so that they outlive the daemon, under the key they are kept by. */
export interface PinnedCounts {
  key: string;
  denied: number;
  audited: number;
}

export interface FenceBackend<N extends BackendName = BackendName> {
  readonly control: N;
  /** What this control will be for the policy on this node ('none' when not asked for). */
  controlState(policy: Policy): ControlState;
  /**
   * Controls this backend records in learn mode on behalf of their own backends, which have
   * nothing to apply then: reported as 'learning' where they would say 'none'.
   */
  learns?(policy: Policy): ControlName[];
  /** Before runc create. Throw a Refusal (naming the annotation) to refuse the container. */
  prepare?(ctx: PrepareContext): void;
  /**
   * After runc create, before the entrypoint runs. Throwing refuses (the container is deleted).
   * Returning a ControlState corrects controlState() for this container (`unenforceable: ...`
   * when nothing, or only an audit fallback, could be attached); whatever the backend put in
   * ctx.state is still handed to detach at exit.
   */
  attach(ctx: AttachContext<N>): ControlState | void;
  /**
   * Live policy change of a running container; all or nothing (a backend that throws has
   * put back what it changed). It may return an undo that restores its exact kernel state
   * of before, for when another control of the same change fails; without one the manager
   * updates it again with the old policy.
   */
  update?(ctx: AttachContext<N>): void | (() => void);
  /**
   * Set when this control cannot be added, changed or removed on a running container at all
   * (why, in words for the user): a live update that would touch it is refused as a whole.
   */
  readonly fixedAtStart?: string;
  /** At exit, or when the container is gone. Returns final counters for the audit record. */
  detach(ctx: AttachContext<N>): Record<string, unknown> | void;
  /**
   * After detach: settles once this backend has written every record it still owes the
   * container (counts it reports a little later, a learned policy); the manager writes the
   * container's detach record after that, so the detach record is its last.
   */
  lastRecords?(ctx: AttachContext<N>): Promise<void> | void;
  /**
   * A container fenced by an earlier daemon, read back from the state file at start: take up
   * whatever this backend follows for it in user space (the kernel side is pinned).
   */
  adopt?(f: FencedContainer): void;
  /**
   * Between a container's exit and its detach: settles once the kernel's last events of it
   * that may still be on their way have arrived, so their records come before the detach record.
   */
  settle?(f: FencedContainer): Promise<void>;
  /** What this backend holds for the container (ps, metrics); null when nothing. */
  snapshot?(f: FencedContainer): ControlSnapshot | null;
  /**
   * The container's pinned decision counts: the daemon saves them every few seconds and a
   * restarted daemon reports what they grew by meanwhile (the while-down record). Null when
   * this control keeps none for it.
   */
  pinnedCounts?(f: FencedContainer): PinnedCounts | null;
  /** Kernel facts for `cgfence status`. */
  status(): Record<string, unknown>;
  /**
   * Ids of the BPF maps (programs, links) this backend owns, for the tamper watch: a write to
   * them, or a detach of them, by any other process is reported. Asked again after every
   * attach. A link whose program is protected is covered without being listed.
   */
  protectedMapIds?(): number[];
  protectedProgramIds?(): number[];
  protectedLinkIds?(): number[];
  /**
   * Removes what this backend holds in the kernel for event keys no fenced container claims
   * (`known`: every fenced container's eventKeys), e.g. after a crash between the kernel write
   * and the state file. Returns the audit records that say what was removed.
   */
  sweepOrphans?(known: Set<string>): AuditInput[];
  /** Daemon shutdown: with detach, nothing of this backend stays in the kernel. */
  close(opts: { detach: boolean }): void;
}

/** A fenced container as the daemon records it (persisted in the state directory). */
export interface FencedContainer {
  namespace: string;
  id: string;
  bundle: string;
  pid: number;
  cgroupPath: string | null;
  /** u64 values as decimal strings (JSON has no 64-bit integers). */
  cgroupId: string | null;
  /** Keys kernel events carry for this container (fence ids: cgroup id, pid namespace...). */
  eventKeys: string[];
  /** The container's effective cgfence.io/* annotations (profile merged). */
  annotations: Record<string, string>;
  mode: string;
  policyHash: string;
  controls: Controls;
  /** Each backend's own state for the container (types: fence/backend-states.ts). */
  backends: BackendStateMap;
  attachedAt: string;
  how: 'create' | 'late-attach';
  /** Pod, pod namespace and container name (CRI labels); null for a container without them. */
  workload?: Workload | null;
}
