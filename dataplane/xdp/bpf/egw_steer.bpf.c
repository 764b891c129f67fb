// SPDX-License-Identifier: Apache-2.0
//
// egw XDP steering program.
//
// Decides, per received frame, whether it belongs to the egw dataplane (and is
// redirected to the AF_XDP socket of its rx queue) or to the kernel (XDP_PASS).
// It never drops: anything it does not understand goes to the kernel, so ARP,
// IPv6, management and the node's own traffic keep working while egw runs.
//
// Byte order: every IPv4 address in the maps is stored exactly as it appears
// on the wire (network order), so the program compares raw header words.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define EGW_ROLE_INSIDE 1u
#define EGW_ROLE_OUTSIDE 2u

// Each attached interface owns a block of XSKMAP slots: its rx queue q maps to
// slot xsk_base + q. A single queue-indexed map cannot serve two interfaces,
// because queue 0 exists on both and a socket only receives from the
// device/queue it is bound to.
#define EGW_MAX_QUEUES_PER_IFACE 64
#define EGW_MAX_IFACES 16

// Keep in sync with `StatIndex` in src/program.rs.
enum egw_stat {
	EGW_STAT_PASSED = 0,
	EGW_STAT_REDIRECTED_INSIDE = 1,
	EGW_STAT_REDIRECTED_OUTSIDE = 2,
	EGW_STAT_REDIRECT_FAILED = 3,
	EGW_STAT_PASSED_NOT_IPV4 = 4,
	EGW_STAT_PASSED_LOCAL_DEST = 5,
	EGW_STAT_PASSED_MALFORMED = 6,
	EGW_STAT_PASSED_UNKNOWN_IFACE = 7,
	EGW_STAT_PASSED_QUEUE_OUT_OF_RANGE = 8,
	EGW_STAT_COUNT = 9,
};

struct egw_iface_cfg {
	__u32 roles;
	__u32 xsk_base;
};

struct egw_lpm_v4_key {
	__u32 prefixlen;
	__u32 addr; // network order
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EGW_MAX_IFACES);
	__type(key, __u32); // ifindex
	__type(value, struct egw_iface_cfg);
} egw_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct egw_lpm_v4_key);
	__type(value, __u8);
} egw_pod_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); // IPv4, network order
	__type(value, __u8);
} egw_snat_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); // IPv4, network order
	__type(value, __u8);
} egw_local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, EGW_MAX_IFACES * EGW_MAX_QUEUES_PER_IFACE);
	__type(key, __u32);
	__type(value, __u32);
} egw_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EGW_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} egw_stats SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

static __always_inline void count(__u32 stat)
{
	__u64 *counter = bpf_map_lookup_elem(&egw_stats, &stat);
	if (counter)
		*counter += 1; // per-CPU slot: no atomics needed
}

static __always_inline int pass(__u32 reason)
{
	if (reason != EGW_STAT_PASSED)
		count(reason);
	count(EGW_STAT_PASSED);
	return XDP_PASS;
}

static __always_inline int redirect(struct xdp_md *ctx, const struct egw_iface_cfg *cfg,
				    __u32 redirected_stat)
{
	__u32 queue = ctx->rx_queue_index;
	if (queue >= EGW_MAX_QUEUES_PER_IFACE)
		return pass(EGW_STAT_PASSED_QUEUE_OUT_OF_RANGE);

	// XDP_PASS as the default action: with no socket registered for this
	// slot the frame reaches the kernel instead of being dropped.
	long action = bpf_redirect_map(&egw_xsks, cfg->xsk_base + queue, XDP_PASS);
	if (action == XDP_REDIRECT) {
		count(redirected_stat);
		return XDP_REDIRECT;
	}
	count(EGW_STAT_REDIRECT_FAILED);
	return pass(EGW_STAT_PASSED);
}

SEC("xdp")
int egw_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	__u32 ifindex = ctx->ingress_ifindex;
	const struct egw_iface_cfg *cfg = bpf_map_lookup_elem(&egw_ifaces, &ifindex);
	if (!cfg)
		return pass(EGW_STAT_PASSED_UNKNOWN_IFACE);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return pass(EGW_STAT_PASSED_MALFORMED);

	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return pass(EGW_STAT_PASSED_MALFORMED);
		proto = vlan->encapsulated_proto;
		l3 = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return pass(EGW_STAT_PASSED_NOT_IPV4);

	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > data_end)
		return pass(EGW_STAT_PASSED_MALFORMED);
	if (ip->version != 4 || ip->ihl < 5 || (void *)ip + ip->ihl * 4 > data_end)
		return pass(EGW_STAT_PASSED_MALFORMED);

	__u32 saddr = ip->saddr;
	__u32 daddr = ip->daddr;

	if (cfg->roles & EGW_ROLE_INSIDE) {
		struct egw_lpm_v4_key key = { .prefixlen = 32, .addr = saddr };
		if (bpf_map_lookup_elem(&egw_pod_cidrs, &key)) {
			if (bpf_map_lookup_elem(&egw_local_addrs, &daddr))
				return pass(EGW_STAT_PASSED_LOCAL_DEST);
			return redirect(ctx, cfg, EGW_STAT_REDIRECTED_INSIDE);
		}
	}
	if (cfg->roles & EGW_ROLE_OUTSIDE) {
		if (bpf_map_lookup_elem(&egw_snat_addrs, &daddr))
			return redirect(ctx, cfg, EGW_STAT_REDIRECTED_OUTSIDE);
	}
	return pass(EGW_STAT_PASSED);
}

// No GPL-only helper is used, so a non-GPL licence string is accepted.
char LICENSE[] SEC("license") = "Apache-2.0";
