/* SPDX-License-Identifier: GPL-2.0-only */
/* L3/L4 parsing. Every read is bounds-checked (hf_load), so truncated
 * packets are reported as malformed instead of read past. */
#ifndef HF_PARSE_H
#define HF_PARSE_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>

#include "common.h"

#define HF_PARSE_OK 0
#define HF_PARSE_MALFORMED -1
/* A first fragment too short to hold its L4 header: whatever the rest of
 * the datagram carries could decide the ports (RFC 1858's tiny fragment). */
#define HF_PARSE_TINY_FRAGMENT -2

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

/* skb->data and skb->data_end, read with a fixed context offset: left to
 * itself, clang may hoist "skb + offset" out of the load, which the verifier
 * rejects ("dereference of modified ctx ptr"). */
#define HF_CTX_LOAD(skb, field)                                              \
	({                                                                   \
		void *__v;                                                   \
		asm volatile("%0 = *(u32 *)(%1 + %2)"                        \
			     : "=r"(__v)                                     \
			     : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, \
								field)));    \
		__v;                                                         \
	})

/* Bound on header offsets, for the verifier's packet-pointer arithmetic. No
 * header the parser reads lies beyond ~33 KB (eight 2 KB IPv6 extension
 * headers, twice with an ICMP error's quoted packet). */
#define HF_MAX_HDR_OFF 0xff00

/* Word-wise copy out of the packet (len is a constant; buffers of a
 * multiple of 4 bytes are 4-aligned, HF_ALIGNED). Header offsets past the
 * Ethernet header are multiples of 4, so with NET_IP_ALIGN the words are
 * aligned where the architecture needs it; elsewhere (x86, arm64) the
 * verifier accepts any alignment on packet data. */
static __always_inline void hf_copy(void *to, const void *from, const __u32 len)
{
	if (len % 4 == 0) {
		__u32 *d = to;
		const __u32 *s = from;
		__u32 i;

#pragma unroll
		for (i = 0; i < len / 4; i++)
			d[i] = s[i];
	} else if (len == 2) {
		*(__u16 *)to = *(const __u16 *)from;
	} else {
		__builtin_memcpy(to, from, len);
	}
}

/* Copies the len header bytes at off into to, by direct packet access:
 * no helper call while the headers sit in the skb's linear head, which is
 * where drivers, GRO and the stack put them. Otherwise they are pulled in
 * first (bpf_skb_pull_data, which may have to un-clone the head); a packet
 * too short for them is malformed. Reading a copy keeps one parser for
 * both cases, and the two cases end in the same verifier state (with
 * bpf_skb_load_bytes as the fallback they would not: more than twice the
 * verification work). */
static __always_inline int hf_load(struct __sk_buff *skb, __u32 off, void *to,
				   const __u32 len)
{
	void *from, *end;

	if (off > HF_MAX_HDR_OFF)
		return HF_PARSE_MALFORMED;
	from = HF_CTX_LOAD(skb, data) + off;
	end = HF_CTX_LOAD(skb, data_end);
	if (from + len > end) {
		if (bpf_skb_pull_data(skb, off + len))
			return HF_PARSE_MALFORMED; /* shorter than off + len */
		from = HF_CTX_LOAD(skb, data) + off;
		end = HF_CTX_LOAD(skb, data_end);
		if (from + len > end)
			return HF_PARSE_MALFORMED;
	}
	hf_copy(to, from, len);
	return HF_PARSE_OK;
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
static __always_inline int hf_parse_l4_hdr(struct __sk_buff *skb,
					   struct hf_pkt *p, bool inner)
{
	__u32 off = p->l4_off;

	p->flow = 1;
	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr th;
		__u32 hlen;
		if (inner) {
			__u16 ports[2] HF_ALIGNED;
			if (hf_load(skb, off, ports, 4))
				return HF_PARSE_MALFORMED;
			p->sport = bpf_ntohs(ports[0]);
			p->dport = bpf_ntohs(ports[1]);
			break;
		}
		if (hf_load(skb, off, &th, sizeof(th)))
			return HF_PARSE_MALFORMED;
		hlen = th.doff * 4;
		if (hlen < sizeof(th) || off + hlen > p->l3_end)
			return HF_PARSE_MALFORMED;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->tcp_flags = ((__u8 *)&th)[13];
		p->tcp_seq = bpf_ntohl(th.seq);
		p->tcp_ack = bpf_ntohl(th.ack_seq);
		/* A later fragment is not parsed: a fragmented segment's length
		 * is its first fragment's, good enough for the window checks. */
		p->tcp_len = p->l3_end - off - hlen + !!th.syn + !!th.fin;
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* UDP and SCTP both start with source and destination port. */
		__u16 ports[2] HF_ALIGNED;
		if (hf_load(skb, off, ports, 4))
			return HF_PARSE_MALFORMED;
		if (p->proto == IPPROTO_UDP && !inner && p->l3_end < off + 8)
			return HF_PARSE_MALFORMED;
		if (p->proto == IPPROTO_SCTP && !inner && p->l3_end < off + 12)
			return HF_PARSE_MALFORMED;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 hdr[8] HF_ALIGNED;
		/* ICMP must match the IP family it travels in. */
		if ((p->proto == IPPROTO_ICMP) != (p->family == 4))
			return HF_PARSE_MALFORMED;
		if (!inner && p->l3_end < off + 8)
			return HF_PARSE_MALFORMED;
		if (hf_load(skb, off, hdr, 8))
			return HF_PARSE_MALFORMED;
		p->icmp_type = hdr[0];
		p->port = ((__u16)hdr[0] << 8) | hdr[1];
		/* Only echo is a flow (keyed by its identifier); every other
		 * ICMP message is judged on its own. */
		p->flow = hf_is_icmp_echo(p->family, hdr[0]);
		if (p->flow) {
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

static __always_inline int hf_parse_l4(struct __sk_buff *skb, struct hf_pkt *p,
				       bool inner)
{
	int rc = hf_parse_l4_hdr(skb, p, inner);

	if (rc && p->frag == HF_FRAG_FIRST)
		return HF_PARSE_TINY_FRAGMENT;
	return rc;
}

/* The outer parse sets family and addresses as soon as the fixed header is
 * read: an error after that point concerns a packet whose addresses are
 * known, and the caller passes it if it is not the host's (forwarded
 * traffic is not ours to judge, malformed or not). */
static __always_inline int hf_parse_ipv4(struct __sk_buff *skb, __u32 off,
					 struct hf_pkt *p, bool inner)
{
	struct iphdr ip;
	__u32 tot_len;
	__u16 frag;

	if (hf_load(skb, off, &ip, sizeof(ip)))
		return HF_PARSE_MALFORMED;
	if (ip.version != 4)
		return HF_PARSE_MALFORMED;
	p->family = 4;
	p->proto = ip.protocol;
	p->hop_limit = ip.ttl;
	hf_map_v4(p->saddr, ip.saddr);
	hf_map_v4(p->daddr, ip.daddr);
	if (ip.ihl < 5)
		return HF_PARSE_MALFORMED;
	p->l4_off = off + ip.ihl * 4;
	tot_len = bpf_ntohs(ip.tot_len);
	/* 0: a BIG TCP (GSO) packet longer than 64 KiB, as long as the skb. */
	p->l3_end = tot_len ? off + tot_len : skb->len;
	if (!inner && (p->l3_end < p->l4_off || skb->len < p->l3_end))
		return HF_PARSE_MALFORMED;

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

static __always_inline bool hf_is_ipv6_ext(__u8 nexthdr)
{
	return nexthdr == HF_NEXTHDR_HOP || nexthdr == HF_NEXTHDR_ROUTING ||
	       nexthdr == HF_NEXTHDR_DEST || nexthdr == HF_NEXTHDR_AUTH ||
	       nexthdr == HF_NEXTHDR_FRAGMENT;
}

/* An extension header (8 bytes at least) must lie inside the IP packet:
 * the frame may be padded beyond it. */
static __always_inline bool hf_ext_outside(const struct hf_pkt *p, __u32 off,
					   bool inner)
{
	return !inner && p->l3_end < off + 8;
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
	p->family = 6;
	p->hop_limit = ip6.hop_limit;
	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	/* 0: a jumbogram or BIG TCP packet, as long as the skb. */
	p->l3_end = ip6.payload_len ? off + sizeof(ip6) + bpf_ntohs(ip6.payload_len)
				    : skb->len;
	if (!inner && skb->len < p->l3_end)
		return HF_PARSE_MALFORMED;
	nexthdr = ip6.nexthdr;
	off += sizeof(ip6);

	for (i = 0; i < HF_IPV6_MAX_EXTHDRS; i++) {
		__u8 eh[8] HF_ALIGNED;

		switch (nexthdr) {
		case HF_NEXTHDR_HOP:
		case HF_NEXTHDR_ROUTING:
		case HF_NEXTHDR_DEST:
			if (hf_ext_outside(p, off, inner) || hf_load(skb, off, eh, 2))
				return HF_PARSE_MALFORMED;
			nexthdr = eh[0];
			off += ((__u32)eh[1] + 1) * 8;
			continue;
		case HF_NEXTHDR_AUTH:
			if (hf_ext_outside(p, off, inner) || hf_load(skb, off, eh, 2))
				return HF_PARSE_MALFORMED;
			nexthdr = eh[0];
			off += ((__u32)eh[1] + 2) * 4;
			continue;
		case HF_NEXTHDR_FRAGMENT: {
			__u16 fo;
			if (inner || hf_ext_outside(p, off, inner) ||
			    hf_load(skb, off, eh, 8))
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
	/* The bound reached: a chain that goes on is malformed (or hostile),
	 * one whose last header was the bound's is not. */
	if (hf_is_ipv6_ext(nexthdr))
		return HF_PARSE_MALFORMED;
done:
	p->proto = nexthdr;
	p->l4_off = off;
	if (nexthdr == HF_NEXTHDR_NONE)
		return HF_PARSE_OK;
	return hf_parse_l4(skb, p, inner);
}

#endif
