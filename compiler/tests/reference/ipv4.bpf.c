/* Hand-written reference for a spec keyed by `ipv4.dst` (counters = off,
 * on_miss = pass): Ethernet, up to two VLAN tags, IPv4, then the
 * destination address as the DEVMAP_HASH key; `route default` as in
 * vlan.bpf.c. Compared against the generated program in
 * runtime/tests/codegen.rs and by the benchmarks (bench/). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, 256);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, 1024);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} default_slot SEC(".maps");

#include "mix.h"

static __always_inline long miss(void)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&default_slot, &zero);

	if (slot && *slot)
		return bpf_redirect_map(&slots, *slot, XDP_PASS);
	return XDP_PASS;
}

SEC("xdp")
int ipv4_router(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *cursor = eth + 1;
	struct iphdr *ip;
	__be16 proto;
	long action;

	if (cursor > data_end)
		goto miss;
	proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr *tag = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > data_end)
			goto miss;
		proto = tag->proto;
		cursor = tag + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		goto miss;
	ip = cursor;
	if ((void *)(ip + 1) > data_end)
		goto miss;
	action = bpf_redirect_map(&routes, mix(ip->daddr), XDP_PASS);
	if (action == XDP_REDIRECT)
		return action;
miss:
	return miss();
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
