/* SPDX-License-Identifier: GPL-2.0-only */
/* Connection tracking. One entry per flow, keyed by its canonical tuple
 * (both directions hash to the same key); the entry remembers which way its
 * first packet went, a packet going the other way is a reply. Entries are made
 * for every flow seen, also when nothing is enforced, so that enabling a
 * policy keeps the sessions that were already running. */
#ifndef HF_CONNTRACK_H
#define HF_CONNTRACK_H

#include "common.h"
#include "maps.h"

#define HF_TCP_FIN 0x01
#define HF_TCP_SYN 0x02
#define HF_TCP_RST 0x04
#define HF_TCP_ACK 0x10

#define HF_CT_TIMEOUT_SYN (60ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_TCP (21600ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_CLOSING (10ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_OTHER (60ULL * NSEC_PER_SEC)

enum hf_ct_result {
	HF_CT_NEW = 0,
	HF_CT_ESTABLISHED_PKT, /* original direction of a known flow */
	HF_CT_REPLY_PKT,
};

/* Canonical IPv4 key; true when the packet travels from endpoint a to b.
 * The order only has to be total, so addresses compare as loaded. */
static __always_inline bool hf_ct4_key(struct hf_ct4_key *k,
				       const struct hf_pkt *p)
{
	__u32 s = *(const __u32 *)&p->saddr[12];
	__u32 d = *(const __u32 *)&p->daddr[12];
	bool a_to_b = s < d || (s == d && p->sport <= p->dport);

	*(__u32 *)k->addr_a = a_to_b ? s : d;
	*(__u32 *)k->addr_b = a_to_b ? d : s;
	k->port_a = a_to_b ? p->sport : p->dport;
	k->port_b = a_to_b ? p->dport : p->sport;
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
	return a_to_b;
}

static __always_inline bool hf_ct6_key(struct hf_ct6_key *k,
				       const struct hf_pkt *p)
{
	const __u64 *s = (const __u64 *)p->saddr;
	const __u64 *d = (const __u64 *)p->daddr;
	bool a_to_b;

	if (s[0] != d[0])
		a_to_b = s[0] < d[0];
	else if (s[1] != d[1])
		a_to_b = s[1] < d[1];
	else
		a_to_b = p->sport <= p->dport;
	if (a_to_b) {
		__builtin_memcpy(k->addr_a, p->saddr, 16);
		__builtin_memcpy(k->addr_b, p->daddr, 16);
		k->port_a = p->sport;
		k->port_b = p->dport;
	} else {
		__builtin_memcpy(k->addr_a, p->daddr, 16);
		__builtin_memcpy(k->addr_b, p->saddr, 16);
		k->port_a = p->dport;
		k->port_b = p->sport;
	}
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
	return a_to_b;
}

static __always_inline __u64 hf_ct_timeout(const struct hf_ct_val *v)
{
	switch (v->state) {
	case HF_CT_SYN_SENT:
		return HF_CT_TIMEOUT_SYN;
	case HF_CT_ESTABLISHED:
		return HF_CT_TIMEOUT_TCP;
	case HF_CT_CLOSING:
		return HF_CT_TIMEOUT_CLOSING;
	default:
		return HF_CT_TIMEOUT_OTHER;
	}
}

/* Signed: another CPU may have stored a timestamp a tick later than the
 * one this packet read; that flow is alive, not 2^64 ns old. */
static __always_inline bool hf_ct_expired(const struct hf_ct_val *v, __u64 now)
{
	return (__s64)(now - v->last_seen_ns) > (__s64)hf_ct_timeout(v);
}

/* Advance the TCP state machine for a packet of a known flow. */
static __always_inline void hf_ct_update(struct hf_ct_val *v,
					 const struct hf_pkt *p, bool reply,
					 __u64 now)
{
	v->last_seen_ns = now;
	if (reply)
		v->flags |= HF_CT_SEEN_REPLY;
	if (p->proto != IPPROTO_TCP) {
		if (reply)
			v->state = HF_CT_OTHER;
		return;
	}
	if (p->tcp_flags & HF_TCP_RST) {
		v->state = HF_CT_CLOSING;
		return;
	}
	if (p->tcp_flags & HF_TCP_FIN)
		v->flags |= reply ? HF_CT_FIN_REPLY : HF_CT_FIN_ORIG;
	if ((v->flags & (HF_CT_FIN_ORIG | HF_CT_FIN_REPLY)) ==
	    (HF_CT_FIN_ORIG | HF_CT_FIN_REPLY))
		v->state = HF_CT_CLOSING;
	else if (v->state == HF_CT_SYN_SENT && reply)
		v->state = HF_CT_ESTABLISHED;
}

/* A live entry for this packet, either direction: one lookup. */
static __always_inline struct hf_ct_val *
hf_ct_lookup(const struct hf_pkt *p, __u64 now, enum hf_ct_result *res)
{
	struct hf_ct_val *v;
	bool a_to_b;

	if (p->family == 4) {
		struct hf_ct4_key k;

		a_to_b = hf_ct4_key(&k, p);
		v = bpf_map_lookup_elem(&hf_ct4, &k);
	} else {
		struct hf_ct6_key k;

		a_to_b = hf_ct6_key(&k, p);
		v = bpf_map_lookup_elem(&hf_ct6, &k);
	}
	if (!v || hf_ct_expired(v, now)) {
		*res = HF_CT_NEW;
		return NULL;
	}
	*res = a_to_b == v->origin_a ? HF_CT_ESTABLISHED_PKT : HF_CT_REPLY_PKT;
	return v;
}

/* Whether the packet's host-side address (destination on ingress, source
 * on egress) is the flow's: true for packets in the flow's own direction on
 * the hook that created it, and for replies on the other hook. */
static __always_inline bool hf_ct_host_side(const struct hf_ct_val *v,
					    enum hf_ct_result res, __u8 dir)
{
	return (res == HF_CT_ESTABLISHED_PKT) == (dir == v->origin_dir);
}

/* The packet's host-side address is known to be a host address: it is the
 * flow's, which passed the host-address test while the host addresses were
 * at generation host_gen. The generation moves on every removal (never on
 * an addition), so no address has left the host since. */
static __always_inline bool hf_ct_host_known(const struct hf_ct_val *v,
					     enum hf_ct_result res, __u8 dir,
					     __u32 host_gen)
{
	return v->host_gen == host_gen && hf_ct_host_side(v, res, dir);
}

/* A new SYN on a closing flow reuses its tuple: start over. */
static __always_inline bool hf_ct_restarts(const struct hf_ct_val *v,
					   const struct hf_pkt *p)
{
	return p->proto == IPPROTO_TCP && v->state == HF_CT_CLOSING &&
	       (p->tcp_flags & (HF_TCP_SYN | HF_TCP_ACK)) == HF_TCP_SYN;
}

/* The established-flow fast path: a live, admitted entry whose host side
 * is known (hf_ct_host_known) is updated and the packet passes. Anything
 * else is left to the full verdict order, which looks the entry up again:
 * a second lookup for a new flow, which keeps the two paths apart for the
 * verifier (handing the entry over doubles its work). */
static __always_inline bool hf_ct_fast_pass(const struct hf_pkt *p, __u8 dir,
					    __u32 host_gen, __u64 now)
{
	enum hf_ct_result res;
	struct hf_ct_val *v;

	v = hf_ct_lookup(p, now, &res);
	if (!v || (v->flags & HF_CT_DENIED) || hf_ct_restarts(v, p) ||
	    !hf_ct_host_known(v, res, dir, host_gen))
		return false;
	hf_ct_update(v, p, res == HF_CT_REPLY_PKT, now);
	return true;
}

static __always_inline void hf_ct_create(const struct hf_pkt *p, __u32 ifindex,
					 __u8 dir, bool denied, __u32 host_gen,
					 __u64 now)
{
	struct hf_ct_val v = {
		.last_seen_ns = now,
		.ifindex = ifindex,
		.origin_dir = dir,
		.flags = denied ? HF_CT_DENIED : 0,
		.host_gen = host_gen,
	};

	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & HF_TCP_RST)
			return;
		/* A flow picked up mid-stream (no SYN) is already established. */
		v.state = (p->tcp_flags & (HF_TCP_SYN | HF_TCP_ACK)) == HF_TCP_SYN
				  ? HF_CT_SYN_SENT
				  : HF_CT_ESTABLISHED;
	} else {
		v.state = HF_CT_OTHER;
	}
	if (p->family == 4) {
		struct hf_ct4_key k;

		v.origin_a = hf_ct4_key(&k, p);
		bpf_map_update_elem(&hf_ct4, &k, &v, BPF_ANY);
	} else {
		struct hf_ct6_key k;

		v.origin_a = hf_ct6_key(&k, p);
		bpf_map_update_elem(&hf_ct6, &k, &v, BPF_ANY);
	}
}

#endif
