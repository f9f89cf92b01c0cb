/* Hand-written reference for a spec keyed by `ipv4.dst` with counters
 * (counters = on, on_miss = pass): ipv4.bpf.c plus what a careful engineer
 * would count: packets and bytes per routed key in a per-CPU hash (entries
 * created by user space with the routes, so the data path never inserts),
 * and per slot in a per-CPU array, slot 0 for misses. Compared against the
 * generated program by the benchmark harness (bench/, BENCHMARKS.md). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, 256);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 256);
} key_counters SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 1024);
} slot_counters SEC(".maps");

#include "mix.h"

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline long miss(__u64 bytes)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&default_slot, &zero);

	count(&slot_counters, 0, bytes);
	if (slot && *slot) {
		count(&slot_counters, *slot, bytes);
		return bpf_redirect_map(&slots, *slot, XDP_PASS);
	}
	return XDP_PASS;
}

SEC("xdp")
int ipv4_router_counted(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct ethhdr *eth = data;
	void *cursor = eth + 1;
	struct iphdr *ip;
	__be16 proto;
	__u32 key;
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
	key = mix(ip->daddr);
	action = bpf_redirect_map(&routes, key, XDP_PASS);
	if (action == XDP_REDIRECT) {
		count(&key_counters, key, bytes);
		return action;
	}
miss:
	return miss(bytes);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
