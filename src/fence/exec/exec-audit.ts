// Turns the kernel exec fence's events into `exec` audit records.
import { AuditInput } from '../../audit/audit-record';
import { ExecAction, ExecEvent, formatDev } from '../../kernel/abi';
import { EventSink } from '../event-sink';
import { exactName } from '../../audit/exact-name';

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
    };
  });
}
