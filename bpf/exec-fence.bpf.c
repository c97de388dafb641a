// SPDX-License-Identifier: GPL-2.0-only
/*
 * exec fence: one global program on tp_btf/sched_process_exec. For a task in a fenced
 * cgroup (the fence's own cgroup or any cgroup below it) it checks the identity
 * (device, inode) of the file the kernel is executing against the fence's allow map.
 * A second program (exec_fence_pidns, below) finds fences by pid namespace instead, for
 * containers without a cgroup v2; user space loads and attaches the one(s) it needs.
 *
 * Why this hook: it loads wherever BTF does, while BPF LSM (bprm_check_security) and fentry
 * are refused on some kernels (this project's test host among them).
 * sched_process_exec runs after the new image is committed but before the task returns to
 * user space. bpf_send_signal(SIGKILL) raised here is delivered on that return, so a denied
 * program never executes its first instruction. The price is that the caller cannot see an
 * error (the old image is already gone); the seccomp notify path answers EACCES where it is
 * enabled, and this program stays as the backstop.
 *
 * bprm->file is the file actually mapped: for a #! script it is the final interpreter,
 * for fexecve()/execveat(AT_EMPTY_PATH) it is the fd's file (a memfd has its own
 * identity), so renames, links, copies and argv[0] games do not change the verdict.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cgfence-abi.h"
#include "pidns.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define SIGKILL 9

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cgfence_fence);
} fences SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cgfence_exec_key);
	__type(value, __u8);
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

/*
 * The exec rate limiter (like the network fence's): per fence and file identity, at most
 * CGFENCE_EXEC_RATE_BURST refusal records per window; the first refusal past it sends one
 * THROTTLE event, every refusal past it is counted here (per identity, monotonic) and in the
 * fence's total (exec_suppressed), from which user space writes count records
 * (src/fence/exec/exec-rate-audit.ts). So one container cannot flush the audit log, and a
 * refusal is never lost without being counted. An LRU map: evicting an identity loses only
 * which identity, its counts are still in the fence total.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgfence_exec_key);
	__type(value, struct cgfence_exec_rate);
} exec_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cgfence_exec_rate);
} exec_suppressed SEC(".maps");

/* Nearest fenced ancestor of the current task's cgroup (v2 hierarchy), the deepest first so
 * that a fence nested in another fence's subtree governs its own cgroup. */
static __always_inline struct cgfence_fence *find_fence(__u64 *fence_id)
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

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&exec_drops, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

enum { RATE_RECORD, RATE_THROTTLE, RATE_COUNT };

/* The limiter entry of `key` in `map`, made when missing; NULL only when the map is full. */
static __always_inline struct cgfence_exec_rate *rate_entry(void *map, void *key, __u64 now)
{
	struct cgfence_exec_rate *r = bpf_map_lookup_elem(map, key);

	if (!r) {
		struct cgfence_exec_rate init = { .window_start_ns = now };

		bpf_map_update_elem(map, key, &init, BPF_NOEXIST);
		r = bpf_map_lookup_elem(map, key);
	}
	return r;
}

/* Takes one record from an entry's window: returns how many it had taken before. */
static __always_inline __u32 rate_take(struct cgfence_exec_rate *r, __u64 now)
{
	__u32 n;

	if (now - r->window_start_ns >= CGFENCE_EXEC_RATE_WINDOW_NS) {
		r->window_start_ns = now;
		r->emitted = 0;
	}
	n = r->emitted;
	r->emitted = n + 1;
	return n;
}

/*
 * Which of record, throttle (the identity's first refusal past its burst) or count a refusal
 * gets, and counts it when it gets no record: in the fence total, and in the identity's
 * count when past the identity's burst. *ident_count is the identity's count then.
 */
static __always_inline __u32 rate_check(struct cgfence_exec_key *key, __u64 fence_id, __u64 *ident_count)
{
	__u64 now = bpf_ktime_get_ns();
	struct cgfence_exec_rate *f = rate_entry(&exec_suppressed, &fence_id, now);
	struct cgfence_exec_rate *r = rate_entry(&exec_rate, key, now);
	__u32 n;

	if (!f || !r)
		return RATE_RECORD; /* no room to limit in: record rather than lose */
	n = rate_take(r, now);
	if (n < CGFENCE_EXEC_RATE_BURST) {
		if (rate_take(f, now) < CGFENCE_EXEC_RATE_FENCE_BURST)
			return RATE_RECORD;
		/* The fence's burst is spent: counted in its total only. */
		__sync_fetch_and_add(&f->suppressed, 1);
		return RATE_COUNT;
	}
	__sync_fetch_and_add(&f->suppressed, 1);
	*ident_count = __sync_fetch_and_add(&r->suppressed, 1) + 1;
	return n == CGFENCE_EXEC_RATE_BURST ? RATE_THROTTLE : RATE_COUNT;
}

static __always_inline void fill_event(struct cgfence_exec_event *e, __u32 kind, __u32 action,
				       struct cgfence_fence *fence, __u64 fence_id,
				       struct cgfence_exec_key *key, struct task_struct *task,
				       const char *filename);

/*
 * The verdict, shared by both programs: the same allow map, counters, events and kill, so a
 * container gets the same fence whichever identity finds it.
 */
static __always_inline int judge(struct cgfence_fence *fence, __u64 fence_id, struct file *file,
				 struct task_struct *task, const char *filename)
{
	struct cgfence_exec_key key = {};
	struct cgfence_exec_event *e;
	struct inode *inode;
	__u32 action;

	inode = BPF_CORE_READ(file, f_inode);
	key.fence_id = fence_id;
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(inode, i_ino);

	if (bpf_map_lookup_elem(&exec_allow, &key)) {
		__sync_fetch_and_add(&fence->allowed, 1);
		if (!(fence->flags & CGFENCE_FLAG_REPORT_ALLOWED) && fence->mode != CGFENCE_MODE_LEARN)
			return 0;
		action = CGFENCE_ACTION_ALLOW;
	} else if (fence->mode == CGFENCE_MODE_ENFORCE) {
		/* Kill first: the verdict must not depend on ring-buffer space. */
		bpf_send_signal(SIGKILL);
		__sync_fetch_and_add(&fence->denied, 1);
		action = CGFENCE_ACTION_DENY;
	} else {
		__sync_fetch_and_add(&fence->audited, 1);
		action = fence->mode == CGFENCE_MODE_LEARN ? CGFENCE_ACTION_ALLOW : CGFENCE_ACTION_AUDIT;
	}

	if (action != CGFENCE_ACTION_ALLOW) {
		struct cgfence_exec_throttle *t;
		__u64 count = 0;
		__u32 n = rate_check(&key, fence_id, &count);

		if (n == RATE_COUNT)
			return 0;
		if (n == RATE_THROTTLE) {
			t = bpf_ringbuf_reserve(&exec_events, sizeof(*t), 0);
			if (!t) {
				/* Only the identity's name is lost: its count is in the fence total. */
				count_drop();
				return 0;
			}
			fill_event(&t->e, CGFENCE_EVENT_EXEC_THROTTLE, action, fence, fence_id, &key, task, filename);
			t->suppressed = count;
			bpf_ringbuf_submit(t, 0);
			return 0;
		}
	}

	e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		count_drop();
		return 0;
	}
	fill_event(e, CGFENCE_EVENT_EXEC, action, fence, fence_id, &key, task, filename);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline void fill_event(struct cgfence_exec_event *e, __u32 kind, __u32 action,
				       struct cgfence_fence *fence, __u64 fence_id,
				       struct cgfence_exec_key *key, struct task_struct *task,
				       const char *filename)
{
	e->kind = kind;
	e->action = action;
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->fence_id = fence_id;
	e->dev = key->dev;
	e->ino = key->ino;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->mode = fence->mode;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), filename);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_fence, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct cgfence_fence *fence;
	__u64 fence_id = 0;

	fence = find_fence(&fence_id);
	if (!fence || fence->mode == CGFENCE_MODE_OFF)
		return 0;
	return judge(fence, fence_id, BPF_CORE_READ(bprm, file), p, BPF_CORE_READ(bprm, filename));
}

/*
 * The same fence keyed by pid namespace, for containers without a cgroup v2 of their own
 * (cgroup v1 hosts, --cgroup-mode v1). A classic tracepoint, so it needs neither cgroup v2
 * nor tp_btf; it fires at the same point of exec as the program above, so the kill has the
 * same effect: taken on the way back to user space, before the first instruction.
 *
 * The tracepoint does not carry the bprm, but by now begin_new_exec() has installed the new
 * mm and set its exe_file to bprm->file: the same file the program above checks (the final
 * interpreter of a #! script, the fd's file for fexecve and memfds). The filename field is
 * bprm->filename, so the two programs report the same path.
 */
SEC("tracepoint/sched/sched_process_exec")
int exec_fence_pidns(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgfence_fence *fence;
	__u64 fence_id = 0;
	__u32 loc;

	fence = find_pidns_fence(&fences, task, &fence_id);
	if (!fence || fence->mode == CGFENCE_MODE_OFF)
		return 0;
	loc = ctx->__data_loc_filename;
	return judge(fence, fence_id, BPF_CORE_READ(task, mm, exe_file), task, (const char *)ctx + (loc & 0xffff));
}
