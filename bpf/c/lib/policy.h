/* SPDX-License-Identifier: GPL-2.0-only */
/* Host-address test, failsafe ports and the policy lookup. */
#ifndef HF_POLICY_H
#define HF_POLICY_H

#include "common.h"
#include "maps.h"

#include <linux/if_packet.h>

/* Traffic the kernel delivers to the host itself (ingress, by destination)
 * or that the host itself sends (egress, by source): what the `local`
 * routing table holds (interface addresses, directed broadcasts, anycast,
 * local routes such as `ip route add local 10.9.0.0/24 dev lo`), limited
 * broadcast, multicast and the loopback net. Anything else is forwarded and
 * passes unjudged. */
static __always_inline bool hf_is_local(struct __sk_buff *skb, __u8 dir,
					const __u8 addr[16])
{
	const __u32 *a = (const __u32 *)addr;
	const struct hf_global *g;
	struct hf_local_net_key lk;
	struct hf_addr_key k;
	__u32 zero = 0;
	/* IPv4-mapped (::ffff:0:0/96), all of the prefix: an IPv6 address
	 * that only looks like it is no IPv4 multicast or loopback. */
	bool v4 = a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);

	if (dir == HF_DIR_INGRESS) {
		/* The link-layer verdict: frames to a broadcast or multicast
		 * MAC are never forwarded, only delivered (or dropped). */
		if (skb->pkt_type == PACKET_BROADCAST ||
		    skb->pkt_type == PACKET_MULTICAST)
			return true;
		/* PACKET_OTHERHOST says nothing: a macvlan on this device
		 * takes frames to its own MAC, and delivers them locally. */
	}
	if (v4) {
		if ((addr[12] & 0xf0) == 0xe0)
			return true; /* 224.0.0.0/4 */
		if (addr[12] == 0xff && addr[13] == 0xff && addr[14] == 0xff &&
		    addr[15] == 0xff)
			return true;
		/* 127.0.0.0/8: in every local table; user space leaves it
		 * out of the maps so that the trie stays unused. */
		if (addr[12] == 127)
			return true;
	} else if (addr[0] == 0xff) {
		return true; /* ff00::/8 */
	}
	__builtin_memcpy(k.addr, addr, 16);
	if (bpf_map_lookup_elem(&hf_host_addrs, &k))
		return true;
	g = bpf_map_lookup_elem(&hf_global, &zero);
	if (!g || !(g->flags & HF_G_LOCAL_NETS))
		return false;
	lk.prefixlen = 128;
	__builtin_memcpy(lk.addr, addr, 16);
	return bpf_map_lookup_elem(&hf_local_nets, &lk) != NULL;
}

/* Failsafe ports: (direction, protocol, destination port) of a flow's
 * first packet. */
static __always_inline bool hf_failsafe_match(__u8 dir, __u8 proto, __u16 dport)
{
	struct hf_failsafe_key k = {
		.dir = dir,
		.proto = proto,
		.port = dport,
	};

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return false;
	return bpf_map_lookup_elem(&hf_failsafe, &k) != NULL;
}

/* ICMPv6 the link cannot live without: neighbour discovery, router
 * solicitation/advertisement, and MLD (multicast-snooping switches stop
 * forwarding ND to hosts that never report). Only as the RFCs send them,
 * which is also all the kernel accepts: ND with hop limit 255 (RFC 4861,
 * so it cannot come from beyond the link), MLD with hop limit 1 from a
 * link-local or the unspecified address (RFC 2710, 3810). Anything else of
 * these types is ordinary ICMPv6, judged by the policy. */
static __always_inline bool hf_is_icmpv6_infra(const struct hf_pkt *p)
{
	if (p->proto != IPPROTO_ICMPV6)
		return false;
	switch (p->icmp_type) {
	case 133: case 134: case 135: case 136: case 137: /* RS RA NS NA redirect */
		return p->hop_limit == 255;
	case 130: case 131: case 132: case 143: { /* MLD */
		const __u32 *s = (const __u32 *)p->saddr;
		bool link_local = p->saddr[0] == 0xfe && (p->saddr[1] & 0xc0) == 0x80;
		bool unspec = !(s[0] | s[1] | s[2] | s[3]);

		return p->hop_limit == 1 && (link_local || unspec);
	}
	}
	return false;
}

/* An IPv6 address that hostfwd would read as IPv4: IPv4-mapped
 * (::ffff:0:0/96, the form IPv4 takes in every map here) or
 * IPv4-compatible (::/96 but :: and ::1). No such source appears on a
 * wire legitimately; from one, a packet could pose as an IPv4 peer. */
static __always_inline bool hf_is_mapped_v6(const __u8 addr[16])
{
	const __u32 *a = (const __u32 *)addr;

	if (a[0] || a[1])
		return false;
	if (a[2] == bpf_htonl(0xffff))
		return true;
	return !a[2] && bpf_ntohl(a[3]) > 1;
}

struct hf_policy_result {
	__u8 reason; /* HF_REASON_NONE: allowed */
	__u32 rule_id;
};

/* Network-order mask of the first plen bits of a 32-bit word (plen may be
 * anything: <= 0 is none, >= 32 all). */
static __always_inline __u32 hf_mask32(int plen)
{
	if (plen <= 0)
		return 0;
	if (plen >= 32)
		return 0xffffffff;
	return bpf_htonl(0xffffffffU << (32 - plen));
}

/* Host-order mask of the first n (1..16) bits of a port. */
static __always_inline __u16 hf_port_mask(int n)
{
	return (__u16)(0xffff0000U >> n);
}

/* IPv4-mapped addresses (::ffff:a.b.c.d) are IPv4 to the policy. */
static __always_inline bool hf_addr_is_v4(const __u8 addr[16])
{
	const __u32 *a = (const __u32 *)addr;

	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Longest-prefix match of an IPv4 address (network order) over hf_ident4:
 * one exact lookup per prefix length in use. 0 when nothing matches. */
static __always_inline __u32 hf_identity4(__u32 addr, __u32 gen,
					  const struct hf_policy_meta *meta)
{
	struct hf_ident4_key k = { .gen = gen };
	__u32 i, *id;

	for (i = 0; i < HF_IDENT4_LENS; i++) {
		if (i >= meta->ident4_nlens)
			break;
		k.plen = meta->ident4_lens[i];
		*(__u32 *)k.addr = addr & hf_mask32(k.plen);
		id = bpf_map_lookup_elem(&hf_ident4, &k);
		if (id)
			return *id;
	}
	return 0;
}

static __always_inline __u32 hf_identity6(const __u8 addr[16], __u32 gen,
					  const struct hf_policy_meta *meta)
{
	const __u32 *a = (const __u32 *)addr;
	struct hf_ident6_key k = { .gen = gen };
	__u32 *w = (__u32 *)k.addr;
	__u32 i, *id;

	for (i = 0; i < HF_IDENT6_LENS; i++) {
		int plen;

		if (i >= meta->ident6_nlens)
			break;
		plen = meta->ident6_lens[i];
		k.plen = plen;
		w[0] = a[0] & hf_mask32(plen);
		w[1] = a[1] & hf_mask32(plen - 32);
		w[2] = a[2] & hf_mask32(plen - 64);
		w[3] = a[3] & hf_mask32(plen - 96);
		id = bpf_map_lookup_elem(&hf_ident6, &k);
		if (id)
			return *id;
	}
	return 0;
}

/* The longest match over the rules of (identity, dir, proto) for a port:
 * the head, then its port prefixes longest first, then what the head
 * carries; without a head, the any-protocol entry. A port in a block that
 * no prefix reaches skips the probes, which would all miss; where the head
 * has a block entry, its 16-port granules and the lengths within the block
 * narrow them further, for one lookup. */
static __always_inline const struct hf_rule_val *
hf_rule_match(struct hf_rule_key *k, __u16 port)
{
	const struct hf_rule_val *head, *blk, *v = NULL;
	__u64 block = 1ULL << (port >> HF_PORT_BLOCK_SHIFT);
	__u32 lens;
	int n;

	k->kind = HF_RK_PROTO;
	head = bpf_map_lookup_elem(&hf_rules, k);
	if (!head) {
		k->proto = 0;
		k->kind = HF_RK_ANY;
		return bpf_map_lookup_elem(&hf_rules, k);
	}
	if (!(head->port_blocks & block))
		return head->action ? head : NULL;
	lens = head->port_lens;
	if (head->port_detail & block) {
		k->kind = HF_RK_BLOCK;
		k->port = port >> HF_PORT_BLOCK_SHIFT;
		blk = bpf_map_lookup_elem(&hf_rules, k);
		/* None: the writer's bug, read as no prefix in the block. */
		if (!blk || !(blk->port_blocks &
			      (1ULL << ((port >> HF_PORT_GRANULE_SHIFT) & 63))))
			return head->action ? head : NULL;
		lens = blk->port_lens;
	}
	for (n = 16; n > 0; n--) {
		/* Key fields are set on every round, probed or not, so the
		 * verifier sees one state per round, not one per bit pattern. */
		k->kind = n;
		k->port = port & hf_port_mask(n);
		if (!(lens & (1U << (n - 1))))
			continue;
		v = bpf_map_lookup_elem(&hf_rules, k);
		if (v)
			return v;
	}
	return head->action ? head : NULL;
}

/* What the policy step looks up for one packet. */
struct hf_policy_query {
	__u8 remote[16]; /* IPv4-mapped for IPv4 */
	__u32 gen;
	__u16 port;
	__u8 dir;
	__u8 proto;
};

#define HF_MATCH(action, rule_id) ((__u64)(action) << 32 | (rule_id))

/* Both lookups of the policy step: identity = longest match of the remote
 * address, then the longest rule match for (identity, dir, proto, port).
 * Returns HF_MATCH(action, rule id) of the deciding entry, 0 if none.
 *
 * Inlined into its one caller, hf_judge_flow, a global function that the
 * verifier checks once on its own: its bounded loops (up to 129 + 16
 * rounds) are not verified again on every path that reaches the policy
 * step. */
static __always_inline __u64
hf_policy_lookup(const struct hf_policy_query *q)
{
	const struct hf_policy_meta *meta;
	const struct hf_rule_val *v;
	struct hf_rule_key k = {};
	__u32 gen;

	if (!q)
		return 0;
	gen = q->gen & 1;
	meta = bpf_map_lookup_elem(&hf_policy_meta, &gen);
	if (!meta)
		return 0;
	k.gen = gen;
	if (hf_addr_is_v4(q->remote))
		k.identity = hf_identity4(*(const __u32 *)&q->remote[12], k.gen,
					  meta);
	else
		k.identity = hf_identity6(q->remote, k.gen, meta);
	k.dir = q->dir;
	k.proto = q->proto;
	v = hf_rule_match(&k, q->port);
	return v ? HF_MATCH(v->action, v->rule_id) : 0;
}

/* The policy's verdict on a flow: the remote address (source on ingress,
 * destination on egress), direction, protocol and policy port of its
 * first packet. */
static __always_inline void hf_policy_eval(const __u8 *remote, __u8 dir,
					   __u8 proto, __u16 port, __u32 gen,
					   struct hf_policy_result *res)
{
	struct hf_policy_query q = {
		.gen = gen,
		.port = port,
		.dir = dir,
		.proto = proto,
	};
	__u64 m;

	__builtin_memcpy(q.remote, remote, 16);
	m = hf_policy_lookup(&q);
	if (!m) {
		res->reason = HF_REASON_POLICY_DENIED;
		res->rule_id = 0;
		return;
	}
	res->rule_id = (__u32)m;
	res->reason = (m >> 32) == HF_ACTION_ALLOW ? HF_REASON_NONE
						   : HF_REASON_POLICY_DENY_RULE;
}

#endif
