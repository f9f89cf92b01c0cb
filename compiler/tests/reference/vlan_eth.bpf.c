/* Hand-written reference for a spec with the composite key
 * `(vlan.id, eth.dst)` (60 bits; counters = off, on_miss = pass): the outer
 * VLAN tag (one bounds check for Ethernet and tag together) and the
 * destination MAC, packed in network byte order into an 8-byte key, a hash
 * map from it to the slot of the target, then a redirect through the slots
 * map; `route default` as in vlan.bpf.c. Compared against the generated
 * program by the benchmark harness (bench/, BENCHMARKS.md). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct vlan_mac_key {
	__be16 vid;
	__u8 addr[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vlan_mac_key);
	__type(value, __u32);
	__uint(max_entries, 256);
} keys SEC(".maps");

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

static __always_inline long miss(void)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&default_slot, &zero);

	if (slot && *slot)
		return bpf_redirect_map(&slots, *slot, XDP_PASS);
	return XDP_PASS;
}

SEC("xdp")
int vlan_mac_switch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_hdr *tag = (void *)(eth + 1);
	struct vlan_mac_key key;
	__u32 *slot;

	if ((void *)(tag + 1) > data_end)
		goto miss;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q) && eth->h_proto != bpf_htons(ETH_P_8021AD))
		goto miss;
	key.vid = tag->tci & bpf_htons(0x0fff);
	__builtin_memcpy(key.addr, eth->h_dest, ETH_ALEN);
	slot = bpf_map_lookup_elem(&keys, &key);
	if (!slot)
		goto miss;
	return bpf_redirect_map(&slots, *slot, XDP_PASS);
miss:
	return miss();
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
