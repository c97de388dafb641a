// The kernel's seccomp log (AUDIT_SECCOMP records, type 1326), read from the audit
// subsystem's read-only multicast group by the addon (native/audit-netlink.cc). The kernel
// writes one when a filter returns SCMP_ACT_LOG, and for SCMP_ACT_ERRNO (and TRAP, TRACE,
// USER_NOTIF) only when the filter was loaded with SECCOMP_FILTER_FLAG_LOG; every action
// only if its name is in /proc/sys/kernel/seccomp/actions_logged. Why not a BPF program:
// the path is audit_seccomp(), and this kernel has no kprobes (CONFIG_KPROBES unset), no
// fentry for us, and no tracepoint there.
import fs from 'node:fs';
import { AuditNetlink, native } from '../native';
import { ExitedTasks } from './exited-tasks';

/** SECCOMP_RET_* action values (the full action, without the data bits) as the kernel logs them. */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0x00000000,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  USER_NOTIF: 0x7fc00000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
} as const;

/** AUDIT_ARCH_* values to libseccomp's architecture names. */
export const AUDIT_ARCHES: Record<number, string> = {
  0xc000003e: 'x86_64',
  0x40000003: 'x86',
  0xc00000b7: 'aarch64',
  0x40000028: 'arm',
  0x80000016: 's390x',
  0x00000016: 's390',
  0xc0000015: 'ppc64le',
  0xc00000f3: 'riscv64',
};

/** libseccomp's name of an AUDIT_ARCH_* value (seccomp_data.arch), or a hex stand-in. */
export function archName(auditArch: number): string {
  return AUDIT_ARCHES[auditArch >>> 0] ?? `audit-arch-0x${(auditArch >>> 0).toString(16)}`;
}

export interface SeccompLogRecord {
  /** Wall-clock ms of the kernel's audit timestamp. */
  tsMs: number;
  pid: number;
  uid: number | null;
  comm: string;
  exe: string;
  /** libseccomp's architecture name of the syscall's ABI ('x86' for a 32-bit call on x86_64). */
  arch: string;
  syscall: number;
  /** The filter's action (SECCOMP_RET_*). */
  code: number;
  /** The caller's cgroup v2 path relative to the hierarchy root, '' when unknown. */
  cgroup: string;
  /** When the caller was gone before its path could be read: its cgroup id at exit, if known. */
  exitedCgroupId?: bigint;
}

// Untrusted strings (comm, exe) are quoted, or hex-encoded when they hold a space, a quote
// or a control character.
function auditString(v: string | undefined): string {
  if (v === undefined) return '';
  if (v.startsWith('"')) return v.slice(1, -1);
  if (/^([0-9A-F]{2})+$/.test(v)) return Buffer.from(v, 'hex').toString('utf8');
  return v;
}

/** Parses one AUDIT_SECCOMP record's text; null when it is not one. */
export function parseSeccompLog(text: string, cgroup = ''): SeccompLogRecord | null {
  const head = /^audit\((\d+)\.(\d+):\d+\):/.exec(text);
  if (!head) return null;
  const f: Record<string, string> = {};
  for (const m of text.slice(head[0].length).matchAll(/(\w+)=("[^"]*"|\S+)/g)) f[m[1]] = m[2];
  const num = (k: string, base = 10) => (f[k] === undefined ? NaN : parseInt(f[k].replace(/^0x/, ''), base));
  const pid = num('pid');
  const syscall = num('syscall');
  const code = num('code', 16);
  const arch = num('arch', 16);
  if (!Number.isFinite(pid) || !Number.isFinite(syscall) || !Number.isFinite(code)) return null;
  const uid = num('uid');
  return {
    tsMs: Number(head[1]) * 1000 + Number(head[2]),
    pid,
    uid: Number.isFinite(uid) ? uid : null,
    comm: auditString(f.comm),
    exe: auditString(f.exe),
    arch: archName(arch),
    syscall,
    code: code >>> 0,
    cgroup,
  };
}

/** Which actions the kernel logs at all (/proc/sys/kernel/seccomp/actions_logged). */
export function actionsLogged(): string[] {
  try {
    return fs.readFileSync('/proc/sys/kernel/seccomp/actions_logged', 'utf8').trim().split(/\s+/);
  } catch {
    return [];
  }
}

/** Hands each batch of the kernel's seccomp log records, parsed, to onRecords. */
export class SeccompLogReader {
  private readonly reader: AuditNetlink;
  private unparsed = 0;
  private readonly exited: ExitedTasks;

  constructor(private readonly onRecords: (records: SeccompLogRecord[]) => void) {
    this.exited = ExitedTasks.open();
    try {
      this.reader = new (native().AuditNetlink)(() => this.drain());
    } catch (e) {
      this.exited.close();
      throw e;
    }
    // The reader never keeps a process alive on its own.
    this.reader.unref();
  }

  /** Hands over every record received so far, now (before a container's detach record). */
  drain(): void {
    const out: SeccompLogRecord[] = [];
    for (const r of this.reader.take()) {
      const p = parseSeccompLog(r.text, r.cgroup);
      if (!p) {
        this.unparsed++;
        continue;
      }
      if (!p.cgroup) p.exitedCgroupId = this.exited.cgroupOf(p.pid) ?? undefined;
      out.push(p);
    }
    if (out.length) this.onRecords(out);
  }

  /** The exit program's ids, for the tamper watch. */
  objectIds(): { program: number; maps: number[] } {
    return this.exited.objectIds();
  }

  stats(): { received: number; overruns: number; dropped: number; unparsed: number } {
    return { ...this.reader.stats(), unparsed: this.unparsed };
  }

  close(): void {
    this.reader.close();
    this.exited.close();
  }
}
