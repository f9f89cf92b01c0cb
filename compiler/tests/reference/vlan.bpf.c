/* Hand-written reference for a spec keyed by `vlan.id` (counters = off,
 * on_miss = pass): what an engineer would write for the same behaviour,
 * including `route default` (a slot in a one-entry array, looked up only on
 * a miss). The generated program is compared against it for verifier
 * instructions and translated size (runtime/tests/codegen.rs, bench/). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
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
int vlan_switch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_hdr *tag = (void *)(eth + 1);
	long action;

	if ((void *)(tag + 1) > data_end)
		goto miss;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q) && eth->h_proto != bpf_htons(ETH_P_8021AD))
		goto miss;
	action = bpf_redirect_map(&routes, mix(bpf_ntohs(tag->tci) & 0x0fff), XDP_PASS);
	if (action == XDP_REDIRECT)
		return action;
miss:
	return miss();
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
