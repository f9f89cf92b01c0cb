// SPDX-License-Identifier: (MIT OR Apache-2.0)
/* Ingress program for the kernel-fact tests: bpf_redirect_map() through a
 * DEVMAP_HASH, with the key and the flags taken from the `cfg` array so one
 * loaded object serves every case (miss action bits, unknown flag bits,
 * broadcast). The key is either cfg.key or, when cfg.key_from_ingress is
 * set, ctx->ingress_ifindex. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct redirect_cfg {
	__u32 key;
	__u32 key_from_ingress;
	__u64 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_cfg);
} cfg SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	/* Read the context field unconditionally: a conditional read lets
	 * clang merge the two loads through a modified ctx pointer, which the
	 * verifier rejects. */
	__u32 ingress = ctx->ingress_ifindex;
	__u32 zero = 0;
	struct redirect_cfg *c = bpf_map_lookup_elem(&cfg, &zero);

	if (!c)
		return XDP_ABORTED;
	__u32 key = c->key_from_ingress ? ingress : c->key;
	return bpf_redirect_map(&tx_ports, key, c->flags);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
