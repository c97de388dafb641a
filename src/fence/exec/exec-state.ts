// What the exec control keeps per container in the registry (fences.json): which fence
// scope serves it, its kernel fence id, and the allow-list as resolved and stamped at
// attach. Written by ExecBackend (and the LSM / notify wrappers), read back by them only.
import { ScopeKind } from '../fence-scope';
import { JsonFields, StateFieldError, definedOnly } from '../json-fields';

/** One allow-list entry as resolved in the container: dev "MAJ:MIN", u64s as decimal strings. */
export type ExecAllowEntry = {
  path: string;
  dev: string;
  ino: string;
  /** Absent in entries of a daemon that kept no stamps (the notify loop then leaves them to the kernel). */
  ctime_ns?: string;
  /** Set for a PT_INTERP loader added for this allowed program. */
  loader_of?: string;
};

export type ExecState = {
  /** The fence scope, or 'none' when the container has none the cgroup mode allows (audit/learn only). */
  backend?: ScopeKind | 'none';
  /** The kernel fence id (cgroup id or pid-namespace key), decimal. */
  fenceId?: string;
  /** `pid:[inode]` of a container fenced by pid namespace. */
  pidns?: string;
  /** Why the container is fenced by pid namespace, or why it could not be fenced. */
  why?: string;
  allow?: ExecAllowEntry[];
  /** The BPF LSM hook that judges its execs (exec-lsm-backend). */
  hook?: string;
  /** Set when its execs are routed to the seccomp notify loop (EACCES instead of SIGKILL). */
  notify?: 'seccomp-notify';
};

const BACKENDS = ['cgroup-v2', 'pidns-tracepoint', 'none'] as const;

function readAllowEntry(f: JsonFields): ExecAllowEntry {
  const dev = f.str('dev');
  if (!/^\d+:\d+$/.test(dev)) throw new StateFieldError(`${f.at('dev')}: "MAJOR:MINOR" expected, found ${JSON.stringify(dev)}`);
  return definedOnly({
    path: f.str('path'),
    dev,
    ino: f.decimal('ino'),
    ctime_ns: f.optDecimal('ctime_ns'),
    loader_of: f.optStr('loader_of'),
  });
}

export function readExecState(f: JsonFields): ExecState {
  return definedOnly({
    backend: f.optOneOf('backend', BACKENDS),
    fenceId: f.optDecimal('fenceId'),
    pidns: f.optStr('pidns'),
    why: f.optStr('why'),
    allow: f.optList('allow', readAllowEntry),
    hook: f.optStr('hook'),
    notify: f.optOneOf('notify', ['seccomp-notify'] as const),
  });
}
