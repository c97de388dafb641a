// Fences one pid namespace's execs (the cgroup v1 fallback): resolves the allow-list inside
// the container's mount namespace through its init and writes the identities under the
// namespace's fence id, into the same maps as cgroup fences (see bpf/include/pidns.bpf.h).
import { FLAG_REPORT_ALLOWED } from '../../kernel/abi';
import { ExecFence } from '../../kernel/exec-fence';
import { ContainerPidns, containerPidns } from '../../kernel/pidns';
import { Mode } from '../../policy/policy';
import { ResolvedEntry, resolveAllowList } from '../../policy/identity';
import { kernelMode } from './cgroup-exec-fence';

export interface PidnsExecFenceRequest {
  /** The init of the pid namespace to fence (pid 1 inside it); paths resolve in its root. */
  pid: number;
  /** Already identified (the caller checked it); else found from pid. */
  pidns?: ContainerPidns;
  mode: Mode;
  execAllow: string[];
  reportAllowed?: boolean;
  /** The BPF LSM program judges (it finds pid-namespace fences too), not the pidns tracepoint. */
  lsm?: boolean;
}

export interface PidnsExecFenceResult { fenceId: bigint; pidns: ContainerPidns; resolved: ResolvedEntry[] }

/**
 * Fences the namespace and every namespace nested in it. As for cgroups: the allow-list goes
 * in before the fence entry, and a second call updates in place, widening before narrowing.
 */
export function fencePidnsExecs(fence: ExecFence, req: PidnsExecFenceRequest): PidnsExecFenceResult {
  if (!req.lsm && !fence.programs().includes('pidns')) {
    throw new Error('the exec fence was opened without its pidns program: a pid-namespace fence would never be checked');
  }
  const pidns = req.pidns ?? containerPidns(req.pid);
  const resolved = resolveAllowList(req.execAllow, { pid: req.pid });
  const ids = resolved.map((r) => r.identity);
  const flags = req.reportAllowed ? FLAG_REPORT_ALLOWED : 0;
  const existed = fence.getFence(pidns.fenceId) !== null;
  fence.allow(pidns.fenceId, ids);
  fence.setFence(pidns.fenceId, kernelMode(req.mode), flags);
  if (existed) fence.replaceAllowList(pidns.fenceId, ids);
  return { fenceId: pidns.fenceId, pidns, resolved };
}
