/* SPDX-License-Identifier: GPL-2.0-only */
/* Connection tracking. One entry per flow, keyed by its canonical tuple
 * (both directions hash to the same key); the entry remembers which way its
 * first packet went, a packet going the other way is a reply. Entries are made
 * for every flow seen, also when nothing is enforced, so that enabling a
 * policy keeps the sessions that were already running.
 *
 * What an attacker can and cannot do with it:
 * - Flows the host started live in their own maps (hf_ct*_out), so no
 *   inbound flood can evict them.
 * - Nothing from outside becomes "established" by itself: a SYN needs the
 *   host's SYN-ACK and then the final ACK; a packet picked up mid-stream
 *   (a session older than the daemon) needs an answer from the other side.
 *   Until then an entry is unreplied and expires within 30 s.
 * - An RST closes a flow only with the exact sequence number the receiver
 *   expects (RFC 5961's rule, which Linux applies too), a FIN only inside
 *   the tracked window: an off-path sender cannot tear flows down.
 * - An entry holds the epoch of its last verdict; after any change of
 *   policy, audit or failsafe the flow is judged again (hostfwd.bpf.c). */
#ifndef HF_CONNTRACK_H
#define HF_CONNTRACK_H

#include "common.h"
#include "maps.h"

#define HF_TCP_FIN 0x01
#define HF_TCP_SYN 0x02
#define HF_TCP_RST 0x04
#define HF_TCP_ACK 0x10

#define HF_CT_TIMEOUT_UNREPLIED (30ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_SYN_RECV (60ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_TCP (21600ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_CLOSING (10ULL * NSEC_PER_SEC)
#define HF_CT_TIMEOUT_OTHER (60ULL * NSEC_PER_SEC)

/* How far (in sequence space) a segment may lie from the tracked next
 * sequence number and still move it or carry a FIN that counts. Segments
 * reach the host through this hook in order but for reordering, so a
 * legitimate sender stays far inside it; a blind guess hits it with
 * probability 2^-8 at best, and a FIN alone closes nothing. */
#define HF_TCP_WINDOW (1U << 24)

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
	case HF_CT_ESTABLISHED:
		return HF_CT_TIMEOUT_TCP;
	case HF_CT_SYN_RECV:
		return HF_CT_TIMEOUT_SYN_RECV;
	case HF_CT_CLOSING:
		return HF_CT_TIMEOUT_CLOSING;
	case HF_CT_OTHER:
		if (v->flags & HF_CT_SEEN_REPLY)
			return HF_CT_TIMEOUT_OTHER;
		return HF_CT_TIMEOUT_UNREPLIED;
	default: /* SYN_SENT, PICKUP */
		return HF_CT_TIMEOUT_UNREPLIED;
	}
}

/* Signed: another CPU may have stored a timestamp a tick later than the
 * one this packet read; that flow is alive, not 2^64 ns old. */
static __always_inline bool hf_ct_expired(const struct hf_ct_val *v, __u64 now)
{
	return (__s64)(now - v->last_seen_ns) > (__s64)hf_ct_timeout(v);
}

static __always_inline bool hf_seq_within(__u32 seq, __u32 ref)
{
	__s32 d = (__s32)(seq - ref);

	return d >= -(__s32)HF_TCP_WINDOW && d <= (__s32)HF_TCP_WINDOW;
}

/* Moves the next sequence number expected from side s (0 origin, 1
 * responder) to the end of this segment, if it lies ahead inside the
 * window; the first segment seen from s sets it. Returns the segment's end. */
static __always_inline __u32 hf_ct_advance_seq(struct hf_ct_val *v,
					       const struct hf_pkt *p, __u32 s)
{
	__u32 known = s ? HF_CT_SEQ_REPLY : HF_CT_SEQ_ORIG;
	__u32 end = p->tcp_seq + p->tcp_len;

	if (!(v->flags & known)) {
		v->seq_next[s & 1] = end;
		v->flags |= known;
	} else if ((__s32)(end - v->seq_next[s & 1]) > 0 &&
		   hf_seq_within(end, v->seq_next[s & 1])) {
		v->seq_next[s & 1] = end;
	}
	return end;
}

/* Whether an RST from side s (0 origin, 1 responder) may close the flow:
 * its sequence number is exactly the one expected from s (what the
 * receiver itself requires), or, answering a SYN, it acknowledges the SYN.
 * Without anything tracked from s yet there is nothing to check. */
static __always_inline bool hf_ct_rst_fits(const struct hf_ct_val *v,
					   const struct hf_pkt *p, __u32 s)
{
	__u32 known = s ? HF_CT_SEQ_REPLY : HF_CT_SEQ_ORIG;

	if (v->state == HF_CT_SYN_SENT && s)
		return (p->tcp_flags & HF_TCP_ACK) && p->tcp_ack == v->seq_next[0];
	if (!(v->flags & known))
		return true;
	return p->tcp_seq == v->seq_next[s & 1];
}

/* Advance the TCP state machine for a packet of a known flow. A global
 * function: the verifier checks its branches once, on their own, instead
 * of on every path of the two callers (the fast path and the full order). */
__attribute__((noinline)) int hf_ct_update(struct hf_ct_val *v,
					   const struct hf_pkt *p, __u32 reply,
					   __u64 now)
{
	__u32 s = !!reply;
	__u8 flags;
	__u32 end;

	if (!v || !p)
		return 0;
	flags = p->tcp_flags;
	if (p->proto != IPPROTO_TCP) {
		v->last_seen_ns = now;
		if (reply)
			v->flags |= HF_CT_SEEN_REPLY;
		return 0;
	}
	if (flags & HF_TCP_RST) {
		/* One that does not fit changes nothing, not even the
		 * entry's age: the endpoint will ignore it as well. */
		if (hf_ct_rst_fits(v, p, s)) {
			v->state = HF_CT_CLOSING;
			v->last_seen_ns = now;
		}
		return 0;
	}
	v->last_seen_ns = now;
	end = hf_ct_advance_seq(v, p, s);
	if ((flags & HF_TCP_FIN) && hf_seq_within(end, v->seq_next[s & 1]))
		v->flags |= reply ? HF_CT_FIN_REPLY : HF_CT_FIN_ORIG;

	if (reply)
		v->flags |= HF_CT_SEEN_REPLY;
	if ((v->flags & (HF_CT_FIN_ORIG | HF_CT_FIN_REPLY)) ==
	    (HF_CT_FIN_ORIG | HF_CT_FIN_REPLY)) {
		v->state = HF_CT_CLOSING;
		return 0;
	}
	switch (v->state) {
	case HF_CT_SYN_SENT:
		if (reply && (flags & (HF_TCP_SYN | HF_TCP_ACK)) ==
				     (HF_TCP_SYN | HF_TCP_ACK))
			v->state = HF_CT_SYN_RECV;
		break;
	case HF_CT_SYN_RECV:
		if (!reply && (flags & (HF_TCP_SYN | HF_TCP_ACK)) == HF_TCP_ACK)
			v->state = HF_CT_ESTABLISHED;
		break;
	case HF_CT_PICKUP:
		if (reply)
			v->state = HF_CT_ESTABLISHED;
		break;
	}
	return 0;
}

/* The map a flow lives in: the host's own (_out) or the others'. Each map
 * gets a call site of its own (HF_LOOKUP). */
static __always_inline struct hf_ct_val *hf_ct_find(const struct hf_pkt *p,
						    bool out, bool *a_to_b)
{
	if (p->family == 4) {
		struct hf_ct4_key k;

		*a_to_b = hf_ct4_key(&k, p);
		if (out)
			return HF_LOOKUP(&hf_ct4_out, &k);
		return HF_LOOKUP(&hf_ct4, &k);
	} else {
		struct hf_ct6_key k;

		*a_to_b = hf_ct6_key(&k, p);
		if (out)
			return HF_LOOKUP(&hf_ct6_out, &k);
		return HF_LOOKUP(&hf_ct6, &k);
	}
}

/* A live entry for this packet, either direction. Two maps may hold it;
 * which to try first is a guess that only costs time when wrong: a host
 * port in the ephemeral range (Linux: 32768 and up) suggests a flow the
 * host started. host_port < 0: no guess (ICMP errors' inner packets). */
static __always_inline struct hf_ct_val *
hf_ct_lookup(const struct hf_pkt *p, int host_port, __u64 now,
	     enum hf_ct_result *res)
{
	bool out_first = host_port >= 32768;
	struct hf_ct_val *v;
	bool a_to_b;

	v = hf_ct_find(p, out_first, &a_to_b);
	if (!v || hf_ct_expired(v, now))
		v = hf_ct_find(p, !out_first, &a_to_b);
	if (!v || hf_ct_expired(v, now)) {
		*res = HF_CT_NEW;
		return NULL;
	}
	*res = a_to_b == v->origin_a ? HF_CT_ESTABLISHED_PKT : HF_CT_REPLY_PKT;
	return v;
}

/* The host-side port of a packet: destination on ingress, source on egress. */
static __always_inline int hf_host_port(const struct hf_pkt *p, __u8 dir)
{
	return dir == HF_DIR_INGRESS ? p->dport : p->sport;
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

/* What most packets of a flow need of hf_ct_update, inline: nothing that
 * changes the state (an established TCP segment without SYN, FIN or RST,
 * or any packet of another protocol). False: call hf_ct_update. */
static __always_inline bool hf_ct_touch(struct hf_ct_val *v,
					const struct hf_pkt *p, bool reply,
					__u64 now)
{
	if (p->proto != IPPROTO_TCP) {
		v->last_seen_ns = now;
		if (reply)
			v->flags |= HF_CT_SEEN_REPLY;
		return true;
	}
	if (v->state != HF_CT_ESTABLISHED ||
	    (p->tcp_flags & (HF_TCP_SYN | HF_TCP_FIN | HF_TCP_RST)))
		return false;
	v->last_seen_ns = now;
	hf_ct_advance_seq(v, p, reply);
	return true;
}

#define HF_FAST_PASS 1   /* passed on the entry */
#define HF_FAST_ENTRY 0  /* an entry exists: the full order decides */
#define HF_FAST_MISS -1  /* no entry in either map */

/* The established-flow fast path: a live entry whose last verdict was a
 * pass under the epoch in force, and whose host side is known
 * (hf_ct_host_known), is updated and the packet passes. Anything else is
 * left to the full verdict order, which looks the entry up again: a second
 * lookup when one exists, which keeps the two paths apart for the verifier
 * (handing the entry over doubles its work); a miss it is told about. */
static __always_inline int hf_ct_fast_pass(const struct hf_pkt *p, __u8 dir,
					   __u32 host_gen, __u32 epoch,
					   __u64 now)
{
	enum hf_ct_result res;
	struct hf_ct_val *v;
	bool reply;

	v = hf_ct_lookup(p, hf_host_port(p, dir), now, &res);
	if (!v)
		return HF_FAST_MISS;
	if ((v->flags & HF_CT_DENIED) || v->epoch != epoch ||
	    hf_ct_restarts(v, p) || !hf_ct_host_known(v, res, dir, host_gen))
		return HF_FAST_ENTRY;
	reply = res == HF_CT_REPLY_PKT;
	if (!hf_ct_touch(v, p, reply, now))
		hf_ct_update(v, p, reply, now);
	return HF_FAST_PASS;
}

/* Whether a new flow goes into the host's own map: it started on egress,
 * and for TCP not with an answer (a SYN-ACK or RST leaving the host answers
 * a flow from outside whose entry is gone, and belongs with those). */
static __always_inline bool hf_ct_is_hosts(const struct hf_pkt *p, __u8 dir)
{
	if (dir != HF_DIR_EGRESS)
		return false;
	return p->proto != IPPROTO_TCP ||
	       (p->tcp_flags & (HF_TCP_SYN | HF_TCP_ACK)) != (HF_TCP_SYN | HF_TCP_ACK);
}

/* Tracks a new flow from its first packet. Returns 0, or the map update's
 * error (the caller drops: a flow it cannot track, it cannot let answer). */
static __always_inline int hf_ct_create(const struct hf_pkt *p, __u32 ifindex,
					__u8 dir, bool denied, __u32 host_gen,
					__u32 epoch, __u64 now)
{
	bool out = hf_ct_is_hosts(p, dir);
	struct hf_ct_val v = {
		.last_seen_ns = now,
		.ifindex = ifindex,
		.origin_dir = dir,
		.flags = denied ? HF_CT_DENIED : 0,
		.host_gen = host_gen,
		.epoch = epoch,
		.pol_port = p->port,
	};

	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & HF_TCP_RST)
			return 0; /* nothing to track */
		v.state = (p->tcp_flags & (HF_TCP_SYN | HF_TCP_ACK)) == HF_TCP_SYN
				  ? HF_CT_SYN_SENT
				  : HF_CT_PICKUP;
		v.seq_next[0] = p->tcp_seq + p->tcp_len;
		v.flags |= HF_CT_SEQ_ORIG;
	} else {
		v.state = HF_CT_OTHER;
	}
	if (p->family == 4) {
		struct hf_ct4_key k;

		v.origin_a = hf_ct4_key(&k, p);
		if (out)
			return HF_UPDATE(&hf_ct4_out, &k, &v);
		return HF_UPDATE(&hf_ct4, &k, &v);
	} else {
		struct hf_ct6_key k;

		v.origin_a = hf_ct6_key(&k, p);
		if (out)
			return HF_UPDATE(&hf_ct6_out, &k, &v);
		return HF_UPDATE(&hf_ct6, &k, &v);
	}
}

#endif
