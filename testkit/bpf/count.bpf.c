// SPDX-License-Identifier: (MIT OR Apache-2.0)
/* Receiver for delivery tests: attached to the far end of a veth pair, it
 * counts frames per ingress ifindex (several devices can share the program)
 * and remembers the last frame's Ethernet source address, then drops the
 * frame so the kernel stack never sees test traffic. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct rx_count {
	__u64 packets;
	__u8 last_src[ETH_ALEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct rx_count);
} counts SEC(".maps");

SEC("xdp")
int count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 key = ctx->ingress_ifindex;
	struct rx_count *c = bpf_map_lookup_elem(&counts, &key);

	if (!c) {
		struct rx_count fresh = {};

		bpf_map_update_elem(&counts, &key, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&counts, &key);
		if (!c)
			return XDP_DROP;
	}
	__sync_fetch_and_add(&c->packets, 1);
	if ((void *)(eth + 1) <= data_end) {
		for (int i = 0; i < ETH_ALEN; i++)
			c->last_src[i] = eth->h_source[i];
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
