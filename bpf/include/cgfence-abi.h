/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of cgfence: map keys and values and ring-buffer event records.
 * Included by the BPF programs (after vmlinux.h) and by the addon (after linux/types.h);
 * the addon static_asserts the sizes and the TypeScript decoder mirrors the offsets
 * (src/kernel/abi.ts), so keep every struct fixed-width with explicit padding.
 */
#ifndef CGFENCE_ABI_H
#define CGFENCE_ABI_H

#define CGFENCE_COMM_LEN 16
#define CGFENCE_PATH_LEN 256
/* Deepest cgroup nesting the fence lookup walks; kubepods nest about 5 levels deep. */
#define CGFENCE_MAX_CGROUP_DEPTH 16

/*
 * Fences keyed by pid namespace (the cgroup v1 fallback) share the fences and exec_allow maps
 * with cgroup fences. Their fence id: bit 63 set (kernfs cgroup ids never set it, so the two
 * id spaces cannot collide), bits 32..62 the start time of the namespace's init (its thread
 * group leader's start_boottime in USER_HZ ticks, as /proc/<pid>/stat field 22 shows it,
 * modulo 2^31), bits 0..31 the namespace's inode number. The start time is there because
 * pidns inode numbers are handed out lowest-free and reused as soon as a namespace dies: a
 * fence left behind must not fall on the next namespace that gets the same number.
 */
#define CGFENCE_FENCE_ID_PIDNS	 (1ULL << 63)
#define CGFENCE_PIDNS_START_MASK 0x7fffffffULL
#define CGFENCE_USER_HZ		 100
/* The kernel's MAX_PID_NS_LEVEL: walking this many levels finds a fenced ancestor from any
 * nested namespace, so nesting deeper is no way out. */
#define CGFENCE_MAX_PIDNS_DEPTH 32

enum cgfence_mode {
	CGFENCE_MODE_OFF = 0,
	CGFENCE_MODE_ENFORCE = 1,
	CGFENCE_MODE_AUDIT = 2,
	CGFENCE_MODE_LEARN = 3,
};

enum cgfence_fence_flags {
	/* Report allowed execs too (learn mode and debugging); off by default for speed. */
	CGFENCE_FLAG_REPORT_ALLOWED = 1,
	/* Judge the file identity alone, without its stamp and without the ELF loader: the fence as
	 * it was before exec integrity. Only bench/exec-loop.ts sets it, to measure what the checks
	 * cost; the daemon never does. */
	CGFENCE_FLAG_IDENTITY_ONLY = 2,
};

enum cgfence_event_kind {
	CGFENCE_EVENT_EXEC = 1, /* from the exec tracepoints: a denial is a SIGKILL */
	/* The first refusal of an identity past the rate limit in a window: a
	 * struct cgfence_exec_throttle. The rest of the window is only counted. */
	CGFENCE_EVENT_EXEC_THROTTLE = 2,
	CGFENCE_EVENT_EXEC_LSM = 3, /* from lsm/bprm_check_security: a denial is -EACCES */
	/* From lsm/file_open (BPF LSM only), a denial is -EACCES; path is the file's last
	 * name component: */
	CGFENCE_EVENT_WRITE_ALLOWED = 4,  /* an allow-listed file opened for writing */
	CGFENCE_EVENT_PROC_MEM_WRITE = 5, /* a /proc/PID/mem opened for writing */
	/* From lsm/mmap_file and lsm/file_mprotect: a file changed after the fence was set,
	 * and not allow-listed, mapped executable (a new library, a replaced loader). */
	CGFENCE_EVENT_MAP_EXEC = 6,
};

/* Refusals (deny, audit) recorded per fence and file identity and window; the rest counted. */
#define CGFENCE_EXEC_RATE_BURST 5
/* And at most this many per fence and window, however many identities it makes. */
#define CGFENCE_EXEC_RATE_FENCE_BURST 50
#define CGFENCE_EXEC_RATE_WINDOW_NS   1000000000ull

/* Why an exec was denied (or, in audit mode, would have been). */
enum cgfence_exec_reason {
	CGFENCE_REASON_NONE = 0,	       /* allowed */
	CGFENCE_REASON_NOT_ALLOWED = 1,	       /* the file's identity is not on the list */
	CGFENCE_REASON_MODIFIED = 2,	       /* on the list, but changed since allowed (stamps differ) */
	CGFENCE_REASON_INTERP_ONLY = 3,	       /* an ELF loader listed for its programs, run directly */
	CGFENCE_REASON_INTERP_NOT_ALLOWED = 4, /* the program's PT_INTERP loader is not on the list */
	CGFENCE_REASON_INTERP_MODIFIED = 5,    /* the loader is, but changed since allowed */
	CGFENCE_REASON_INTERP_UNKNOWN = 6,     /* the mapping at the entry point could not be read */
};

enum cgfence_action {
	CGFENCE_ACTION_ALLOW = 0,
	CGFENCE_ACTION_DENY = 1,  /* enforce: the task was sent SIGKILL (LSM: the exec failed with EACCES) */
	CGFENCE_ACTION_AUDIT = 2, /* audit: would have been denied, ran */
};

/* fences: key = cgroup v2 id (kernfs inode) of the fenced cgroup, or a pidns fence id
 * (CGFENCE_FENCE_ID_PIDNS). */
struct cgfence_fence {
	__u32 mode;
	__u32 flags;
	/* Counted in the kernel so that decisions made while the daemon is down are not lost. */
	__u64 denied;
	__u64 audited;
	__u64 allowed;
};

/* exec_allow: one entry per allowed file identity of a fence. dev is the kernel's
 * encoding (MAJOR << 20 | MINOR), not the user-space st_dev encoding. */
struct cgfence_exec_key {
	__u64 fence_id;
	__u64 dev;
	__u64 ino;
};

enum cgfence_allow_flags {
	/* Allowed only as the PT_INTERP loader of an allowed program, never exec'd by name: an
	 * ELF loader run directly (ld.so /any/file) maps and runs any file it is given. */
	CGFENCE_ALLOW_INTERP_ONLY = 1,
};

/* exec_allow value: the state of the file when it was allowed. The stamp is the inode's
 * ctime, which every write, truncate, chmod, chown, link and rename moves to the current
 * time and which no system call lets a process set; a file whose ctime differs is not the
 * file that was allowed. The check is cgfence_exec_allowed() in exec-allow.bpf.h. */
struct cgfence_exec_allow {
	__s64 ctime_sec;
	__u32 ctime_nsec;
	__u32 flags; /* enum cgfence_allow_flags */
};

struct cgfence_exec_event {
	__u32 kind;   /* CGFENCE_EVENT_EXEC */
	__u32 action; /* enum cgfence_action */
	__u64 ts_ns;  /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u64 fence_id;
	__u64 dev;
	__u64 ino;
	__u32 pid;  /* tgid */
	__u32 ppid; /* tgid of the parent */
	__u32 uid;
	__u32 mode;
	char comm[CGFENCE_COMM_LEN]; /* comm of the new program, as the kernel set it */
	char path[CGFENCE_PATH_LEN]; /* the name passed to exec (bprm->filename) */
	__u32 reason;		     /* enum cgfence_exec_reason */
	__u32 now_ctime_nsec;	     /* the judged file's stamp now (the loader's for INTERP_*) */
	__s64 now_ctime_sec;
	__s64 want_ctime_sec; /* the stamp its entry holds (MODIFIED and INTERP_MODIFIED) */
	__u32 want_ctime_nsec;
	__u32 pad;
	__u64 interp_dev; /* the ELF loader the program runs through (0: none or unknown) */
	__u64 interp_ino;
};

/* exec_rate (LRU): the rate limiter of one fence and identity (key: struct cgfence_exec_key);
 * exec_suppressed: the same for a whole fence (key: fence id), suppressed = the fence total. */
struct cgfence_exec_rate {
	__u64 window_start_ns;
	__u32 emitted; /* records in the current window; races only change how many */
	__u32 pad;
	__u64 suppressed; /* refusals only counted, since the entry was made (monotonic) */
};

/* The THROTTLE event: the refusal that was not recorded, and the identity's count with it. */
struct cgfence_exec_throttle {
	struct cgfence_exec_event e; /* e.kind = CGFENCE_EVENT_EXEC_THROTTLE */
	__u64 suppressed;	     /* the identity's suppressed count, this refusal included */
};

#endif /* CGFENCE_ABI_H */
