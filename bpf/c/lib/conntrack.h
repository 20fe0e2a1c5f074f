/* SPDX-License-Identifier: GPL-2.0-only */
/* Connection tracking. One entry per flow, keyed by the tuple of its first
 * packet; a packet matching the reversed tuple is a reply. Entries are made
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

static __always_inline void hf_ct_tuple(struct hf_ct_key *k,
					const struct hf_pkt *p, bool reverse)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (reverse) {
		__builtin_memcpy(k->saddr, p->daddr, 16);
		__builtin_memcpy(k->daddr, p->saddr, 16);
		k->sport = p->dport;
		k->dport = p->sport;
	} else {
		__builtin_memcpy(k->saddr, p->saddr, 16);
		__builtin_memcpy(k->daddr, p->daddr, 16);
		k->sport = p->sport;
		k->dport = p->dport;
	}
	k->proto = p->proto;
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

static __always_inline bool hf_ct_expired(const struct hf_ct_val *v, __u64 now)
{
	return now - v->last_seen_ns > hf_ct_timeout(v);
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

/* A live entry for this packet, either direction. */
static __always_inline struct hf_ct_val *
hf_ct_lookup(const struct hf_pkt *p, __u64 now, enum hf_ct_result *res)
{
	struct hf_ct_key k;
	struct hf_ct_val *v;

	hf_ct_tuple(&k, p, false);
	v = bpf_map_lookup_elem(&hf_conntrack, &k);
	if (v && !hf_ct_expired(v, now)) {
		*res = HF_CT_ESTABLISHED_PKT;
		return v;
	}
	hf_ct_tuple(&k, p, true);
	v = bpf_map_lookup_elem(&hf_conntrack, &k);
	if (v && !hf_ct_expired(v, now)) {
		*res = HF_CT_REPLY_PKT;
		return v;
	}
	*res = HF_CT_NEW;
	return NULL;
}

/* A new SYN on a closing flow reuses its tuple: start over. */
static __always_inline bool hf_ct_restarts(const struct hf_ct_val *v,
					   const struct hf_pkt *p)
{
	return p->proto == IPPROTO_TCP && v->state == HF_CT_CLOSING &&
	       (p->tcp_flags & (HF_TCP_SYN | HF_TCP_ACK)) == HF_TCP_SYN;
}

static __always_inline void hf_ct_create(const struct hf_pkt *p, __u32 ifindex,
					 __u8 dir, bool denied, __u64 now)
{
	struct hf_ct_key k;
	struct hf_ct_val v = {
		.last_seen_ns = now,
		.ifindex = ifindex,
		.origin_dir = dir,
		.flags = denied ? HF_CT_DENIED : 0,
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
	hf_ct_tuple(&k, p, false);
	bpf_map_update_elem(&hf_conntrack, &k, &v, BPF_ANY);
}

#endif
