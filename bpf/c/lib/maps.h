/* SPDX-License-Identifier: GPL-2.0-only */
/* Every map of the datapath. Names are the pin names under bpffs (see
 * daemon/src/datapath/paths.rs). Sizes are those of the default
 * configuration ([maps] in daemon/hostfwd.toml, which the loader applies;
 * a test keeps the two equal). */
#ifndef HF_MAPS_H
#define HF_MAPS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hf_global);
} hf_global SEC(".maps");

/* Link configuration by ifindex. The datapath reads the array below
 * HF_LINK_SLOTS (a lookup the JIT inlines: no call on the per-packet path)
 * and the hash above it; the hash holds every configured link, for user
 * space to list. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HF_LINK_SLOTS);
	__type(key, __u32); /* ifindex */
	__type(value, struct hf_link);
} hf_link_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* ifindex */
	__type(value, struct hf_link);
} hf_links SEC(".maps");

/* One entry per allowed (lower ifindex, VID): no cap below 4094 per link. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct hf_vlan_key);
	__type(value, __u8);
} hf_vlans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hf_addr_key);
	__type(value, __u8);
} hf_host_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct hf_failsafe_key);
	__type(value, __u8);
} hf_failsafe SEC(".maps");

/* Policy generations: both sets live in the same maps, keyed by gen, and
 * hf_global.policy_gen picks the one a packet sees (read once per packet). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct hf_policy_meta);
} hf_policy_meta SEC(".maps");

/* Hashes of the policy (types.h). A hash allocates its bucket array up
 * front: 16 bytes per entry of max_entries, rounded up to a power of two. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hf_ident4_key);
	__type(value, __u32);
} hf_ident4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hf_ident6_key);
	__type(value, __u32);
} hf_ident6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hf_rule_key);
	__type(value, struct hf_rule_val);
} hf_rules SEC(".maps");

/* Conntrack, per family and by who started the flow: hf_ct4/hf_ct6 hold
 * flows started from outside (and TCP picked up as a reply), the _out maps
 * the flows the host started. LRU maps evict the least recently used
 * entry when full; keeping the host's own flows apart means no inbound
 * flood, however large, can evict them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct hf_ct4_key);
	__type(value, struct hf_ct_val);
} hf_ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct hf_ct6_key);
	__type(value, struct hf_ct_val);
} hf_ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct hf_ct4_key);
	__type(value, struct hf_ct_val);
} hf_ct4_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct hf_ct6_key);
	__type(value, struct hf_ct_val);
} hf_ct6_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hf_frag_key);
	__type(value, struct hf_frag_val);
} hf_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hf_counter_key);
	__type(value, __u64);
} hf_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hf_ratelimit);
} hf_ratelimit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} hf_events SEC(".maps");

/* Local prefixes shorter than a full address (types.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hf_local_net_key);
	__type(value, __u8);
} hf_local_nets SEC(".maps");

#endif
