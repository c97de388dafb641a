/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of learn mode (bpf/learn-syscalls.bpf.c, bpf/learn-net.bpf.c): what a
 * container in cgfence.io/mode=learn did, kept in maps that user space reads when asked and
 * at exit. Nothing of it is an event: a learning container costs map lookups, never a
 * ring-buffer record per syscall or packet. Included after cgfence-abi.h by the BPF programs
 * and by the addon, which static_asserts the sizes; src/kernel/learn-abi.ts mirrors the
 * offsets. Every struct is fixed-width with explicit padding, and padding is always zero
 * (it is part of hash keys).
 */
#ifndef CGFENCE_LEARN_ABI_H
#define CGFENCE_LEARN_ABI_H

/* Syscall numbers a learn record covers per ABI; x86_64 and i386 stay below 512 today. */
#define CGFENCE_LEARN_MAX_SYSCALL 1024

enum cgfence_learn_abi {
	CGFENCE_LEARN_ABI_NATIVE = 0,
	CGFENCE_LEARN_ABI_COMPAT = 1, /* a 32-bit syscall of a 64-bit kernel (x86: int 0x80, ia32) */
	CGFENCE_LEARN_ABIS = 2,
};

/*
 * learn_sys: key = fence id (the container's cgroup v2 id). One byte per syscall number
 * rather than one bit: setting a byte is a plain store, idempotent and never racing with
 * another CPU setting a neighbour (a bit would need an atomic OR, which the BPF ISA we
 * build for lacks), and reading before writing keeps the line shared once a syscall is known.
 */
struct cgfence_learn_syscalls {
	__u8 seen[CGFENCE_LEARN_ABIS][CGFENCE_LEARN_MAX_SYSCALL];
	__u64 out_of_range; /* syscalls whose number does not fit (x32 ones have bit 30 set) */
};

/* learn_sys_cgrp: cgroup id -> the learning fence it belongs to (0: none), as of gen. */
struct cgfence_learn_cgroup {
	__u64 fence_id;
	__u64 gen;
};

/*
 * learn_exec: key = {fence id, dev, ino} of every file a learning container executed (the file
 * the kernel mapped: a #! script's interpreter, an fexecve'd fd's file), the same identity the
 * exec fence judges. Kept in the kernel like syscalls and peers, so the set is complete when
 * the container exits, however late the daemon reads it. dev is the kernel's encoding.
 */
struct cgfence_learn_exec_key {
	__u64 fence_id;
	__u64 dev;
	__u64 ino;
};

/* The file's own path as the kernel knows it, at most this many components of this length. */
#define CGFENCE_LEARN_PATH_DEPTH 16
#define CGFENCE_LEARN_NAME_LEN	 64

enum cgfence_learn_exec_flags {
	/* parts reach the root of the file's filesystem: the path is whole (else cut at DEPTH). */
	CGFENCE_LEARN_PATH_WHOLE = 1,
};

/*
 * interp: bprm->interp of the first exec of that file, the name the kernel opened it by (the
 * interpreter's name for a #! script; relative if the caller's was). parts: the names of the
 * file's dentry and its parents up to the root of its filesystem, the file's own name first,
 * taken at the exec: for a file of the container's root filesystem, its path in the image,
 * whatever name, cwd, link or script led to it and even if it is removed right after.
 */
struct cgfence_learn_exec {
	__u64 count;
	__u32 depth;	/* parts used */
	__u32 flags;	/* enum cgfence_learn_exec_flags */
	__u64 first_ns; /* CLOCK_MONOTONIC of the first exec: a file born later is not this one */
	char interp[CGFENCE_PATH_LEN];
	char parts[CGFENCE_LEARN_PATH_DEPTH][CGFENCE_LEARN_NAME_LEN];
};

enum cgfence_learn_dir {
	CGFENCE_LEARN_EGRESS = 0,  /* the container sends: the peer is the destination */
	CGFENCE_LEARN_INGRESS = 1, /* the container receives: the peer is the source */
};

/*
 * learn_net_cfg: cgroup local storage of the learning cgroup (shared by the six programs).
 * fence_id 0: not configured yet, nothing recorded.
 */
struct cgfence_learn_net_config {
	__u64 fence_id;
	__u64 peer_drops; /* peers not recorded: learn_peers was full (the policy is incomplete) */
	__u64 port_drops; /* flows not recorded: learn_ports was full (only the report is short) */
};

/*
 * learn_peers: every peer address, per direction, exactly as the network fence judges it
 * (IPv4-mapped IPv6 as IPv4, an unspecified connect() destination as loopback). This is what
 * egress-allow / ingress-allow are made of. IPv4 uses the first 4 bytes of addr.
 */
struct cgfence_learn_peer_key {
	__u64 fence_id;
	__u8 family; /* 4 or 6 */
	__u8 dir;    /* enum cgfence_learn_dir */
	__u8 pad[6];
	__u8 addr[16];
};

/*
 * learn_ports: who talks to whom on which port, for the report. port is the destination port
 * of the packet that opened the flow: the peer's service port for egress, the container's
 * own listening port for ingress; replies (a packet whose reverse flow is already known) are
 * not counted as new flows, so ephemeral ports do not pile up.
 */
struct cgfence_learn_port_key {
	__u64 fence_id;
	__u8 family;
	__u8 dir;
	__u8 proto; /* IPPROTO_*; 0 with port 0 when the hook does not know them */
	__u8 pad;
	__u16 port; /* host byte order */
	__u8 pad2[2];
	__u8 addr[16];
};

#endif /* CGFENCE_LEARN_ABI_H */
