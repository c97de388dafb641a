/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of the tamper watch (bpf/tamper-watch.bpf.c): the protected-object
 * key, the counters and the ring-buffer event. Included after cgfence-abi.h by the BPF
 * program and by the addon, which static_asserts the sizes; src/kernel/tamper-abi.ts mirrors
 * the offsets. Every struct is fixed-width with explicit padding.
 */
#ifndef CGFENCE_TAMPER_ABI_H
#define CGFENCE_TAMPER_ABI_H

/* Event kinds continue enum cgfence_event_kind of cgfence-abi.h (net-abi.h takes 2 and 3, connect-audit-abi.h 16). */
#define CGFENCE_EVENT_TAMPER 32

/* Longest pin directory path the unlink check compares, NUL included. */
#define CGFENCE_PIN_DIR_LEN 128

enum cgfence_obj_kind {
	CGFENCE_OBJ_MAP = 1,
	CGFENCE_OBJ_PROG = 2,
	CGFENCE_OBJ_LINK = 3,
	CGFENCE_OBJ_PIN = 4, /* a name in the pin directory; obj_id is 0 */
};

enum cgfence_tamper_action {
	CGFENCE_TAMPER_MAP_UPDATE = 1,	/* BPF_MAP_UPDATE_ELEM, BPF_MAP_UPDATE_BATCH */
	CGFENCE_TAMPER_MAP_DELETE = 2,	/* BPF_MAP_DELETE_ELEM/_BATCH, BPF_MAP_LOOKUP_AND_DELETE_ELEM/_BATCH */
	CGFENCE_TAMPER_MAP_FREEZE = 3,	/* BPF_MAP_FREEZE: the daemon could no longer write the map */
	CGFENCE_TAMPER_PROG_DETACH = 4, /* BPF_PROG_DETACH naming a protected program */
	CGFENCE_TAMPER_LINK_DETACH = 5, /* BPF_LINK_DETACH */
	CGFENCE_TAMPER_LINK_UPDATE = 6, /* BPF_LINK_UPDATE: another program behind our link */
	CGFENCE_TAMPER_PIN_UNLINK = 7,	/* unlink(at) of a name in the pin directory */
	CGFENCE_TAMPER_PIN_RENAME = 8,	/* rename(at)(2) from or to the pin directory */
};

/* tamper_protect: key = (kind, kernel object id); value: unused (1). */
struct cgfence_tamper_key {
	__u32 kind; /* enum cgfence_obj_kind: MAP, PROG or LINK */
	__u32 id;
};

/* tamper_stats: one __u64 per index. */
enum cgfence_tamper_stat {
	CGFENCE_TAMPER_STAT_LOST = 0,	    /* events the ring buffer had no room for */
	CGFENCE_TAMPER_STAT_UNREADABLE = 1, /* bpf() or path arguments that could not be read */
	CGFENCE_TAMPER_STAT_MAX = 2,
};

struct cgfence_tamper_event {
	__u32 kind;	 /* CGFENCE_EVENT_TAMPER */
	__u32 action;	 /* enum cgfence_tamper_action */
	__u64 ts_ns;	 /* CLOCK_MONOTONIC */
	__u64 cgroup_id; /* cgroup v2 id of the caller */
	__u32 pid;	 /* tgid, in the initial pid namespace */
	__u32 tid;
	__u32 uid;
	__u32 cmd;	/* the bpf() command, or 0 for a path operation */
	__u32 obj_kind; /* enum cgfence_obj_kind */
	__u32 obj_id;	/* map, program or link id */
	__u32 prog_id;	/* a link's program (or the program itself) */
	/* The caller as its own pid namespace sees it, and when it started: what tells the
	 * daemon its own actions apart when a predecessor's program reports them (handover). */
	__u32 pidns_ino;
	__u32 ns_pid;
	__u32 _pad;
	__u64 start_ticks; /* USER_HZ ticks since boot, as /proc/PID/stat field 22 */
	char comm[CGFENCE_COMM_LEN];
	char obj_name[CGFENCE_COMM_LEN]; /* the map's name, or the program's */
	char path[CGFENCE_PATH_LEN];	 /* path operations: the path as the caller passed it */
};

#endif /* CGFENCE_TAMPER_ABI_H */
