/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The IP header of a cgroup_skb packet (it starts at offset 0 there), read with
 * bpf_skb_load_bytes so any skb layout works. Shared by the network fence and the learn
 * recorder: what learn mode records is exactly what the fence will judge.
 */
#ifndef CGFENCE_IP_PACKET_BPF_H
#define CGFENCE_IP_PACKET_BPF_H

#define ETH_P_IP	 0x0800
#define ETH_P_IPV6	 0x86DD
#define NEXTHDR_FRAGMENT 44

struct ip_packet {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 l4; /* offset of the transport header */
	__u8 family;
	__u8 proto; /* the transport protocol, past an IPv6 fragment header */
	__u8 frag;  /* a later fragment: it carries no transport header */
};

static __always_inline int is_v4_mapped(const __u8 *a)
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return 0;
	return a[10] == 0xff && a[11] == 0xff;
}

/*
 * 0: parsed; 1: not IP (ARP and the like); -1: an IP header that cannot be read.
 * An IPv6 packet between two IPv4-mapped addresses is reported as the IPv4 packet it is,
 * the way the connect hooks see it.
 */
static __always_inline int parse_ip_packet(struct __sk_buff *skb, struct ip_packet *p)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		p->family = 4;
		p->proto = ip.protocol;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		p->l4 = ip.ihl * 4;
		p->frag = (ip.frag_off & bpf_htons(0x1fff)) != 0;
		return 0;
	}
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return 1;

	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
		return -1;
	p->family = 6;
	p->proto = ip6.nexthdr;
	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	p->l4 = sizeof(ip6);
	if (p->proto == NEXTHDR_FRAGMENT) {
		struct frag_hdr fh;

		if (bpf_skb_load_bytes(skb, p->l4, &fh, sizeof(fh)) == 0) {
			p->proto = fh.nexthdr;
			p->frag = (fh.frag_off & bpf_htons(0xfff8)) != 0;
			p->l4 += sizeof(fh);
		}
	}
	if (is_v4_mapped(p->saddr) && is_v4_mapped(p->daddr)) {
		p->family = 4;
		__builtin_memmove(p->saddr, p->saddr + 12, 4);
		__builtin_memmove(p->daddr, p->daddr + 12, 4);
		__builtin_memset(p->saddr + 4, 0, 12);
		__builtin_memset(p->daddr + 4, 0, 12);
	}
	return 0;
}

/*
 * The destination of a connect/sendmsg as the packet hooks will see it: an IPv4-mapped
 * IPv6 address is the IPv4 address, and the unspecified address (0.0.0.0, ::) is loopback,
 * where the kernel sends it. Writes the address to daddr (4 or 16 bytes), returns the family.
 */
static __always_inline __u8 sock_addr_dest(struct bpf_sock_addr *ctx, int family, __u8 *daddr)
{
	if (family == 4) {
		__u32 a = ctx->user_ip4;

		if (a == 0)
			a = bpf_htonl(0x7f000001);
		__builtin_memcpy(daddr, &a, 4);
		return 4;
	}

	__u32 a[4];

	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
		if (a[3] == 0)
			a[3] = bpf_htonl(0x7f000001);
		__builtin_memcpy(daddr, &a[3], 4);
		return 4;
	}
	if ((a[0] | a[1] | a[2] | a[3]) == 0)
		a[3] = bpf_htonl(1);
	__builtin_memcpy(daddr, a, 16);
	return 6;
}

#endif /* CGFENCE_IP_PACKET_BPF_H */
