// SPDX-License-Identifier: GPL-2.0-only
/*
 * learn mode, network: the hooks of the network fence (bpf/net-fence.bpf.c), linked to a
 * learning container's cgroup, that record instead of judging. Every one of them lets
 * everything through.
 *
 *   cgroup_skb/egress, ingress   the peer address of every IP packet the container's sockets
 *                                send or receive: the fence judges every packet, so a peer
 *                                missing here would be a denial in enforce mode
 *   cgroup/connect4, connect6    destinations of connect() and of unconnected sendmsg(): the
 *   cgroup/sendmsg4, sendmsg6    fence judges these before any packet exists (a connect that
 *                                fails for want of a route sends nothing, yet is refused)
 *
 * Addresses are normalized exactly as the fence does it (IPv4-mapped IPv6 as IPv4, an
 * unspecified connect() destination as loopback), so a learned address is one the fence
 * will match. Nothing is sent to user space: peers and flows accumulate in hash maps that
 * the daemon reads when asked and at exit.
 *
 * Why cgroup local storage: as in the fence, it finds the learning container's record from
 * any socket of the cgroup or a cgroup below it with no lookup and no walk.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "cgfence-abi.h"
#include "learn-abi.h"
#include "ip-packet.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define EEXIST 17

/* cgroup_skb passes with 1; sock_addr lets the syscall go on with 1. */
#define PASS 1

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, __u64); /* cgroup id only: shared by all six attach types */
	__type(value, struct cgfence_learn_net_config);
} learn_net_cfg SEC(".maps");

/* Not preallocated: most nodes learn little, and a full map is counted, never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cgfence_learn_peer_key);
	__type(value, __u64); /* packets and calls seen */
} learn_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cgfence_learn_port_key);
	__type(value, __u64);
} learn_ports SEC(".maps");

struct flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 dir;
	__u8 has_ports;
};

/* Counts one more sighting of key in map, creating the entry the first time. */
static __always_inline int bump(void *map, void *key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(map, key);
	int err;

	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	err = bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
	/* EEXIST: another CPU created it first; one sighting fewer in a count is no loss. */
	return err == -EEXIST ? 0 : err;
}

static __always_inline void record_peer(struct cgfence_learn_net_config *cfg, struct flow *f)
{
	struct cgfence_learn_peer_key k = {};

	k.fence_id = cfg->fence_id;
	k.family = f->family;
	k.dir = f->dir;
	__builtin_memcpy(k.addr, f->dir == CGFENCE_LEARN_EGRESS ? f->daddr : f->saddr, 16);
	if (bump(&learn_peers, &k))
		__sync_fetch_and_add(&cfg->peer_drops, 1);
}

/*
 * A flow is keyed by the destination port of the packet that opened it. A packet is a reply
 * when the reverse flow is known: for an egress packet, the peer opened a flow to our source
 * port; for an ingress one, we opened a flow to the peer's source port.
 */
static __always_inline void record_flow(struct cgfence_learn_net_config *cfg, struct flow *f)
{
	struct cgfence_learn_port_key k = {};
	const __u8 *peer = f->dir == CGFENCE_LEARN_EGRESS ? f->daddr : f->saddr;

	k.fence_id = cfg->fence_id;
	k.family = f->family;
	k.proto = f->proto;
	__builtin_memcpy(k.addr, peer, 16);
	if (f->has_ports && f->sport) {
		k.dir = f->dir ^ 1;
		k.port = f->sport;
		if (bpf_map_lookup_elem(&learn_ports, &k))
			return;
	}
	k.dir = f->dir;
	k.port = f->has_ports ? f->dport : 0;
	if (bump(&learn_ports, &k))
		__sync_fetch_and_add(&cfg->port_drops, 1);
}

static __always_inline void learn(struct flow *f)
{
	struct cgfence_learn_net_config *cfg = bpf_get_local_storage(&learn_net_cfg, 0);

	if (!cfg->fence_id)
		return;
	record_peer(cfg, f);
	record_flow(cfg, f);
}

/* The IP header starts at offset 0 in cgroup_skb programs. */
static __always_inline int packet(struct __sk_buff *skb, __u8 dir)
{
	struct flow f = {};
	__u32 l4 = 0;
	__u8 frag = 0;

	f.dir = dir;
	struct ip_packet pk = {};

	if (parse_ip_packet(skb, &pk))
		return PASS; /* not IP, or unreadable: nothing the fence would judge by address */
	f.family = pk.family;
	f.proto = pk.proto;
	__builtin_memcpy(f.saddr, pk.saddr, 16);
	__builtin_memcpy(f.daddr, pk.daddr, 16);
	l4 = pk.l4;
	frag = pk.frag;
	if (!frag && (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP)) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) == 0) {
			f.sport = bpf_ntohs(ports[0]);
			f.dport = bpf_ntohs(ports[1]);
			f.has_ports = 1;
		}
	}
	learn(&f);
	return PASS;
}

SEC("cgroup_skb/egress")
int learn_egress(struct __sk_buff *skb)
{
	return packet(skb, CGFENCE_LEARN_EGRESS);
}

SEC("cgroup_skb/ingress")
int learn_ingress(struct __sk_buff *skb)
{
	return packet(skb, CGFENCE_LEARN_INGRESS);
}

/* A destination from connect()/sendmsg(), normalized as the fence's sock_addr() does. */
static __always_inline int sock_addr(struct bpf_sock_addr *ctx, __u8 family)
{
	struct flow f = {};

	f.dir = CGFENCE_LEARN_EGRESS;
	f.proto = ctx->protocol;
	f.dport = bpf_ntohs(ctx->user_port);
	f.has_ports = f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP;
	f.family = sock_addr_dest(ctx, family, f.daddr);
	learn(&f);
	return PASS;
}

SEC("cgroup/connect4")
int learn_connect4(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 4);
}

SEC("cgroup/connect6")
int learn_connect6(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 6);
}

SEC("cgroup/sendmsg4")
int learn_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 4);
}

SEC("cgroup/sendmsg6")
int learn_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_addr(ctx, 6);
}
