/* SPDX-License-Identifier: GPL-2.0-only */
/* The one table of verdict reasons, shared with user space: bpf/build.rs
 * parses the HF_REASON(...) lines below and generates the Rust enum, so a
 * reason added here exists in both worlds or the build fails.
 *
 * HF_REASON(code, C name, user-visible name). Codes are part of the pinned
 * counter keys and the event format: never renumber, only append. */
#ifndef HF_DROP_REASONS_H
#define HF_DROP_REASONS_H

#define HF_REASON_TABLE(HF_REASON)                               \
	HF_REASON(1, VLAN_FILTERED, "vlan-filtered")             \
	HF_REASON(2, MALFORMED, "malformed")                     \
	HF_REASON(3, FRAGMENT, "fragment")                       \
	HF_REASON(4, POLICY_DENIED, "policy-denied")             \
	HF_REASON(5, POLICY_DENY_RULE, "policy-deny-rule")       \
	HF_REASON(6, NON_IP, "non-ip")                           \
	HF_REASON(7, CONNTRACK_FULL, "conntrack-full")           \
	HF_REASON(8, MAPPED_ADDRESS, "mapped-address")

enum hf_reason {
	HF_REASON_NONE = 0,
#define HF_ENUM(code, name, text) HF_REASON_##name = code,
	HF_REASON_TABLE(HF_ENUM)
#undef HF_ENUM
};

#endif
