// SPDX-License-Identifier: (MIT OR Apache-2.0)
/* The smallest XDP program: a baseline for timings and a program that is NOT
 * loaded for devmap entries (expected attach type is not BPF_XDP_DEVMAP). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
