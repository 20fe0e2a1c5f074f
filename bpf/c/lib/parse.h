/* SPDX-License-Identifier: GPL-2.0-only */
/* L3/L4 parsing with bpf_skb_load_bytes: bounds are checked by the helper,
 * so truncated packets are reported as malformed instead of read past. */
#ifndef HF_PARSE_H
#define HF_PARSE_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>

#include "common.h"

#define HF_PARSE_OK 0
#define HF_PARSE_MALFORMED -1

/* Bound on the IPv6 extension-header walk: more than this is treated as a
 * malformed (or hostile) chain. */
#define HF_IPV6_MAX_EXTHDRS 8

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define HF_NEXTHDR_HOP 0
#define HF_NEXTHDR_ROUTING 43
#define HF_NEXTHDR_FRAGMENT 44
#define HF_NEXTHDR_AUTH 51
#define HF_NEXTHDR_NONE 59
#define HF_NEXTHDR_DEST 60

/* ICMP types used here (linux/icmp.h drags in libc socket headers). */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define HF_IP_MF 0x2000
#define HF_IP_OFFSET 0x1fff

static __always_inline int hf_load(struct __sk_buff *skb, __u32 off, void *to,
				   __u32 len)
{
	return bpf_skb_load_bytes(skb, off, to, len) ? HF_PARSE_MALFORMED
						      : HF_PARSE_OK;
}

static __always_inline bool hf_is_icmp_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
		       type == ICMP_PARAMETERPROB || type == ICMP_SOURCE_QUENCH;
	return type >= 1 && type <= 4; /* unreach, too big, time exceeded, param */
}

static __always_inline bool hf_is_icmp_echo(__u8 family, __u8 type)
{
	if (family == 4)
		return type == ICMP_ECHO || type == ICMP_ECHOREPLY;
	return type == ICMPV6_ECHO_REQUEST || type == ICMPV6_ECHO_REPLY;
}

/* Ports (or ICMP type/echo id) at l4_off. Shared by the outer packet and the
 * inner header of ICMP errors, whose L4 part may be cut after 8 bytes. */
static __always_inline int hf_parse_l4(struct __sk_buff *skb, struct hf_pkt *p,
				       bool inner)
{
	__u32 off = p->l4_off;

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr th;
		if (inner) {
			__u16 ports[2];
			if (hf_load(skb, off, ports, 4))
				return HF_PARSE_MALFORMED;
			p->sport = bpf_ntohs(ports[0]);
			p->dport = bpf_ntohs(ports[1]);
			break;
		}
		if (hf_load(skb, off, &th, sizeof(th)))
			return HF_PARSE_MALFORMED;
		if (th.doff < 5)
			return HF_PARSE_MALFORMED;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->tcp_flags = ((__u8 *)&th)[13];
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* UDP and SCTP both start with source and destination port. */
		__u16 ports[2];
		if (hf_load(skb, off, ports, 4))
			return HF_PARSE_MALFORMED;
		if (p->proto == IPPROTO_UDP && !inner &&
		    skb->len < off + 8)
			return HF_PARSE_MALFORMED;
		if (p->proto == IPPROTO_SCTP && !inner &&
		    skb->len < off + 12)
			return HF_PARSE_MALFORMED;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 hdr[8];
		/* ICMP must match the IP family it travels in. */
		if ((p->proto == IPPROTO_ICMP) != (p->family == 4))
			return HF_PARSE_MALFORMED;
		if (hf_load(skb, off, hdr, 8))
			return HF_PARSE_MALFORMED;
		p->icmp_type = hdr[0];
		p->port = ((__u16)hdr[0] << 8) | hdr[1];
		if (hf_is_icmp_echo(p->family, hdr[0])) {
			__u16 id = ((__u16)hdr[4] << 8) | hdr[5];
			p->sport = id;
			p->dport = id;
		}
		if (!inner && hf_is_icmp_error(p->family, hdr[0]))
			p->icmp_error = 1;
		return HF_PARSE_OK;
	}
	default:
		/* Other protocols carry no ports: policy sees port 0. */
		return HF_PARSE_OK;
	}
	p->port = p->dport;
	return HF_PARSE_OK;
}

static __always_inline int hf_parse_ipv4(struct __sk_buff *skb, __u32 off,
					 struct hf_pkt *p, bool inner)
{
	struct iphdr ip;
	__u16 frag;

	if (hf_load(skb, off, &ip, sizeof(ip)))
		return HF_PARSE_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return HF_PARSE_MALFORMED;
	if (!inner && (bpf_ntohs(ip.tot_len) < ip.ihl * 4 ||
		       skb->len < off + bpf_ntohs(ip.tot_len)))
		return HF_PARSE_MALFORMED;

	p->family = 4;
	p->proto = ip.protocol;
	hf_map_v4(p->saddr, ip.saddr);
	hf_map_v4(p->daddr, ip.daddr);
	p->l4_off = off + ip.ihl * 4;

	frag = bpf_ntohs(ip.frag_off);
	if (frag & HF_IP_OFFSET) {
		if (inner)
			return HF_PARSE_MALFORMED;
		p->frag = HF_FRAG_LATER;
		p->frag_id = bpf_ntohs(ip.id);
		return HF_PARSE_OK; /* no L4 header in a later fragment */
	}
	if (frag & HF_IP_MF) {
		p->frag = HF_FRAG_FIRST;
		p->frag_id = bpf_ntohs(ip.id);
	}
	return hf_parse_l4(skb, p, inner);
}

static __always_inline int hf_parse_ipv6(struct __sk_buff *skb, __u32 off,
					 struct hf_pkt *p, bool inner)
{
	struct ipv6hdr ip6;
	__u8 nexthdr;
	int i;

	if (hf_load(skb, off, &ip6, sizeof(ip6)))
		return HF_PARSE_MALFORMED;
	if (ip6.version != 6)
		return HF_PARSE_MALFORMED;
	if (!inner && skb->len < off + sizeof(ip6) + bpf_ntohs(ip6.payload_len))
		return HF_PARSE_MALFORMED;

	p->family = 6;
	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	nexthdr = ip6.nexthdr;
	off += sizeof(ip6);

	for (i = 0; i < HF_IPV6_MAX_EXTHDRS; i++) {
		__u8 eh[8];

		switch (nexthdr) {
		case HF_NEXTHDR_HOP:
		case HF_NEXTHDR_ROUTING:
		case HF_NEXTHDR_DEST:
			if (hf_load(skb, off, eh, 2))
				return HF_PARSE_MALFORMED;
			nexthdr = eh[0];
			off += ((__u32)eh[1] + 1) * 8;
			continue;
		case HF_NEXTHDR_AUTH:
			if (hf_load(skb, off, eh, 2))
				return HF_PARSE_MALFORMED;
			nexthdr = eh[0];
			off += ((__u32)eh[1] + 2) * 4;
			continue;
		case HF_NEXTHDR_FRAGMENT: {
			__u16 fo;
			if (inner)
				return HF_PARSE_MALFORMED;
			if (hf_load(skb, off, eh, 8))
				return HF_PARSE_MALFORMED;
			nexthdr = eh[0];
			fo = ((__u16)eh[2] << 8) | eh[3];
			p->frag_id = ((__u32)eh[4] << 24) | ((__u32)eh[5] << 16) |
				     ((__u32)eh[6] << 8) | eh[7];
			off += 8;
			if (fo & 0xfff8) {
				p->frag = HF_FRAG_LATER;
				p->proto = nexthdr;
				p->l4_off = off;
				return HF_PARSE_OK;
			}
			if (fo & 1)
				p->frag = HF_FRAG_FIRST;
			continue;
		}
		default:
			goto done;
		}
	}
	/* Still inside the extension-header chain after the bound. */
	return HF_PARSE_MALFORMED;
done:
	p->proto = nexthdr;
	p->l4_off = off;
	if (nexthdr == HF_NEXTHDR_NONE)
		return HF_PARSE_OK;
	return hf_parse_l4(skb, p, inner);
}

#endif
