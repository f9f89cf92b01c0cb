//! Test support for devmapc, never published: what code-generation, runtime
//! and `devmapc test` tests need to talk to a real kernel, and the tests that
//! pin the kernel facts devmapc relies on (`tests/kernel_facts.rs`,
//! described in docs/kernel.md).
//!
//! - [`privileged`]: may this process load BPF and build namespaces?
//!   [`require_privileged!`] skips (loudly) or fails a test that cannot run.
//! - [`netns`]: throw-away network namespaces with veth pairs, deleted on drop.
//! - [`packet`]: build test frames layer by layer and parse received ones.
//! - [`bpf`]: load a `.bpf.o`, run programs with `BPF_PROG_TEST_RUN` (also in
//!   live-frames mode), read verifier statistics.
//! - [`objects`]: the small BPF programs of `testkit/bpf/`, compiled by the
//!   build script.

pub mod bpf;
pub mod netns;
pub mod packet;
pub mod pins;
pub mod privileged;

/// Paths of the BPF objects compiled from `testkit/bpf/*.bpf.c`.
pub mod objects {
    /// `redirect.bpf.o`: SEC("xdp") `redirect` doing
    /// `bpf_redirect_map(&tx_ports, key, flags)` with key and flags from the
    /// array `cfg` (see [`crate::bpf::RedirectCfg`]); `tx_ports` is a
    /// DEVMAP_HASH of 64 entries.
    pub const REDIRECT: &str = concat!(env!("OUT_DIR"), "/redirect.bpf.o");
    /// `egress.bpf.o`: `egress_rewrite` (SEC("xdp/devmap")),
    /// `egress_rewrite_frags` (SEC("xdp.frags/devmap")) and
    /// `egress_rewrite_xdp` (plain SEC("xdp")), all setting the Ethernet
    /// source to 02:00:00:00:HH:LL where HH:LL is the egress ifindex (the
    /// ingress ifindex for the plain copy).
    pub const EGRESS: &str = concat!(env!("OUT_DIR"), "/egress.bpf.o");
    /// `pass.bpf.o`: SEC("xdp") `xdp_pass`, returns XDP_PASS.
    pub const PASS: &str = concat!(env!("OUT_DIR"), "/pass.bpf.o");
    /// `count.bpf.o`: SEC("xdp") `count`, counts frames per ingress ifindex
    /// in the hash map `counts` (see [`crate::bpf::rx_count`]) and drops them.
    pub const COUNT: &str = concat!(env!("OUT_DIR"), "/count.bpf.o");
}

/// Poll `condition` every millisecond or so until it holds or `timeout`
/// passes; returns its last value. For effects the kernel applies
/// asynchronously (frames processed by a veth's NAPI, devices of a deleted
/// namespace unregistered).
pub fn wait_until(timeout: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return condition();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
