/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The exec event as every exec program writes it (exec-fence.bpf.c, exec-lsm.bpf.c), so that
 * user space reads one layout filled one way whatever the hook. Include after vmlinux.h, the
 * libbpf headers, cgfence-abi.h and exec-allow.bpf.h.
 */
#ifndef CGFENCE_EXEC_EVENT_BPF_H
#define CGFENCE_EXEC_EVENT_BPF_H

/*
 * Fills every field of e (a ring-buffer slot is not zeroed). seen: what the allow check saw of
 * the file the event is about (its identity, and its stamps unless interp is given); interp:
 * what it saw of the ELF loader when the loader was judged (the Interp* reasons: its identity
 * and its stamps go in the event), else NULL. path: a kernel string, read here. comm is the
 * current task's, whatever the hook.
 */
static __always_inline void cgfence_exec_event_fill(struct cgfence_exec_event *e, __u32 kind, __u32 action,
						    const struct cgfence_fence *fence, __u64 fence_id,
						    struct task_struct *task, const char *path, __u32 reason,
						    const struct cgfence_exec_seen *seen,
						    const struct cgfence_exec_seen *interp)
{
	/* The judged file's stamps: the loader's for the Interp* reasons, else the file's. */
	const struct cgfence_exec_seen *s = interp ? interp : seen;

	e->kind = kind;
	e->action = action;
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->fence_id = fence_id;
	e->dev = seen->dev;
	e->ino = seen->ino;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->mode = fence->mode;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	e->reason = reason;
	e->pad = 0;
	e->interp_dev = interp ? interp->dev : 0;
	e->interp_ino = interp ? interp->ino : 0;
	e->now_ctime_sec = s->now_sec;
	e->now_ctime_nsec = s->now_nsec;
	e->want_ctime_sec = s->found ? s->want_sec : 0;
	e->want_ctime_nsec = s->found ? s->want_nsec : 0;
}

#endif /* CGFENCE_EXEC_EVENT_BPF_H */
