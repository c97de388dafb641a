// What the seccomp control keeps per container in the registry (fences.json): what runc
// installed (the filter itself lives in the container) and where its decisions are logged.
import { JsonFields, StateFieldError, definedOnly } from '../json-fields';

export const SECCOMP_BACKENDS = ['oci-seccomp', 'oci-seccomp (denials enforced, not recorded)'] as const;

export type SeccompState = {
  /** What ps shows: whether enforce-mode denials are recorded or only enforced. */
  backend?: (typeof SECCOMP_BACKENDS)[number];
  /** Where its decisions go (the attach record's `backends`): the notify loop, the kernel log, or nowhere. */
  hook?: string;
  /** The filter's action for a listed syscall: SCMP_ACT_NOTIFY(EPERM), SCMP_ACT_ERRNO(EPERM) or SCMP_ACT_LOG. */
  action?: string;
  /** Seccomp filters on the init when it was checked (runc's, the notify route's, ours). */
  filters?: number;
  deny?: string[];
  allow?: string[];
  /** Whether its decisions reach the audit log, and if not, why. */
  log?: string;
  /**
   * The key its records are attributed by: the cgroup v2 id, decimal; without cgroup v2, the
   * container key (namespace/id) the notify loop's denials come under.
   */
  fenceId?: string;
};

export function readSeccompState(f: JsonFields): SeccompState {
  return definedOnly({
    backend: f.optOneOf('backend', SECCOMP_BACKENDS),
    hook: f.optStr('hook'),
    action: f.optStr('action'),
    filters: f.optNum('filters'),
    deny: f.optStrings('deny'),
    allow: f.optStrings('allow'),
    log: f.optStr('log'),
    fenceId: readRecordKey(f),
  });
}

function readRecordKey(f: JsonFields): string | undefined {
  const v = f.optStr('fenceId');
  if (v !== undefined && !/^\d+$/.test(v) && !/^[^/]+\/[^/]+$/.test(v)) {
    throw new StateFieldError(`${f.at('fenceId')}: a decimal cgroup id or namespace/id expected, found ${JSON.stringify(v)}`);
  }
  return v;
}
