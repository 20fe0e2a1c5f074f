/* SPDX-License-Identifier: GPL-2.0-only */
/* Drop accounting: exact per-CPU counters, and rate-limited events to the
 * ring buffer (a flood must not turn into a flood of events). */
#ifndef HF_EVENTS_H
#define HF_EVENTS_H

#include "common.h"
#include "maps.h"

/* The event reaches user space only through the ring buffer, which carries
 * no BTF type; this anchor keeps struct hf_event in the object's BTF so the
 * layout test can check its Rust mirror. */
const struct hf_event hf_event_btf_anchor __attribute__((unused));

static __always_inline void hf_count(__u32 ifindex, __u8 dir, __u8 reason,
				     bool audit)
{
	struct hf_counter_key k = {
		.ifindex = ifindex,
		.dir = dir,
		.reason = reason,
		.audit = audit,
	};
	__u64 one = 1, *c;

	c = bpf_map_lookup_elem(&hf_counters, &k);
	if (c)
		*c += 1; /* per-CPU value: no other writer */
	else
		bpf_map_update_elem(&hf_counters, &k, &one, BPF_NOEXIST);
}

/* Token bucket per CPU, tokens in nanoseconds-times-rate units. now is the
 * coarse clock of the packet: refills come in ticks, the rate holds. */
static __always_inline bool hf_event_budget(const struct hf_global *g, __u64 now)
{
	__u32 zero = 0;
	struct hf_ratelimit *rl;
	__u64 rate = g->events_per_sec;
	__u64 burst = g->events_burst ? g->events_burst : rate;
	__u64 elapsed, tokens, cap;

	if (!rate)
		return false;
	rl = bpf_map_lookup_elem(&hf_ratelimit, &zero);
	if (!rl)
		return false;
	elapsed = now - rl->last_ns;
	if (elapsed > 10 * NSEC_PER_SEC)
		elapsed = 10 * NSEC_PER_SEC;
	cap = burst * NSEC_PER_SEC;
	tokens = rl->tokens + elapsed * rate;
	if (tokens > cap)
		tokens = cap;
	rl->last_ns = now;
	if (tokens < NSEC_PER_SEC) {
		rl->tokens = tokens;
		rl->suppressed++;
		return false;
	}
	rl->tokens = tokens - NSEC_PER_SEC;
	return true;
}

static __always_inline void hf_emit(const struct hf_global *g,
				    struct __sk_buff *skb,
				    const struct hf_pkt *p, __u8 dir,
				    __u8 reason, __u32 rule_id, bool audit,
				    __u64 now)
{
	struct hf_event *e;

	if (!hf_event_budget(g, now))
		return;
	e = bpf_ringbuf_reserve(&hf_events, sizeof(*e), 0);
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns(); /* precise: events are ordered by it */
	e->ifindex = skb->ifindex;
	e->rule_id = rule_id;
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	e->sport = p->sport;
	e->dport = p->dport;
	e->vlan = p->vid;
	e->proto = p->proto;
	e->dir = dir;
	e->reason = reason;
	e->audit = audit;
	e->family = p->family;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_ringbuf_submit(e, 0);
}

#endif
