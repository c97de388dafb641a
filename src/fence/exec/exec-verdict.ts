// The audit fields that say why an exec was denied or audited, the same for the kernel fence's
// events and the notify loop's denials: `reason`, and for a file changed since it was allowed
// both stamps (`stamp_allowed`, `stamp_now`: its ctime then and now, seconds.nanoseconds);
// for a verdict on the program's ELF loader, the loader (`loader_dev`, `loader_inode`).
import { EXEC_REASON_NAMES, ExecReason, FileIdentity, formatDev, formatStamp } from '../../kernel/abi';

export interface ExecVerdict {
  reason: ExecReason;
  nowCtimeNs: bigint;
  wantCtimeNs: bigint | null;
  interp?: FileIdentity | null;
}

export function verdictFields(v: ExecVerdict): Record<string, string> {
  if (v.reason === ExecReason.None) return {};
  const out: Record<string, string> = { reason: EXEC_REASON_NAMES[v.reason] ?? `unknown-${v.reason}` };
  if (v.wantCtimeNs !== null) {
    out.stamp_allowed = formatStamp(v.wantCtimeNs);
    out.stamp_now = formatStamp(v.nowCtimeNs);
  }
  if (v.interp) {
    out.loader_dev = formatDev(v.interp.dev);
    out.loader_inode = v.interp.ino.toString();
  }
  return out;
}
