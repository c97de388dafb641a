// SPDX-License-Identifier: GPL-2.0-only
/*
 * exited tasks: the cgroup v2 id of each process as it exits, by pid (LRU). The kernel's
 * seccomp log names the caller by pid only and reaches user space in batches (kauditd), by
 * when a short-lived caller (a shell's `mkdir`) is often gone from /proc; this is where the
 * daemon then finds whose container it was (src/kernel/exited-tasks.ts). One map update per
 * process exit, node-wide; threads other than the leader are skipped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   /* tgid, in the initial pid namespace */
	__type(value, __u64); /* cgroup v2 id at exit */
} exited_cgroup SEC(".maps");

SEC("tp_btf/sched_process_exit")
int BPF_PROG(record_exit, struct task_struct *p)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u64 cg;

	if ((__u32)id != tgid)
		return 0;
	cg = bpf_get_current_cgroup_id();
	bpf_map_update_elem(&exited_cgroup, &tgid, &cg, BPF_ANY);
	return 0;
}
