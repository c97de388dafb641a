// Fences one pid namespace's execs (the cgroup v1 fallback): resolves the allow-list inside
// the container's mount namespace through its init and writes the identities under the
// namespace's fence id, into the same maps as cgroup fences (see bpf/include/pidns.bpf.h).
import { FLAG_REPORT_ALLOWED } from '../../kernel/abi';
import { ExecFence } from '../../kernel/exec-fence';
import { ContainerPidns, containerPidns } from '../../kernel/pidns';
import { Mode } from '../../policy/policy';
import { ResolvedEntry, resolveAllowList } from '../../policy/identity';
import { ExecAdmit, writeExecFence } from './cgroup-exec-fence';

export interface PidnsExecFenceRequest {
  /** The init of the pid namespace to fence (pid 1 inside it); paths resolve in its root. */
  pid: number;
  /** Already identified (the caller checked it); else found from pid. */
  pidns?: ContainerPidns;
  mode: Mode;
  execAllow: string[];
  reportAllowed?: boolean;
  /** Quota check, before anything is written. */
  admit?: ExecAdmit;
  /** The BPF LSM program judges (it finds pid-namespace fences too), not the pidns tracepoint. */
  lsm?: boolean;
}

export interface PidnsExecFenceResult {
  fenceId: bigint;
  pidns: ContainerPidns;
  resolved: ResolvedEntry[];
}

/**
 * Fences the namespace and every namespace nested in it, written as a cgroup fence is
 * (writeExecFence: admitted, all or nothing, widened before narrowed).
 */
export function fencePidnsExecs(fence: ExecFence, req: PidnsExecFenceRequest): PidnsExecFenceResult {
  if (!req.lsm && !fence.programs().includes('pidns')) {
    throw new Error('the exec fence was opened without its pidns program: a pid-namespace fence would never be checked');
  }
  const pidns = req.pidns ?? containerPidns(req.pid);
  const resolved = resolveAllowList(req.execAllow, { pid: req.pid });
  const flags = req.reportAllowed ? FLAG_REPORT_ALLOWED : 0;
  writeExecFence(
    fence,
    pidns.fenceId,
    resolved.map((r) => r.identity),
    req.mode,
    flags,
    req.admit,
  );
  return { fenceId: pidns.fenceId, pidns, resolved };
}
