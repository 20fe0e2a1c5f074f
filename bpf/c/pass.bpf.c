// SPDX-License-Identifier: GPL-2.0-only
/* Someone else's program for the hook-order tests: it returns TC_ACT_OK
 * ("pass"), which on tcx ends the chain and in a direct-action cls_bpf
 * filter ends classification, so nothing after it runs. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tcx/ingress")
int foreign_pass_in(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("tcx/egress")
int foreign_pass_eg(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
