/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of the network fence (bpf/net-fence.bpf.c): rule-trie keys, the
 * per-cgroup configuration and counters, the flow table of the audit rate limiter and the
 * ring-buffer event. Included after cgfence-abi.h by the BPF program and by the addon, which
 * static_asserts the sizes; src/kernel/net-abi.ts mirrors the offsets. Every struct is
 * fixed-width with explicit padding, and padding is always zero (it is part of hash keys).
 */
#ifndef CGFENCE_NET_ABI_H
#define CGFENCE_NET_ABI_H

/* Event kinds continue enum cgfence_event_kind of cgfence-abi.h. */
#define CGFENCE_EVENT_NET	   2 /* a refused (or, in audit mode, would-be refused) flow */
#define CGFENCE_EVENT_NET_THROTTLE 3 /* a flow hit the rate limit; its suppressed count follows */

enum cgfence_net_dir {
	CGFENCE_NET_EGRESS = 0,
	CGFENCE_NET_INGRESS = 1,
};

enum cgfence_net_verdict {
	CGFENCE_NET_ALLOW = 1,
	CGFENCE_NET_DENY = 2,
};

enum cgfence_net_hook {
	CGFENCE_NET_HOOK_SKB = 0,
	CGFENCE_NET_HOOK_CONNECT = 1,
	CGFENCE_NET_HOOK_SENDMSG = 2,
};

/* rule_id of a decision no trie entry made: the direction is default-deny (an -allow list). */
#define CGFENCE_NET_RULE_DEFAULT 0xffffffffu

/* The audit rate limit, per fence and flow: this many records per window, then counts. */
#define CGFENCE_NET_RATE_BURST	   5
#define CGFENCE_NET_RATE_WINDOW_NS 1000000000ull

/*
 * Rule tries (LPM_TRIE, one per family). One trie holds every fence's rules: the fixed part
 * (direction, generation, fence id) leads the key and is counted in prefixlen, so a lookup
 * can only ever match entries of its own fence, direction and generation. prefixlen is
 * CGFENCE_NET_KEY_FIXED_BITS + the CIDR's prefix length.
 *
 * gen lets a policy change swap atomically: the new rules are written under the other
 * generation, then one config update flips the fence to it, then the old entries go.
 */
#define CGFENCE_NET_KEY_FIXED_BITS 96

struct cgfence_net_key4 {
	__u32 prefixlen;
	__u8 dir;
	__u8 gen;
	__u8 pad[2];
	__u64 fence_id;
	__u8 addr[4];
	__u8 pad2[4]; /* never inside prefixlen */
};

struct cgfence_net_key6 {
	__u32 prefixlen;
	__u8 dir;
	__u8 gen;
	__u8 pad[2];
	__u64 fence_id;
	__u8 addr[16];
};

/* The verdict for addresses whose longest match is this entry. User space bakes "a deny entry
 * always wins" into it: an allow entry inside a deny entry is stored as a deny. */
struct cgfence_net_rule {
	__u32 verdict; /* enum cgfence_net_verdict */
	__u32 rule_id; /* index into user space's rule table of this fence and generation */
};

/*
 * Per-fence configuration: shared cgroup local storage (key = the cgroup id), which the
 * kernel creates when the first program is attached to the cgroup and frees with the last
 * link. Programs reach it without a lookup, also for sockets of descendant cgroups.
 * Updates from user space replace the whole value at once (RCU), so a program never sees
 * half of an update. mode 0 means not configured yet: everything passes.
 */
struct cgfence_net_config {
	__u64 fence_id;
	__u32 mode;	      /* CGFENCE_MODE_ENFORCE or CGFENCE_MODE_AUDIT */
	__u8 gen;	      /* generation of the rule entries in force */
	__u8 default_deny[2]; /* indexed by enum cgfence_net_dir: an -allow list exists */
	__u8 active;	      /* bit (1 << dir): the direction has rules; others pass unlooked */
};

/* Per-fence counters: per-CPU cgroup local storage, summed by user space. */
struct cgfence_net_stats {
	__u64 denied[2];  /* refused, per direction (enforce) */
	__u64 audited[2]; /* would have been refused, per direction (audit) */
	__u64 suppressed; /* decisions the rate limiter did not record one by one */
	__u64 lost;	  /* records the ring buffer had no room for */
};

/* The flow of the rate limiter: for egress the destination, for ingress the source address
 * and the local (destination) port. IPv4 addresses use the first 4 bytes of addr. */
struct cgfence_net_flow_key {
	__u64 fence_id;
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 dir;
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
};

struct cgfence_net_flow {
	__u64 window_start_ns;
	__u32 emitted; /* records in the current window; races only change how many */
	__u32 pad;
	__u64 suppressed; /* monotonic: user space reports the difference as count records */
};

struct cgfence_net_event {
	__u32 kind;   /* CGFENCE_EVENT_NET or CGFENCE_EVENT_NET_THROTTLE */
	__u32 action; /* enum cgfence_action: DENY (enforce) or AUDIT */
	__u64 ts_ns;  /* CLOCK_MONOTONIC */
	__u64 fence_id;
	__u64 cgroup_id; /* the socket's cgroup (the fence's or a descendant) */
	__u8 saddr[16];	 /* IPv4: first 4 bytes; zero when the hook does not know it */
	__u8 daddr[16];
	__u16 sport; /* host byte order; 0 when unknown (connect, fragments, other protocols) */
	__u16 dport;
	__u8 family; /* 4 or 6 */
	__u8 proto;  /* IPPROTO_* */
	__u8 dir;    /* enum cgfence_net_dir */
	__u8 hook;   /* enum cgfence_net_hook */
	__u8 gen;
	__u8 pad[3];
	__u32 pid; /* tgid, for the connect/sendmsg hooks; 0 for packets */
	__u32 rule_id;
	__u32 pad2;
	__u64 suppressed; /* THROTTLE: the flow's suppressed total including this decision */
	char comm[CGFENCE_COMM_LEN];
};

#endif /* CGFENCE_NET_ABI_H */
