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
	__u8 dir;
	bool audit;
	bool enforced;
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
	if (rc)
		return 0;
	v = hf_ct_lookup(&inner, now, &res);
	return v && !(v->flags & HF_CT_DENIED);
}

static __always_inline void hf_decide(struct __sk_buff *skb,
				      const struct hf_ctx *c,
				      const struct hf_pkt *p,
				      struct hf_verdict *out)
{
	struct hf_policy_result pol;
	enum hf_ct_result res;
	struct hf_ct_val *ct;

	out->reason = HF_REASON_NONE;
	out->rule_id = 0;

	/* 5. Link infrastructure and errors about our own flows. */
	if (hf_is_icmpv6_infra(p))
		return;
	if (p->icmp_error &&
	    hf_icmp_related(skb, p->family, p->l4_off + 8, c->now))
		return;

	/* 6. Established flows and replies. */
	ct = hf_ct_lookup(p, c->now, &res);
	if (ct && hf_ct_restarts(ct, p))
		ct = NULL;
	if (ct) {
		hf_ct_update(ct, p, res == HF_CT_REPLY_PKT, c->now);
		/* The address just passed the host test: remember for which
		 * generation of host addresses (see hf_ct_host_known). */
		if (hf_ct_host_side(ct, res, c->dir))
			ct->host_gen = c->host_gen;
		if (!(ct->flags & HF_CT_DENIED))
			return;
	}

	/* 7. Failsafe ports. */
	if (hf_failsafe_match(p, c->dir))
		goto admit;

	/* 8. Policy, where this direction is enforced. */
	if (!c->enforced)
		goto admit;
	hf_policy_eval(p, c->dir, c->gen, &pol);
	if (pol.reason == HF_REASON_NONE)
		goto admit;

	out->reason = pol.reason;
	out->rule_id = pol.rule_id;
	/* Audit keeps tracking the flow, marked so it never admits anything. */
	if (c->audit && !ct)
		hf_ct_create(p, c->ifindex, c->dir, true, c->host_gen, c->now);
	return;

admit:
	if (ct)
		ct->flags &= ~HF_CT_DENIED;
	else
		hf_ct_create(p, c->ifindex, c->dir, false, c->host_gen, c->now);
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

static __always_inline int hf_handle(struct __sk_buff *skb, const __u8 dir)
{
	struct hf_policy_meta *meta;
	struct hf_frag_val *fv;
	struct hf_frag_key fk;
	struct hf_verdict v;
	struct hf_pkt p = {};
	struct hf_l2 l2;
	struct hf_ctx c;
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
	if (rc)
		return hf_drop(&c, skb, &p, HF_REASON_MALFORMED, 0);

	/* 6, ahead of 4: the established-flow fast path. A packet of an
	 * admitted flow passes on one conntrack lookup, skipping the
	 * host-address test when its entry vouches for it: the packet's host
	 * side is the flow's, which passed that test under the current
	 * generation of host addresses (hf_ct_host_known). Verdict and
	 * conntrack updates are exactly those of the full order below; the
	 * price is one conntrack lookup for forwarded traffic. Fragments, ICMP
	 * errors and neighbour discovery always take the full order. */
	c.host_gen = c.g->host_gen;
	if (p.frag == HF_FRAG_NONE && !p.icmp_error && !hf_is_icmpv6_infra(&p) &&
	    hf_ct_fast_pass(&p, dir, c.host_gen, c.now))
		return HF_PASS;

	/* 4. Only traffic to (ingress) or from (egress) the host itself. */
	if (!hf_is_local(skb, dir, dir == HF_DIR_INGRESS ? p.daddr : p.saddr))
		return HF_PASS;

	c.gen = c.g->policy_gen & 1;
	meta = bpf_map_lookup_elem(&hf_policy_meta, &c.gen);
	c.enforced = meta &&
		     (dir == HF_DIR_INGRESS
			      ? (c.link_flags & HF_L_ENFORCE_INGRESS) &&
					(meta->flags & HF_P_ENFORCE_INGRESS)
			      : (c.link_flags & HF_L_ENFORCE_EGRESS) &&
					(meta->flags & HF_P_ENFORCE_EGRESS));

	/* Non-first fragments follow their first fragment. */
	if (p.frag == HF_FRAG_LATER) {
		hf_frag_key(&fk, &p);
		fv = bpf_map_lookup_elem(&hf_frags, &fk);
		if (fv) {
			if (fv->reason == HF_REASON_NONE)
				return HF_PASS;
			return hf_drop(&c, skb, &p, fv->reason, fv->rule_id);
		}
		if (!c.enforced)
			return HF_PASS;
		return hf_drop(&c, skb, &p, HF_REASON_FRAGMENT, 0);
	}

	hf_decide(skb, &c, &p, &v);

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
