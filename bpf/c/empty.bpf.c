// SPDX-License-Identifier: GPL-2.0-only
/* The benchmarks' baseline: the cheapest possible tc program. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tcx/ingress")
int hf_empty(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}
