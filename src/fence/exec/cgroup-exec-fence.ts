// Fences one cgroup's execs: resolves the allow-list inside the container's mount namespace
// (through the root pid) to file identities and writes them to the kernel's maps.
import { FenceMode, FLAG_REPORT_ALLOWED } from '../../kernel/abi';
import { cgroupId } from '../../kernel/cgroup';
import { ExecFence } from '../../kernel/exec-fence';
import { Mode } from '../../policy/policy';
import { ResolvedEntry, resolveAllowList } from '../../policy/identity';

export interface ExecFenceRequest {
  cgroupPath: string;
  /** A process in the container: allow-listed paths are resolved in /proc/<rootPid>/root. */
  rootPid?: number;
  /** Or an explicit root directory (a bundle's rootfs before its init exists). */
  rootDir?: string;
  mode: Mode;
  execAllow: string[];
  reportAllowed?: boolean;
}

export interface ExecFenceResult { fenceId: bigint; resolved: ResolvedEntry[] }

export function kernelMode(mode: Mode): FenceMode {
  switch (mode) {
    case 'enforce': return FenceMode.Enforce;
    case 'audit': return FenceMode.Audit;
    case 'learn': return FenceMode.Learn;
    case 'off': return FenceMode.Off;
  }
}

function root(req: ExecFenceRequest): { pid: number } | { dir: string } {
  if (req.rootPid !== undefined) return { pid: req.rootPid };
  if (req.rootDir !== undefined) return { dir: req.rootDir };
  throw new Error('an exec fence needs rootPid or rootDir to resolve its allow-list');
}

/**
 * Fences the cgroup (and everything below it). The allow-list is written before the fence
 * entry, so there is no instant at which the fence exists with a partial allow-list.
 * Calling it again on a fenced cgroup updates the fence in place (live update).
 */
export function fenceCgroupExecs(fence: ExecFence, req: ExecFenceRequest): ExecFenceResult {
  const fenceId = cgroupId(req.cgroupPath);
  const resolved = resolveAllowList(req.execAllow, root(req));
  const flags = req.reportAllowed ? FLAG_REPORT_ALLOWED : 0;
  if (fence.getFence(fenceId)) {
    // Widen first, then switch mode, then narrow: a live change never denies an exec that
    // both the old and the new policy allow.
    fence.allow(fenceId, resolved.map((r) => r.identity));
    fence.setFence(fenceId, kernelMode(req.mode), flags);
    fence.replaceAllowList(fenceId, resolved.map((r) => r.identity));
  } else {
    fence.allow(fenceId, resolved.map((r) => r.identity));
    fence.setFence(fenceId, kernelMode(req.mode), flags);
  }
  return { fenceId, resolved };
}
