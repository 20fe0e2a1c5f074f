// SPDX-License-Identifier: GPL-2.0-only
/* hostfwd datapath: one entry program per hook. The verdict order is the
 * design's §5, step by step; every drop goes through hf_drop() with a named
 * reason from lib/drop_reasons.h. */

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/vlan.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/events.h"

char LICENSE[] SEC("license") = "GPL";

struct hf_ctx {
	const struct hf_global *g;
	__u64 now; /* hf_now() */
	__u32 ifindex;
	__u32 link_flags;
	__u32 gen;
	__u32 host_gen; /* hf_global.host_gen, read before the host test */
	__u32 epoch;    /* hf_global.epoch */
	__u8 dir;
	__u8 enforce; /* 1 << HF_DIR_*: directions this link and policy enforce */
	bool audit;
};

struct hf_verdict {
	__u8 reason; /* HF_REASON_NONE: pass */
	__u32 rule_id;
};

/* In audit mode every drop becomes a pass, still counted and reported. */
static __always_inline int hf_drop(const struct hf_ctx *c,
				   struct __sk_buff *skb,
				   const struct hf_pkt *p, __u8 reason,
				   __u32 rule_id)
{
	hf_count(c->ifindex, c->dir, reason, c->audit);
	hf_emit(c->g, skb, p, c->dir, reason, rule_id, c->audit, c->now);
	return c->audit ? HF_PASS : HF_DROP;
}

static __always_inline void hf_frag_key(struct hf_frag_key *k,
					const struct hf_pkt *p)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, p->saddr, 16);
	__builtin_memcpy(k->daddr, p->daddr, 16);
	k->id = p->frag_id;
	k->proto = p->proto;
}

/* An ICMP error passes when the packet it quotes (at inner_off) belongs to
 * a tracked, admitted flow: PMTU discovery and unreachables keep working
 * under default deny. A global function, verified once on its own rather
 * than on every path that reaches step 5 (its parser is a second copy of
 * the outer one). */
__attribute__((noinline)) int hf_icmp_related(struct __sk_buff *skb,
					      __u32 family, __u32 inner_off,
					      __u64 now)
{
	struct hf_pkt inner = {};
	enum hf_ct_result res;
	struct hf_ct_val *v;
	int rc;

	if (family == 4)
		rc = hf_parse_ipv4(skb, inner_off, &inner, true);
	else
		rc = hf_parse_ipv6(skb, inner_off, &inner, true);
	if (rc || !inner.flow)
		return 0;
	v = hf_ct_lookup(&inner, -1, now, &res);
	return v && !(v->flags & HF_CT_DENIED);
}

/* Steps 7 and 8 for a flow, given as its first packet. */
struct hf_judge_query {
	__u8 remote[16]; /* source on ingress, destination on egress */
	__u32 gen;
	__u16 port;  /* policy port */
	__u16 dport; /* failsafe port */
	__u8 dir;
	__u8 proto;
	__u8 enforce; /* hf_ctx.enforce */
	__u8 pad;
};

/* The policy where the direction is enforced; a flow it denies passes
 * still if it matches a failsafe port. Failsafe ports only ever turn a drop
 * into a pass, so they are looked up only for a drop: an allowed flow pays
 * one hash lookup less. Returns reason << 32 | rule id. A global function,
 * verified once on its own (with the policy lookup inlined in it): each
 * caller's paths then pay one call, not its branches. */
__attribute__((noinline)) __u64 hf_judge_flow(const struct hf_judge_query *q)
{
	struct hf_policy_result pol;

	if (!q)
		return 0;
	if (!(q->enforce & (1 << (q->dir & 1))))
		return 0;
	hf_policy_eval(q->remote, q->dir, q->proto, q->port, q->gen, &pol);
	if (pol.reason == HF_REASON_NONE ||
	    hf_failsafe_match(q->dir, q->proto, q->dport))
		return 0;
	return (__u64)pol.reason << 32 | pol.rule_id;
}

static __always_inline void hf_judge(const struct hf_ctx *c,
				     const __u8 *remote, __u8 dir, __u8 proto,
				     __u16 port, __u16 dport,
				     struct hf_verdict *out)
{
	struct hf_judge_query q = {
		.gen = c->gen,
		.port = port,
		.dport = dport,
		.dir = dir,
		.proto = proto,
		.enforce = c->enforce,
	};
	__u64 r;

	__builtin_memcpy(q.remote, remote, 16);
	r = hf_judge_flow(&q);
	out->reason = r >> 32;
	out->rule_id = (__u32)r;
}

/* no_entry: the fast path looked and found no entry in either map. */
static __always_inline void hf_decide(struct __sk_buff *skb,
				      const struct hf_ctx *c,
				      const struct hf_pkt *p, bool no_entry,
				      struct hf_verdict *out)
{
	enum hf_ct_result res = HF_CT_NEW;
	struct hf_ct_val *ct = NULL;

	out->reason = HF_REASON_NONE;
	out->rule_id = 0;

	/* 5. Link infrastructure and errors about our own flows. */
	if (hf_is_icmpv6_infra(p))
		return;
	if (p->icmp_error &&
	    hf_icmp_related(skb, p->family, p->l4_off + 8, c->now))
		return;

	/* 6. Established flows and replies. */
	if (p->flow && !no_entry)
		ct = hf_ct_lookup(p, hf_host_port(p, c->dir), c->now, &res);
	if (ct && hf_ct_restarts(ct, p))
		ct = NULL;
	if (ct) {
		bool reply = res == HF_CT_REPLY_PKT;

		hf_ct_update(ct, p, reply, c->now);
		/* The address just passed the host test: remember for which
		 * generation of host addresses (see hf_ct_host_known). */
		if (hf_ct_host_side(ct, res, c->dir))
			ct->host_gen = c->host_gen;
		if (!(ct->flags & HF_CT_DENIED) && ct->epoch == c->epoch)
			return;
		/* What decides has changed since the flow's last verdict (or
		 * that verdict was a drop): judge the flow again, as its first
		 * packet, whichever way this one goes. A reply is never judged
		 * as a flow of its own: that would let an open egress admit
		 * what ingress denies. */
		hf_judge(c,
			 ct->origin_dir == HF_DIR_INGRESS
				 ? (reply ? p->daddr : p->saddr)
				 : (reply ? p->saddr : p->daddr),
			 ct->origin_dir, p->proto, ct->pol_port,
			 reply ? p->sport : p->dport, out);
		ct->epoch = c->epoch;
		if (out->reason == HF_REASON_NONE)
			ct->flags &= ~HF_CT_DENIED;
		else
			ct->flags |= HF_CT_DENIED;
		return;
	}

	/* 7./8. A new flow. */
	hf_judge(c, c->dir == HF_DIR_INGRESS ? p->saddr : p->daddr, c->dir,
		 p->proto, p->port, p->dport, out);
	if (!p->flow || (out->reason != HF_REASON_NONE && !c->audit))
		return;
	/* Audit keeps tracking a denied flow, marked so it admits nothing.
	 * An admitted flow that cannot be tracked is dropped: its replies
	 * would be judged as flows of their own. */
	if (hf_ct_create(p, c->ifindex, c->dir, out->reason != HF_REASON_NONE,
			 c->host_gen, c->epoch, c->now) &&
	    out->reason == HF_REASON_NONE)
		out->reason = HF_REASON_CONNTRACK_FULL;
}

/* Packet time (CLOCK_MONOTONIC in ns, to a tick) for conntrack, fragments
 * and the event budget, whose timeouts are seconds. Jiffies cost nothing
 * (the JIT inlines bpf_jiffies64; bpf_ktime_get_ns() is a helper call and a
 * clocksource read, a large share of an established packet's cost); user
 * space supplies the tick length and the boot value of jiffies. Without
 * them, the coarse clock: the same clock to within a tick or so. Events
 * take their own precise timestamp. */
static __always_inline __u64 hf_now(const struct hf_global *g)
{
	if (g->tick_ns)
		return (bpf_jiffies64() - g->jiffies_epoch) * g->tick_ns;
	return bpf_ktime_get_coarse_ns();
}

/* Flags of a configured link, or 0 (HF_L_CONFIGURED is never 0 for one). */
static __always_inline __u32 hf_link_flags(__u32 ifindex)
{
	struct hf_link *link;

	if (ifindex < HF_LINK_SLOTS) {
		link = bpf_map_lookup_elem(&hf_link_slots, &ifindex);
		return link ? link->flags : 0;
	}
	link = bpf_map_lookup_elem(&hf_links, &ifindex);
	return link ? link->flags | HF_L_CONFIGURED : 0;
}

/* First fragments leave their verdict here for the later ones for as long
 * as the kernel keeps an IPv4 datagram in reassembly (ipfrag_time). */
#define HF_FRAG_TIMEOUT (30ULL * NSEC_PER_SEC)

static __always_inline int hf_handle(struct __sk_buff *skb, const __u8 dir)
{
	struct hf_policy_meta *meta;
	struct hf_frag_val *fv;
	struct hf_frag_key fk;
	struct hf_verdict v;
	struct hf_pkt p = {};
	struct hf_l2 l2;
	struct hf_ctx c;
	int fast = HF_FAST_ENTRY;
	__u32 zero = 0;
	int rc;

	c.ifindex = skb->ifindex;
	c.g = bpf_map_lookup_elem(&hf_global, &zero);
	if (!c.g)
		return HF_PASS;
	/* Attached but not (or no longer) configured: not ours to judge. */
	c.link_flags = hf_link_flags(c.ifindex);
	if (!(c.link_flags & HF_L_CONFIGURED))
		return HF_PASS;
	c.dir = dir;
	c.now = hf_now(c.g);
	c.audit = (c.g->flags & HF_G_AUDIT) || (c.link_flags & HF_L_AUDIT);

	/* 1. VLAN admission. */
	if (hf_parse_l2(skb, &l2))
		return hf_drop(&c, skb, &p, HF_REASON_MALFORMED, 0);
	p.vid = l2.vid;
	if (l2.vid) {
		if (hf_vlan_allowed(c.ifindex, c.link_flags, l2.vid))
			return HF_PASS;
		return hf_drop(&c, skb, &p, HF_REASON_VLAN_FILTERED, 0);
	}

	/* 2./3. Non-IP passes unless configured otherwise; IP is parsed. */
	if (l2.ethertype == ETH_P_IP)
		rc = hf_parse_ipv4(skb, l2.l3_off, &p, false);
	else if (l2.ethertype == ETH_P_IPV6)
		rc = hf_parse_ipv6(skb, l2.l3_off, &p, false);
	else if (c.g->flags & HF_G_DROP_NON_IP)
		return hf_drop(&c, skb, &p, HF_REASON_NON_IP, 0);
	else
		return HF_PASS;
	/* Without addresses there is no telling whose it is; the kernel
	 * drops such a packet as well. */
	if (rc && !p.family)
		return hf_drop(&c, skb, &p, HF_REASON_MALFORMED, 0);

	/* 6, ahead of 4: the established-flow fast path. A packet of an
	 * admitted flow passes on one conntrack lookup, skipping the
	 * host-address test when its entry vouches for it: the packet's host
	 * side is the flow's, which passed that test under the current
	 * generation of host addresses (hf_ct_host_known), and the flow's
	 * verdict is of the current epoch. Verdict and conntrack updates are
	 * exactly those of the full order below; the price is a conntrack
	 * lookup for forwarded traffic. Fragments, ICMP errors and neighbour
	 * discovery always take the full order. */
	c.host_gen = c.g->host_gen;
	c.epoch = c.g->epoch;
	if (!rc && p.frag == HF_FRAG_NONE && p.flow && !p.icmp_error) {
		fast = hf_ct_fast_pass(&p, dir, c.host_gen, c.epoch, c.now);
		if (fast == HF_FAST_PASS)
			return HF_PASS;
	}

	/* 4. Only traffic to (ingress) or from (egress) the host itself;
	 * anything else is forwarded, malformed or not, and not ours. */
	if (!hf_is_local(skb, dir, dir == HF_DIR_INGRESS ? p.daddr : p.saddr))
		return HF_PASS;
	if (rc)
		return hf_drop(&c, skb, &p,
			       rc == HF_PARSE_TINY_FRAGMENT ? HF_REASON_FRAGMENT
							    : HF_REASON_MALFORMED,
			       0);
	if (p.family == 6 &&
	    hf_is_mapped_v6(dir == HF_DIR_INGRESS ? p.saddr : p.daddr))
		return hf_drop(&c, skb, &p, HF_REASON_MAPPED_ADDRESS, 0);

	c.gen = c.g->policy_gen & 1;
	c.enforce = 0;
	meta = bpf_map_lookup_elem(&hf_policy_meta, &c.gen);
	if (meta) {
		if ((c.link_flags & HF_L_ENFORCE_INGRESS) &&
		    (meta->flags & HF_P_ENFORCE_INGRESS))
			c.enforce |= 1 << HF_DIR_INGRESS;
		if ((c.link_flags & HF_L_ENFORCE_EGRESS) &&
		    (meta->flags & HF_P_ENFORCE_EGRESS))
			c.enforce |= 1 << HF_DIR_EGRESS;
	}

	/* Non-first fragments follow their first fragment. One that comes
	 * first (a balance-rr bond reorders) goes on to the kernel's
	 * reassembly, which cannot complete without the first fragment, and
	 * that one is judged here; Linux discards a datagram whose fragments
	 * overlap, so no later fragment can rewrite the judged L4 header. */
	if (p.frag == HF_FRAG_LATER) {
		hf_frag_key(&fk, &p);
		fv = bpf_map_lookup_elem(&hf_frags, &fk);
		if (!fv || (__s64)(c.now - fv->ts_ns) > (__s64)HF_FRAG_TIMEOUT ||
		    fv->reason == HF_REASON_NONE)
			return HF_PASS;
		return hf_drop(&c, skb, &p, fv->reason, fv->rule_id);
	}

	hf_decide(skb, &c, &p, fast == HF_FAST_MISS, &v);

	if (p.frag == HF_FRAG_FIRST) {
		struct hf_frag_val val = {
			.ts_ns = c.now,
			.rule_id = v.rule_id,
			.reason = v.reason,
		};
		hf_frag_key(&fk, &p);
		bpf_map_update_elem(&hf_frags, &fk, &val, BPF_ANY);
	}
	if (v.reason == HF_REASON_NONE)
		return HF_PASS;
	return hf_drop(&c, skb, &p, v.reason, v.rule_id);
}

SEC("tcx/ingress")
int hf_ingress(struct __sk_buff *skb)
{
	return hf_handle(skb, HF_DIR_INGRESS);
}

SEC("tcx/egress")
int hf_egress(struct __sk_buff *skb)
{
	return hf_handle(skb, HF_DIR_EGRESS);
}
