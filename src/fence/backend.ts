// A fence backend applies one control (exec, network, seccomp) to a container. The fence
// manager decides *whether* and *when*; backends know *how*, each over its own BPF object
// or kernel mechanism. New controls plug in here without touching the lifecycle logic.
import { AuditInput } from '../audit/audit-record';
import { Policy } from '../policy/policy';

/** How a container's cgroup is fenced: `v2` cgroup programs, `v1` tracepoints, `auto` per container. */
export type CgroupMode = 'auto' | 'v2' | 'v1';

/** The one spelling of a container's key, `namespace/id`, used wherever containers are keyed. */
export function containerKey(namespace: string, id: string): string {
  return `${namespace}/${id}`;
}

export type ControlName = 'exec' | 'network' | 'seccomp';

/** Backends that are no control of their own (learn mode) have a name outside ControlName. */
export type BackendName = ControlName | 'learn';

export function isControl(n: BackendName): n is ControlName {
  return n !== 'learn';
}

export type ControlState = 'enforced' | 'audited' | 'learning' | 'none' | `unenforceable: ${string}`;

export type Controls = Record<ControlName, ControlState>;

export interface PrepareContext {
  namespace: string;
  id: string;
  /** The OCI bundle; its config.json may be rewritten here (seccomp) before runc reads it. */
  bundle: string;
  /** The bundle's rootfs on the host (mounted by containerd before create). */
  rootfs: string;
  policy: Policy;
  annotations: Record<string, string>;
}

export interface AttachContext {
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
  state: Record<string, unknown>;
}

export interface FenceBackend {
  readonly control: BackendName;
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
  attach(ctx: AttachContext): ControlState | void;
  /**
   * Live policy change of a running container; all or nothing (a backend that throws has
   * put back what it changed). It may return an undo that restores its exact kernel state
   * of before, for when another control of the same change fails; without one the manager
   * updates it again with the old policy.
   */
  update?(ctx: AttachContext): void | (() => void);
  /** At exit, or when the container is gone. Returns final counters for the audit record. */
  detach(ctx: AttachContext): Record<string, unknown> | void;
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
  /** Each backend's own state for the container. */
  backends: Partial<Record<BackendName, Record<string, unknown>>>;
  attachedAt: string;
  how: 'create' | 'late-attach';
}
