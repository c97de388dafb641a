// Merges cgfence's syscall rules into a bundle's OCI seccomp section (linux.seccomp), which
// runc turns into a filter with libseccomp. The container's own profile is kept: every merge
// only ever makes it stricter in enforce mode, and never blocks more than it did in audit
// mode. Pure functions over the JSON; the backends do the file I/O.
//
// Vocabulary: an "allow-like" action lets the syscall run (ALLOW, LOG); a "blocking" one
// makes it fail or kills (ERRNO, KILL*, TRAP, and TRACE, which fails with ENOSYS when no
// tracer is attached); NOTIFY asks a user-space agent.

export interface OciSeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: Array<{ index: number; value: number; valueTwo?: number; op: string }>;
  [other: string]: unknown;
}

export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: OciSeccompRule[];
  [other: string]: unknown;
}

/** What a cgfence rule does to a matched syscall: EPERM (enforce) or a kernel log line (audit). */
export type Verdict = 'errno' | 'log';

export const EPERM = 1;

/**
 * Syscalls runc's init still makes after it has installed the filter, which an allow-list
 * (`cgfence.io/seccomp-allow`) therefore always includes, or the container would never start.
 * With noNewPrivileges (containerd's default) the filter goes in just before the entrypoint:
 * runc then reports the notify fd to its parent over the sync socket, closes its fds (reading
 * /proc/self/fd), opens and writes the exec fifo, and execs. Without noNewPrivileges the filter
 * goes in before the credentials are dropped, so setgroups/setuid/capset/chdir follow. The Go
 * runtime around it may schedule, grow its heap, start a thread or preempt with a signal at
 * any time. Measured on runc 1.1.5 with SCMP_ACT_LOG as the default and nothing allowed, in
 * both orderings (kernel audit records, type 1326); test/seccomp.test.ts starts a container
 * with it. The entrypoint's own needs are the user's to list: execve here is the one runc uses
 * to start it, and the exec fence decides what it may start.
 */
export const RUNC_INIT_SYSCALLS: readonly string[] = [
  // the sync socket, the exec fifo, closing inherited fds, finding and exec-ing the entrypoint
  'read',
  'write',
  'close',
  'openat',
  'fcntl',
  'fstat',
  'newfstatat',
  'fstatfs',
  'getdents64',
  'faccessat',
  'faccessat2',
  'execve',
  // credentials and working directory (without noNewPrivileges), and the parent-death check
  'capget',
  'capset',
  'prctl',
  'setgroups',
  'setuid',
  'setgid',
  'setresuid',
  'setresgid',
  'chdir',
  'getcwd',
  'getppid',
  'getpid',
  'kill',
  // the Go runtime: scheduler, heap, threads, signals (async preemption), netpoller, exit
  'futex',
  'sched_yield',
  'nanosleep',
  'mmap',
  'munmap',
  'madvise',
  'clone',
  'rt_sigreturn',
  'rt_sigprocmask',
  'sigaltstack',
  'tgkill',
  'gettid',
  'epoll_ctl',
  'epoll_pwait',
  'clock_gettime',
  'exit',
  'exit_group',
];

const ALLOW_LIKE = new Set(['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG']);
const NOTIFY = 'SCMP_ACT_NOTIFY';

function allowLike(action: string): boolean {
  return ALLOW_LIKE.has(action);
}

function blocking(action: string): boolean {
  return !allowLike(action) && action !== NOTIFY;
}

function verdictFields(v: Verdict): { action: string; errnoRet?: number } {
  return v === 'errno' ? { action: 'SCMP_ACT_ERRNO', errnoRet: EPERM } : { action: 'SCMP_ACT_LOG' };
}

function verdictRule(names: string[], v: Verdict): OciSeccompRule {
  return { names, ...verdictFields(v) };
}

/**
 * Where enforce-mode denials go to be answered EPERM and recorded: runc's seccomp agent
 * socket (the fd-holder) and the container key runc hands back with the notify fd.
 */
export interface DenyListener {
  path: string;
  metadata: string;
}

/**
 * Denied names that must not be notified, and stay SCMP_ACT_ERRNO (EPERM, not recorded):
 * the exec syscalls, because a notified exec is let on (CONTINUE) to the exec fence by the
 * loop and the fd-holder, which tell an exec from a denial by the syscall number alone; and
 * what runc's init calls after installing the filter and before handing the notify fd over
 * (a notification then would wait for an agent that has no fd yet: the start would hang).
 * `write` is also refused by runc itself for SCMP_ACT_NOTIFY.
 */
export function notifiable(name: string): boolean {
  return !(EXEC_SYSCALLS as readonly string[]).includes(name) && !RUNC_INIT_SYSCALLS.includes(name) && name !== 'write';
}

/** The rules for our denied names: NOTIFY those the listener may take, ERRNO the rest. */
function denyRules(names: string[], v: Verdict, listener: DenyListener | undefined): OciSeccompRule[] {
  if (v !== 'errno' || !listener) return names.length ? [verdictRule(names, v)] : [];
  const notified = names.filter(notifiable);
  const errno = names.filter((n) => !notifiable(n));
  return [...(notified.length ? [{ names: notified, action: NOTIFY }] : []), ...(errno.length ? [verdictRule(errno, 'errno')] : [])];
}

/** Points the profile at the listener when some rule now notifies it. */
function withListener(p: OciSeccomp, listener: DenyListener | undefined): OciSeccomp {
  if (listener && (p.syscalls ?? []).some((r) => r.action === NOTIFY && r.names.some(notifiable))) {
    p.listenerPath = listener.path;
    p.listenerMetadata = listener.metadata;
  }
  return p;
}

/**
 * Why enforce-mode denials of this profile cannot be routed to the listener (and stay
 * SCMP_ACT_ERRNO, enforced but not recorded), or null when they can.
 */
export function denyRouteRefusal(existing: OciSeccomp | undefined, listenerPath: string): string | null {
  if (existing?.listenerPath && existing.listenerPath !== listenerPath) {
    return `the container's seccomp profile already sends its notifications to ${existing.listenerPath}`;
  }
  return null;
}

function clone(p: OciSeccomp): OciSeccomp {
  return JSON.parse(JSON.stringify(p)) as OciSeccomp;
}

/** The architectures of a new profile for a container of this node's architecture (as Docker's profile). */
export function nativeArchitectures(arch: string = process.arch): string[] {
  switch (arch) {
    case 'x64':
      return ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'];
    case 'arm64':
      return ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'];
    case 'arm':
      return ['SCMP_ARCH_ARM'];
    case 'ppc64':
      return ['SCMP_ARCH_PPC64LE'];
    case 's390x':
      return ['SCMP_ARCH_S390X', 'SCMP_ARCH_S390'];
    case 'riscv64':
      return ['SCMP_ARCH_RISCV64'];
    default:
      throw new Error(`no seccomp architecture known for the node architecture ${arch}`);
  }
}

/** libseccomp's name for an OCI architecture: SCMP_ARCH_X86_64 -> x86_64. */
export function libseccompArch(ociArch: string): string {
  if (!/^SCMP_ARCH_[A-Z0-9_]+$/.test(ociArch))
    throw new Error(`${JSON.stringify(ociArch)} is not an OCI seccomp architecture (like SCMP_ARCH_X86_64)`);
  return ociArch.slice('SCMP_ARCH_'.length).toLowerCase();
}

/**
 * The architecture the container's syscall names are checked against: the first one its own
 * profile lists (OCI lists the primary one first), else this node's.
 */
export function primaryArchitecture(existing: OciSeccomp | undefined): string {
  return existing?.architectures?.[0] ?? nativeArchitectures()[0];
}

export function newProfile(): OciSeccomp {
  return { defaultAction: 'SCMP_ACT_ALLOW', architectures: nativeArchitectures(), syscalls: [] };
}

/** Removes `name` from every rule matching `pred`; rules left with no names go. */
function strip(p: OciSeccomp, name: string, pred: (r: OciSeccompRule) => boolean): void {
  p.syscalls = (p.syscalls ?? []).flatMap((r) => {
    if (!pred(r) || !r.names.includes(name)) return [r];
    const names = r.names.filter((n) => n !== name);
    return names.length ? [{ ...r, names }] : [];
  });
}

function rulesFor(p: OciSeccomp, name: string): OciSeccompRule[] {
  return (p.syscalls ?? []).filter((r) => r.names.includes(name));
}

function addNames(p: OciSeccomp, rule: OciSeccompRule): void {
  if (rule.names.length) (p.syscalls ??= []).push(rule);
}

/**
 * `cgfence.io/seccomp-deny`. Enforce: each name fails with EPERM whatever its arguments,
 * unless the profile already blocks it unconditionally (then it stays as the profile says).
 * Audit: each name the profile would let run unconditionally is logged instead.
 */
export function withDenied(existing: OciSeccomp | undefined, names: string[], v: Verdict, listener?: DenyListener): OciSeccomp {
  const p = existing ? clone(existing) : newProfile();
  const ours: string[] = [];
  for (const n of new Set(names)) {
    const rules = rulesFor(p, n);
    if (v === 'errno') {
      if (rules.some((r) => blocking(r.action) && !r.args?.length)) continue;
      strip(p, n, () => true);
      ours.push(n);
    } else {
      const unconditionalAllow = rules.length > 0 && rules.every((r) => allowLike(r.action) && !r.args?.length);
      if (unconditionalAllow || (rules.length === 0 && allowLike(p.defaultAction))) {
        strip(p, n, () => true);
        ours.push(n);
      }
      // Otherwise the profile's own conditions or blocks decide; logging it would change them.
    }
  }
  for (const r of denyRules(ours, v, listener)) addNames(p, r);
  return withListener(p, listener);
}

/**
 * `cgfence.io/seccomp-allow`: only the listed names (and RUNC_INIT_SYSCALLS) keep running; the
 * rest get the verdict. An existing profile is intersected: a name it blocks stays blocked, a
 * name it allows only with some arguments keeps those conditions.
 */
export function withAllowedOnly(
  existing: OciSeccomp | undefined,
  names: string[],
  v: Verdict,
  route?: { listener: DenyListener; allNames: readonly string[] },
): OciSeccomp {
  const p = existing ? clone(existing) : newProfile();
  const keep = new Set([...names, ...RUNC_INIT_SYSCALLS]);
  const defaultAllowed = allowLike(p.defaultAction);
  const mentioned = new Set((p.syscalls ?? []).flatMap((r) => r.names));
  const rules: OciSeccompRule[] = [];
  for (const r of p.syscalls ?? []) {
    const movable = allowLike(r.action) || (r.action === NOTIFY && v === 'errno');
    if (!movable) {
      rules.push(r);
      continue;
    }
    const kept = r.names.filter((n) => keep.has(n));
    const moved = r.names.filter((n) => !keep.has(n));
    if (kept.length) rules.push({ ...r, names: kept });
    // Same arguments, our verdict: a conditional allow becomes a conditional deny (or log).
    for (const d of denyRules(moved, v, route?.listener)) rules.push({ ...withoutKey(r, 'errnoRet'), ...d });
  }
  p.syscalls = rules;
  if (defaultAllowed) {
    const vf = verdictFields(v);
    p.defaultAction = vf.action;
    if (vf.errnoRet !== undefined) p.defaultErrnoRet = vf.errnoRet;
    else delete p.defaultErrnoRet;
    // What the old default let run and we keep must now be said explicitly.
    addNames(p, { names: [...keep].filter((n) => !mentioned.has(n)).sort(), action: 'SCMP_ACT_ALLOW' });
    // runc refuses SCMP_ACT_NOTIFY as the default action: every other syscall the old
    // default let run is named instead, so that its denial is answered and recorded. The
    // default (EPERM) is left for names libseccomp does not know for the primary
    // architecture (other ABIs' own syscalls): enforced, not recorded.
    if (route && v === 'errno') {
      const rest = route.allNames.filter((n) => !keep.has(n) && !mentioned.has(n) && notifiable(n));
      addNames(p, { names: [...new Set(rest)].sort(), action: NOTIFY });
    }
  }
  return withListener(p, route?.listener);
}

function withoutKey<T extends object>(o: T, k: string): T {
  const c = { ...o } as Record<string, unknown>;
  delete c[k];
  return c as T;
}

export const EXEC_SYSCALLS = ['execve', 'execveat'] as const;

export interface NotifyMerge {
  profile: OciSeccomp;
  /** The exec syscalls now routed to the agent; [] when none could be. */
  notified: string[];
  /** Why some or all exec syscalls are not routed (they stay under the kernel fence alone). */
  skipped: string[];
}

/**
 * Routes execve/execveat to the seccomp agent at `listenerPath` (runc hands it the notify
 * fd with the container's state, `metadata` included). A name the profile blocks in any way
 * is left alone: it cannot run a program anyway, and a NOTIFY rule next to a conditional block
 * would let the agent's CONTINUE override it. A profile with another agent is left alone.
 */
export function withExecNotify(existing: OciSeccomp | undefined, listenerPath: string, metadata: string): NotifyMerge {
  const p = existing ? clone(existing) : newProfile();
  if (p.listenerPath && p.listenerPath !== listenerPath) {
    return {
      profile: existing ? clone(existing) : p,
      notified: [],
      skipped: [`the container's seccomp profile already sends its notifications to ${p.listenerPath}`],
    };
  }
  const notified: string[] = [];
  const skipped: string[] = [];
  for (const n of EXEC_SYSCALLS) {
    const rules = rulesFor(p, n);
    if (rules.some((r) => blocking(r.action))) {
      skipped.push(`${n}: the container's seccomp profile blocks it (at least for some arguments)`);
      continue;
    }
    if (rules.length === 0 && !allowLike(p.defaultAction)) {
      skipped.push(`${n}: the container's seccomp profile blocks it by default`);
      continue;
    }
    strip(p, n, (r) => allowLike(r.action) || r.action === NOTIFY);
    notified.push(n);
  }
  if (notified.length === 0) return { profile: existing ? clone(existing) : p, notified, skipped };
  addNames(p, { names: notified, action: NOTIFY });
  p.listenerPath = listenerPath;
  p.listenerMetadata = metadata;
  return { profile: p, notified, skipped };
}
