/* Hand-written reference for a spec keyed by `ingress.port` (counters = off,
 * on_miss = pass): the ingress ifindex is the DEVMAP_HASH key, no packet
 * byte is read; `route default` as in vlan.bpf.c. Compared against the
 * generated program by the benchmark harness (bench/, BENCHMARKS.md). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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

SEC("xdp")
int port_patch(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 *slot;
	long action;

	action = bpf_redirect_map(&routes, mix(ctx->ingress_ifindex), XDP_PASS);
	if (action == XDP_REDIRECT)
		return action;
	slot = bpf_map_lookup_elem(&default_slot, &zero);
	if (slot && *slot)
		return bpf_redirect_map(&slots, *slot, XDP_PASS);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
