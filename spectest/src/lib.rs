//! `devmapc test`: runs a spec's `test` blocks against the real kernel, in a
//! [`Sandbox`].
//!
//! [`deploy`] loads the built object, fills its maps with the sandbox's
//! devices and attaches the ingress program (one function: the sandbox's
//! "apply"). [`run_test`] then plays each test:
//!
//! - its steps are split into **rounds**: a run of `send`s followed by the
//!   run of `expect`s after it (expectations written before the first `send`
//!   belong to the first round; `send`s after the last `expect` are sent,
//!   and nothing is checked about them);
//! - each `send` is run through the ingress program with
//!   `BPF_PROG_TEST_RUN` and `BPF_F_TEST_XDP_LIVE_FRAMES`, as if it arrived
//!   on its device: redirects really go out through the DEVMAP_HASH and the
//!   egress programs; a plain test run of the same frame first records the
//!   ingress program's verdict, for the report;
//! - what leaves each device is captured at its veth peer, what reaches the
//!   stack (`XDP_PASS`) with a packet socket on the device side;
//! - every expectation must be met by a packet of its own, and every packet
//!   seen must be expected (see `docs/testing.md`).
//!
//! The library prints nothing: results are data ([`TestOutcome`]), rendered
//! by the CLI.

pub mod capture;
pub mod inject;
pub mod packet;
pub mod sandbox;

use crate::capture::Capture;
use crate::packet::{Frame, Parsed, VlanTag};
use crate::sandbox::Sandbox;
use devmapc::ast::Span;
use devmapc::fields::LayerKind;
use devmapc::ir::Ir;
use devmapc::model::{Access, Const, LayerDef, Model, TestDef, TestStep};
use devmapc_runtime::deploy::{self, Attachment, DeployError, Loaded};
use devmapc_runtime::plan::{self, Handles};
use libbpf_rs::{libbpf_sys, MapCore as _};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Default field values of sent packets (besides those of
/// [`crate::packet`]: MACs 02:00:00:00:00:01 → 02:00:00:00:00:02, IPv4
/// 192.0.2.1 → 192.0.2.2, IPv6 2001:db8::1 → 2001:db8::2, TTL / hop limit
/// 64).
pub const DEFAULT_VLAN_ID: u16 = 1;
pub const DEFAULT_SPORT: u16 = 49152;
pub const DEFAULT_DPORT: u16 = 9;
/// How long a round waits for packets by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Once every expectation of a round is met, how long it waits for
/// packets that should not be there.
pub const SETTLE: Duration = Duration::from_millis(20);

/// A spec deployed into a sandbox: keep it alive while tests run.
#[derive(Debug)]
pub struct Deployed {
    pub loaded: Loaded,
    pub attachments: Vec<Attachment>,
}

/// Loads the object at `obj` for the plan `ir`, fills its maps with the
/// sandbox's devices and attaches the ingress program to the plan's
/// ingress devices, in the plan's mode, all on the sandbox's device side.
/// Nothing is pinned: dropping the result (or the sandbox) undoes it all.
///
/// The maps are written as `apply` writes them: the data plan's operations,
/// in order, through fresh read-write descriptors of the maps
/// (`BPF_F_RDONLY` / `BPF_F_WRONLY` belong to the descriptor the object was
/// loaded with), then the key map frozen under `access = read_only`.
pub fn deploy(sandbox: &Sandbox, obj: &Path, ir: &Ir) -> Result<Deployed, DeployError> {
    let loaded = deploy::load(obj, ir)?;
    let devices = sandbox.resolved();
    sandbox.devices_ns.enter(|| -> Result<Deployed, DeployError> {
        let handles = Reopened::new(&loaded)?;
        let plan = plan::diff(&plan::State::fresh(ir), &plan::desired(ir, &devices)?);
        plan::execute(&handles, &plan)?;
        if ir.code.access == Access::ReadOnly {
            let name = devmapc_runtime::apply::key_map(ir);
            let fd = handles
                .map_fd(name)
                .ok_or_else(|| DeployError::Mismatch(format!("the object has no map {name}")))?;
            // SAFETY: a valid map fd.
            let rc = unsafe { libbpf_sys::bpf_map_freeze(fd.as_raw_fd()) };
            if rc < 0 {
                return Err(DeployError::Mismatch(format!(
                    "cannot freeze map {name}: {}",
                    std::io::Error::from_raw_os_error(-rc)
                )));
            }
        }
        let mut attachments = Vec::new();
        for (planned, device) in ir.data.devices.iter().zip(&devices) {
            if planned.ingress {
                attachments.push(loaded.attach_ingress(device.ifindex, ir.data.xdp_mode)?);
            }
        }
        Ok(Deployed { loaded, attachments })
    })
}

/// The loaded object's programs, and its maps opened anew by id.
struct Reopened<'a> {
    loaded: &'a Loaded,
    maps: HashMap<String, OwnedFd>,
}

impl<'a> Reopened<'a> {
    fn new(loaded: &'a Loaded) -> Result<Reopened<'a>, DeployError> {
        let mut maps = HashMap::new();
        for map in loaded.object().maps() {
            let name = map.name().to_string_lossy().into_owned();
            let fail = |what: &str, e: std::io::Error| {
                DeployError::Mismatch(format!("cannot {what} map {name}: {e}"))
            };
            // SAFETY: zeroed bpf_map_info asks for nothing but the scalars.
            let mut info: libbpf_sys::bpf_map_info = unsafe { std::mem::zeroed() };
            let mut len = size_of_val(&info) as u32;
            let rc =
                unsafe { libbpf_sys::bpf_map_get_info_by_fd(map.as_fd().as_raw_fd(), &mut info, &mut len) };
            if rc < 0 {
                return Err(fail("inspect", std::io::Error::from_raw_os_error(-rc)));
            }
            // SAFETY: plain syscall; the fd is owned right away.
            let fd = unsafe { libbpf_sys::bpf_map_get_fd_by_id(info.id) };
            if fd < 0 {
                return Err(fail("reopen", std::io::Error::from_raw_os_error(-fd)));
            }
            maps.insert(name, unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(Reopened { loaded, maps })
    }
}

impl Handles for Reopened<'_> {
    fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.maps.get(name).map(|fd| fd.as_fd())
    }

    fn prog_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.loaded.prog_fd(name)
    }
}

// ------------------------------------------------------------------ packets

/// Builds the frame a `send` describes; unset fields get their defaults.
pub fn build_frame(layers: &[LayerDef]) -> Vec<u8> {
    let mut frame = Frame::new();
    let mut outer_tpid = None;
    for (i, layer) in layers.iter().enumerate() {
        let uint = |name: &str, default: u64| match layer.fields.iter().find(|(n, _)| *n == name) {
            Some((_, Const::Uint(v))) => *v,
            _ => default,
        };
        let mac = |name: &str| match layer.fields.iter().find(|(n, _)| *n == name) {
            Some((_, Const::Mac(m))) => Some(*m),
            _ => None,
        };
        let v4 = |name: &str, default: Ipv4Addr| match layer.fields.iter().find(|(n, _)| *n == name) {
            Some((_, Const::Ipv4(a))) => *a,
            _ => default,
        };
        let v6 = |name: &str, default: Ipv6Addr| match layer.fields.iter().find(|(n, _)| *n == name) {
            Some((_, Const::Ipv6(a))) => *a,
            _ => default,
        };
        let next = layers.get(i + 1).map(|l| l.kind);
        frame = match layer.kind {
            LayerKind::Eth => {
                if let Some(m) = mac("dst") {
                    frame = frame.dst(m);
                }
                if let Some(m) = mac("src") {
                    frame = frame.src(m);
                }
                match (layer.fields.iter().any(|(n, _)| *n == "type"), next) {
                    // The field after the addresses: the tag's TPID.
                    (true, Some(LayerKind::Vlan)) => outer_tpid = Some(uint("type", 0x8100) as u16),
                    (true, _) => frame = frame.ethertype(uint("type", 0) as u16),
                    _ => {}
                }
                frame
            }
            LayerKind::Vlan => {
                let tpid = outer_tpid.take().unwrap_or(packet::ETH_P_8021Q);
                frame.tag(VlanTag {
                    tpid,
                    id: uint("id", DEFAULT_VLAN_ID.into()) as u16,
                    pcp: uint("pcp", 0) as u8,
                    dei: false,
                })
            }
            LayerKind::Ipv4 => {
                let (src, dst) = packet::DEFAULT_IPV4;
                let mut f = frame.ipv4(v4("src", src), v4("dst", dst)).ttl(uint("ttl", 64) as u8);
                if layer.fields.iter().any(|(n, _)| *n == "proto") {
                    f = f.proto(uint("proto", 0) as u8);
                }
                f
            }
            LayerKind::Ipv6 => {
                let (src, dst) = packet::DEFAULT_IPV6;
                frame.ipv6(v6("src", src), v6("dst", dst)).hop_limit(uint("hop_limit", 64) as u8)
            }
            LayerKind::Udp => frame
                .udp(uint("sport", DEFAULT_SPORT.into()) as u16, uint("dport", DEFAULT_DPORT.into()) as u16),
            LayerKind::Tcp => frame
                .tcp(uint("sport", DEFAULT_SPORT.into()) as u16, uint("dport", DEFAULT_DPORT.into()) as u16),
            LayerKind::Payload => frame.payload(layer.payload.as_deref().unwrap_or("").as_bytes()),
        };
    }
    // As a NIC sends it: zero padding up to Ethernet's minimum. (A receiver
    // also drops a tagged frame too short to hold the tag and two bytes
    // after it before packet sockets see it.)
    frame.pad_to(ETH_ZLEN).build()
}

/// Ethernet's minimum frame length without the FCS.
pub const ETH_ZLEN: usize = 60;

/// A layer of a received packet, with every field a pattern can name.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenLayer {
    pub kind: LayerKind,
    pub fields: Vec<(&'static str, Const)>,
    /// For `payload`: the bytes after the last header recognised.
    pub payload: Option<Vec<u8>>,
}

/// A frame split into the layers patterns name. `eth.type` is the field
/// after the addresses (the TPID of a tagged frame); a frame that cannot be
/// parsed is its Ethernet header and the rest as payload.
pub fn layers_of(frame: &[u8]) -> Vec<SeenLayer> {
    let Ok(p) = packet::parse(frame) else {
        return raw_layers(frame);
    };
    layers_of_parsed(&p)
}

fn raw_layers(frame: &[u8]) -> Vec<SeenLayer> {
    if frame.len() < 14 {
        return vec![SeenLayer { kind: LayerKind::Payload, fields: vec![], payload: Some(frame.to_vec()) }];
    }
    vec![
        SeenLayer {
            kind: LayerKind::Eth,
            fields: vec![
                ("dst", Const::Mac(frame[0..6].try_into().unwrap())),
                ("src", Const::Mac(frame[6..12].try_into().unwrap())),
                ("type", Const::Uint(u16::from_be_bytes([frame[12], frame[13]]).into())),
            ],
            payload: None,
        },
        SeenLayer { kind: LayerKind::Payload, fields: vec![], payload: Some(frame[14..].to_vec()) },
    ]
}

fn layers_of_parsed(p: &Parsed) -> Vec<SeenLayer> {
    let layer = |kind, fields| SeenLayer { kind, fields, payload: None };
    let outer_type = p.tags.first().map_or(p.ethertype, |t| t.tpid);
    let mut out = vec![layer(
        LayerKind::Eth,
        vec![
            ("dst", Const::Mac(p.dst)),
            ("src", Const::Mac(p.src)),
            ("type", Const::Uint(outer_type.into())),
        ],
    )];
    for t in &p.tags {
        out.push(layer(
            LayerKind::Vlan,
            vec![("id", Const::Uint(t.id.into())), ("pcp", Const::Uint(t.pcp.into()))],
        ));
    }
    if let Some(h) = &p.ipv4 {
        out.push(layer(
            LayerKind::Ipv4,
            vec![
                ("src", Const::Ipv4(h.src)),
                ("dst", Const::Ipv4(h.dst)),
                ("ttl", Const::Uint(h.ttl.into())),
                ("proto", Const::Uint(h.proto.into())),
            ],
        ));
    }
    if let Some(h) = &p.ipv6 {
        out.push(layer(
            LayerKind::Ipv6,
            vec![
                ("src", Const::Ipv6(h.src)),
                ("dst", Const::Ipv6(h.dst)),
                ("hop_limit", Const::Uint(h.hop_limit.into())),
            ],
        ));
    }
    if let Some(h) = &p.udp {
        out.push(layer(
            LayerKind::Udp,
            vec![("sport", Const::Uint(h.sport.into())), ("dport", Const::Uint(h.dport.into()))],
        ));
    }
    if let Some(h) = &p.tcp {
        out.push(layer(
            LayerKind::Tcp,
            vec![("sport", Const::Uint(h.sport.into())), ("dport", Const::Uint(h.dport.into()))],
        ));
    }
    // A non-IP frame's payload runs to its end: zeros alone are padding.
    if p.payload.iter().any(|&b| b != 0) {
        out.push(SeenLayer { kind: LayerKind::Payload, fields: vec![], payload: Some(p.payload.clone()) });
    }
    out
}

/// Whether a pattern layer matches a packet layer: same kind, every field
/// named equal; a payload equal (a non-IP frame's zero padding ignored).
fn layer_matches(want: &LayerDef, seen: &SeenLayer) -> bool {
    if want.kind != seen.kind {
        return false;
    }
    if let Some(text) = &want.payload {
        let bytes = seen.payload.as_deref().unwrap_or(&[]);
        let text = text.as_bytes();
        return bytes.len() >= text.len()
            && &bytes[..text.len()] == text
            && bytes[text.len()..].iter().all(|&b| b == 0);
    }
    want.fields.iter().all(|(name, value)| seen.fields.iter().any(|(n, v)| n == name && v == value))
}

/// Whether `pattern`'s layers appear in `seen` in that order (others may come
/// between them), each matching.
pub fn matches(pattern: &[LayerDef], seen: &[SeenLayer]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((first, rest)) => {
            (0..seen.len()).any(|i| layer_matches(first, &seen[i]) && matches(rest, &seen[i + 1..]))
        }
    }
}

/// A field of a pattern compared with a packet, for a failure's report.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDiff {
    /// `vlan.id`, or just the layer (`tcp`) when the packet lacks it.
    pub field: String,
    pub expected: String,
    /// `None`: the packet has no such layer.
    pub seen: Option<String>,
    pub equal: bool,
}

/// Lines the pattern's fields up with the packet's layers (each pattern
/// layer with the first layer of its kind after the previous one).
pub fn diff(pattern: &[LayerDef], seen: &[SeenLayer]) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let mut at = 0;
    for want in pattern {
        let found = (at..seen.len())
            .find(|&i| seen[i].kind == want.kind && layer_matches(want, &seen[i]))
            .or_else(|| (at..seen.len()).find(|&i| seen[i].kind == want.kind));
        let Some(i) = found else {
            out.push(FieldDiff {
                field: want.kind.name().into(),
                expected: format_layer_def(want),
                seen: None,
                equal: false,
            });
            continue;
        };
        at = i + 1;
        let got = &seen[i];
        if let Some(text) = &want.payload {
            out.push(FieldDiff {
                field: "payload".into(),
                expected: quote(text.as_bytes()),
                seen: Some(quote(got.payload.as_deref().unwrap_or(&[]))),
                equal: layer_matches(want, got),
            });
        }
        for (name, value) in &want.fields {
            let actual = got.fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            out.push(FieldDiff {
                field: format!("{}.{name}", want.kind.name()),
                expected: format_value(want.kind, name, value),
                seen: Some(actual.map_or_else(|| "(none)".into(), |v| format_value(want.kind, name, &v))),
                equal: actual.as_ref() == Some(value),
            });
        }
    }
    out
}

fn format_value(kind: LayerKind, name: &str, value: &Const) -> String {
    match value {
        Const::Uint(n) if kind == LayerKind::Eth && name == "type" => format!("{n:#06x}"),
        Const::Uint(n) => n.to_string(),
        Const::Mac(m) => packet::fmt_mac(m),
        Const::Ipv4(a) => a.to_string(),
        Const::Ipv6(a) => a.to_string(),
    }
}

fn quote(bytes: &[u8]) -> String {
    let trimmed = {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        &bytes[..end]
    };
    match std::str::from_utf8(trimmed) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!(
            "{} bytes: {}",
            bytes.len(),
            bytes.iter().take(32).map(|b| format!("{b:02x}")).collect::<String>()
                + if bytes.len() > 32 { "..." } else { "" }
        ),
    }
}

fn format_fields(kind: LayerKind, fields: &[(&'static str, Const)], payload: Option<&[u8]>) -> String {
    if let Some(p) = payload {
        return format!("payload({})", quote(p));
    }
    let inner: Vec<String> =
        fields.iter().map(|(n, v)| format!("{n} = {}", format_value(kind, n, v))).collect();
    format!("{}({})", kind.name(), inner.join(", "))
}

/// A pattern or packet layer as a spec writes it; an `egress.mac` field
/// shows the address it stands for once the pattern is instantiated
/// (`src = egress.mac (02:...)`).
pub fn format_layer_def(l: &LayerDef) -> String {
    if l.payload.is_some() || l.egress_mac.is_empty() {
        return format_fields(l.kind, &l.fields, l.payload.as_deref().map(str::as_bytes));
    }
    let mut inner: Vec<String> = l
        .fields
        .iter()
        .filter(|(n, _)| !l.egress_mac.contains(n))
        .map(|(n, v)| format!("{n} = {}", format_value(l.kind, n, v)))
        .collect();
    for name in &l.egress_mac {
        match l.fields.iter().find(|(n, _)| n == name) {
            Some((_, v)) => inner.push(format!("{name} = egress.mac ({})", format_value(l.kind, name, v))),
            None => inner.push(format!("{name} = egress.mac")),
        }
    }
    format!("{}({})", l.kind.name(), inner.join(", "))
}

/// A pattern as a spec writes it (`(any packet)` when empty).
pub fn format_pattern(pattern: &[LayerDef]) -> String {
    if pattern.is_empty() {
        return "(any packet)".into();
    }
    pattern.iter().map(format_layer_def).collect::<Vec<_>>().join(" / ")
}

/// A received packet in the layer syntax.
pub fn format_seen(layers: &[SeenLayer]) -> String {
    layers
        .iter()
        .map(|l| format_fields(l.kind, &l.fields, l.payload.as_deref()))
        .collect::<Vec<_>>()
        .join(" / ")
}

// -------------------------------------------------------------------- tests

/// Where a packet was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// It left this device (index into the plan's devices).
    Out(usize),
    /// It reached the kernel's stack on this device (`XDP_PASS`).
    Stack(usize),
}

/// A packet seen during a round.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub place: Place,
    /// Its device's name in the spec.
    pub device: String,
    pub frame: Vec<u8>,
    pub layers: Vec<SeenLayer>,
    /// Its wrong checksums, for a packet that left a device (one that went
    /// up the stack is the sent packet itself).
    pub checksum_errors: Vec<FieldDiff>,
}

impl Seen {
    /// `on red` / `up the stack of uplink`.
    pub fn where_(&self) -> String {
        match self.place {
            Place::Out(_) => format!("left {}", self.device),
            Place::Stack(_) => format!("went up the stack of {}", self.device),
        }
    }
}

/// A failed expectation, or a packet nothing expected.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The `expect` (or for an unexpected packet, the `send`) in the spec.
    pub span: Span,
    /// One line: what should have happened and did not.
    pub message: String,
    /// The short label under the span.
    pub label: String,
    /// The pattern expected, as written (for `expect DEV`).
    pub expected: Option<String>,
    /// The packets that bear on it, each with the field-by-field comparison
    /// against the pattern (empty for packets not compared).
    pub seen: Vec<(Seen, Vec<FieldDiff>)>,
    /// The ingress program's verdicts on the round's packets
    /// (`XDP_REDIRECT`...), from a plain test run.
    pub verdicts: Vec<String>,
}

/// How one test went.
#[derive(Clone, Debug, PartialEq)]
pub struct TestOutcome {
    pub name: String,
    pub span: Span,
    pub duration: Duration,
    /// Empty when it passed.
    pub failures: Vec<Failure>,
    /// Set when the run was interrupted or could not send (the test neither
    /// passed nor failed on its merits).
    pub error: Option<String>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.error.is_none()
    }
}

/// How tests are run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a round waits for packets (see [`SETTLE`]).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options { timeout: DEFAULT_TIMEOUT }
    }
}

/// The sockets that watch a sandbox: one for every peer on the wire side,
/// one for the stack on the device side.
#[derive(Debug)]
pub struct Watch {
    wire: Capture,
    stack: Capture,
}

impl Watch {
    pub fn new(sandbox: &Sandbox) -> std::io::Result<Watch> {
        Ok(Watch {
            wire: sandbox.wire_ns.enter(|| Capture::open(0))?,
            stack: sandbox.devices_ns.enter(|| Capture::open(0))?,
        })
    }
}

enum Expect {
    Out {
        device: usize,
        /// With `egress.mac` filled in for the device ([`instantiate`]).
        pattern: Vec<LayerDef>,
        span: Span,
    },
    Pass {
        span: Span,
    },
    Drop {
        span: Span,
    },
}

struct Round<'a> {
    sends: Vec<(usize, &'a [LayerDef], Span)>,
    expects: Vec<Expect>,
}

/// `macs`: the sandbox's device addresses, for `egress.mac` in patterns.
fn rounds<'a>(test: &'a TestDef, macs: &[packet::Mac]) -> Vec<Round<'a>> {
    let mut out: Vec<Round> = Vec::new();
    let mut pending: Vec<Expect> = Vec::new(); // expects before the first send
                                               // Whether the current round has its expects: a send then starts a new one.
    let mut closed = true;
    for step in &test.steps {
        let e = match step {
            TestStep::Send { device, packet, span } => {
                if closed {
                    out.push(Round { sends: vec![], expects: std::mem::take(&mut pending) });
                    closed = false;
                }
                out.last_mut().expect("pushed").sends.push((*device, packet, *span));
                continue;
            }
            TestStep::ExpectDrop { span } => vec![Expect::Drop { span: *span }],
            TestStep::ExpectPass { span } => vec![Expect::Pass { span: *span }],
            TestStep::ExpectOut { devices, pattern, span } => devices
                .iter()
                .map(|&device| Expect::Out {
                    device,
                    pattern: instantiate(pattern, macs[device]),
                    span: *span,
                })
                .collect(),
        };
        match out.last_mut() {
            Some(r) => {
                r.expects.extend(e);
                closed = true;
            }
            None => pending.extend(e),
        }
    }
    out
}

/// Runs one test of `model` in a sandbox where it is [`deploy`]ed.
/// `interrupted` is polled while waiting for packets.
pub fn run_test(
    model: &Model,
    test: &TestDef,
    sandbox: &Sandbox,
    deployed: &Deployed,
    watch: &Watch,
    options: &Options,
    interrupted: &AtomicBool,
) -> TestOutcome {
    let start = Instant::now();
    let mut outcome = TestOutcome {
        name: test.name.clone(),
        span: test.span,
        duration: Duration::ZERO,
        failures: vec![],
        error: None,
    };
    let macs: Vec<packet::Mac> = sandbox.devices.iter().map(|d| d.mac).collect();
    for round in rounds(test, &macs) {
        match run_round(model, &round, sandbox, deployed, watch, options, interrupted) {
            Ok(failures) => outcome.failures.extend(failures),
            Err(e) => {
                outcome.error = Some(e);
                break;
            }
        }
    }
    outcome.duration = start.elapsed();
    outcome
}

fn run_round(
    model: &Model,
    round: &Round,
    sandbox: &Sandbox,
    deployed: &Deployed,
    watch: &Watch,
    options: &Options,
    interrupted: &AtomicBool,
) -> Result<Vec<Failure>, String> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    watch.wire.drain().map_err(io("reading the capture socket"))?;
    watch.stack.drain().map_err(io("reading the capture socket"))?;
    let prog = deployed.loaded.ingress();
    let mut verdicts = Vec::new();
    for (device, packet, _) in &round.sends {
        let frame = build_frame(packet);
        let ifindex = sandbox.devices[*device].ifindex;
        let name = &model.devices[*device].name;
        if !model.ingress.on.contains(device) {
            // No XDP program on this device: the packet arrives from its
            // wire and goes up its stack, as it would on a host (W006).
            verdicts.push(format!("no XDP program on {name} (not in ingress.on)"));
            let peer = sandbox.devices[*device].peer_ifindex;
            sandbox
                .wire_ns
                .enter(|| inject::send_on_wire(&frame, peer, 1))
                .map_err(io("sending on the wire"))?;
            continue;
        }
        sandbox.devices_ns.enter(|| -> Result<(), String> {
            let (action, _) =
                inject::verdict(prog, &frame, ifindex).map_err(io("test run of the ingress program"))?;
            verdicts.push(format!("{} on {name}", inject::action_name(action)));
            inject::test_run_live(prog, &frame, ifindex, 1, 0)
                .map_err(io("live test run of the ingress program"))?;
            Ok(())
        })?;
    }
    // Wait for packets.
    let wanted = round.expects.iter().filter(|e| !matches!(e, Expect::Drop { .. })).count();
    let expects_drop = round.expects.iter().any(|e| matches!(e, Expect::Drop { .. }));
    let start = Instant::now();
    let mut last = start;
    let mut seen: Vec<Seen> = Vec::new();
    loop {
        if interrupted.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let mut got = false;
        while let Some(c) = watch.wire.try_recv().map_err(io("reading the capture socket"))? {
            if let Some(d) = sandbox.devices.iter().position(|d| d.peer_ifindex == c.ifindex) {
                seen.push(Seen {
                    place: Place::Out(d),
                    device: model.devices[d].name.clone(),
                    layers: layers_of(&c.frame),
                    checksum_errors: checksum_errors(&c.frame),
                    frame: c.frame,
                });
                got = true;
            }
        }
        while let Some(c) = watch.stack.try_recv().map_err(io("reading the capture socket"))? {
            if let Some(d) = sandbox.devices.iter().position(|d| d.ifindex == c.ifindex) {
                seen.push(Seen {
                    place: Place::Stack(d),
                    device: model.devices[d].name.clone(),
                    layers: layers_of(&c.frame),
                    checksum_errors: Vec::new(),
                    frame: c.frame,
                });
                got = true;
            }
        }
        let now = Instant::now();
        if got {
            last = now;
        }
        let elapsed = now - start;
        if elapsed >= options.timeout {
            break;
        }
        let settled =
            !expects_drop && wanted > 0 && seen.len() >= wanted && now - last >= SETTLE.min(options.timeout);
        if settled {
            break;
        }
        capture::wait_any(
            &[&watch.wire, &watch.stack],
            (options.timeout - elapsed).min(Duration::from_millis(5)),
        )
        .map_err(io("waiting for packets"))?;
    }
    Ok(judge(model, round, seen, verdicts))
}

/// A pattern for the packets leaving a device whose address is `mac`: its
/// `egress.mac` fields get that address.
pub fn instantiate(pattern: &[LayerDef], mac: packet::Mac) -> Vec<LayerDef> {
    pattern
        .iter()
        .map(|l| {
            let mut l = l.clone();
            for name in &l.egress_mac {
                l.fields.push((name, Const::Mac(mac)));
            }
            l
        })
        .collect()
}

/// What is wrong with a packet's checksums (IPv4 header, UDP, TCP), as
/// lines of a failure's report; none when they are right. A forwarded
/// packet must keep them right whatever its egress program changed.
pub fn checksum_errors(frame: &[u8]) -> Vec<FieldDiff> {
    let Ok(p) = packet::parse(frame) else {
        return Vec::new();
    };
    let wrong = |field: &str| FieldDiff {
        field: field.into(),
        expected: "a correct checksum".into(),
        seen: Some("a wrong one".into()),
        equal: false,
    };
    let mut out = Vec::new();
    if p.ipv4.as_ref().is_some_and(|h| !h.checksum_valid) {
        out.push(wrong("ipv4 checksum"));
    }
    if p.udp.as_ref().is_some_and(|h| !h.checksum_valid) {
        out.push(wrong("udp checksum"));
    }
    if p.tcp.as_ref().is_some_and(|h| !h.checksum_valid) {
        out.push(wrong("tcp checksum"));
    }
    out
}

/// Matches expectations to packets one to one (augmenting paths), then
/// reports what is left over on either side.
fn judge(model: &Model, round: &Round, seen: Vec<Seen>, verdicts: Vec<String>) -> Vec<Failure> {
    let send_devices: Vec<usize> = round.sends.iter().map(|s| s.0).collect();
    let fits = |e: &Expect, s: &Seen| match (e, s.place) {
        (Expect::Out { device, pattern, .. }, Place::Out(d)) => {
            *device == d && matches(pattern, &s.layers) && s.checksum_errors.is_empty()
        }
        (Expect::Pass { .. }, Place::Stack(d)) => send_devices.contains(&d),
        _ => false,
    };
    let mut owner: Vec<Option<usize>> = vec![None; seen.len()];
    for e in 0..round.expects.len() {
        let mut visited = vec![false; seen.len()];
        augment(e, &round.expects, &seen, &fits, &mut owner, &mut visited);
    }
    let matched: Vec<bool> = (0..round.expects.len()).map(|e| owner.contains(&Some(e))).collect();
    let leftover: Vec<usize> = (0..seen.len()).filter(|&s| owner[s].is_none()).collect();
    let mut failures = Vec::new();
    let mut explained = vec![false; seen.len()];
    let describe_all =
        |only: &dyn Fn(&Seen) -> bool, pattern: Option<&[LayerDef]>| -> Vec<(Seen, Vec<FieldDiff>)> {
            leftover
                .iter()
                .map(|&i| &seen[i])
                .filter(|s| only(s))
                .map(|s| {
                    let mut lines = pattern.map_or_else(Vec::new, |p| diff(p, &s.layers));
                    if pattern.is_some() {
                        lines.extend(s.checksum_errors.iter().cloned());
                    }
                    (s.clone(), lines)
                })
                .collect()
        };
    for (e, expect) in round.expects.iter().enumerate() {
        match expect {
            Expect::Out { device, pattern, span } if !matched[e] => {
                let name = &model.devices[*device].name;
                let here = describe_all(&|s| s.place == Place::Out(*device), Some(pattern));
                let here_empty = here.is_empty();
                let (message, label, shown) = if here.is_empty() {
                    let elsewhere = describe_all(&|_| true, Some(pattern));
                    let label = if elsewhere.is_empty() {
                        "nothing left any device".to_string()
                    } else {
                        format!("nothing left {name}")
                    };
                    (format!("expected a packet to leave {name}, and none did"), label, elsewhere)
                } else {
                    (
                        format!("the packet that left {name} does not match the pattern"),
                        "no packet matched this".to_string(),
                        here,
                    )
                };
                // The packets shown are accounted for by this failure (a
                // packet on the wrong device is one mistake, not two).
                let shown_here = here_empty;
                for (i, s) in seen.iter().enumerate() {
                    if owner[i].is_none() && (shown_here || s.place == Place::Out(*device)) {
                        explained[i] = true;
                    }
                }
                failures.push(Failure {
                    span: *span,
                    message,
                    label,
                    expected: Some(format!("{name}: {}", format_pattern(pattern))),
                    seen: shown,
                    verdicts: verdicts.clone(),
                });
            }
            Expect::Pass { span } if !matched[e] => {
                let devices: Vec<&str> =
                    send_devices.iter().map(|&d| model.devices[d].name.as_str()).collect();
                failures.push(Failure {
                    span: *span,
                    message: format!(
                        "expected the packet to go up the stack of {}, and it did not",
                        devices.join(", ")
                    ),
                    label: "not passed".into(),
                    expected: None,
                    seen: describe_all(&|_| true, None),
                    verdicts: verdicts.clone(),
                });
                for (i, s) in seen.iter().enumerate() {
                    if owner[i].is_none() && matches!(s.place, Place::Stack(_)) {
                        explained[i] = true;
                    }
                }
            }
            Expect::Drop { span } if !seen.is_empty() => {
                failures.push(Failure {
                    span: *span,
                    message: format!(
                        "expected the packet to be dropped, but {} packet{} came out",
                        seen.len(),
                        if seen.len() == 1 { "" } else { "s" }
                    ),
                    label: "not dropped".into(),
                    expected: None,
                    seen: seen.iter().map(|s| (s.clone(), vec![])).collect(),
                    verdicts: verdicts.clone(),
                });
                explained.iter_mut().for_each(|x| *x = true);
            }
            _ => {}
        }
    }
    let unexplained: Vec<(Seen, Vec<FieldDiff>)> =
        leftover.iter().filter(|&&i| !explained[i]).map(|&i| (seen[i].clone(), vec![])).collect();
    if !unexplained.is_empty() {
        let span = round.sends.last().map_or(Span::new(0, 0), |s| s.2);
        let mut places: Vec<String> = unexplained.iter().map(|(s, _)| s.where_()).collect();
        places.dedup();
        failures.push(Failure {
            span,
            message: format!("a packet that no `expect` names {}", places.join(", ")),
            label: "this packet".into(),
            expected: None,
            seen: unexplained,
            verdicts,
        });
    }
    failures.sort_by_key(|f| f.span.start);
    failures
}

fn augment(
    e: usize,
    expects: &[Expect],
    seen: &[Seen],
    fits: &dyn Fn(&Expect, &Seen) -> bool,
    owner: &mut [Option<usize>],
    visited: &mut [bool],
) -> bool {
    for s in 0..seen.len() {
        if visited[s] || !fits(&expects[e], &seen[s]) {
            continue;
        }
        visited[s] = true;
        if owner[s].is_none_or(|other| augment(other, expects, seen, fits, owner, visited)) {
            owner[s] = Some(e);
            return true;
        }
    }
    false
}

/// A failure's details as text: the pattern, each packet seen with its
/// field-by-field comparison, and the verdicts.
pub fn describe(failure: &Failure) -> String {
    let mut out = String::new();
    if let Some(expected) = &failure.expected {
        let _ = writeln!(out, "expected on {expected}");
    }
    if failure.seen.is_empty() {
        let _ = writeln!(out, "seen: nothing, on any device or stack");
    }
    for (s, diffs) in &failure.seen {
        let _ = writeln!(out, "seen: {}: {}", s.where_(), format_seen(&s.layers));
        let width = diffs.iter().map(|d| d.field.len()).max().unwrap_or(0);
        for d in diffs {
            let _ = match &d.seen {
                None => writeln!(
                    out,
                    "    - {:width$}  expected {}, the packet has no such layer",
                    d.field, d.expected
                ),
                Some(got) if d.equal => writeln!(out, "      {:width$}  {got}", d.field),
                Some(got) => writeln!(out, "    - {:width$}  expected {}, seen {got}", d.field, d.expected),
            };
        }
    }
    if !failure.verdicts.is_empty() {
        let _ = writeln!(out, "ingress verdict: {}", failure.verdicts.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(source: &str) -> Model {
        let c = devmapc::check_source(source);
        c.model.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
    }

    const SPEC: &str = r#"
table { key = vlan.id }
device a { ifname = "a" }
device b { ifname = "b" }
ingress { on = [a] }
route 10 -> b
test "t" {
    send a eth(dst = 02:00:00:00:00:09, type = 0x88a8) / vlan(id = 10, pcp = 3) / vlan() / ipv4(dst = 10.0.0.1, ttl = 9) / udp(dport = 53) / payload("hi")
    expect b vlan(id = 1) / udp(dport = 53) / payload("hi")
    send a eth() / ipv6()
    send a eth(type = 0x0806) / payload("x")
    expect pass
    expect pass
}
"#;

    #[test]
    fn egress_mac_in_a_pattern_is_the_leaving_device_s_address() {
        let model = checked(
            r#"
table { key = vlan.id }
device a { ifname = "a" }
device b { ifname = "b", egress = own }
egress own {
    eth.src = egress.mac
}
ingress { on = [a] }
route 10 -> b
test "t" {
    send a eth() / vlan(id = 10)
    expect b eth(src = egress.mac, dst = 02:00:00:00:00:02) / vlan(id = 10)
}
"#,
        );
        let TestStep::ExpectOut { pattern, .. } = &model.tests[0].steps[1] else { panic!() };
        let mac = [2, 0xdd, 0, 0, 0, 7];
        let mut frame = Frame::new().src(mac).vlan(10, 0).build();
        frame.resize(ETH_ZLEN, 0);
        let pattern = instantiate(pattern, mac);
        assert!(matches(&pattern, &layers_of(&frame)));
        assert_eq!(
            format_pattern(&pattern),
            "eth(dst = 02:00:00:00:00:02, src = egress.mac (02:dd:00:00:00:07)) / vlan(id = 10)"
        );
        // Another device's address does not match.
        let wrong_device = instantiate(
            match &model.tests[0].steps[1] {
                TestStep::ExpectOut { pattern, .. } => pattern,
                _ => unreachable!(),
            },
            [2, 0, 0, 0, 0, 1],
        );
        assert!(!matches(&wrong_device, &layers_of(&frame)));
    }

    #[test]
    fn wrong_checksums_are_named() {
        let good =
            Frame::new().ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)).udp(1, 2).build();
        assert!(checksum_errors(&good).is_empty());
        let bad = Frame::new()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .ipv4_checksum(0x1234)
            .udp(1, 2)
            .build();
        let errors = checksum_errors(&bad);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "ipv4 checksum");
        assert!(!errors[0].equal);
    }

    #[test]
    fn builds_frames_with_defaults() {
        let model = checked(SPEC);
        let TestStep::Send { packet, .. } = &model.tests[0].steps[0] else { panic!() };
        let frame = build_frame(packet);
        let p = packet::parse(&frame).unwrap();
        assert_eq!(p.dst, [2, 0, 0, 0, 0, 9]);
        assert_eq!(p.src, packet::DEFAULT_SRC);
        assert_eq!(
            p.tags.iter().map(|t| (t.tpid, t.id, t.pcp)).collect::<Vec<_>>(),
            [(0x88a8, 10, 3), (0x8100, 1, 0)]
        );
        let ip = p.ipv4.unwrap();
        assert_eq!((ip.dst, ip.ttl, ip.proto), (Ipv4Addr::new(10, 0, 0, 1), 9, 17));
        assert_eq!(p.udp.unwrap().sport, DEFAULT_SPORT);
        assert_eq!(p.payload, b"hi");
        let seen = layers_of(&frame);
        assert_eq!(
            format_seen(&seen),
            "eth(dst = 02:00:00:00:00:09, src = 02:00:00:00:00:01, type = 0x88a8) / vlan(id = 10, pcp = 3) / vlan(id = 1, pcp = 0) / \
             ipv4(src = 192.0.2.1, dst = 10.0.0.1, ttl = 9, proto = 17) / udp(sport = 49152, dport = 53) / payload(\"hi\")"
        );
        let TestStep::Send { packet, .. } = &model.tests[0].steps[3] else { panic!() };
        let p = packet::parse(&build_frame(packet)).unwrap();
        assert_eq!((p.ethertype, &p.payload[..1]), (0x0806, &b"x"[..]));
        assert!(p.payload[1..].iter().all(|&b| b == 0), "padded to 60 bytes");
        assert_eq!(build_frame(packet).len(), ETH_ZLEN);
    }

    #[test]
    fn patterns_match_in_order_with_free_fields() {
        let model = checked(SPEC);
        let TestStep::Send { packet, .. } = &model.tests[0].steps[0] else { panic!() };
        let TestStep::ExpectOut { pattern, .. } = &model.tests[0].steps[1] else { panic!() };
        let seen = layers_of(&build_frame(packet));
        assert!(matches(pattern, &seen), "the inner tag has id 1");
        assert!(diff(pattern, &seen).iter().all(|d| d.equal));
        assert!(matches(&[], &seen));
        let mut wrong = pattern.clone();
        wrong[1].fields[0].1 = Const::Uint(54);
        assert!(!matches(&wrong, &seen));
        let d = diff(&wrong, &seen);
        assert_eq!(
            d.iter()
                .filter(|d| !d.equal)
                .map(|d| (d.field.as_str(), d.expected.as_str(), d.seen.as_deref()))
                .collect::<Vec<_>>(),
            [("udp.dport", "54", Some("53"))]
        );
        // Order matters.
        let reversed: Vec<LayerDef> = pattern.iter().rev().cloned().collect();
        assert!(!matches(&reversed, &seen));
    }

    #[test]
    fn splits_steps_into_rounds() {
        let model = checked(SPEC);
        let r = rounds(&model.tests[0], &[[0; 6]; 2]);
        assert_eq!(r.iter().map(|r| (r.sends.len(), r.expects.len())).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
    }
}
