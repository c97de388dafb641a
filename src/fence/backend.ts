// A fence backend applies one control (exec, network, seccomp) to a container. The fence
// manager decides *whether* and *when*; backends know *how*, each over its own BPF object
// or kernel mechanism. New controls plug in here without touching the lifecycle logic.
import { Policy } from '../policy/policy';

export type ControlName = 'exec' | 'network' | 'seccomp';

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
  readonly control: ControlName;
  /** What this control will be for the policy on this node ('none' when not asked for). */
  controlState(policy: Policy): ControlState;
  /** Before runc create. Throw a Refusal (naming the annotation) to refuse the container. */
  prepare?(ctx: PrepareContext): void;
  /** After runc create, before the entrypoint runs. Throwing refuses (the container is deleted). */
  attach(ctx: AttachContext): void;
  /** Live policy change of a running container. */
  update?(ctx: AttachContext): void;
  /** At exit, or when the container is gone. Returns final counters for the audit record. */
  detach(ctx: AttachContext): Record<string, unknown> | void;
  /** Kernel facts for `cgfence status`. */
  status(): Record<string, unknown>;
  /** Daemon shutdown: with detach, nothing of this backend stays in the kernel. */
  close(opts: { detach: boolean }): void;
}
