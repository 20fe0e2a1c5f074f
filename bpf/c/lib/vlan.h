/* SPDX-License-Identifier: GPL-2.0-only */
/* VLAN admission on a lower device: a tagged frame passes to its
 * subinterface (where the policy is enforced) only if its VID is in the
 * link's runtime allow set. The tag may be in skb metadata (hardware or
 * kernel untagging) or still in-band (QinQ inner tags, test_run, no 8021q).
 *
 * The VID that decides is the one through which the kernel will deliver
 * the frame: the first non-zero VID of the stack, metadata first, then the
 * in-band tags in order. Priority tags (VID 0) are skipped, whatever their
 * TPID, as __netif_receive_skb_core skips them (it strips a VID-0 tag and
 * goes on with the next one). A stack deeper than hostfwd reads is
 * malformed: it must not decide for the kernel what it cannot see. */
#ifndef HF_VLAN_H
#define HF_VLAN_H

#include "common.h"
#include "maps.h"
#include "parse.h"

#define HF_VLAN_VID_MASK 0x0fff
/* In-band tags read below the metadata tag. */
#define HF_VLAN_MAX_TAGS 4

struct hf_l2 {
	__u16 vid;       /* 0: untagged or priority-tagged only */
	__u16 ethertype; /* host order, after the priority tags */
	__u32 l3_off;
};

static __always_inline bool hf_is_vlan_proto(__u16 ethertype)
{
	return ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD;
}

static __always_inline int hf_parse_l2(struct __sk_buff *skb, struct hf_l2 *l2)
{
	__u16 proto;
	int i;

	l2->vid = 0;
	l2->l3_off = ETH_HLEN;
	if (hf_load(skb, 12, &proto, 2))
		return -1;
	l2->ethertype = bpf_ntohs(proto);

	if (skb->vlan_present)
		l2->vid = skb->vlan_tci & HF_VLAN_VID_MASK;
	if (l2->vid)
		return 0;

	for (i = 0; i < HF_VLAN_MAX_TAGS; i++) {
		__u16 hdr[2] HF_ALIGNED;

		if (!hf_is_vlan_proto(l2->ethertype))
			return 0;
		if (hf_load(skb, l2->l3_off, hdr, 4))
			return -1;
		l2->vid = bpf_ntohs(hdr[0]) & HF_VLAN_VID_MASK;
		if (l2->vid)
			return 0;
		l2->ethertype = bpf_ntohs(hdr[1]);
		l2->l3_off += 4;
	}
	return hf_is_vlan_proto(l2->ethertype) ? -1 : 0;
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
