/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef HF_COMMON_H
#define HF_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"
#include "drop_reasons.h"

/* Pass lets the next tcx program / cls_bpf filter run: hostfwd never
 * short-circuits other users of the hook. TC_ACT_UNSPEC == TCX_NEXT. */
#define HF_PASS TC_ACT_UNSPEC
#define HF_DROP TC_ACT_SHOT

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#define NSEC_PER_SEC 1000000000ULL

/* A map lookup (update) that keeps a call site of its own. Left alone,
 * clang merges `c ? lookup(&a, k) : lookup(&b, k)` into one call whose map
 * is chosen at run time; the verifier then cannot tell the map of that
 * call, and instead of inlining the lookup (or calling the map's own
 * function) it goes through the generic helper: ~11 ns a lookup on this
 * path. An empty asm statement cannot be merged, so neither can the call
 * before it. */
#define HF_LOOKUP(map, key)                                                  \
	({                                                                   \
		void *__v = bpf_map_lookup_elem(map, key);                   \
		asm volatile("" : "+r"(__v));                                \
		__v;                                                         \
	})
#define HF_UPDATE(map, key, val)                                             \
	({                                                                   \
		long __r = bpf_map_update_elem(map, key, val, BPF_ANY);      \
		asm volatile("" : "+r"(__r));                                \
		__r;                                                         \
	})

/* Stack buffers that headers are copied into word by word (hf_copy). */
#define HF_ALIGNED __attribute__((aligned(4)))

/* Everything the verdict needs to know about one packet. */
struct hf_pkt {
	__u8 saddr[16]; /* IPv4-mapped for IPv4 */
	__u8 daddr[16];
	__u32 frag_id;
	__u32 l4_off;
	__u32 l3_end;  /* offset of the end of the IP packet */
	__u32 tcp_seq; /* host order */
	__u32 tcp_ack;
	__u32 tcp_len; /* sequence space the segment takes: payload + SYN + FIN */
	__u16 sport; /* host order; ICMP echo: identifier */
	__u16 dport; /* host order; ICMP echo: identifier */
	__u16 port;  /* policy port: dport, or type << 8 | code for ICMP */
	__u16 vid;
	__u8 family; /* 4 or 6; set once the addresses are read */
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 frag; /* HF_FRAG_* */
	__u8 icmp_error; /* ICMP error carrying an inner header */
	__u8 flow; /* conntrack applies: not ICMP other than echo */
	__u8 hop_limit; /* IPv4 TTL, IPv6 hop limit */
} __attribute__((aligned(8))); /* addresses are compared as words */

#define HF_FRAG_NONE 0
#define HF_FRAG_FIRST 1
#define HF_FRAG_LATER 2

static __always_inline void hf_map_v4(__u8 dst[16], __be32 v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &v4, 4);
}

#endif
