// SPDX-License-Identifier: (MIT OR Apache-2.0)
/* Egress programs for DEVMAP_HASH entries. Each rewrites the Ethernet source
 * address to 02:00:00:00:HH:LL, HH:LL being the egress ifindex, so a test can
 * see which entry a frame left through. The same body is built three times:
 * for a devmap entry, for a multi-buffer devmap entry, and as a plain XDP
 * program because PROG_TEST_RUN rejects devmap programs (where egress_ifindex
 * cannot be read, the plain copy uses ingress_ifindex). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

static __always_inline int rewrite_src(struct xdp_md *ctx, __u32 ifindex)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	eth->h_source[0] = 0x02;
	eth->h_source[1] = 0x00;
	eth->h_source[2] = 0x00;
	eth->h_source[3] = 0x00;
	eth->h_source[4] = (ifindex >> 8) & 0xff;
	eth->h_source[5] = ifindex & 0xff;
	return XDP_PASS;
}

SEC("xdp/devmap")
int egress_rewrite(struct xdp_md *ctx)
{
	return rewrite_src(ctx, ctx->egress_ifindex);
}

SEC("xdp.frags/devmap")
int egress_rewrite_frags(struct xdp_md *ctx)
{
	return rewrite_src(ctx, ctx->egress_ifindex);
}

SEC("xdp")
int egress_rewrite_xdp(struct xdp_md *ctx)
{
	return rewrite_src(ctx, ctx->ingress_ifindex);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
