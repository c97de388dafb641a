/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The exec fence's maps that every exec program uses: the tracepoint and tp_btf programs of
 * exec-fence.bpf.c and the BPF-LSM programs of exec-lsm.bpf.c. The two objects are loaded
 * separately and share these maps through their pins in the daemon's pin directory
 * (src/kernel/exec-fence.ts, src/kernel/exec-lsm.ts): libbpf reuses a pinned map only when
 * its type, key size, value size, max_entries and flags all match, so this one definition is
 * what keeps the layouts identical. Change a map here and both objects change with it; a
 * node that has the old map pinned refuses the new object until those pins are removed.
 * (The exec fence may size fences and exec_allow from the node config at load; a map already
 * pinned keeps the size it was made with, native/bpf-object.cc. The LSM object asks for the
 * sizes written here.)
 *
 * Maps only one object uses stay in that object: the rate limiter's exec_rate and
 * exec_suppressed in exec-fence.bpf.c, exec_fence_since in exec-lsm.bpf.c.
 * Include after vmlinux.h, bpf_helpers.h and cgfence-abi.h.
 */
#ifndef CGFENCE_EXEC_MAPS_BPF_H
#define CGFENCE_EXEC_MAPS_BPF_H

/* Fence id (a cgroup v2 id, or a pid namespace's id, pidns.bpf.h) -> the fence. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cgfence_fence);
} fences SEC(".maps");

/* The allow-lists of every fence: {fence, dev, ino} -> the file's stamp (exec-allow.bpf.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cgfence_exec_key);
	__type(value, struct cgfence_exec_allow);
} exec_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} exec_events SEC(".maps");

/* Ring-buffer reservations that failed: user space logs the count, so loss is never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_drops SEC(".maps");

static __always_inline void cgfence_exec_count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&exec_drops, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Nearest fenced ancestor of the current task's cgroup (v2 hierarchy), the deepest first so
 * that a fence nested in another fence's subtree governs its own cgroup. */
static __always_inline struct cgfence_fence *cgfence_find_cgroup_fence(__u64 *fence_id)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct cgfence_fence *f = bpf_map_lookup_elem(&fences, &id);

	if (f) {
		*fence_id = id;
		return f;
	}
	for (int level = CGFENCE_MAX_CGROUP_DEPTH - 1; level >= 0; level--) {
		/* 0 means the task's cgroup is shallower than level. */
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		f = bpf_map_lookup_elem(&fences, &id);
		if (f) {
			*fence_id = id;
			return f;
		}
	}
	return NULL;
}

#endif /* CGFENCE_EXEC_MAPS_BPF_H */
