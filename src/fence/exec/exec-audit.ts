// Turns the kernel exec fence's events into `exec` audit records.
import { AuditInput } from '../../audit/audit-record';
import { ExecAction, ExecEvent, formatDev } from '../../kernel/abi';
import { EventSink } from '../event-sink';
import { exactName } from '../../audit/exact-name';
import { verdictFields } from './exec-verdict';

export function execAuditRecords(events: ExecEvent[], sink: EventSink): AuditInput[] {
  return events.map((e) => {
    const owner = sink.owner(e.fenceId);
    return {
      ts: sink.toWallNs(e.tsMonoNs),
      type: 'exec' as const,
      action: e.action === ExecAction.Deny ? 'deny' : e.action === ExecAction.Audit ? 'audit' : 'allow',
      namespace: owner?.namespace ?? '',
      container_id: owner?.id ?? '',
      cgroup_id: e.cgroupId.toString(),
      pid: e.pid,
      ...(e.commBytes ? exactName('comm', e.commBytes) : { comm: e.comm }),
      ...(e.pathBytes ? exactName('path', e.pathBytes) : { path: e.path }),
      inode: e.ino.toString(),
      dev: formatDev(e.dev),
      ppid: e.ppid,
      uid: e.uid,
      mode: owner?.mode ?? null,
      ...verdictFields(e),
      // Refused inside the kernel by the BPF LSM program: the caller got EACCES.
      ...(e.via === 'lsm' && e.action === ExecAction.Deny ? { errno: 'EACCES', via: 'bpf-lsm' } : {}),
      // Not an exec: an open for writing or an executable mapping the BPF LSM judged (path is
      // then the file's last name component).
      ...(e.op !== 'exec' ? { op: e.op } : {}),
    };
  });
}
