// SPDX-License-Identifier: GPL-2.0-only
/*
 * connect audit: the network fallback where CGROUP_SKB cannot attach (no cgroup v2 for the
 * container). Reports every outbound TCP connection attempt of a watched pid namespace (and
 * the namespaces nested in it); it blocks nothing, and user space says so.
 *
 * Why sock:inet_sock_set_state to SYN_SENT: tcp_v4_connect() and tcp_v6_connect() make that
 * transition in the context of the task calling connect() (or sendto() with MSG_FASTOPEN),
 * so current is the container's task, while the tracepoint is stable ABI and needs no
 * kprobe on a function that can be inlined or renamed.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cgfence-abi.h"
#include "connect-audit-abi.h"
#include "pidns.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET	       2
#define AF_INET6       10
#define PROTO_TCP      6
#define STATE_SYN_SENT 2

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cgfence_connect_watch);
} connect_watch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} connect_events SEC(".maps");

/* Reservations that failed: user space logs the count, so loss is never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} connect_drops SEC(".maps");

SEC("tracepoint/sock/inet_sock_set_state")
int connect_audit(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct cgfence_connect_watch *w;
	struct cgfence_connect_event *e;
	__u64 fence_id = 0;
	__u32 zero = 0;

	if (ctx->newstate != STATE_SYN_SENT || ctx->protocol != PROTO_TCP)
		return 0;
	w = find_pidns_fence(&connect_watch, (struct task_struct *)bpf_get_current_task(), &fence_id);
	if (!w)
		return 0;
	__sync_fetch_and_add(&w->seen, 1);

	e = bpf_ringbuf_reserve(&connect_events, sizeof(*e), 0);
	if (!e) {
		__u64 *n = bpf_map_lookup_elem(&connect_drops, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	e->kind = CGFENCE_EVENT_CONNECT;
	e->dport = ctx->dport;
	if (ctx->family == AF_INET) {
		e->family = 4;
		/* Read, not copied: the verifier refuses loads through an offset ctx pointer. */
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	} else {
		e->family = 6;
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->fence_id = fence_id;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
