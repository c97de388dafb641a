// SPDX-License-Identifier: GPL-2.0-only
/*
 * learn mode, syscalls: one global program on tp_btf/sys_enter marks, for a task in a
 * learning cgroup (the cgroup or any cgroup below it), the syscall number in that
 * container's record. No event reaches user space: the daemon reads the record when asked
 * and when the container exits, and turns it into cgfence.io/seccomp-allow.
 *
 * Why sys_enter: it runs for every syscall that passed seccomp (a syscall the container's own
 * profile refuses never gets here, and need not be allowed), before the syscall does
 * anything, with the number the task used, so also for syscalls that then fail or never
 * return (exit, execve). The price is node-wide: while it is attached every task takes the
 * syscall slow path, which is why user space attaches it only while some container learns.
 *
 * The lookup: the task's own cgroup is tried first (a container's processes live in its
 * cgroup); other cgroups go through learn_sys_cgrp, a cache of "which learning fence, if any,
 * is above this cgroup", valid for one generation of the fence set. User space bumps the
 * generation whenever it adds a fence, so a cgroup cached as "not learning" before its
 * ancestor started learning is looked up again.
 *
 * A second program, on tp_btf/sched_process_exec, records each file a learning container
 * executes (its identity, how often, the name the kernel opened it by, and the names of its
 * dentry and parents: its own path in its filesystem, read at the exec) in learn_exec. It
 * shares the fence lookup and the attach lifetime of the first. The exec fence also reports
 * every exec of a learning container on its ring buffer, but a ring buffer is read later:
 * a container that lives a few milliseconds is gone, and containerd's exit event has
 * overtaken its exec events, before the daemon reads them. This map is complete at exit.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cgfence-abi.h"
#include "learn-abi.h"

char LICENSE[] SEC("license") = "GPL";

/* arch/x86/include/asm/thread_info.h: thread_info.status bit of a 32-bit syscall in progress. */
#define X86_TS_COMPAT 0x0002

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct cgfence_learn_syscalls);
} learn_sys SEC(".maps");

/* LRU: every cgroup on the node that makes a syscall gets an entry; old ones may go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct cgfence_learn_cgroup);
} learn_sys_cgrp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} learn_sys_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cgfence_learn_exec_key);
	__type(value, struct cgfence_learn_exec);
} learn_exec SEC(".maps");

/* Executables not recorded because learn_exec was full (global; user space compares). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} learn_exec_drops SEC(".maps");

/* A new entry is built here: it is too big for comfort on the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgfence_learn_exec);
} learn_exec_scratch SEC(".maps");

/* The nearest learning ancestor of the current task's cgroup, deepest first; its id in *fence_id. */
static __always_inline struct cgfence_learn_syscalls *find_ancestor(__u64 cg, __u64 *fence_id)
{
	struct cgfence_learn_cgroup *cached, entry = {};
	struct cgfence_learn_syscalls *s = NULL;
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&learn_sys_gen, &zero);

	if (!gen)
		return NULL;
	cached = bpf_map_lookup_elem(&learn_sys_cgrp, &cg);
	if (cached && cached->gen == *gen) {
		if (!cached->fence_id)
			return NULL;
		*fence_id = cached->fence_id;
		return bpf_map_lookup_elem(&learn_sys, &cached->fence_id);
	}
	entry.gen = *gen;
	for (int level = CGFENCE_MAX_CGROUP_DEPTH - 1; level >= 0; level--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (!id)
			continue;
		s = bpf_map_lookup_elem(&learn_sys, &id);
		if (s) {
			entry.fence_id = id;
			*fence_id = id;
			break;
		}
	}
	bpf_map_update_elem(&learn_sys_cgrp, &cg, &entry, BPF_ANY);
	return s;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(learn_sys_enter, struct pt_regs *regs, long id)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cgfence_learn_syscalls *s = bpf_map_lookup_elem(&learn_sys, &cg);
	__u32 abi = CGFENCE_LEARN_ABI_NATIVE;
	__u64 fence_id = cg;

	if (!s)
		s = find_ancestor(cg, &fence_id);
	if (!s)
		return 0;
#if defined(__TARGET_ARCH_x86)
	{
		struct task_struct *t = bpf_get_current_task_btf();

		if (t->thread_info.status & X86_TS_COMPAT)
			abi = CGFENCE_LEARN_ABI_COMPAT;
	}
#endif
	if (id < 0 || id >= CGFENCE_LEARN_MAX_SYSCALL) {
		__sync_fetch_and_add(&s->out_of_range, 1);
		return 0;
	}
	/* Read first: once a syscall is known its byte is only ever read, so the cache line
	 * stays shared between CPUs. */
	if (!s->seen[abi][id])
		s->seen[abi][id] = 1;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(learn_sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cgfence_learn_exec_key key = {};
	struct cgfence_learn_exec *e;
	struct inode *inode;
	__u32 zero = 0;

	key.fence_id = cg;
	if (!bpf_map_lookup_elem(&learn_sys, &cg) && !find_ancestor(cg, &key.fence_id))
		return 0;
	inode = BPF_CORE_READ(bprm, file, f_inode);
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(inode, i_ino);
	e = bpf_map_lookup_elem(&learn_exec, &key);
	if (e) {
		__sync_fetch_and_add(&e->count, 1);
		return 0;
	}
	e = bpf_map_lookup_elem(&learn_exec_scratch, &zero);
	if (!e)
		return 0;
	e->count = 1;
	e->flags = 0;
	e->depth = 0;
	e->first_ns = bpf_ktime_get_ns();
	bpf_probe_read_kernel_str(e->interp, sizeof(e->interp), BPF_CORE_READ(bprm, interp));
	{
		struct dentry *d = BPF_CORE_READ(bprm, file, f_path.dentry);

		for (int i = 0; i < CGFENCE_LEARN_PATH_DEPTH; i++) {
			struct dentry *parent = BPF_CORE_READ(d, d_parent);

			if (!parent || parent == d)
				break;
			bpf_probe_read_kernel_str(e->parts[i], CGFENCE_LEARN_NAME_LEN, BPF_CORE_READ(d, d_name.name));
			e->depth = i + 1;
			d = parent;
		}
		if (d && BPF_CORE_READ(d, d_parent) == d)
			e->flags |= CGFENCE_LEARN_PATH_WHOLE;
	}
	if (bpf_map_update_elem(&learn_exec, &key, e, BPF_NOEXIST) == 0)
		return 0;
	/* Another CPU added it first, or the map is full. */
	e = bpf_map_lookup_elem(&learn_exec, &key);
	if (e) {
		__sync_fetch_and_add(&e->count, 1);
		return 0;
	}
	{
		__u64 *n = bpf_map_lookup_elem(&learn_exec_drops, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
	}
	return 0;
}
