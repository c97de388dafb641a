// Fences one cgroup's execs: resolves the allow-list inside the container's mount namespace
// (through the root pid) to file identities and writes them to the kernel's maps.
import { AllowedFile, FenceMode, FLAG_REPORT_ALLOWED } from '../../kernel/abi';
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
  /** Quota check, before anything is written. */
  admit?: ExecAdmit;
}

export interface ExecFenceResult {
  fenceId: bigint;
  resolved: ResolvedEntry[];
}

export function kernelMode(mode: Mode): FenceMode {
  switch (mode) {
    case 'enforce':
      return FenceMode.Enforce;
    case 'audit':
      return FenceMode.Audit;
    case 'learn':
      return FenceMode.Learn;
    case 'off':
      return FenceMode.Off;
  }
}

function root(req: ExecFenceRequest): { pid: number } | { dir: string } {
  if (req.rootPid !== undefined) return { pid: req.rootPid };
  if (req.rootDir !== undefined) return { dir: req.rootDir };
  throw new Error('an exec fence needs rootPid or rootDir to resolve its allow-list');
}

/** Called with a fence's new allow set before anything is written: throws to refuse. */
export type ExecAdmit = (fenceId: bigint, ids: AllowedFile[]) => void;

/**
 * Writes a fence, all or nothing: admitted first (quotas), then the allow-list before the
 * fence entry, so there is no instant at which a new fence exists with a partial allow-list.
 * A fence that exists is updated in place (live update): widened first, then its mode
 * switched, then narrowed, so a live change never denies an exec that both the old and the
 * new policy allow. If any write fails, the fence is put back exactly as it was.
 */
export function writeExecFence(fence: ExecFence, fenceId: bigint, ids: AllowedFile[], mode: Mode, flags: number, admit?: ExecAdmit): void {
  admit?.(fenceId, ids);
  const before = fence.snapshot(fenceId);
  try {
    if (before.fence) {
      fence.allow(fenceId, ids);
      fence.setFence(fenceId, kernelMode(mode), flags);
      fence.replaceAllowList(fenceId, ids);
    } else {
      // Entries left under this id without a fence (a crash) must not widen the new one.
      fence.replaceAllowList(fenceId, ids);
      fence.setFence(fenceId, kernelMode(mode), flags);
    }
  } catch (e) {
    try {
      fence.restore(before);
    } catch {
      /* the error below says what failed */
    }
    throw e;
  }
}

/** Fences the cgroup (and everything below it); a second call updates it (writeExecFence). */
export function fenceCgroupExecs(fence: ExecFence, req: ExecFenceRequest): ExecFenceResult {
  const fenceId = cgroupId(req.cgroupPath);
  const resolved = resolveAllowList(req.execAllow, root(req));
  const flags = req.reportAllowed ? FLAG_REPORT_ALLOWED : 0;
  writeExecFence(
    fence,
    fenceId,
    resolved.map((r) => r.identity),
    req.mode,
    flags,
    req.admit,
  );
  return { fenceId, resolved };
}
