/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of the connect audit (bpf/connect-audit.bpf.c), the network fallback
 * for containers fenced by pid namespace: outbound TCP connection attempts are reported, never
 * blocked. Included after cgfence-abi.h; src/kernel/connect-audit.ts mirrors the offsets and
 * the addon static_asserts the size.
 */
#ifndef CGFENCE_CONNECT_AUDIT_ABI_H
#define CGFENCE_CONNECT_AUDIT_ABI_H

/* Event kinds continue enum cgfence_event_kind (net-abi.h uses 2 and 3). */
#define CGFENCE_EVENT_CONNECT 16

/* connect_watch: key = pidns fence id (CGFENCE_FENCE_ID_PIDNS), value = this. */
struct cgfence_connect_watch {
	__u64 seen; /* connection attempts reported */
};

struct cgfence_connect_event {
	__u32 kind;   /* CGFENCE_EVENT_CONNECT */
	__u16 family; /* 4 or 6 */
	__u16 dport;  /* host byte order */
	__u64 ts_ns;  /* CLOCK_MONOTONIC */
	__u64 fence_id;
	__u64 cgroup_id; /* the task's cgroup v2 id (the root's on a host without v2) */
	__u32 pid;	 /* tgid of the connecting task */
	__u32 uid;
	__u8 daddr[16]; /* IPv4: first 4 bytes */
	char comm[CGFENCE_COMM_LEN];
};

#endif /* CGFENCE_CONNECT_AUDIT_ABI_H */
