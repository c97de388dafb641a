/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Container identity without cgroup v2: the pid namespace a task lives in. Shared by the
 * exec fence's pidns program and the connect audit. Include after vmlinux.h, the libbpf
 * headers and cgfence-abi.h.
 *
 * Why the task's active namespace (task->thread_pid->numbers[level].ns) and not
 * nsproxy->pid_ns_for_children: the active one is fixed when the task is created and nothing
 * the task does changes it, while pid_ns_for_children moves with unshare(CLONE_NEWPID) and
 * setns() and would let a process pick its own key.
 */
#ifndef CGFENCE_PIDNS_BPF_H
#define CGFENCE_PIDNS_BPF_H

/* The fence id of a pid namespace (see CGFENCE_FENCE_ID_PIDNS). The init's thread group
 * leader: it keeps its start time while the init lives, also when its main thread exits
 * first (de_thread hands the leader's start time on, too). */
static __always_inline __u64 pidns_fence_id(struct pid_namespace *ns)
{
	struct task_struct *reaper = BPF_CORE_READ(ns, child_reaper);
	__u64 start = BPF_CORE_READ(reaper, group_leader, start_boottime);
	__u32 inum = BPF_CORE_READ(ns, ns.inum);
	__u64 ticks = (start / (1000000000ULL / CGFENCE_USER_HZ)) & CGFENCE_PIDNS_START_MASK;

	return CGFENCE_FENCE_ID_PIDNS | ticks << 32 | inum;
}

/*
 * The nearest fenced pid namespace of task in map (key: fence id), deepest first, so that a
 * namespace nested in a container (unshare -p, a container in the container) is governed by
 * its nearest fenced ancestor. Level 0, the initial namespace, is never a fence: the walk
 * stops above it, and host tasks (level 0) cost two reads and no lookup.
 */
static __always_inline void *find_pidns_fence(void *map, struct task_struct *task, __u64 *fence_id)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct pid_namespace *ns;
	struct upid up = {};

	if (level == 0 || level > CGFENCE_MAX_PIDNS_DEPTH)
		return NULL;
	if (bpf_core_read(&up, sizeof(up), &pid->numbers[level]))
		return NULL;
	ns = up.ns;
	for (int i = 0; i < CGFENCE_MAX_PIDNS_DEPTH; i++) {
		__u64 id;
		void *f;

		if (!ns || BPF_CORE_READ(ns, level) == 0)
			return NULL;
		id = pidns_fence_id(ns);
		f = bpf_map_lookup_elem(map, &id);
		if (f) {
			*fence_id = id;
			return f;
		}
		ns = BPF_CORE_READ(ns, parent);
	}
	return NULL;
}

#endif /* CGFENCE_PIDNS_BPF_H */
