/* SPDX-License-Identifier: GPL-2.0-only */
/* Map key/value layouts: the contract with user space. Every struct here has
 * a #[repr(C)] mirror in bpf/src/layout.rs whose size and field offsets are
 * checked against this object's BTF by the crate's tests. Padding is always
 * explicit so that keys hash the same from both sides. */
#ifndef HF_TYPES_H
#define HF_TYPES_H

#include <linux/types.h>

#define HF_DIR_INGRESS 0
#define HF_DIR_EGRESS 1

/* hf_global.flags */
#define HF_G_AUDIT (1U << 0)       /* audit mode for every link */
#define HF_G_DROP_NON_IP (1U << 1) /* drop ARP/LLDP/... instead of passing */

/* hf_link.flags */
#define HF_L_ENFORCE_INGRESS (1U << 0)
#define HF_L_ENFORCE_EGRESS (1U << 1)
#define HF_L_AUDIT (1U << 2)
#define HF_L_VLAN_ALLOW_ALL (1U << 3) /* bypass VID 0 configured */

/* hf_policy_meta.flags: which directions the policy generation enforces */
#define HF_P_ENFORCE_INGRESS (1U << 0)
#define HF_P_ENFORCE_EGRESS (1U << 1)

#define HF_ACTION_ALLOW 1
#define HF_ACTION_DENY 2

/* LPM prefix lengths, in bits of the key data (after prefixlen). */
#define HF_IDENT_DATA_BITS (8 + 128)   /* gen, address */
#define HF_RULE_L3_BITS (32 + 8 + 8)    /* identity, gen, dir */
#define HF_RULE_PROTO_BITS (HF_RULE_L3_BITS + 8)
#define HF_RULE_FULL_BITS (HF_RULE_PROTO_BITS + 16)

struct hf_global {
	__u32 policy_gen;     /* 0 or 1: the active policy generation */
	__u32 flags;          /* HF_G_* */
	__u32 events_per_sec; /* per-CPU event budget; 0 disables events */
	__u32 events_burst;   /* bucket size; 0 means events_per_sec */
};

struct hf_link {
	__u32 flags; /* HF_L_* */
};

struct hf_vlan_key {
	__u32 ifindex;
	__u16 vid;
	__u16 pad;
};

/* IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) everywhere. */
struct hf_addr_key {
	__u8 addr[16];
};

struct hf_policy_meta {
	__u32 flags; /* HF_P_* */
};

struct hf_ident_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 addr[16];
	__u8 pad[3];
};

/* Data is (identity, gen, dir, proto, port): full-match fields first so a
 * shorter prefix wildcards protocol and port. */
struct hf_rule_key {
	__u32 prefixlen;
	__u8 identity[4]; /* big endian */
	__u8 gen;
	__u8 dir;
	__u8 proto;
	__u8 port[2]; /* big endian; ICMP type in port[0]<<8 */
	__u8 pad[3];
};

struct hf_rule_val {
	__u32 rule_id;
	__u8 action; /* HF_ACTION_* */
	__u8 pad[3];
};

struct hf_failsafe_key {
	__u8 dir;
	__u8 proto;
	__u16 port; /* host order */
};

struct hf_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order; ICMP echo id in both */
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

#define HF_CT_SYN_SENT 1
#define HF_CT_ESTABLISHED 2
#define HF_CT_CLOSING 3
#define HF_CT_OTHER 4 /* non-TCP pseudo state */

/* hf_ct_val.flags */
#define HF_CT_SEEN_REPLY (1U << 0)
#define HF_CT_FIN_ORIG (1U << 1)
#define HF_CT_FIN_REPLY (1U << 2)
#define HF_CT_DENIED (1U << 3) /* created by an audited drop: grants nothing */

struct hf_ct_val {
	__u64 last_seen_ns;
	__u32 ifindex;
	__u8 state;
	__u8 flags;
	__u8 origin_dir;
	__u8 pad;
};

struct hf_frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;
	__u8 proto;
	__u8 pad[3];
};

struct hf_frag_val {
	__u64 ts_ns;
	__u32 rule_id;
	__u8 reason; /* HF_REASON_NONE: the first fragment passed */
	__u8 pad[3];
};

struct hf_counter_key {
	__u32 ifindex;
	__u8 dir;
	__u8 reason;
	__u8 audit;
	__u8 pad;
};

struct hf_ratelimit {
	__u64 last_ns;
	__u64 tokens; /* in units of 1e-9 event */
	__u64 suppressed;
};

struct hf_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u32 ifindex;
	__u32 rule_id;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 vlan;
	__u8 proto;
	__u8 dir;
	__u8 reason;
	__u8 audit;
	__u8 family; /* 4 or 6 */
	__u8 pad[5];
};

#endif
