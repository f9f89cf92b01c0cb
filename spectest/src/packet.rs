//! Frames for tests (`devmapc test` and the test suites): build them layer
//! by layer, and split received ones back into layers and fields.
//!
//! ```
//! use devmapc_spectest::packet::{parse, Frame};
//! use std::net::Ipv4Addr;
//!
//! let frame = Frame::new()
//!     .vlan(10, 3)
//!     .ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))
//!     .ttl(64)
//!     .udp(1234, 5678)
//!     .payload(b"hello")
//!     .build();
//! let p = parse(&frame).unwrap();
//! assert_eq!(p.vlan_ids(), vec![10]);
//! let ip = p.ipv4.unwrap();
//! assert_eq!(ip.ttl, 64);
//! assert!(ip.checksum_valid);
//! assert!(p.udp.unwrap().checksum_valid);
//! ```
//!
//! Defaults: source MAC 02:00:00:00:00:01, destination 02:00:00:00:00:02,
//! addresses from the documentation ranges (192.0.2.1 → 192.0.2.2,
//! 2001:db8::1 → 2001:db8::2), TTL / hop limit 64, IPv4 with DF set. All
//! checksums (IPv4 header, UDP, TCP) are computed.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A MAC address.
pub type Mac = [u8; 6];

/// Default source MAC of built frames.
pub const DEFAULT_SRC: Mac = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC of built frames.
pub const DEFAULT_DST: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// Default IPv4 source and destination.
pub const DEFAULT_IPV4: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
/// Default IPv6 source and destination.
pub const DEFAULT_IPV6: (Ipv6Addr, Ipv6Addr) =
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// IEEE "local experimental" ethertype: the default for frames without L3.
pub const ETH_P_EXPERIMENTAL: u16 = 0x88b5;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// "Use for experimentation and testing": the IPv4 protocol / IPv6 next
/// header of an L3 packet without UDP or TCP.
pub const IPPROTO_TEST: u8 = 253;

/// Parse `02:00:00:00:00:01` (also with `-`).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Format as `02:00:00:00:00:01`.
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// An 802.1Q (`tpid` 0x8100) or 802.1ad (0x88a8) tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    /// VLAN id, 12 bits.
    pub id: u16,
    /// Priority code point, 3 bits.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
}

impl VlanTag {
    fn tci(&self) -> u16 {
        ((self.pcp as u16 & 7) << 13) | ((self.dei as u16) << 12) | (self.id & 0x0fff)
    }
}

#[derive(Debug, Clone)]
enum L3 {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        proto: Option<u8>,
        tos: u8,
        id: u16,
        dont_fragment: bool,
        checksum: Option<u16>,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        next_header: Option<u8>,
        traffic_class: u8,
        flow_label: u32,
    },
}

#[derive(Debug, Clone)]
enum L4 {
    Udp { sport: u16, dport: u16 },
    Tcp { sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, window: u16 },
}

/// Builder of a test frame; [`Frame::build`] gives the bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    dst: Mac,
    src: Mac,
    tags: Vec<VlanTag>,
    ethertype: Option<u16>,
    l3: Option<L3>,
    l4: Option<L4>,
    payload: Vec<u8>,
    pad_to: usize,
}

impl Default for Frame {
    fn default() -> Self {
        Self::new()
    }
}

impl Frame {
    /// An Ethernet frame from [`DEFAULT_SRC`] to [`DEFAULT_DST`], nothing else.
    pub fn new() -> Frame {
        Frame {
            dst: DEFAULT_DST,
            src: DEFAULT_SRC,
            tags: Vec::new(),
            ethertype: None,
            l3: None,
            l4: None,
            payload: Vec::new(),
            pad_to: 0,
        }
    }

    /// Shorthand for `Frame::new().dst(dst).src(src).ethertype(ethertype)`.
    pub fn eth(dst: Mac, src: Mac, ethertype: u16) -> Frame {
        Frame::new().dst(dst).src(src).ethertype(ethertype)
    }

    pub fn dst(mut self, mac: Mac) -> Self {
        self.dst = mac;
        self
    }

    pub fn src(mut self, mac: Mac) -> Self {
        self.src = mac;
        self
    }

    /// The ethertype after the tags; by default derived from the L3 layer
    /// (or [`ETH_P_EXPERIMENTAL`] without one).
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = Some(ethertype);
        self
    }

    /// Add an 802.1Q tag (after those already added: the first is outermost).
    pub fn vlan(self, id: u16, pcp: u8) -> Self {
        self.tag(VlanTag { tpid: ETH_P_8021Q, id, pcp, dei: false })
    }

    /// Add an 802.1ad (S-tag, 0x88a8) tag.
    pub fn vlan_ad(self, id: u16, pcp: u8) -> Self {
        self.tag(VlanTag { tpid: ETH_P_8021AD, id, pcp, dei: false })
    }

    /// Add any tag. At most two tags are supported, as on the wire.
    pub fn tag(mut self, tag: VlanTag) -> Self {
        assert!(self.tags.len() < 2, "at most two VLAN tags");
        assert!(tag.id <= 0x0fff && tag.pcp <= 7, "VLAN id is 12 bits, pcp 3 bits: {tag:?}");
        self.tags.push(tag);
        self
    }

    /// IPv4 with TTL 64, DF set, id 0, TOS 0.
    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.l3 = Some(L3::V4 {
            src,
            dst,
            ttl: 64,
            proto: None,
            tos: 0,
            id: 0,
            dont_fragment: true,
            checksum: None,
        });
        self
    }

    /// IPv6 with hop limit 64, traffic class and flow label 0.
    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        self.l3 =
            Some(L3::V6 { src, dst, hop_limit: 64, next_header: None, traffic_class: 0, flow_label: 0 });
        self
    }

    /// IPv4 TTL or IPv6 hop limit (adds default IPv4 when no L3 is set).
    pub fn ttl(mut self, value: u8) -> Self {
        match self.l3_or_default() {
            L3::V4 { ttl, .. } => *ttl = value,
            L3::V6 { hop_limit, .. } => *hop_limit = value,
        }
        self
    }

    /// Same as [`Frame::ttl`].
    pub fn hop_limit(self, value: u8) -> Self {
        self.ttl(value)
    }

    /// IPv4 protocol / IPv6 next header; by default derived from L4 (or
    /// [`IPPROTO_TEST`]).
    pub fn proto(mut self, value: u8) -> Self {
        match self.l3_or_default() {
            L3::V4 { proto, .. } => *proto = Some(value),
            L3::V6 { next_header, .. } => *next_header = Some(value),
        }
        self
    }

    /// IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN).
    pub fn tos(mut self, value: u8) -> Self {
        match self.l3_or_default() {
            L3::V4 { tos, .. } => *tos = value,
            L3::V6 { traffic_class, .. } => *traffic_class = value,
        }
        self
    }

    /// Store this value as the IPv4 header checksum instead of the right
    /// one (to build a corrupt header).
    pub fn ipv4_checksum(mut self, value: u16) -> Self {
        match self.l3_or_default() {
            L3::V4 { checksum, .. } => *checksum = Some(value),
            L3::V6 { .. } => panic!("ipv4_checksum on an IPv6 frame"),
        }
        self
    }

    /// UDP (adds default IPv4 when no L3 is set).
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l3_or_default();
        self.l4 = Some(L4::Udp { sport, dport });
        self
    }

    /// TCP with SYN set, seq/ack 0, window 65535 (adds default IPv4 when no
    /// L3 is set).
    pub fn tcp(mut self, sport: u16, dport: u16) -> Self {
        self.l3_or_default();
        self.l4 = Some(L4::Tcp { sport, dport, seq: 0, ack: 0, flags: 0x02, window: 65535 });
        self
    }

    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub fn tcp_flags(mut self, value: u8) -> Self {
        match &mut self.l4 {
            Some(L4::Tcp { flags, .. }) => *flags = value,
            _ => panic!("tcp_flags before tcp()"),
        }
        self
    }

    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Pad with zeros to at least `len` bytes (60 is Ethernet's minimum
    /// without FCS). The padding is not part of any IP length.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    fn l3_or_default(&mut self) -> &mut L3 {
        if self.l3.is_none() {
            let (src, dst) = DEFAULT_IPV4;
            *self = std::mem::take(self).ipv4(src, dst);
        }
        self.l3.as_mut().unwrap()
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.payload.len());
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        let inner_type = self.ethertype.unwrap_or(match self.l3 {
            Some(L3::V4 { .. }) => ETH_P_IPV4,
            Some(L3::V6 { .. }) => ETH_P_IPV6,
            None => ETH_P_EXPERIMENTAL,
        });
        for tag in &self.tags {
            out.extend_from_slice(&tag.tpid.to_be_bytes());
            out.extend_from_slice(&tag.tci().to_be_bytes());
        }
        out.extend_from_slice(&inner_type.to_be_bytes());

        let l4_proto = match self.l4 {
            Some(L4::Udp { .. }) => IPPROTO_UDP,
            Some(L4::Tcp { .. }) => IPPROTO_TCP,
            None => IPPROTO_TEST,
        };
        let mut segment = match &self.l4 {
            None => Vec::new(),
            Some(L4::Udp { sport, dport }) => {
                let len = (8 + self.payload.len()) as u16;
                let mut udp = Vec::with_capacity(8);
                udp.extend_from_slice(&sport.to_be_bytes());
                udp.extend_from_slice(&dport.to_be_bytes());
                udp.extend_from_slice(&len.to_be_bytes());
                udp.extend_from_slice(&[0, 0]);
                udp
            }
            Some(L4::Tcp { sport, dport, seq, ack, flags, window }) => {
                let mut tcp = Vec::with_capacity(20);
                tcp.extend_from_slice(&sport.to_be_bytes());
                tcp.extend_from_slice(&dport.to_be_bytes());
                tcp.extend_from_slice(&seq.to_be_bytes());
                tcp.extend_from_slice(&ack.to_be_bytes());
                tcp.push(5 << 4); // data offset: 5 words, no options
                tcp.push(*flags);
                tcp.extend_from_slice(&window.to_be_bytes());
                tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                tcp
            }
        };
        segment.extend_from_slice(&self.payload);

        match &self.l3 {
            None => out.extend_from_slice(&segment),
            Some(L3::V4 { src, dst, ttl, proto, tos, id, dont_fragment, checksum }) => {
                let proto = proto.unwrap_or(l4_proto);
                fill_l4_checksum(&self.l4, &mut segment, |s| pseudo_v4(src, dst, proto, s.len()));
                let total = (20 + segment.len()) as u16;
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[1] = *tos;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&id.to_be_bytes());
                let frag: u16 = if *dont_fragment { 0x4000 } else { 0 };
                ip[6..8].copy_from_slice(&frag.to_be_bytes());
                ip[8] = *ttl;
                ip[9] = proto;
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                let sum = checksum.unwrap_or_else(|| internet_checksum(0, &ip));
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&ip);
                out.extend_from_slice(&segment);
            }
            Some(L3::V6 { src, dst, hop_limit, next_header, traffic_class, flow_label }) => {
                let next_header = next_header.unwrap_or(l4_proto);
                fill_l4_checksum(&self.l4, &mut segment, |s| pseudo_v6(src, dst, next_header, s.len()));
                let first: u32 = (6 << 28) | ((*traffic_class as u32) << 20) | (flow_label & 0x000f_ffff);
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&(segment.len() as u16).to_be_bytes());
                out.push(next_header);
                out.push(*hop_limit);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&segment);
            }
        }
        if out.len() < self.pad_to {
            out.resize(self.pad_to, 0);
        }
        out
    }
}

fn fill_l4_checksum(l4: &Option<L4>, segment: &mut [u8], pseudo: impl Fn(&[u8]) -> u32) {
    let offset = match l4 {
        Some(L4::Udp { .. }) => 6,
        Some(L4::Tcp { .. }) => 16,
        None => return,
    };
    let mut sum = internet_checksum(pseudo(segment), segment);
    if sum == 0 && matches!(l4, Some(L4::Udp { .. })) {
        sum = 0xffff; // 0 means "no checksum" in UDP
    }
    segment[offset..offset + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Sum of the IPv4 pseudo header, to seed [`internet_checksum`].
pub fn pseudo_v4(src: &Ipv4Addr, dst: &Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut sum = ones_sum(0, &src.octets());
    sum = ones_sum(sum, &dst.octets());
    sum + proto as u32 + len as u32
}

/// Sum of the IPv6 pseudo header, to seed [`internet_checksum`].
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: usize) -> u32 {
    let mut sum = ones_sum(0, &src.octets());
    sum = ones_sum(sum, &dst.octets());
    sum + (len as u32 >> 16) + (len as u32 & 0xffff) + next_header as u32
}

fn ones_sum(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

/// RFC 1071 checksum of `bytes`, seeded with `initial` (a pseudo-header
/// sum). Over data that contains a correct checksum it returns 0.
pub fn internet_checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = ones_sum(initial, bytes) as u64;
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A parsed IPv4 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset (DF is 0x4000).
    pub frag: u16,
    pub total_len: u16,
    /// Header length in bytes.
    pub header_len: usize,
    pub checksum: u16,
    pub checksum_valid: bool,
}

/// A parsed IPv6 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub next_header: u8,
    pub payload_len: u16,
    pub traffic_class: u8,
    pub flow_label: u32,
}

/// A parsed UDP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub checksum: u16,
    /// Right, or 0 (not computed) over IPv4.
    pub checksum_valid: bool,
}

/// A parsed TCP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub header_len: usize,
    pub checksum: u16,
    pub checksum_valid: bool,
}

/// A frame split into layers by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub dst: Mac,
    pub src: Mac,
    /// Tags, outermost first.
    pub tags: Vec<VlanTag>,
    /// The ethertype after the tags.
    pub ethertype: u16,
    pub ipv4: Option<Ipv4Header>,
    pub ipv6: Option<Ipv6Header>,
    pub udp: Option<UdpHeader>,
    pub tcp: Option<TcpHeader>,
    /// What follows the last recognised header, up to the end of the IP
    /// packet (or of the frame without IP).
    pub payload: Vec<u8>,
    /// Bytes after the end of the IP packet (Ethernet padding).
    pub trailer: Vec<u8>,
}

impl Parsed {
    /// The VLAN ids, outermost first.
    pub fn vlan_ids(&self) -> Vec<u16> {
        self.tags.iter().map(|t| t.id).collect()
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(&self) -> Option<u8> {
        self.ipv4.as_ref().map(|h| h.ttl).or(self.ipv6.as_ref().map(|h| h.hop_limit))
    }
}

/// Why a frame could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot parse frame: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

fn need(frame: &[u8], end: usize, what: &str) -> Result<(), ParseError> {
    if frame.len() < end {
        return Err(ParseError(format!("{what} needs {end} bytes, frame has {}", frame.len())));
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Split a frame into Ethernet, VLAN tags, IPv4/IPv6 and UDP/TCP. Unknown
/// ethertypes and protocols end the parse (the rest is `payload`); a header
/// cut short is an error.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    need(frame, 14, "Ethernet header")?;
    let mut p = Parsed {
        dst: frame[0..6].try_into().unwrap(),
        src: frame[6..12].try_into().unwrap(),
        tags: Vec::new(),
        ethertype: 0,
        ipv4: None,
        ipv6: None,
        udp: None,
        tcp: None,
        payload: Vec::new(),
        trailer: Vec::new(),
    };
    let mut at = 12;
    let mut ethertype = be16(frame, at);
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        need(frame, at + 6, "VLAN tag")?;
        let tci = be16(frame, at + 2);
        p.tags.push(VlanTag {
            tpid: ethertype,
            id: tci & 0x0fff,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
        });
        at += 4;
        ethertype = be16(frame, at);
    }
    at += 2;
    p.ethertype = ethertype;

    let (proto, l4_at, end, pseudo) = match ethertype {
        ETH_P_IPV4 => {
            need(frame, at + 20, "IPv4 header")?;
            let header_len = ((frame[at] & 0x0f) as usize) * 4;
            if frame[at] >> 4 != 4 || header_len < 20 {
                return Err(ParseError(format!("bad IPv4 version/IHL byte {:#04x}", frame[at])));
            }
            need(frame, at + header_len, "IPv4 header with options")?;
            let total_len = be16(frame, at + 2);
            let end = at + total_len as usize;
            need(frame, end, "IPv4 total length")?;
            let h = Ipv4Header {
                src: Ipv4Addr::from(be32(frame, at + 12)),
                dst: Ipv4Addr::from(be32(frame, at + 16)),
                ttl: frame[at + 8],
                proto: frame[at + 9],
                tos: frame[at + 1],
                id: be16(frame, at + 4),
                frag: be16(frame, at + 6),
                total_len,
                header_len,
                checksum: be16(frame, at + 10),
                checksum_valid: internet_checksum(0, &frame[at..at + header_len]) == 0,
            };
            let pseudo = pseudo_v4(&h.src, &h.dst, h.proto, end - at - header_len);
            let proto = (h.frag & 0x1fff == 0).then_some(h.proto); // only first fragments
            p.ipv4 = Some(h);
            (proto, at + header_len, end, Some(pseudo))
        }
        ETH_P_IPV6 => {
            need(frame, at + 40, "IPv6 header")?;
            let first = be32(frame, at);
            if first >> 28 != 6 {
                return Err(ParseError(format!("bad IPv6 version {}", first >> 28)));
            }
            let payload_len = be16(frame, at + 4);
            let end = at + 40 + payload_len as usize;
            need(frame, end, "IPv6 payload length")?;
            let h = Ipv6Header {
                src: Ipv6Addr::from(<[u8; 16]>::try_from(&frame[at + 8..at + 24]).unwrap()),
                dst: Ipv6Addr::from(<[u8; 16]>::try_from(&frame[at + 24..at + 40]).unwrap()),
                hop_limit: frame[at + 7],
                next_header: frame[at + 6],
                payload_len,
                traffic_class: ((first >> 20) & 0xff) as u8,
                flow_label: first & 0x000f_ffff,
            };
            let pseudo = pseudo_v6(&h.src, &h.dst, h.next_header, payload_len as usize);
            let proto = Some(h.next_header);
            p.ipv6 = Some(h);
            (proto, at + 40, end, Some(pseudo))
        }
        _ => (None, at, frame.len(), None),
    };
    let segment = &frame[l4_at..end];
    let mut payload_at = l4_at;
    match (proto, pseudo) {
        (Some(IPPROTO_UDP), Some(pseudo)) => {
            need(segment, 8, "UDP header")?;
            let checksum = be16(segment, 6);
            p.udp = Some(UdpHeader {
                sport: be16(segment, 0),
                dport: be16(segment, 2),
                len: be16(segment, 4),
                checksum,
                checksum_valid: (checksum == 0 && p.ipv4.is_some())
                    || internet_checksum(pseudo, segment) == 0,
            });
            payload_at += 8;
        }
        (Some(IPPROTO_TCP), Some(pseudo)) => {
            need(segment, 20, "TCP header")?;
            let header_len = ((segment[12] >> 4) as usize) * 4;
            need(segment, header_len.max(20), "TCP header with options")?;
            p.tcp = Some(TcpHeader {
                sport: be16(segment, 0),
                dport: be16(segment, 2),
                seq: be32(segment, 4),
                ack: be32(segment, 8),
                flags: segment[13],
                window: be16(segment, 14),
                header_len,
                checksum: be16(segment, 16),
                checksum_valid: internet_checksum(pseudo, segment) == 0,
            });
            payload_at += header_len.max(20);
        }
        _ => {}
    }
    p.payload = frame[payload_at..end].to_vec();
    p.trailer = frame[end..].to_vec();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some(DEFAULT_SRC));
        assert_eq!(parse_mac("AA-bb-0c-00-00-ff"), Some([0xaa, 0xbb, 0x0c, 0, 0, 0xff]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
        assert_eq!(parse_mac("02:00:00:00:00:1g"), None);
        assert_eq!(fmt_mac(&DEFAULT_DST), "02:00:00:00:00:02");
    }

    /// The IPv4 header of Wikipedia's "IPv4 header checksum" example
    /// (checksum 0xb861), rebuilt.
    #[test]
    fn ipv4_header_checksum_matches_the_textbook_example() {
        let frame = Frame::new()
            .ipv4(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 199))
            .proto(17)
            .payload(&[0; 0x73 - 20])
            .build();
        assert_eq!(frame[14..34], hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")[..]);
    }

    /// Hand-computed: 802.1Q tag id 10 pcp 3 (TCI 0x600a), IPv4 192.0.2.1 →
    /// 192.0.2.2 TTL 64 UDP 1234 → 5678 payload "hi".
    /// IPv4: 4500+001e+0000+4000+4011+c000+0201+c000+0202 = 0x2_4932 →
    /// 0x4934 → checksum !0x4934 = 0xb6cb. UDP: pseudo header c000 0201 c000
    /// 0202 0011 000a plus 04d2 162e 000a 0000 6869 → checksum 0xf86c.
    #[test]
    fn vlan_ipv4_udp_frame_matches_hand_computed_bytes() {
        let frame = Frame::new()
            .vlan(10, 3)
            .ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))
            .udp(1234, 5678)
            .payload(b"hi")
            .build();
        let expected = hex("020000000002 020000000001 8100 600a 0800
             4500 001e 0000 4000 4011 b6cb c000 0201 c000 0202
             04d2 162e 000a f86c 6869");
        assert_eq!(frame, expected);

        let p = parse(&frame).unwrap();
        assert_eq!(p.dst, DEFAULT_DST);
        assert_eq!(p.src, DEFAULT_SRC);
        assert_eq!(p.tags, vec![VlanTag { tpid: ETH_P_8021Q, id: 10, pcp: 3, dei: false }]);
        assert_eq!(p.ethertype, ETH_P_IPV4);
        let ip = p.ipv4.as_ref().unwrap();
        assert_eq!((ip.ttl, ip.proto, ip.total_len, ip.checksum), (64, 17, 30, 0xb6cb));
        assert!(ip.checksum_valid);
        let udp = p.udp.as_ref().unwrap();
        assert_eq!((udp.sport, udp.dport, udp.len, udp.checksum), (1234, 5678, 10, 0xf86c));
        assert!(udp.checksum_valid);
        assert_eq!(p.payload, b"hi");
        assert!(p.trailer.is_empty());
    }

    /// Hand-computed: 802.1ad 100 (pcp 5) over 802.1Q 20, IPv6 2001:db8::1 →
    /// 2001:db8::2 hop limit 64, TCP 80 → 8080 SYN window 65535, no payload;
    /// TCP checksum over the pseudo header (addresses, length 20, next
    /// header 6) and the header: 0x348e.
    #[test]
    fn qinq_ipv6_tcp_frame_matches_hand_computed_bytes() {
        let (src, dst) = DEFAULT_IPV6;
        let frame = Frame::new().vlan_ad(100, 5).vlan(20, 0).ipv6(src, dst).tcp(80, 8080).build();
        let expected = hex("020000000002 020000000001 88a8 a064 8100 0014 86dd
             6000 0000 0014 0640 20010db8000000000000000000000001 20010db8000000000000000000000002
             0050 1f90 00000000 00000000 5002 ffff 348e 0000");
        assert_eq!(frame, expected);

        let p = parse(&frame).unwrap();
        assert_eq!(p.vlan_ids(), vec![100, 20]);
        assert_eq!(p.tags[0].tpid, ETH_P_8021AD);
        assert_eq!(p.tags[0].pcp, 5);
        assert_eq!(p.ttl(), Some(64));
        let ip = p.ipv6.as_ref().unwrap();
        assert_eq!((ip.next_header, ip.payload_len), (IPPROTO_TCP, 20));
        let tcp = p.tcp.as_ref().unwrap();
        assert_eq!((tcp.sport, tcp.dport, tcp.flags, tcp.window), (80, 8080, 0x02, 65535));
        assert!(tcp.checksum_valid);
        assert!(p.payload.is_empty());
    }

    #[test]
    fn raw_ethertype_frame_and_padding() {
        let frame = Frame::eth([0xff; 6], [0x02, 0, 0, 0, 0, 9], 0x1234).payload(b"abc").pad_to(60).build();
        assert_eq!(frame.len(), 60);
        assert_eq!(frame[..17], hex("ffffffffffff 020000000009 1234 616263")[..]);
        let p = parse(&frame).unwrap();
        assert_eq!(p.ethertype, 0x1234);
        assert!(p.ipv4.is_none() && p.udp.is_none());
        assert_eq!(p.payload.len(), 60 - 14); // no IP length to stop at

        let padded = Frame::new().udp(1, 2).payload(b"x").pad_to(60).build();
        let p = parse(&padded).unwrap();
        assert_eq!(p.payload, b"x");
        assert_eq!(p.trailer, vec![0; 60 - 14 - 20 - 8 - 1]);
        assert!(p.udp.unwrap().checksum_valid);
    }

    #[test]
    fn detects_bad_checksums_and_short_frames() {
        let frame = Frame::new().udp(1, 2).ipv4_checksum(0xdead).build();
        let p = parse(&frame).unwrap();
        assert_eq!(p.ipv4.as_ref().unwrap().checksum, 0xdead);
        assert!(!p.ipv4.unwrap().checksum_valid);

        let mut frame = Frame::new().ttl(63).udp(1, 2).payload(b"data").build();
        let last = frame.len() - 1;
        frame[last] ^= 1;
        let p = parse(&frame).unwrap();
        assert_eq!(p.ttl(), Some(63));
        assert!(p.ipv4.unwrap().checksum_valid);
        assert!(!p.udp.unwrap().checksum_valid);

        // A zero UDP checksum over IPv4 means "not computed".
        let mut frame = Frame::new().udp(1, 2).build();
        frame[14 + 20 + 6] = 0;
        frame[14 + 20 + 7] = 0;
        assert!(parse(&frame).unwrap().udp.unwrap().checksum_valid);

        let frame = Frame::new().udp(1, 2).build();
        assert!(parse(&frame[..frame.len() - 1]).is_err());
        assert!(parse(&frame[..13]).is_err());
    }

    #[test]
    fn round_trips_tcp_over_ipv4_and_udp_over_ipv6() {
        let frame = Frame::new().tcp(443, 50000).tcp_flags(0x18).payload(&[7; 33]).tos(0xb8).build();
        let p = parse(&frame).unwrap();
        assert_eq!(p.ipv4.as_ref().unwrap().tos, 0xb8);
        assert!(p.ipv4.as_ref().unwrap().checksum_valid);
        let tcp = p.tcp.unwrap();
        assert_eq!((tcp.flags, tcp.header_len), (0x18, 20));
        assert!(tcp.checksum_valid);
        assert_eq!(p.payload, vec![7; 33]);

        let (src, dst) = DEFAULT_IPV6;
        let frame = Frame::new().ipv6(src, dst).hop_limit(1).udp(53, 53).payload(b"q").build();
        let p = parse(&frame).unwrap();
        assert_eq!(p.ttl(), Some(1));
        assert!(p.udp.unwrap().checksum_valid);
    }
}
