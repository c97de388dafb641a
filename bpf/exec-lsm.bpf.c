// SPDX-License-Identifier: GPL-2.0-only
/*
 * exec fence as a BPF LSM program: lsm/bprm_check_security refuses a forbidden exec inside the
 * kernel with -EACCES. The caller's execve() fails, its old image goes on (a shell prints
 * "Permission denied"), nothing is killed, no seccomp round trip, and what is judged is the
 * file the kernel has opened and is about to load, so there is no time-of-check gap.
 *
 * Why bprm_check_security and not bprm_creds_for_exec: bprm_creds_for_exec runs once per
 * execve, on the file the caller named, before the binary handlers; a #! script's
 * interpreter is never shown to it. bprm_check_security runs in search_binary_handler() for
 * every file the kernel loads for one exec: the script, then its interpreter (and an
 * interpreter's interpreter), each time with bprm->file the opened file. So both the script
 * and its interpreter must be allowed, which is what the seccomp notify path (the script) and
 * the tracepoint fence (the interpreter) enforce together on kernels without BPF LSM. It
 * exists on every kernel with BPF LSM (5.7+); bprm_creds_for_exec only since 5.9.
 *
 * Where this program runs, the tracepoint programs of exec-fence.bpf.c are not attached: the
 * maps of exec-maps.bpf.h are the SAME maps (reused through their pins in the daemon's pin
 * directory), so fences, allow-lists, counters and events are shared, and both fence
 * identities are found here: the container's cgroup v2 (ancestry) and, without one, its pid
 * namespace. The one definition in that header keeps the layouts identical, which libbpf
 * needs to reuse the pins.
 *
 * This kernel runs BPF LSM programs only when "bpf" is in the active LSM list
 * (/sys/kernel/security/lsm, CONFIG_LSM or lsm= on the command line); user space checks that
 * and loads exec_lsm_probe before choosing this backend.
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

#define EACCES 13

/* The fence of the current task: its cgroup v2's (ancestry), else its pid namespace's. */
static __always_inline struct cgfence_fence *find_fence(struct task_struct *task, __u64 *fence_id)
{
	struct cgfence_fence *f = cgfence_find_cgroup_fence(fence_id);

	return f ? f : find_pidns_fence(&fences, task, fence_id);
}

/*
 * The exec fence's own verdict on a file (bpf/include/exec-allow.bpf.h, shared with the
 * tracepoint programs): on the list and unchanged since allowed. as_interp: the file may be
 * a loader-only entry (an executable mapping of a PT_INTERP loader). seen gets the identity.
 */
static __always_inline __u32 file_allowed(__u64 fence_id, struct file *file, bool as_interp,
					  struct cgfence_exec_seen *seen)
{
	return cgfence_exec_allowed(&exec_allow, fence_id, BPF_CORE_READ(file, f_inode), as_interp, seen);
}

/* Reports a verdict already taken: the verdict does not depend on ring-buffer space, a lost
 * event is counted. path: a kernel string naming the file. */
static __always_inline void report(__u32 kind, __u32 action, struct cgfence_fence *fence, __u64 fence_id,
				   struct task_struct *task, const char *path, __u32 reason,
				   const struct cgfence_exec_seen *seen)
{
	struct cgfence_exec_event *e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);

	if (!e) {
		cgfence_exec_count_drop();
		return;
	}
	cgfence_exec_event_fill(e, kind, action, fence, fence_id, task, path, reason, seen, NULL);
	bpf_ringbuf_submit(e, 0);
}

/*
 * A guarded open for writing or executable mapping of file (kind): enforce refuses it with
 * EACCES, audit lets it through; counted and reported either way, named by the file's own
 * name. Returns the hook's verdict.
 */
static __always_inline int refuse_file(__u32 kind, struct cgfence_fence *fence, __u64 fence_id,
				       struct task_struct *task, struct file *file,
				       const struct cgfence_exec_seen *seen)
{
	const char *name = (const char *)BPF_CORE_READ(file, f_path.dentry, d_name.name);
	__u32 action = CGFENCE_ACTION_AUDIT;
	int verdict = 0;

	if (fence->mode == CGFENCE_MODE_ENFORCE) {
		__sync_fetch_and_add(&fence->denied, 1);
		action = CGFENCE_ACTION_DENY;
		verdict = -EACCES;
	} else {
		__sync_fetch_and_add(&fence->audited, 1);
	}
	report(kind, action, fence, fence_id, task, name, CGFENCE_REASON_NONE, seen);
	return verdict;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(exec_lsm, struct linux_binprm *bprm, int ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct cgfence_exec_seen seen = {};
	struct cgfence_fence *fence;
	__u64 fence_id = 0;
	__u32 action, reason;
	int verdict = 0;

	/* An earlier LSM refused already: its errno stands. */
	if (ret)
		return ret;
	fence = find_fence(task, &fence_id);
	if (!fence || fence->mode == CGFENCE_MODE_OFF)
		return 0;

	reason = file_allowed(fence_id, BPF_CORE_READ(bprm, file), false, &seen);
	if (reason == CGFENCE_REASON_NONE) {
		__sync_fetch_and_add(&fence->allowed, 1);
		if (!(fence->flags & CGFENCE_FLAG_REPORT_ALLOWED) && fence->mode != CGFENCE_MODE_LEARN)
			return 0;
		action = CGFENCE_ACTION_ALLOW;
	} else if (fence->mode == CGFENCE_MODE_ENFORCE) {
		__sync_fetch_and_add(&fence->denied, 1);
		action = CGFENCE_ACTION_DENY;
		verdict = -EACCES;
	} else {
		__sync_fetch_and_add(&fence->audited, 1);
		action = fence->mode == CGFENCE_MODE_LEARN ? CGFENCE_ACTION_ALLOW : CGFENCE_ACTION_AUDIT;
	}

	/* comm is the caller's: the exec has not happened (and, denied, never will). The path is
	 * the name of the file judged now: the script, then its interpreter's. */
	report(CGFENCE_EVENT_EXEC_LSM, action, fence, fence_id, task, BPF_CORE_READ(bprm, interp), reason, &seen);
	return verdict;
}

#define FMODE_WRITE	 0x2
#define PROC_SUPER_MAGIC 0x9fa0

/* Is file a /proc/<pid>/mem (or /proc/<pid>/task/<tid>/mem)? */
static __always_inline bool is_proc_mem(struct file *file)
{
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	char name[4] = {};

	if (BPF_CORE_READ(d, d_sb, s_magic) != PROC_SUPER_MAGIC)
		return false;
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(d, d_name.name));
	return name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 0;
}

/*
 * What the exec hook cannot see: from a fenced container, opening for writing an
 * allow-listed file (changing a program the fence lets run, in place) or a process's
 * /proc/PID/mem (patching code in memory, which ignores page protections). Enforce refuses
 * with EACCES, audit reports, learn and off do nothing (nothing to learn: no annotation
 * allows either). Reads are never judged. Only opens for writing pay the fence lookup.
 */
SEC("lsm/file_open")
int BPF_PROG(exec_lsm_file_open, struct file *file, int ret)
{
	struct task_struct *task;
	struct cgfence_exec_seen seen = {};
	struct cgfence_fence *fence;
	__u64 fence_id = 0;
	__u32 kind;

	if (ret || !(BPF_CORE_READ(file, f_mode) & FMODE_WRITE))
		return ret;
	task = bpf_get_current_task_btf();
	fence = find_fence(task, &fence_id);
	if (!fence || (fence->mode != CGFENCE_MODE_ENFORCE && fence->mode != CGFENCE_MODE_AUDIT))
		return 0;
	/* Allow-listed: an entry exists, whatever its stamp (a changed file stays protected). */
	file_allowed(fence_id, file, true, &seen);
	if (seen.found)
		kind = CGFENCE_EVENT_WRITE_ALLOWED;
	else if (is_proc_mem(file))
		kind = CGFENCE_EVENT_PROC_MEM_WRITE;
	else
		return 0;
	return refuse_file(kind, fence, fence_id, task, file, &seen);
}

#define PROT_EXEC 0x4

/* When each fence was set (CLOCK_REALTIME ns), written by user space at attach: a file whose
 * inode changed after it was not part of the container as started. A fence without an entry
 * (set by a daemon that did not run this backend) gets no check of its executable mappings. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} exec_fence_since SEC(".maps");

/* The inode's ctime in ns, read as the allow stamps are (exec-allow.bpf.h), and so comparable
 * with the CLOCK_REALTIME ns of exec_fence_since. */
static __always_inline __u64 inode_ctime_ns(struct inode *inode)
{
	__s64 sec;
	__u32 nsec;

	cgfence_inode_ctime(inode, &sec, &nsec);
	return (__u64)sec * 1000000000ULL + nsec;
}

/*
 * A file mapped executable without an exec (the ELF interpreter and libraries the loader
 * maps, or a program's own dlopen/mmap): allowed when it is allow-listed or unchanged since
 * the fence was set (the image's own loader and libraries need no annotation); refused with
 * EACCES in enforce, reported in audit, when it was written, replaced or created after.
 */
static __always_inline int judge_map_exec(struct file *file)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct cgfence_exec_seen seen = {};
	struct cgfence_fence *fence;
	__u64 fence_id = 0, *since;

	fence = find_fence(task, &fence_id);
	if (!fence || (fence->mode != CGFENCE_MODE_ENFORCE && fence->mode != CGFENCE_MODE_AUDIT))
		return 0;
	since = bpf_map_lookup_elem(&exec_fence_since, &fence_id);
	if (!since || inode_ctime_ns(BPF_CORE_READ(file, f_inode)) <= *since)
		return 0;
	/* On the list and unchanged (a loader-only entry is enough for a mapping). */
	if (file_allowed(fence_id, file, true, &seen) == CGFENCE_REASON_NONE)
		return 0;
	return refuse_file(CGFENCE_EVENT_MAP_EXEC, fence, fence_id, task, file, &seen);
}

SEC("lsm/mmap_file")
int BPF_PROG(exec_lsm_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags,
	     int ret)
{
	if (ret || !file || !(prot & PROT_EXEC))
		return ret;
	return judge_map_exec(file);
}

SEC("lsm/file_mprotect")
int BPF_PROG(exec_lsm_file_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot, int ret)
{
	struct file *file;

	if (ret || !(prot & PROT_EXEC))
		return ret;
	file = BPF_CORE_READ(vma, vm_file);
	if (!file)
		return 0;
	return judge_map_exec(file);
}

/* The start-up probe: loads and attaches where BPF LSM works, and changes nothing. */
SEC("lsm/bprm_check_security")
int BPF_PROG(exec_lsm_probe, struct linux_binprm *bprm, int ret)
{
	return ret;
}
