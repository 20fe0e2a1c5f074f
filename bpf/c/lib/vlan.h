/* SPDX-License-Identifier: GPL-2.0-only */
/* VLAN admission on a lower device: a tagged frame passes to its
 * subinterface (where the policy is enforced) only if its VID is in the
 * link's runtime allow set. The tag may be in skb metadata (hardware or
 * kernel untagging) or still in-band (QinQ outer tag, test_run, no 8021q). */
#ifndef HF_VLAN_H
#define HF_VLAN_H

#include "common.h"
#include "maps.h"
#include "parse.h"

#define HF_VLAN_VID_MASK 0x0fff

struct hf_l2 {
	__u16 vid;       /* 0: untagged or priority-tagged */
	__u16 ethertype; /* host order, after any priority tag */
	__u32 l3_off;
};

static __always_inline int hf_parse_l2(struct __sk_buff *skb, struct hf_l2 *l2)
{
	__u16 hdr[2] HF_ALIGNED;
	__u16 proto;

	l2->vid = 0;
	l2->l3_off = ETH_HLEN;
	if (hf_load(skb, 12, &proto, 2))
		return -1;
	l2->ethertype = bpf_ntohs(proto);

	if (skb->vlan_present)
		l2->vid = skb->vlan_tci & HF_VLAN_VID_MASK;
	if (l2->vid)
		return 0;

	if (l2->ethertype == ETH_P_8021Q || l2->ethertype == ETH_P_8021AD) {
		if (hf_load(skb, ETH_HLEN, hdr, 4))
			return -1;
		l2->vid = bpf_ntohs(hdr[0]) & HF_VLAN_VID_MASK;
		if (l2->vid)
			return 0;
		/* Priority tag (VID 0): the frame belongs to this device. */
		l2->ethertype = bpf_ntohs(hdr[1]);
		l2->l3_off = ETH_HLEN + 4;
	}
	return 0;
}

static __always_inline bool hf_vlan_allowed(__u32 ifindex, __u32 link_flags,
					    __u16 vid)
{
	struct hf_vlan_key key = { .ifindex = ifindex, .vid = vid };

	if (link_flags & HF_L_VLAN_ALLOW_ALL)
		return true;
	return bpf_map_lookup_elem(&hf_vlans, &key) != NULL;
}

#endif
