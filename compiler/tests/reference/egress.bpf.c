/* Hand-written reference for an egress program that stamps the egress
 * device's MAC as the Ethernet source (`eth.src = egress.mac` in a spec):
 * a devmap program (BPF_XDP_DEVMAP) that finds the MAC by egress ifindex
 * in a hash map written by user space, and leaves frames of devices
 * without an entry alone. Stored in the references' route and slot entries
 * by the benchmark harness (bench/, BENCHMARKS.md). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct mac {
	__u8 addr[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mac);
	__uint(max_entries, 1024);
} egress_macs SEC(".maps");

SEC("xdp/devmap")
int stamp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = ctx->egress_ifindex;
	struct mac *mac = bpf_map_lookup_elem(&egress_macs, &ifindex);

	if (!mac)
		return XDP_PASS;
	if ((void *)(eth + 1) <= data_end)
		__builtin_memcpy(eth->h_source, mac->addr, ETH_ALEN);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
