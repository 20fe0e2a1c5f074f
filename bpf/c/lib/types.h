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
/* Set by the writer in every used hf_link_slots entry: an array has no
 * "absent", and a configured link may have no other flag. */
#define HF_L_CONFIGURED (1U << 31)

/* The datapath finds links with an ifindex below this in an array (a
 * lookup the JIT inlines), the others in a hash. Host devices are created
 * early and have small indices; heavy veth churn can still go past it. */
#define HF_LINK_SLOTS 16384

/* hf_policy_meta.flags: which directions the policy generation enforces */
#define HF_P_ENFORCE_INGRESS (1U << 0)
#define HF_P_ENFORCE_EGRESS (1U << 1)

#define HF_ACTION_ALLOW 1
#define HF_ACTION_DENY 2

struct hf_global {
	__u32 policy_gen;     /* 0 or 1: the active policy generation */
	__u32 flags;          /* HF_G_* */
	__u32 events_per_sec; /* per-CPU event budget; 0 disables events */
	__u32 events_burst;   /* bucket size; 0 means events_per_sec */
	__u32 host_gen;       /* bumped after every removal from the local set */
	__u32 tick_ns;        /* length of a jiffy; 0: use the coarse clock */
	__u64 jiffies_epoch;  /* jiffies at boot (INITIAL_JIFFIES) */
	/* Bumped by user space after every change of what decides a verdict
	 * (policy swap, audit, failsafe, link flags): a tracked flow whose
	 * entry holds an older epoch is judged again on its next packet. */
	__u32 epoch;
	__u32 pad;
};

struct hf_link {
	__u32 flags; /* HF_L_*; in hf_link_slots, HF_L_CONFIGURED marks a used slot */
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

/* The policy, in exact-match hashes: a longest-prefix match is one lookup
 * per prefix length in use, longest first. The cost then depends on the
 * number of distinct lengths, not on the number of entries (an LPM trie
 * walk gets deeper as it fills).
 *
 * Identities: remote address -> identity, per family. IPv4-mapped IPv6
 * addresses are IPv4 to the policy and use hf_ident4. The lengths in use,
 * per generation, are in hf_policy_meta. */
#define HF_IDENT4_LENS 33  /* prefix lengths 0..32 */
#define HF_IDENT6_LENS 129 /* 0..128 */

struct hf_policy_meta {
	__u32 flags; /* HF_P_* */
	__u8 ident4_nlens;
	__u8 ident6_nlens;
	__u8 pad[2];
	__u8 ident4_lens[36];  /* prefix lengths in hf_ident4, longest first */
	__u8 ident6_lens[132]; /* prefix lengths in hf_ident6, longest first */
};

struct hf_ident4_key {
	__u8 gen;
	__u8 plen;
	__u8 pad[2];
	__u8 addr[4]; /* masked to plen */
} __attribute__((aligned(4))); /* the address is masked as words */

struct hf_ident6_key {
	__u8 gen;
	__u8 plen;
	__u8 pad[2];
	__u8 addr[16]; /* masked to plen */
} __attribute__((aligned(4)));

/* Rules: (identity, gen, dir, proto, port prefix) -> allow/deny, the longest
 * match deciding. Per (identity, dir, proto) a head entry lists the port
 * prefix lengths present below it and carries what applies when no port
 * prefix matches (the protocol-wide entry, else the any-protocol one). The
 * any-protocol entry of (identity, dir) has its own key, for protocols
 * without a head. */
#define HF_RK_PROTO 0x80 /* head of (identity, dir, proto); port 0 */
#define HF_RK_ANY 0x81   /* any-protocol entry of (identity, dir); proto, port 0 */
#define HF_RK_BLOCK 0x82 /* a head's detail of one port block; port: the block */
/* kind 1..16: a port prefix of that length */

struct hf_rule_key {
	__u32 identity;
	__u8 gen;
	__u8 dir;
	__u8 proto;
	__u8 kind;  /* HF_RK_* or a port prefix length */
	__u16 port; /* host order, masked to the prefix length; ICMP type << 8 | code */
	__u8 pad[2];
};

/* A head's port_blocks has one bit per 1 << HF_PORT_BLOCK_SHIFT ports, a
 * block entry's one per 1 << HF_PORT_GRANULE_SHIFT ports of its block. */
#define HF_PORT_BLOCK_SHIFT 10
#define HF_PORT_GRANULE_SHIFT 4

struct hf_rule_val {
	__u32 rule_id;
	__u8 action;     /* HF_ACTION_*; 0 in a head: no match without a port match */
	__u8 pad;
	/* Heads: bit n - 1 set when prefixes of length n exist; block
	 * entries: when such prefixes reach into the block. */
	__u16 port_lens;
	/* Heads: bit b set when a port prefix below intersects ports
	 * b * 1024 .. b * 1024 + 1023; block entries: bit g when one
	 * intersects the block's ports g * 16 .. g * 16 + 15. A port in a
	 * clear block or granule matches no prefix: no probe. */
	__u64 port_blocks;
	/* Heads: bit b set when block b has a block entry (HF_RK_BLOCK). */
	__u64 port_detail;
};

struct hf_failsafe_key {
	__u8 dir;
	__u8 proto;
	__u16 port; /* host order */
};

/* Conntrack keys are canonical: endpoint a is the smaller (address, port)
 * of the two, so both directions of a flow find the same entry with one
 * lookup. IPv4 flows have their own map with a 16-byte key. */
struct hf_ct4_key {
	__u8 addr_a[4];
	__u8 addr_b[4];
	__u16 port_a; /* host order; ICMP echo id in both */
	__u16 port_b;
	__u8 proto;
	__u8 pad[3];
} __attribute__((aligned(4))); /* addresses are stored as one word */

struct hf_ct6_key {
	__u8 addr_a[16];
	__u8 addr_b[16];
	__u16 port_a;
	__u16 port_b;
	__u8 proto;
	__u8 pad[3];
};

/* hf_ct_val.state */
#define HF_CT_SYN_SENT 1    /* TCP: SYN seen, no answer yet */
#define HF_CT_ESTABLISHED 2 /* TCP: three-way handshake done, or a pick-up answered */
#define HF_CT_CLOSING 3     /* TCP: FIN both ways, or an RST that fits */
#define HF_CT_OTHER 4       /* not TCP */
#define HF_CT_SYN_RECV 5    /* TCP: SYN answered by SYN-ACK, final ACK pending */
#define HF_CT_PICKUP 6      /* TCP: picked up mid-stream, the other side not heard */

/* hf_ct_val.flags */
#define HF_CT_SEEN_REPLY (1U << 0)
#define HF_CT_FIN_ORIG (1U << 1)
#define HF_CT_FIN_REPLY (1U << 2)
/* The flow's last verdict was a drop (kept only in audit mode, where it
 * passes): the entry grants nothing, every packet is judged again. */
#define HF_CT_DENIED (1U << 3)
#define HF_CT_SEQ_ORIG (1U << 4)  /* seq_next[0] is known */
#define HF_CT_SEQ_REPLY (1U << 5) /* seq_next[1] is known */

struct hf_ct_val {
	__u64 last_seen_ns; /* hf_now() */
	__u32 ifindex;
	__u32 host_gen; /* hf_global.host_gen when the host side was last tested */
	__u32 epoch;    /* hf_global.epoch of the flow's last verdict */
	/* TCP: the next sequence number expected from the origin [0] and from
	 * the responder [1], for the RST/FIN window checks. */
	__u32 seq_next[2];
	__u16 pol_port; /* policy port of the first packet (dport, ICMP type << 8 | code) */
	__u8 state;
	__u8 flags;
	__u8 origin_dir;
	__u8 origin_a; /* the first packet went from endpoint a to b */
	__u8 pad[6];
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

/* Local prefixes shorter than a full address (`ip route add local
 * 10.9.0.0/24 dev lo`): an LPM trie, consulted only while HF_G_LOCAL_NETS
 * is set, so hosts without such routes pay nothing. Full-length local
 * addresses (interface addresses, directed broadcasts, anycast) stay in
 * the hf_host_addrs hash. IPv4 is IPv4-mapped: prefixlen 96 + the IPv4
 * length. */
#define HF_G_LOCAL_NETS (1U << 2) /* hf_global.flags: hf_local_nets in use */

struct hf_local_net_key {
	__u32 prefixlen; /* LPM trie key: the length comes first, in bits */
	__u8 addr[16];
};

#endif
