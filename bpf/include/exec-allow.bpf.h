/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The exec allow-list check, shared by every exec program (tracepoint, tp_btf, and the BPF-LSM
 * one) so that they agree on what a stamp is: an allow entry names a file identity
 * {fence, dev, ino} and holds the inode's ctime when it was allowed; the file is allowed only
 * while its ctime is still that one (see struct cgfence_exec_allow in cgfence-abi.h).
 * Include after vmlinux.h, bpf_core_read.h and cgfence-abi.h.
 */
#ifndef CGFENCE_EXEC_ALLOW_BPF_H
#define CGFENCE_EXEC_ALLOW_BPF_H

/* The inode's ctime across kernel layouts: i_ctime (timespec64, up to 6.5), __i_ctime
 * (timespec64, 6.6 to 6.10), i_ctime_sec + i_ctime_nsec (6.11 on). */
struct inode___ctime_ts {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct inode___ctime_priv {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___ctime_split {
	time64_t i_ctime_sec;
	u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

/* Multigrain timestamps (6.13 on) keep a "queried" flag in bit 31 of i_ctime_nsec; a real
 * nanosecond count never reaches it, and stat() masks it too. */
#define CGFENCE_CTIME_NSEC_MASK 0x7fffffffU

static __always_inline void cgfence_inode_ctime(struct inode *inode, __s64 *sec, __u32 *nsec)
{
	if (bpf_core_field_exists(((struct inode___ctime_split *)0)->i_ctime_sec)) {
		struct inode___ctime_split *i = (void *)inode;

		*sec = BPF_CORE_READ(i, i_ctime_sec);
		*nsec = BPF_CORE_READ(i, i_ctime_nsec);
	} else if (bpf_core_field_exists(((struct inode___ctime_priv *)0)->__i_ctime)) {
		struct inode___ctime_priv *i = (void *)inode;

		*sec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		*nsec = BPF_CORE_READ(i, __i_ctime.tv_nsec);
	} else {
		struct inode___ctime_ts *i = (void *)inode;

		*sec = BPF_CORE_READ(i, i_ctime.tv_sec);
		*nsec = BPF_CORE_READ(i, i_ctime.tv_nsec);
	}
	*nsec &= CGFENCE_CTIME_NSEC_MASK;
}

/* What the check saw, for the event: the file's identity and stamp now, and the entry's. */
struct cgfence_exec_seen {
	__u64 dev;
	__u64 ino;
	__s64 now_sec;
	__u32 now_nsec;
	__u32 flags; /* the entry's flags (when found) */
	__s64 want_sec;
	__u32 want_nsec;
	__u32 found;
};

/*
 * Judges one file against a fence's allow map: CGFENCE_REASON_NONE when it is on the list
 * and unchanged, NOT_ALLOWED or MODIFIED otherwise. as_interp: the file is the loader of the
 * program (an INTERP_ONLY entry is enough); else an INTERP_ONLY entry gives INTERP_ONLY.
 * allow_map is the exec_allow map (struct cgfence_exec_key -> struct cgfence_exec_allow).
 */
static __always_inline __u32 cgfence_exec_allowed(void *allow_map, __u64 fence_id, struct inode *inode, bool as_interp,
						  struct cgfence_exec_seen *seen)
{
	struct cgfence_exec_key key = {};
	struct cgfence_exec_allow *a;

	key.fence_id = fence_id;
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(inode, i_ino);
	seen->dev = key.dev;
	seen->ino = key.ino;
	cgfence_inode_ctime(inode, &seen->now_sec, &seen->now_nsec);
	a = bpf_map_lookup_elem(allow_map, &key);
	if (!a) {
		seen->found = 0;
		return CGFENCE_REASON_NOT_ALLOWED;
	}
	seen->found = 1;
	seen->flags = a->flags;
	seen->want_sec = a->ctime_sec;
	seen->want_nsec = a->ctime_nsec;
	if (a->ctime_sec != seen->now_sec || a->ctime_nsec != seen->now_nsec)
		return CGFENCE_REASON_MODIFIED;
	if (!as_interp && (a->flags & CGFENCE_ALLOW_INTERP_ONLY))
		return CGFENCE_REASON_INTERP_ONLY;
	return CGFENCE_REASON_NONE;
}

#endif /* CGFENCE_EXEC_ALLOW_BPF_H */
