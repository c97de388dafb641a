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
#define CGFENCE_FENCE_ID_PIDNS (1ULL << 63)
#define CGFENCE_PIDNS_START_MASK 0x7fffffffULL
#define CGFENCE_USER_HZ 100
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
};

enum cgfence_event_kind {
	CGFENCE_EVENT_EXEC = 1,     /* from the exec tracepoints: a denial is a SIGKILL */
	CGFENCE_EVENT_EXEC_LSM = 2, /* from lsm/bprm_check_security: a denial is -EACCES */
	/* From lsm/file_open (BPF LSM only), a denial is -EACCES; path is the file's last
	 * name component: */
	CGFENCE_EVENT_WRITE_ALLOWED = 3, /* an allow-listed file opened for writing */
	CGFENCE_EVENT_PROC_MEM_WRITE = 4, /* a /proc/PID/mem opened for writing */
	/* From lsm/mmap_file and lsm/file_mprotect: a file changed after the fence was set,
	 * and not allow-listed, mapped executable (a new library, a replaced loader). */
	CGFENCE_EVENT_MAP_EXEC = 5,
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
};

#endif /* CGFENCE_ABI_H */
