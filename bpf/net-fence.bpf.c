// SPDX-License-Identifier: GPL-2.0-only
/*
 * network fence: per-container CIDR rules, attached to the container's cgroup (v2) as
 * bpf_links of six programs that share one policy:
 *
 *   cgroup/connect4, connect6    connect() to a refused destination fails with EPERM at once
 *   cgroup/sendmsg4, sendmsg6    so does sendto()/sendmsg() of an unconnected UDP socket
 *   cgroup_skb/egress, ingress   the packet-level backstop: every IP packet a socket of the
 *                                cgroup sends or receives (raw and ICMP sockets, connected
 *                                sockets after a policy change, traffic from before attach)
 *
 * Semantics (docs/network-fence.md says the same for users):
 *  - Rules are about the peer address only: egress judges the destination of what the
 *    container sends, ingress the source of what it receives. Per packet and stateless,
 *    like systemd's IPAddressDeny=: replies are packets too, so an ingress-allow list must
 *    cover the peers whose answers the container needs, and an egress-allow list the
 *    clients a server in the container answers.
 *  - A deny entry always wins over an allow entry, whatever the prefix lengths. An -allow
 *    list (even an empty one) makes its direction default-deny for both families.
 *  - IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are the IPv4 address a.b.c.d: a dual-stack
 *    socket sends IPv4 packets to them, so they are judged by the IPv4 rules and the connect
 *    hook agrees with the packet hook.
 *  - The unspecified address (0.0.0.0, ::) as a destination means loopback to the kernel,
 *    and is judged as 127.0.0.1 and ::1.
 *  - Loopback is an address like any other: no implicit exception.
 *  - Fragments: rules need no ports, so every fragment is judged by its addresses; only
 *    the audit record of a non-first fragment lacks ports.
 *  - Packets the hook cannot parse as IPv4/IPv6 (a truncated header) are dropped by an
 *    enforcing fence; non-IP packets never reach these hooks (AF_PACKET bypasses the IP
 *    stack and every cgroup hook: see the document).
 *  - audit mode decides and records, and never blocks.
 *
 * Why cgroup local storage: a link attaches one program to one cgroup, and the kernel gives
 * each (cgroup, storage map) pair its own storage, found by bpf_get_local_storage() with no
 * lookup and no walk up the hierarchy, for the container's sockets and those of any cgroup
 * below it. The rules themselves are in shared LPM tries keyed by fence id, so a policy
 * change is map updates, never a reload.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "cgfence-abi.h"
#include "net-abi.h"
#include "ip-packet.bpf.h"

char LICENSE[] SEC("license") = "GPL";


/* Return values: cgroup_skb passes with 1, drops with 0; sock_addr allows with 1 and
 * makes the syscall fail with EPERM with 0. */
#define PASS  1
#define BLOCK 0

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, __u64); /* cgroup id only: shared by all six attach types */
	__type(value, struct cgfence_net_config);
} net_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);
	__type(key, __u64);
	__type(value, struct cgfence_net_stats);
} net_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct cgfence_net_key4);
	__type(value, struct cgfence_net_rule);
} net_rules4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cgfence_net_key6);
	__type(value, struct cgfence_net_rule);
} net_rules6 SEC(".maps");

/* LRU: a flood of distinct flows evicts old entries instead of failing; counts an eviction
 * loses are still in net_stats.suppressed, which user space reconciles. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgfence_net_flow_key);
	__type(value, struct cgfence_net_flow);
} net_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} net_events SEC(".maps");

/* Ring-buffer reservations that failed, for every fence: user space logs the count. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} net_drops SEC(".maps");

/* What one decision is about. */
struct flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 dir;
	__u8 hook;
};

static __always_inline void count_drop(struct cgfence_net_stats *st)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&net_drops, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	if (st)
		st->lost++;
}

/* The verdict of the rules for an address (in packet or stack memory); *rule_id says which
 * rule decided. One longest-prefix lookup: user space has already made deny entries win. */
static __always_inline __u32 judge4(struct cgfence_net_config *cfg, __u8 dir, const void *addr, __u32 *rule_id)
{
	struct cgfence_net_key4 k = {};
	struct cgfence_net_rule *r;

	k.prefixlen = CGFENCE_NET_KEY_FIXED_BITS + 32;
	k.dir = dir;
	k.gen = cfg->gen;
	k.fence_id = cfg->fence_id;
	__builtin_memcpy(k.addr, addr, 4);
	r = bpf_map_lookup_elem(&net_rules4, &k);
	if (r) {
		*rule_id = r->rule_id;
		return r->verdict;
	}
	*rule_id = CGFENCE_NET_RULE_DEFAULT;
	return cfg->default_deny[dir & 1] ? CGFENCE_NET_DENY : CGFENCE_NET_ALLOW;
}

static __always_inline __u32 judge6(struct cgfence_net_config *cfg, __u8 dir, const void *addr, __u32 *rule_id)
{
	struct cgfence_net_key6 k = {};
	struct cgfence_net_rule *r;

	k.prefixlen = CGFENCE_NET_KEY_FIXED_BITS + 128;
	k.dir = dir;
	k.gen = cfg->gen;
	k.fence_id = cfg->fence_id;
	__builtin_memcpy(k.addr, addr, 16);
	r = bpf_map_lookup_elem(&net_rules6, &k);
	if (r) {
		*rule_id = r->rule_id;
		return r->verdict;
	}
	*rule_id = CGFENCE_NET_RULE_DEFAULT;
	return cfg->default_deny[dir & 1] ? CGFENCE_NET_DENY : CGFENCE_NET_ALLOW;
}

static __always_inline __u32 judge(struct cgfence_net_config *cfg, struct flow *f, __u32 *rule_id)
{
	const __u8 *peer = f->dir == CGFENCE_NET_EGRESS ? f->daddr : f->saddr;

	if (f->family == 4)
		return judge4(cfg, f->dir, peer, rule_id);
	return judge6(cfg, f->dir, peer, rule_id);
}

static __always_inline int configured(struct cgfence_net_config *cfg)
{
	return cfg->mode == CGFENCE_MODE_ENFORCE || cfg->mode == CGFENCE_MODE_AUDIT;
}

static __always_inline void fill_event(struct cgfence_net_event *e, __u32 kind, __u32 action,
				       struct cgfence_net_config *cfg, struct flow *f, __u64 cgroup_id, __u32 rule_id,
				       __u64 now)
{
	e->kind = kind;
	e->action = action;
	e->ts_ns = now;
	e->fence_id = cfg->fence_id;
	e->cgroup_id = cgroup_id;
	__builtin_memcpy(e->saddr, f->saddr, 16);
	__builtin_memcpy(e->daddr, f->daddr, 16);
	e->sport = f->sport;
	e->dport = f->dport;
	e->family = f->family;
	e->proto = f->proto;
	e->dir = f->dir;
	e->hook = f->hook;
	e->gen = cfg->gen;
	e->pad[0] = e->pad[1] = e->pad[2] = 0;
	e->pid = 0;
	e->rule_id = rule_id;
	e->pad2 = 0;
	e->suppressed = 0;
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	if (f->hook != CGFENCE_NET_HOOK_SKB) {
		/* connect/sendmsg run in the calling task; packet hooks often run in softirq,
		 * where the current task is whoever happened to be interrupted. */
		e->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	}
}

/*
 * Records a refusal, at most CGFENCE_NET_RATE_BURST records per flow and window; the rest
 * is counted in the flow (monotonic) and in the fence's stats. The first suppressed
 * decision of a window sends a THROTTLE record naming the flow, before anything is
 * counted, so that user space learns which flow to read before the counts can show up in
 * the fence total; user space reports counts from there (see src/fence/network/network-audit.ts).
 */
static __always_inline void report(struct cgfence_net_config *cfg, struct cgfence_net_stats *st, struct flow *f,
				   __u32 action, __u32 rule_id, __u64 cgroup_id)
{
	struct cgfence_net_flow_key fk = {};
	struct cgfence_net_flow *fs;
	struct cgfence_net_event *e;
	__u64 now = bpf_ktime_get_ns();
	__u32 n;

	fk.fence_id = cfg->fence_id;
	__builtin_memcpy(fk.addr, f->dir == CGFENCE_NET_EGRESS ? f->daddr : f->saddr, 16);
	fk.port = f->dport;
	fk.proto = f->proto;
	fk.dir = f->dir;
	fk.family = f->family;

	fs = bpf_map_lookup_elem(&net_flows, &fk);
	if (!fs) {
		struct cgfence_net_flow init = { .window_start_ns = now };

		bpf_map_update_elem(&net_flows, &fk, &init, BPF_NOEXIST);
		fs = bpf_map_lookup_elem(&net_flows, &fk);
	}
	if (!fs) {
		/* No flow entry (cannot happen with an LRU map, but the verifier insists): the
		 * count still reaches user space through the fence total. */
		if (st)
			st->suppressed++;
		return;
	}
	if (now - fs->window_start_ns >= CGFENCE_NET_RATE_WINDOW_NS) {
		fs->window_start_ns = now;
		fs->emitted = 0;
	}
	n = fs->emitted;
	fs->emitted = n + 1;

	if (n < CGFENCE_NET_RATE_BURST) {
		e = bpf_ringbuf_reserve(&net_events, sizeof(*e), 0);
		if (!e) {
			count_drop(st);
			return;
		}
		fill_event(e, CGFENCE_EVENT_NET, action, cfg, f, cgroup_id, rule_id, now);
		bpf_ringbuf_submit(e, 0);
		return;
	}
	if (n == CGFENCE_NET_RATE_BURST) {
		e = bpf_ringbuf_reserve(&net_events, sizeof(*e), 0);
		if (e) {
			fill_event(e, CGFENCE_EVENT_NET_THROTTLE, action, cfg, f, cgroup_id, rule_id, now);
			e->suppressed = fs->suppressed + 1;
			bpf_ringbuf_submit(e, 0);
		} else {
			/* Only the flow's name is lost: its count reaches user space through the
			 * fence total, reported as a count without a flow. */
			count_drop(NULL);
		}
	}
	__sync_fetch_and_add(&fs->suppressed, 1);
	if (st)
		st->suppressed++;
}

/* Counts and records a refusal the rules made; returns PASS (audit) or BLOCK (enforce). */
static __always_inline int refuse(struct cgfence_net_config *cfg, struct flow *f, __u32 rule_id, __u64 cgroup_id)
{
	struct cgfence_net_stats *st = bpf_get_local_storage(&net_stats, 0);
	__u32 action;

	if (cfg->mode == CGFENCE_MODE_ENFORCE) {
		action = CGFENCE_ACTION_DENY;
		st->denied[f->dir & 1]++;
	} else {
		action = CGFENCE_ACTION_AUDIT;
		st->audited[f->dir & 1]++;
	}
	report(cfg, st, f, action, rule_id, cgroup_id);
	return action == CGFENCE_ACTION_DENY ? BLOCK : PASS;
}

/*
 * The full parse of a packet, with bpf_skb_load_bytes (works for any skb layout): for
 * refusals, which need ports and the protocol for their record, and for the rare packet
 * whose IP header is not in the linear area.
 */
static __always_inline int packet_slow(struct __sk_buff *skb, struct cgfence_net_config *cfg, __u8 dir)
{
	struct flow f = {};
	__u32 l4 = 0, rule_id = 0;
	__u8 frag = 0;

	f.dir = dir;
	f.hook = CGFENCE_NET_HOOK_SKB;
	struct ip_packet pk = {};
	int parsed = parse_ip_packet(skb, &pk);

	if (parsed > 0)
		return PASS; /* not IP: cgfence judges IP addresses only */
	if (parsed < 0)
		goto malformed;
	f.family = pk.family;
	f.proto = pk.proto;
	__builtin_memcpy(f.saddr, pk.saddr, 16);
	__builtin_memcpy(f.daddr, pk.daddr, 16);
	l4 = pk.l4;
	frag = pk.frag;
	if (judge(cfg, &f, &rule_id) == CGFENCE_NET_ALLOW)
		return PASS;
	if (!frag && (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP)) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) == 0) {
			f.sport = bpf_ntohs(ports[0]);
			f.dport = bpf_ntohs(ports[1]);
		}
	}
	return refuse(cfg, &f, rule_id, bpf_skb_cgroup_id(skb));

malformed:
	return cfg->mode == CGFENCE_MODE_ENFORCE ? BLOCK : PASS;
}

/*
 * Judges a packet; the IP header starts at offset 0 in cgroup_skb programs. The fast path
 * reads only the peer address, in place, and does one lookup: an allowed packet costs
 * nothing more. Everything else takes the full parse.
 */
static __always_inline int packet(struct __sk_buff *skb, __u8 dir)
{
	struct cgfence_net_config *cfg = bpf_get_local_storage(&net_config, 0);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 rule_id;

	if (!configured(cfg) || !(cfg->active & (1 << dir)))
		return PASS;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data;

		if ((void *)(ip + 1) <= end &&
		    judge4(cfg, dir, dir == CGFENCE_NET_EGRESS ? (void *)&ip->daddr : (void *)&ip->saddr, &rule_id) ==
			    CGFENCE_NET_ALLOW)
			return PASS;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data;

		/* IPv4-mapped addresses never appear in real IPv6 packets; the slow path has them. */
		if ((void *)(ip6 + 1) <= end &&
		    !is_v4_mapped(dir == CGFENCE_NET_EGRESS ? ip6->daddr.in6_u.u6_addr8 : ip6->saddr.in6_u.u6_addr8) &&
		    judge6(cfg, dir, dir == CGFENCE_NET_EGRESS ? (void *)&ip6->daddr : (void *)&ip6->saddr, &rule_id) ==
			    CGFENCE_NET_ALLOW)
			return PASS;
	} else {
		return PASS;
	}
	return packet_slow(skb, cfg, dir);
}

SEC("cgroup_skb/egress")
int net_egress(struct __sk_buff *skb)
{
	return packet(skb, CGFENCE_NET_EGRESS);
}

SEC("cgroup_skb/ingress")
int net_ingress(struct __sk_buff *skb)
{
	return packet(skb, CGFENCE_NET_INGRESS);
}

/* A destination from connect()/sendmsg(). */
static __always_inline int sock_addr(struct bpf_sock_addr *ctx, __u8 family, __u8 hook)
{
	struct cgfence_net_config *cfg = bpf_get_local_storage(&net_config, 0);
	struct flow f = {};
	__u32 rule_id = 0;

	if (!configured(cfg) || !(cfg->active & (1 << CGFENCE_NET_EGRESS)))
		return PASS;
	f.dir = CGFENCE_NET_EGRESS;
	f.hook = hook;
	f.proto = ctx->protocol;
	f.dport = bpf_ntohs(ctx->user_port);
	f.family = sock_addr_dest(ctx, family, f.daddr);
	if (judge(cfg, &f, &rule_id) == CGFENCE_NET_ALLOW)
		return PASS;
	return refuse(cfg, &f, rule_id, bpf_get_current_cgroup_id());
}

SEC("cgroup/connect4")
int net_connect4(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 4, CGFENCE_NET_HOOK_CONNECT);
}

SEC("cgroup/connect6")
int net_connect6(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 6, CGFENCE_NET_HOOK_CONNECT);
}

SEC("cgroup/sendmsg4")
int net_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 4, CGFENCE_NET_HOOK_SENDMSG);
}

SEC("cgroup/sendmsg6")
int net_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 6, CGFENCE_NET_HOOK_SENDMSG);
}
