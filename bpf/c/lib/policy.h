/* SPDX-License-Identifier: GPL-2.0-only */
/* Host-address test, failsafe ports and the policy lookup. */
#ifndef HF_POLICY_H
#define HF_POLICY_H

#include "common.h"
#include "maps.h"

/* Traffic to the host itself: one of its addresses, or broadcast/multicast
 * (which every host on the segment receives). */
static __always_inline bool hf_is_local(const __u8 addr[16])
{
	struct hf_addr_key k;
	bool v4 = addr[10] == 0xff && addr[11] == 0xff && !addr[0] && !addr[1];

	if (v4) {
		if ((addr[12] & 0xf0) == 0xe0)
			return true; /* 224.0.0.0/4 */
		if (addr[12] == 0xff && addr[13] == 0xff && addr[14] == 0xff &&
		    addr[15] == 0xff)
			return true;
	} else if (addr[0] == 0xff) {
		return true; /* ff00::/8 */
	}
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&hf_host_addrs, &k) != NULL;
}

static __always_inline bool hf_failsafe_match(const struct hf_pkt *p, __u8 dir)
{
	struct hf_failsafe_key k = {
		.dir = dir,
		.proto = p->proto,
		.port = p->dport,
	};

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP &&
	    p->proto != IPPROTO_SCTP)
		return false;
	return bpf_map_lookup_elem(&hf_failsafe, &k) != NULL;
}

/* ICMPv6 the link cannot live without: neighbour discovery, router
 * solicitation/advertisement, and MLD (multicast-snooping switches stop
 * forwarding ND to hosts that never report). */
static __always_inline bool hf_is_icmpv6_infra(const struct hf_pkt *p)
{
	if (p->proto != IPPROTO_ICMPV6)
		return false;
	switch (p->icmp_type) {
	case 130: case 131: case 132: case 143: /* MLD */
	case 133: case 134: case 135: case 136: case 137: /* RS RA NS NA redirect */
		return true;
	}
	return false;
}

struct hf_policy_result {
	__u8 reason; /* HF_REASON_NONE: allowed */
	__u32 rule_id;
};

static __always_inline void hf_policy_eval(const struct hf_pkt *p, __u8 dir,
					   __u32 gen,
					   struct hf_policy_result *res)
{
	struct hf_ident_key ik = { .prefixlen = HF_IDENT_DATA_BITS };
	struct hf_rule_key rk = { .prefixlen = HF_RULE_FULL_BITS };
	struct hf_rule_val *rv;
	__u32 *ident;
	__u32 id = 0;

	ik.gen = gen;
	__builtin_memcpy(ik.addr, dir == HF_DIR_INGRESS ? p->saddr : p->daddr, 16);
	ident = bpf_map_lookup_elem(&hf_identities, &ik);
	if (ident)
		id = *ident;

	rk.identity[0] = id >> 24;
	rk.identity[1] = id >> 16;
	rk.identity[2] = id >> 8;
	rk.identity[3] = id;
	rk.gen = gen;
	rk.dir = dir;
	rk.proto = p->proto;
	rk.port[0] = p->port >> 8;
	rk.port[1] = p->port;

	rv = bpf_map_lookup_elem(&hf_rules, &rk);
	if (!rv) {
		res->reason = HF_REASON_POLICY_DENIED;
		res->rule_id = 0;
		return;
	}
	res->rule_id = rv->rule_id;
	res->reason = rv->action == HF_ACTION_ALLOW ? HF_REASON_NONE
						    : HF_REASON_POLICY_DENY_RULE;
}

#endif
