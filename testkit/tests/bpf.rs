//! The `bpf` helpers themselves: loading, finding, test runs with a context,
//! verifier statistics.

use devmapc_testkit::bpf::{self, XDP_PASS};
use devmapc_testkit::netns::Netns;
use devmapc_testkit::packet::{self, Frame};
use devmapc_testkit::{objects, require_privileged};
use libbpf_rs::ProgramAttachType;

#[test]
fn finds_programs_and_maps_by_name_and_lists_the_others() {
    require_privileged!();
    let obj = bpf::load(objects::REDIRECT).unwrap();
    assert_eq!(bpf::prog(&obj, "redirect").unwrap().name(), "redirect");
    bpf::map(&obj, "tx_ports").unwrap();
    let err = bpf::map(&obj, "nope").unwrap_err().to_string();
    assert!(err.contains("tx_ports") && err.contains("cfg"), "{err}");
    let err = bpf::prog(&obj, "nope").unwrap_err().to_string();
    assert!(err.contains("redirect"), "{err}");
    let err = bpf::load("/nonexistent.bpf.o").unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent.bpf.o"), "{err:#}");
}

#[test]
fn load_hook_sets_the_attach_type() {
    require_privileged!();
    let obj = bpf::load_with(objects::PASS, |open| {
        bpf::set_attach_type(open, "xdp_pass", ProgramAttachType::XdpDevmap)
    })
    .unwrap();
    let prog = bpf::prog(&obj, "xdp_pass").unwrap();
    assert!(matches!(prog.attach_type(), ProgramAttachType::XdpDevmap));
    let err = bpf::load_with(objects::PASS, |open| {
        bpf::set_attach_type(open, "nope", ProgramAttachType::XdpDevmap)
    })
    .unwrap_err();
    assert!(err.to_string().contains("xdp_pass"), "{err}");
}

#[test]
fn test_run_passes_ingress_ifindex_and_returns_the_frame() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let (dev, _) = ns.veth("dmcctx0", "dmcctx1").unwrap();
    let obj = bpf::load(objects::EGRESS).unwrap();
    let prog = bpf::prog(&obj, "egress_rewrite_xdp").unwrap();
    let frame = Frame::new().vlan(10, 0).udp(1, 2).payload(b"payload").build();
    let run = ns.enter(|| bpf::test_run(&prog, &frame, Some(dev.ifindex), 3)).unwrap();
    assert_eq!(run.retval, XDP_PASS);
    assert_eq!(run.data.len(), frame.len());
    let p = packet::parse(&run.data).unwrap();
    let i = dev.ifindex;
    assert_eq!(p.src, [0x02, 0, 0, 0, (i >> 8) as u8, i as u8]);
    assert_eq!(p.vlan_ids(), vec![10]);
    assert_eq!(p.payload, b"payload");
    assert_eq!(run.data[12..], frame[12..], "only the source MAC changes");
}

#[test]
fn prog_stats_and_repeated_runs_report_numbers() {
    require_privileged!();
    let pass = bpf::load(objects::PASS).unwrap();
    let redirect = bpf::load(objects::REDIRECT).unwrap();
    let small = bpf::prog_stats(&bpf::prog(&pass, "xdp_pass").unwrap()).unwrap();
    let large = bpf::prog_stats(&bpf::prog(&redirect, "redirect").unwrap()).unwrap();
    assert!(small.verified_insns >= 1 && small.xlated_len >= 8, "{small:?}");
    assert_eq!(small.xlated_len % 8, 0);
    assert!(large.verified_insns > small.verified_insns, "{large:?} vs {small:?}");
    assert!(large.xlated_len > small.xlated_len);
    let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").unwrap_or_default();
    if jit.trim() != "0" {
        assert!(small.jited_len > 0 && large.jited_len > small.jited_len, "{large:?}");
    }
    let prog = bpf::prog(&pass, "xdp_pass").unwrap();
    let run = bpf::test_run(&prog, &Frame::new().udp(1, 2).build(), None, 10_000).unwrap();
    assert_eq!(run.retval, XDP_PASS);
    assert!(run.duration_ns > 0 && run.duration_ns < 100_000, "{run:?}");
}
