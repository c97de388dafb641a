// SPDX-License-Identifier: GPL-2.0-only
/*
 * tamper watch: reports any process other than the daemon that changes cgfence's kernel
 * objects behind its back: writes to or freezes its maps, detaches or replaces its programs
 * and links through bpf(), and unlinks or renames its pins.
 *
 * Why these hooks: BPF LSM (security_bpf_map and friends) and fentry are refused on the
 * kernels we target, and this kernel is built without kprobes, so the syscalls' own
 * tracepoints are the stable place left. sys_enter_bpf fires for bpf() alone, so the rest of
 * the system pays nothing for it. bpf()'s attr is user memory: we read the command's fd from
 * it and resolve that fd in the caller's own fd table, as the kernel is about to, to the map,
 * program or link behind it. What we compare is the object's id, not the fd or a pin path:
 * the id names the object however the caller got hold of it (a pin, *_GET_FD_BY_ID, an
 * inherited fd).
 *
 * Every check runs before the kernel acts on the call, so a tamper that succeeds is reported
 * and so is one that fails. What this does not see is listed in src/kernel/tamper-watch.ts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cgfence-abi.h"
#include "tamper-abi.h"

char LICENSE[] SEC("license") = "GPL";

#define AT_FDCWD -100
/* Enough for pins a few directories below the pin directory; deeper bases are not checked. */
#define MAX_PIN_DEPTH 8

/*
 * The daemon, excluded: its pid as its own pid namespace sees it (a daemon in a container
 * sees another pid than the host), and its start time, so that after a daemon crash a process
 * given the same pid is not taken for it while this program keeps watching through its pin.
 */
const volatile __u32 daemon_pidns_ino = 0;
const volatile __u32 daemon_pid = 0;
const volatile __u64 daemon_start_ticks = 0;

/*
 * The pin directory (devices in the kernel's encoding). pin_dir_ino == 0 turns path
 * watching off. The parent's identity and the directory's own name cover paths relative to
 * the parent ("cgfence/exec_allow" from /sys/fs/bpf).
 */
const volatile __u64 pin_dir_dev = 0;
const volatile __u64 pin_dir_ino = 0;
const volatile __u64 pin_parent_dev = 0;
const volatile __u64 pin_parent_ino = 0;
const volatile __u32 pin_dir_len = 0;
const volatile __u32 pin_base_len = 0;
const volatile char pin_dir_path[CGFENCE_PIN_DIR_LEN] = {};
const volatile char pin_base[CGFENCE_PIN_DIR_LEN] = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct cgfence_tamper_key);
	__type(value, __u8);
} tamper_protect SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} tamper_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CGFENCE_TAMPER_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tamper_stats SEC(".maps");

struct caller {
	__u32 pidns_ino;
	__u32 ns_pid;
	__u64 start_ticks;
};

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&tamper_stats, &stat);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* The thread group leader's pid in its active pid namespace, and its start time; the same
 * figures the daemon reads from /proc/self/ns/pid, getpid() and /proc/self/stat. */
static __always_inline void caller_identity(struct caller *c)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(t, group_leader);
	struct pid *pid = BPF_CORE_READ(leader, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid up = {};

	bpf_core_read(&up, sizeof(up), &pid->numbers[level]);
	c->ns_pid = up.nr;
	c->pidns_ino = BPF_CORE_READ(up.ns, ns.inum);
	c->start_ticks = BPF_CORE_READ(leader, start_boottime) / (1000000000ULL / CGFENCE_USER_HZ);
}

static __always_inline bool is_daemon(const struct caller *c)
{
	return c->ns_pid == daemon_pid && c->pidns_ino == daemon_pidns_ino && c->start_ticks == daemon_start_ticks;
}

/* The file an fd of the calling process refers to, as fdget() is about to find it. */
static __always_inline struct file *caller_file(int fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_core_read(&f, sizeof(f), &fds[fd]);
	return f;
}

/*
 * What kind of BPF object a file is. The kernel gives each kind's anonymous file its own
 * name ("bpf-map", "bpf-prog", and "bpf_link" for a new link but "bpf-link" for one opened
 * from a pin or by id) and no other anonymous file takes those names; the id found behind
 * it must then also be one we protect, so a look-alike proves nothing.
 */
static __always_inline __u32 file_kind(struct file *f)
{
	char n[10] = {};
	const unsigned char *name = BPF_CORE_READ(f, f_path.dentry, d_name.name);

	if (bpf_probe_read_kernel_str(n, sizeof(n), name) < 0)
		return 0;
	if (n[0] != 'b' || n[1] != 'p' || n[2] != 'f' || (n[3] != '-' && n[3] != '_'))
		return 0;
	if (n[4] == 'm' && n[5] == 'a' && n[6] == 'p' && n[7] == 0)
		return CGFENCE_OBJ_MAP;
	if (n[4] == 'p' && n[5] == 'r' && n[6] == 'o' && n[7] == 'g' && n[8] == 0)
		return CGFENCE_OBJ_PROG;
	if (n[4] == 'l' && n[5] == 'i' && n[6] == 'n' && n[7] == 'k' && n[8] == 0)
		return CGFENCE_OBJ_LINK;
	return 0;
}

static __always_inline bool protected_id(__u32 kind, __u32 id)
{
	struct cgfence_tamper_key k = { .kind = kind, .id = id };

	return id && bpf_map_lookup_elem(&tamper_protect, &k);
}

static __always_inline struct cgfence_tamper_event *reserve(__u32 action, __u32 cmd, const struct caller *c)
{
	struct cgfence_tamper_event *e = bpf_ringbuf_reserve(&tamper_events, sizeof(*e), 0);

	if (!e) {
		count(CGFENCE_TAMPER_STAT_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = CGFENCE_EVENT_TAMPER;
	e->action = action;
	e->cmd = cmd;
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->pidns_ino = c->pidns_ino;
	e->ns_pid = c->ns_pid;
	e->start_ticks = c->start_ticks;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

SEC("tracepoint/syscalls/sys_enter_bpf")
int tamper_bpf(struct trace_event_raw_sys_enter *ctx)
{
	int cmd = (int)ctx->args[0];
	const char *uattr = (const char *)ctx->args[1];
	struct cgfence_tamper_event *e;
	struct caller c = {};
	__u32 action, off, kind, id = 0, prog_id = 0;
	struct bpf_prog *prog = NULL;
	struct bpf_map *map = NULL;
	struct file *f;
	int fd = -1;

	switch (cmd) {
	case BPF_MAP_UPDATE_ELEM:
		action = CGFENCE_TAMPER_MAP_UPDATE;
		off = __builtin_offsetof(union bpf_attr, map_fd);
		break;
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
		action = CGFENCE_TAMPER_MAP_DELETE;
		off = __builtin_offsetof(union bpf_attr, map_fd);
		break;
	case BPF_MAP_FREEZE:
		action = CGFENCE_TAMPER_MAP_FREEZE;
		off = __builtin_offsetof(union bpf_attr, map_fd);
		break;
	case BPF_MAP_UPDATE_BATCH:
		action = CGFENCE_TAMPER_MAP_UPDATE;
		off = __builtin_offsetof(union bpf_attr, batch.map_fd);
		break;
	case BPF_MAP_DELETE_BATCH:
	case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
		action = CGFENCE_TAMPER_MAP_DELETE;
		off = __builtin_offsetof(union bpf_attr, batch.map_fd);
		break;
	case BPF_PROG_DETACH:
		action = CGFENCE_TAMPER_PROG_DETACH;
		off = __builtin_offsetof(union bpf_attr, attach_bpf_fd);
		break;
	case BPF_LINK_UPDATE:
		action = CGFENCE_TAMPER_LINK_UPDATE;
		off = __builtin_offsetof(union bpf_attr, link_update.link_fd);
		break;
	case BPF_LINK_DETACH:
		action = CGFENCE_TAMPER_LINK_DETACH;
		off = __builtin_offsetof(union bpf_attr, link_detach.link_fd);
		break;
	default: return 0;
	}

	caller_identity(&c);
	if (is_daemon(&c))
		return 0;
	if (bpf_probe_read_user(&fd, sizeof(fd), uattr + off)) {
		/* A page not yet faulted in cannot be read here: counted, since the call might
		 * have been on one of ours. */
		count(CGFENCE_TAMPER_STAT_UNREADABLE);
		return 0;
	}
	f = caller_file(fd);
	if (!f)
		return 0;
	kind = file_kind(f);

	if (kind == CGFENCE_OBJ_MAP) {
		if (action == CGFENCE_TAMPER_PROG_DETACH || action == CGFENCE_TAMPER_LINK_UPDATE ||
		    action == CGFENCE_TAMPER_LINK_DETACH)
			return 0;
		map = BPF_CORE_READ(f, private_data);
		id = BPF_CORE_READ(map, id);
	} else if (kind == CGFENCE_OBJ_PROG) {
		if (action != CGFENCE_TAMPER_PROG_DETACH)
			return 0;
		prog = BPF_CORE_READ(f, private_data);
		id = prog_id = BPF_CORE_READ(prog, aux, id);
	} else if (kind == CGFENCE_OBJ_LINK) {
		struct bpf_link *link = BPF_CORE_READ(f, private_data);

		if (action != CGFENCE_TAMPER_LINK_UPDATE && action != CGFENCE_TAMPER_LINK_DETACH)
			return 0;
		id = BPF_CORE_READ(link, id);
		prog = BPF_CORE_READ(link, prog);
		prog_id = BPF_CORE_READ(prog, aux, id);
	} else {
		return 0;
	}
	/* A link is ours when its program is: per-container links need no registration. */
	if (!protected_id(kind, id) && !(prog_id && protected_id(CGFENCE_OBJ_PROG, prog_id)))
		return 0;

	e = reserve(action, cmd, &c);
	if (!e)
		return 0;
	e->obj_kind = kind;
	e->obj_id = id;
	e->prog_id = prog_id;
	if (map)
		BPF_CORE_READ_STR_INTO(&e->obj_name, map, name);
	else if (prog)
		BPF_CORE_READ_STR_INTO(&e->obj_name, prog, aux, name);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline bool same_inode(struct dentry *d, __u64 dev, __u64 ino)
{
	struct inode *i = BPF_CORE_READ(d, d_inode);

	return i && BPF_CORE_READ(i, i_ino) == ino && BPF_CORE_READ(i, i_sb, s_dev) == dev;
}

static __always_inline bool has_prefix(const char *s, const volatile char *p, __u32 len)
{
	for (__u32 i = 0; i < CGFENCE_PIN_DIR_LEN; i++) {
		if (i >= len)
			return true;
		if (s[i] != p[i])
			return false;
	}
	return false;
}

/* Whether a path, as passed with its dirfd, names something in the pin directory. */
static __always_inline bool in_pin_dir(int dfd, const char *buf)
{
	__u32 dir_len = pin_dir_len, base_len = pin_base_len;
	struct dentry *base;

	if (buf[0] == '/') {
		/* Textual: the caller's root is assumed to be the host's; see tamper-watch.ts. */
		if (dir_len == 0 || dir_len >= CGFENCE_PIN_DIR_LEN)
			return false;
		return has_prefix(buf, pin_dir_path, dir_len) && buf[dir_len] == '/';
	}
	if (dfd == AT_FDCWD) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();

		base = BPF_CORE_READ(t, fs, pwd.dentry);
	} else {
		struct file *f = caller_file(dfd);

		if (!f)
			return false;
		base = BPF_CORE_READ(f, f_path.dentry);
	}
	if (!base)
		return false;
	if (base_len > 0 && base_len < CGFENCE_PIN_DIR_LEN && same_inode(base, pin_parent_dev, pin_parent_ino) &&
	    has_prefix(buf, pin_base, base_len) && buf[base_len] == '/')
		return true;
	/* A base on another filesystem cannot be inside the pin directory: no walk for it. */
	if (BPF_CORE_READ(base, d_sb, s_dev) != pin_dir_dev)
		return false;
	for (int i = 0; i < MAX_PIN_DEPTH; i++) {
		struct dentry *up;

		if (same_inode(base, pin_dir_dev, pin_dir_ino))
			return true;
		up = BPF_CORE_READ(base, d_parent);
		if (!up || up == base)
			return false;
		base = up;
	}
	return false;
}

/* A subprogram, so that the path buffer of a rename's two checks is one stack slot. */
static __noinline int check_path(int dfd, const char *upath, __u32 action)
{
	char buf[CGFENCE_PATH_LEN];
	struct cgfence_tamper_event *e;
	struct caller c = {};

	if (!pin_dir_ino || !upath)
		return 0;
	if (bpf_probe_read_user_str(buf, sizeof(buf), upath) <= 0) {
		count(CGFENCE_TAMPER_STAT_UNREADABLE);
		return 0;
	}
	if (!in_pin_dir(dfd, buf))
		return 0;
	caller_identity(&c);
	if (is_daemon(&c))
		return 0;
	e = reserve(action, 0, &c);
	if (!e)
		return 1;
	e->obj_kind = CGFENCE_OBJ_PIN;
	__builtin_memcpy(e->path, buf, sizeof(e->path));
	bpf_ringbuf_submit(e, 0);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int tamper_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	check_path((int)ctx->args[0], (const char *)ctx->args[1], CGFENCE_TAMPER_PIN_UNLINK);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int tamper_unlink(struct trace_event_raw_sys_enter *ctx)
{
	check_path(AT_FDCWD, (const char *)ctx->args[0], CGFENCE_TAMPER_PIN_UNLINK);
	return 0;
}

/* renameat and renameat2 share the first four arguments. A rename onto a pin replaces it,
 * so the new name counts as much as the old one. */
static __always_inline int check_rename(int olddfd, const char *oldname, int newdfd, const char *newname)
{
	if (check_path(olddfd, oldname, CGFENCE_TAMPER_PIN_RENAME))
		return 0;
	check_path(newdfd, newname, CGFENCE_TAMPER_PIN_RENAME);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_renameat2")
int tamper_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	return check_rename((int)ctx->args[0], (const char *)ctx->args[1], (int)ctx->args[2],
			    (const char *)ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int tamper_renameat(struct trace_event_raw_sys_enter *ctx)
{
	return check_rename((int)ctx->args[0], (const char *)ctx->args[1], (int)ctx->args[2],
			    (const char *)ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_rename")
int tamper_rename(struct trace_event_raw_sys_enter *ctx)
{
	return check_rename(AT_FDCWD, (const char *)ctx->args[0], AT_FDCWD, (const char *)ctx->args[1]);
}
