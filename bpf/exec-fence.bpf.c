// SPDX-License-Identifier: GPL-2.0-only
/*
 * exec fence: one global program on tp_btf/sched_process_exec. For a task in a fenced
 * cgroup (the fence's own cgroup or any cgroup below it) it checks the identity
 * (device, inode) of the file the kernel is executing against the fence's allow map, that the
 * file is unchanged since it was allowed (its ctime stamp, exec-allow.bpf.h), and the same
 * of the ELF loader (PT_INTERP) the program starts in.
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
#include "exec-allow.bpf.h"
#include "exec-maps.bpf.h"
#include "exec-event.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define SIGKILL 9

/* The maps shared with exec-lsm.bpf.c are in exec-maps.bpf.h; the two below only this object has. */

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

/* What judge() decided about one exec, for the event that reports it. */
struct verdict {
	__u32 reason; /* enum cgfence_exec_reason */
	bool interp;  /* the loader was judged (the Interp* reasons) */
	struct cgfence_exec_seen seen, iseen;
};

/*
 * The ELF loader the new program starts in. By sched_process_exec the binfmt handler has
 * mapped everything and set the user registers, so the instruction pointer is the entry point:
 * inside the program's own text (mm->start_code..end_code, set from the program's segments,
 * never the loader's) for a static program, inside the PT_INTERP loader's mapping for a
 * dynamic one. binfmt_elf has dropped the loader's struct file by then, so it is found through
 * that mapping, which is also exactly the code that would run first. On overlayfs the mapping
 * holds the file of the layer below (ovl_mmap), so the loader's identity is that real file's;
 * user space allows it under that identity (src/policy/loader-file.ts).
 */
struct loader_find {
	__u64 inode; /* struct inode * of the file mapped at the entry point, 0 for none */
};

static long loader_vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct loader_find *f = data;

	f->inode = (__u64)BPF_CORE_READ(vma, vm_file, f_inode);
	return 0;
}

/* 0 with *inode the loader's, or 0 when the program starts in its own text; -1 when the
 * entry point's mapping cannot be read (judged as a denial: an unknown loader). */
static __always_inline int loader_inode(struct task_struct *task, __u64 *inode)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct loader_find f = {};
	__u64 ip, start, end;

	*inode = 0;
	if (!regs)
		return -1;
	ip = PT_REGS_IP_CORE(regs);
	start = BPF_CORE_READ(task, mm, start_code);
	end = BPF_CORE_READ(task, mm, end_code);
	if (ip >= start && ip < end)
		return 0;
	if (bpf_find_vma(task, ip, loader_vma_cb, &f, 0) || !f.inode)
		return -1;
	*inode = f.inode;
	return 0;
}

/*
 * The verdict, shared by both programs: the same allow map, counters, events and kill, so a
 * container gets the same fence whichever identity finds it. The program file must be on the
 * list and unchanged (exec-allow.bpf.h); so must the loader it runs through, if any.
 * task must be a trusted (BTF) pointer to the current task: bpf_find_vma needs one.
 */
static __always_inline int judge(struct cgfence_fence *fence, __u64 fence_id, struct file *file,
				 struct task_struct *task, const char *filename)
{
	struct verdict v = {};
	struct cgfence_exec_event *e;
	struct inode *inode;
	__u64 loader = 0;
	__u32 action;

	inode = BPF_CORE_READ(file, f_inode);
	if (fence->flags & CGFENCE_FLAG_IDENTITY_ONLY) {
		struct cgfence_exec_key key = {};

		key.fence_id = fence_id;
		key.dev = v.seen.dev = BPF_CORE_READ(inode, i_sb, s_dev);
		key.ino = v.seen.ino = BPF_CORE_READ(inode, i_ino);
		v.reason = bpf_map_lookup_elem(&exec_allow, &key) ? CGFENCE_REASON_NONE : CGFENCE_REASON_NOT_ALLOWED;
	} else if ((v.reason = cgfence_exec_allowed(&exec_allow, fence_id, inode, false, &v.seen)) ==
		   CGFENCE_REASON_NONE) {
		if (loader_inode(task, &loader)) {
			v.reason = CGFENCE_REASON_INTERP_UNKNOWN;
		} else if (loader) {
			v.interp = true;
			v.reason = cgfence_exec_allowed(&exec_allow, fence_id, (struct inode *)loader, true, &v.iseen);
			if (v.reason == CGFENCE_REASON_NOT_ALLOWED)
				v.reason = CGFENCE_REASON_INTERP_NOT_ALLOWED;
			else if (v.reason == CGFENCE_REASON_MODIFIED)
				v.reason = CGFENCE_REASON_INTERP_MODIFIED;
		}
	}

	if (v.reason == CGFENCE_REASON_NONE) {
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
		/* Rate-limited per fence and identity of the program file (not the loader). */
		struct cgfence_exec_key key = { .fence_id = fence_id, .dev = v.seen.dev, .ino = v.seen.ino };
		struct cgfence_exec_throttle *t;
		__u64 count = 0;
		__u32 n = rate_check(&key, fence_id, &count);

		if (n == RATE_COUNT)
			return 0;
		if (n == RATE_THROTTLE) {
			t = bpf_ringbuf_reserve(&exec_events, sizeof(*t), 0);
			if (!t) {
				/* Only the identity's name is lost: its count is in the fence total. */
				cgfence_exec_count_drop();
				return 0;
			}
			cgfence_exec_event_fill(&t->e, CGFENCE_EVENT_EXEC_THROTTLE, action, fence, fence_id, task,
						filename, v.reason, &v.seen, v.interp ? &v.iseen : NULL);
			t->suppressed = count;
			bpf_ringbuf_submit(t, 0);
			return 0;
		}
	}

	e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		cgfence_exec_count_drop();
		return 0;
	}
	cgfence_exec_event_fill(e, CGFENCE_EVENT_EXEC, action, fence, fence_id, task, filename, v.reason, &v.seen,
				v.interp ? &v.iseen : NULL);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_fence, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct cgfence_fence *fence;
	__u64 fence_id = 0;

	fence = cgfence_find_cgroup_fence(&fence_id);
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
	struct task_struct *task = bpf_get_current_task_btf();
	struct cgfence_fence *fence;
	__u64 fence_id = 0;
	__u32 loc;

	fence = find_pidns_fence(&fences, task, &fence_id);
	if (!fence || fence->mode == CGFENCE_MODE_OFF)
		return 0;
	loc = ctx->__data_loc_filename;
	return judge(fence, fence_id, BPF_CORE_READ(task, mm, exe_file), task, (const char *)ctx + (loc & 0xffff));
}
