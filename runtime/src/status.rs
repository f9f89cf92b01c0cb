//! `devmapc status`: what a deployment is doing, read from the kernel.
//!
//! Everything comes from the pin directory: the manifest (the last applied
//! plan), the links, the maps and their counters. Drift is the plan of map
//! operations that would take the kernel's entries to the manifest's
//! ([`crate::plan::diff`] of [`crate::plan::read_state`] against
//! [`crate::plan::desired`]): empty when the kernel serves exactly what was
//! applied.

use crate::apply::{key_map, Pinned};
use crate::deploy::{entries, parse_manifest_doc, read_manifest, DeployError, LinkInfo};
use crate::fill::Device;
use crate::netdev;
use crate::plan::{desired, diff, read_state, Handles, Plan};
use devmapc::ir::{encode_key, names, KeyPlan, TargetRef};
use devmapc::model::{Access, XdpMode};
use libbpf_rs::libbpf_sys;
use serde_json::json;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Packets and bytes, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct LinkStatus {
    /// The pin's label: the device's name (or ifindex).
    pub device: String,
    pub link: Option<LinkInfo>,
    /// `None` when the kernel reports no XDP program of this link on the
    /// device.
    pub mode: Option<XdpMode>,
    /// What is wrong with it, in words (`None`: it runs the deployment's
    /// ingress program on its device).
    pub problem: Option<String>,
    /// Another XDP program attached to its device, in words: `apply`
    /// refuses until it is removed, so the problem is not one apply repairs.
    pub foreign: Option<String>,
}

#[derive(Clone, Debug)]
pub struct DeviceStatus {
    pub name: String,
    /// Where the spec's binding resolves now; `None`: not found.
    pub ifindex: Option<u32>,
    pub egress: Option<String>,
    /// Frames redirected to the device (slot counters); `None` without
    /// counters.
    pub count: Option<Count>,
}

#[derive(Clone, Debug)]
pub struct RouteStatus {
    /// The key as the spec writes it.
    pub key: String,
    /// `device (program)` or `group NAME`.
    pub target: String,
    pub line: u32,
    /// Per-key counters (direct keys with counters).
    pub count: Option<Count>,
    /// The kernel's entry differs from the plan (or is missing).
    pub drift: bool,
}

#[derive(Clone, Debug)]
pub struct Status {
    pub dir: PathBuf,
    pub spec: String,
    pub code_hash: String,
    pub data_hash: String,
    pub links: Vec<LinkStatus>,
    pub devices: Vec<DeviceStatus>,
    pub routes: Vec<RouteStatus>,
    pub default_route: Option<String>,
    pub misses: Option<Count>,
    pub groups: Vec<(String, Option<Count>)>,
    /// The operations that would repair the kernel's maps; empty: no drift.
    pub drift: Plan,
    /// Why drift could not be computed (a device is gone, the key map is
    /// `write_only`).
    pub drift_unknown: Option<String>,
    /// `(applied in, this one)` when the deployment was applied in another
    /// network namespace: devices are then resolved in the wrong one.
    pub other_netns: Option<(String, String)>,
    /// The manifest's `object_sha256`: the object the programs were loaded
    /// from.
    pub object_sha256: Option<String>,
    /// The kernel's program and links against the deployment: a link
    /// detached or running another program, an `ingress.on` device without
    /// a link. Counts as drift; `apply` repairs it, unless `foreign_xdp`
    /// names a program in its way.
    pub link_drift: Vec<String>,
    /// XDP programs devmapc did not attach on `ingress.on` devices that
    /// lost their link: `apply` refuses until they are removed.
    pub foreign_xdp: Vec<String>,
    /// Maps of the deployment whose pins are gone (removed by hand): drift
    /// that `apply` repairs by loading the programs again.
    pub missing_maps: Vec<String>,
    /// Programs (ingress, egress) whose pins are gone: the links still run
    /// them; `apply` loads the programs again.
    pub missing_progs: Vec<String>,
    /// A code upgrade was interrupted (`DIR/next` is there): `apply`
    /// finishes or undoes it.
    pub interrupted_upgrade: bool,
    /// devmapc's records (marker, namespace, devices) that are gone:
    /// `apply` restores them.
    pub missing_records: Vec<String>,
}

/// Reads the deployment pinned in `dir`.
pub fn status(dir: &Path) -> Result<Status, DeployError> {
    let text = match read_manifest(dir) {
        Ok(text) => text,
        // Only a manifest that is not there at all, under a record of this
        // directory: a foreign record, or a manifest pin that cannot be
        // read, is its own error (apply and detach refuse those too).
        Err(DeployError::NotDeployed { .. })
            if crate::apply::is_ours(dir) && manifest_missing_under_own_record(dir) =>
        {
            return Err(uncommitted(dir))
        }
        Err(e) => return Err(e),
    };
    let doc =
        parse_manifest_doc(&text).map_err(|e| DeployError::Mismatch(format!("{}: {e}", dir.display())))?;
    let ir = doc.ir;
    let hashes = (doc.code_hash, doc.data_hash);
    // Partial: pins removed by hand (or moved by an interrupted upgrade)
    // are reported below, not an error.
    let pinned = {
        let root = crate::deploy::open_pin_dir(dir)?;
        let record = crate::pins::Record::read(&root)?;
        Pinned::open_partial(&root, &record, &root)?
    };
    let interrupted_upgrade = crate::pins::DirFd::open(dir)
        .is_ok_and(|d| d.entry(crate::apply::NEXT) != crate::pins::Entry::Missing);
    let missing_progs = crate::apply::missing_progs(dir, &ir);
    let ingress_id = pinned.prog_id(names::INGRESS);

    let mut links = Vec::new();
    let mut link_drift = Vec::new();
    let mut foreign_xdp_list = Vec::new();
    for (device, (_, link)) in crate::apply::owned_links(dir)? {
        let mode = link.and_then(|l| netdev::by_index(l.ifindex).ok().map(|d| (l, d))).and_then(|(l, d)| {
            if d.xdp.driver == Some(l.prog_id) {
                Some(XdpMode::Native)
            } else if d.xdp.generic == Some(l.prog_id) {
                Some(XdpMode::Generic)
            } else {
                None
            }
        });
        links.push(LinkStatus { device, link, mode, problem: None, foreign: None });
    }

    let resolved: Vec<Option<netdev::Link>> =
        ir.data.devices.iter().map(|d| netdev::resolve_device(d).ok()).collect();
    // What the kernel runs, link by link, against the deployment's program.
    for l in &mut links {
        let spec_device = ir
            .data
            .devices
            .iter()
            .zip(&resolved)
            .find(|(d, _)| crate::apply::link_label(&d.binding) == l.device);
        let device_here = spec_device.is_some_and(|(_, r)| r.is_some());
        if let (Some(info), Some((_, Some(device)))) = (l.link, spec_device) {
            if info.ifindex == 0 {
                l.foreign = foreign_xdp(device, None);
            }
        }
        l.problem = match l.link {
            None => Some("its link cannot be read".to_string()),
            Some(info) if info.ifindex == 0 && device_here => Some(
                "DETACHED: the link no longer holds the device, which is still there (the link \
                 was detached, e.g. by `bpftool link detach`)"
                    .to_string(),
            ),
            Some(info) if info.ifindex == 0 => Some("DETACHED: the device went away".to_string()),
            Some(_) if ingress_id.is_none() => {
                Some(format!("the pin of its program ({}) is gone, so it cannot be checked", names::INGRESS))
            }
            Some(info) if Some(info.prog_id) != ingress_id => Some(format!(
                "runs program id {}, not this deployment's ingress program (id {})",
                info.prog_id,
                ingress_id.map_or("unknown".to_string(), |i| i.to_string())
            )),
            Some(_) if l.mode.is_none() => Some("the device reports no XDP program of this link".to_string()),
            Some(_) => None,
        };
        if spec_device.is_none() {
            l.problem.get_or_insert_with(|| "not an `ingress.on` device of the spec".to_string());
        }
        if let Some(p) = &l.problem {
            link_drift.push(format!("link {}: {p}", l.device));
        }
        foreign_xdp_list.extend(l.foreign.clone());
    }
    for (d, r) in ir.data.devices.iter().zip(&resolved) {
        let label = crate::apply::link_label(&d.binding);
        if d.ingress && r.is_some() && !links.iter().any(|l| l.device == label) {
            link_drift
                .push(format!("device `{}` (line {}) is in `ingress.on` but has no link", d.name, d.line));
            foreign_xdp_list.extend(r.as_ref().and_then(|r| foreign_xdp(r, None)));
        }
    }
    let slot_counts = read_counters(&pinned, names::COUNTERS);
    let count_at =
        |slot: u32| slot_counts.as_ref().map(|c| c.get(slot as usize).copied().unwrap_or_default());
    let devices: Vec<DeviceStatus> = ir
        .data
        .devices
        .iter()
        .enumerate()
        .map(|(d, device)| DeviceStatus {
            name: device.name.clone(),
            ifindex: resolved[d].as_ref().map(|l| l.ifindex),
            egress: device.program.map(|p| ir.code.programs[p].name.clone()),
            count: count_at(TargetRef::Device(d).slot()),
        })
        .collect();
    let group_counts = read_counters(&pinned, names::GROUP_COUNTERS);
    let groups = ir
        .code
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            (group.name.clone(), group_counts.as_ref().map(|c| c.get(g).copied().unwrap_or_default()))
        })
        .collect();

    // Drift: the kernel's entries against the plan, with today's ifindexes.
    let mut drift = Plan::default();
    let mut drift_unknown = None;
    // A map whose pin is gone cannot be read back: drift in itself.
    let missing_maps = crate::apply::missing_maps(dir, &ir);
    if interrupted_upgrade {
        drift_unknown = Some(
            "a code upgrade was interrupted (its staged pins are in next/): `devmapc apply` \
             finishes or undoes it"
                .to_string(),
        );
    } else if !missing_maps.is_empty() {
        drift_unknown = Some(format!(
            "the pin of map {} is gone, so the kernel's entries cannot be read back",
            missing_maps.join(", ")
        ));
    } else if !missing_progs.is_empty() {
        // Entries naming an egress program cannot be matched to it: not
        // map drift, the program pin is what is missing.
        drift_unknown = Some(format!(
            "the pin of program {} is gone, so the entries that name it cannot be checked",
            missing_progs.join(", ")
        ));
    } else if ir.code.access == Access::WriteOnly {
        drift_unknown = Some(format!("map {} is write_only: it cannot be read back", key_map(&ir)));
    } else if let Some(missing) = ir.data.devices.iter().zip(&resolved).find(|(_, l)| l.is_none()) {
        drift_unknown = Some(format!(
            "device `{}` (line {}) is not in this network namespace: the kernel removed its entries",
            missing.0.name, missing.0.line
        ));
    } else {
        let devs: Vec<Device> = resolved.iter().flatten().map(Device::from).collect();
        let wanted = desired(&ir, &devs)?;
        let mut kernel = read_state(&pinned, &ir)?;
        kernel.relabel(&wanted);
        drift = diff(&kernel, &wanted);
    }

    // Indexed by key: one lookup per route, not a search of every counter.
    let key_counts: Option<std::collections::HashMap<Vec<u8>, Count>> =
        read_key_counters(&pinned).map(|counts| counts.into_iter().collect());
    let drifted: std::collections::HashSet<&[u8]> = drift
        .ops
        .iter()
        .filter(|op| [names::ROUTES, names::KEYS, names::GROUP_KEYS].contains(&op.map.as_str()))
        .map(|op| op.key.as_slice())
        .collect();
    let ifindex = |d: usize| resolved.get(d).and_then(|l| l.as_ref().map(|l| l.ifindex));
    let target_text = |t: TargetRef| match t {
        TargetRef::Device(d) => {
            let device = &ir.data.devices[d];
            match device.program {
                Some(p) => format!("{} ({})", device.name, ir.code.programs[p].name),
                None => device.name.clone(),
            }
        }
        TargetRef::Group(g) => format!("group {}", ir.code.groups[g].name),
    };
    let routes: Vec<RouteStatus> = ir
        .data
        .routes
        .iter()
        .map(|route| {
            let key = encode_key(&ir.code.key, &route.key, &ifindex).ok();
            let count = match (&ir.code.key, route.target, &key, &key_counts) {
                (KeyPlan::Direct { .. }, TargetRef::Device(_), Some(k), Some(counts)) => {
                    Some(counts.get(k).copied().unwrap_or_default())
                }
                _ => None,
            };
            let drift = key.as_ref().is_some_and(|k| drifted.contains(k.as_slice()));
            RouteStatus {
                key: route.text.clone(),
                target: target_text(route.target),
                line: route.line,
                count,
                drift,
            }
        })
        .collect();

    // A direct key counts under its key, not its device's slot: a device's
    // count adds those of the routes that lead to it.
    let mut devices = devices;
    for (route, r) in ir.data.routes.iter().zip(&routes) {
        if let (TargetRef::Device(d), Some(c)) = (route.target, r.count) {
            let total = devices[d].count.get_or_insert_with(Count::default);
            total.packets += c.packets;
            total.bytes += c.bytes;
        }
    }

    Ok(Status {
        dir: dir.to_path_buf(),
        spec: ir.spec.clone(),
        code_hash: hashes.0,
        data_hash: hashes.1,
        links,
        devices,
        routes,
        default_route: ir.data.default_route.map(target_text),
        misses: count_at(0),
        groups,
        drift,
        drift_unknown,
        other_netns: crate::apply::netns_mismatch(dir),
        object_sha256: doc.object_sha256,
        link_drift,
        foreign_xdp: foreign_xdp_list,
        missing_maps,
        missing_progs,
        interrupted_upgrade,
        missing_records: crate::apply::missing_records(dir).into_iter().map(str::to_string).collect(),
    })
}

/// The XDP program attached to `device` other than `ours`, in words, with
/// what it means for `apply` (which refuses to replace it).
fn foreign_xdp(device: &netdev::Link, ours: Option<u32>) -> Option<String> {
    let xdp = &device.xdp;
    let (mode, id) = [("native", xdp.driver), ("generic", xdp.generic), ("offloaded", xdp.offload)]
        .into_iter()
        .find_map(|(mode, id)| id.filter(|id| Some(*id) != ours).map(|id| (mode, id)))?;
    let name = prog_name(id).map_or(String::new(), |n| format!(" `{n}`"));
    Some(format!(
        "another XDP program is attached to {} (program id {id}{name}, {mode} mode), not by \
         this deployment: `devmapc apply` refuses until it is removed",
        device.name
    ))
}

/// A program's name by id (`None`: gone, or unreadable).
fn prog_name(id: u32) -> Option<String> {
    // SAFETY: no pointers; a new fd is ours.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a zeroed bpf_prog_info of `len` bytes.
    if unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned()).filter(|n| !n.is_empty())
}

/// `dir` has no manifest pin at all and its ownership record is its own
/// (or absent): what a first apply interrupted before it committed leaves.
fn manifest_missing_under_own_record(dir: &Path) -> bool {
    let Ok(root) = crate::pins::DirFd::open(dir) else {
        return false;
    };
    root.entry(crate::deploy::MANIFEST_PIN) == crate::pins::Entry::Missing
        && crate::pins::Record::read(&root).is_ok()
}

/// The pin directory holds devmapc's marker but no manifest: a first apply
/// that was interrupted before it committed.
fn uncommitted(dir: &Path) -> DeployError {
    let found: Vec<String> = entries(dir).unwrap_or_default().into_iter().map(|(name, _)| name).collect();
    DeployError::NotDeployed {
        dir: dir.to_path_buf(),
        why: format!(
            "an apply was interrupted before it committed: no manifest, but devmapc's pins are \
             there ({}). `devmapc apply` repairs it (removes what the interrupted apply left and \
             applies again); `devmapc detach` removes it",
            found.join(", ")
        ),
    }
}

fn mode_name(mode: Option<XdpMode>) -> &'static str {
    match mode {
        Some(XdpMode::Native) => "native",
        Some(XdpMode::Generic) => "generic",
        Some(XdpMode::Auto) => "auto",
        None => "not attached",
    }
}

fn count_text(c: Option<Count>) -> String {
    c.map_or(String::new(), |c| format!("{} packets, {} bytes", c.packets, c.bytes))
}

/// The widest column `status` aligns route keys in.
const KEY_COLUMN: usize = 64;

/// `s` with its control characters escaped (`\n`, `\u{1b}`): a name or a
/// key's text from a file never forges a line or moves the cursor.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A writer that passes the report's own line breaks and escapes every
/// other control character, whatever field it came in.
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() && c != '\n' {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report(&mut Escaped(f))
    }
}

impl Status {
    fn report(&self, f: &mut impl fmt::Write) -> fmt::Result {
        writeln!(f, "{} ({})", one_line(&self.spec), self.dir.display())?;
        if let Some((applied_in, here)) = &self.other_netns {
            writeln!(
                f,
                "WARNING: applied in network namespace {applied_in}, this is {here}: devices \
                 below are looked up here, not where the deployment runs (`nsenter \
                 --net=/run/netns/NAME devmapc status`)"
            )?;
        }
        writeln!(f, "  code {}  data {}", self.code_hash, self.data_hash)?;
        if let Some(digest) = &self.object_sha256 {
            writeln!(f, "  object sha256 {digest}")?;
        }
        writeln!(f, "attached:")?;
        if self.links.is_empty() {
            writeln!(f, "  (no links)")?;
        }
        for l in &self.links {
            match (l.link, &l.problem) {
                (Some(info), None) => writeln!(
                    f,
                    "  {:<16} ifindex {:<5} {:<8} link {} program {}",
                    one_line(&l.device),
                    info.ifindex,
                    mode_name(l.mode),
                    info.id,
                    info.prog_id
                )?,
                (_, problem) => {
                    let problem = problem.as_deref().unwrap_or("cannot be read");
                    match &l.foreign {
                        Some(foreign) => writeln!(f, "  {:<16} {problem}; {foreign}", one_line(&l.device))?,
                        None => writeln!(
                            f,
                            "  {:<16} {problem} (`devmapc apply` repairs it)",
                            one_line(&l.device)
                        )?,
                    }
                }
            }
        }
        writeln!(f, "routes:")?;
        // Keys are aligned in a column, up to a sane width: a longer key
        // (a spec may write `route 000…0020`) just runs past it.
        let width = self.routes.iter().map(|r| r.key.len()).max().unwrap_or(0).min(KEY_COLUMN);
        for r in &self.routes {
            writeln!(
                f,
                "  {:<width$} → {}{}{}",
                one_line(&r.key),
                one_line(&r.target),
                r.count.map_or(String::new(), |c| format!("   {}", count_text(Some(c)))),
                if r.drift { "   DRIFT" } else { "" }
            )?;
        }
        if let Some(d) = &self.default_route {
            writeln!(f, "  {:<width$} → {d}", "default")?;
        }
        if let Some(m) = self.misses {
            writeln!(f, "  {:<width$}   {}", "(misses)", count_text(Some(m)))?;
        }
        writeln!(f, "devices:")?;
        for d in &self.devices {
            let at = d.ifindex.map_or("MISSING".to_string(), |i| format!("ifindex {i}"));
            let egress = d.egress.as_ref().map_or(String::new(), |p| format!(" egress {p}"));
            writeln!(f, "  {:<16} {at}{egress}   {}", one_line(&d.name), count_text(d.count))?;
        }
        for (g, c) in &self.groups {
            writeln!(f, "  group {:<10} {}", one_line(g), count_text(*c))?;
        }
        for d in &self.link_drift {
            writeln!(f, "drift: {d}")?;
        }
        for d in &self.foreign_xdp {
            writeln!(f, "drift: {d}")?;
        }
        if self.interrupted_upgrade {
            writeln!(
                f,
                "drift: an interrupted code upgrade: `devmapc apply` finishes it (or removes \
                 its staged pins)"
            )?;
        }
        for r in &self.missing_records {
            let why = if r == crate::apply::NETNS {
                ", so status cannot tell whether this is the network namespace the deployment \
                 was applied in"
            } else {
                ""
            };
            writeln!(
                f,
                "drift: record {r}: devmapc's record is gone (removed by hand?){why}: `devmapc \
                 apply` restores it"
            )?;
        }
        for p in &self.missing_progs {
            writeln!(
                f,
                "drift: program {p}: its pin is gone (removed by hand?): `devmapc apply` repairs \
                 it (loads the programs again with fresh maps, filled completely)"
            )?;
        }
        for m in self.missing_maps.iter().filter(|_| !self.interrupted_upgrade) {
            writeln!(
                f,
                "drift: map {m}: its pin is gone (removed by hand?): `devmapc apply` repairs it \
                 (loads the programs again with fresh maps, filled completely)"
            )?;
        }
        match &self.drift_unknown {
            Some(why) => writeln!(f, "drift: unknown: {why}")?,
            None if self.drift.is_empty() && !self.foreign_xdp.is_empty() => writeln!(
                f,
                "drift: the maps match the last apply, the links do not, and `devmapc apply` \
                 refuses until the XDP program above is removed from its device"
            )?,
            None if self.drift.is_empty() && !self.link_drift.is_empty() => writeln!(
                f,
                "drift: the maps match the last apply, the links do not: `devmapc apply` \
                 repairs them"
            )?,
            None if self.drift.is_empty() => {
                writeln!(f, "drift: none (the kernel's maps match the last apply)")?
            }
            None => write!(
                f,
                "drift: the kernel differs from the last apply; `devmapc apply` would run\n{}",
                self.drift
            )?,
        }
        Ok(())
    }
}

impl Status {
    /// Whether the kernel differs from the last apply, or cannot be trusted
    /// to match it: `status` exits 1. A device of the spec that is gone
    /// counts (the kernel removed its entries), as does another namespace.
    pub fn needs_attention(&self) -> bool {
        !self.drift.is_empty()
            || !self.link_drift.is_empty()
            || !self.missing_maps.is_empty()
            || !self.missing_progs.is_empty()
            || self.interrupted_upgrade
            || !self.missing_records.is_empty()
            || self.devices.iter().any(|d| d.ifindex.is_none())
            || self.other_netns.is_some()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let count = |c: Option<Count>| c.map(|c| json!({"packets": c.packets, "bytes": c.bytes}));
        json!({
            "dir": self.dir,
            "spec": self.spec,
            "other_netns": self.other_netns.as_ref().map(|(applied_in, here)| {
                json!({"applied_in": applied_in, "here": here})
            }),
            "code_hash": self.code_hash,
            "object_sha256": self.object_sha256,
            "link_drift": self.link_drift,
            "foreign_xdp": self.foreign_xdp,
            "missing_maps": self.missing_maps,
            "missing_progs": self.missing_progs,
            "interrupted_upgrade": self.interrupted_upgrade,
            "missing_records": self.missing_records,
            "data_hash": self.data_hash,
            "links": self.links.iter().map(|l| json!({
                "device": l.device,
                "ifindex": l.link.map(|i| i.ifindex),
                "link_id": l.link.map(|i| i.id),
                "prog_id": l.link.map(|i| i.prog_id),
                "mode": l.mode.map(|m| mode_name(Some(m))),
                "problem": l.problem,
                "foreign": l.foreign,
            })).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(|r| json!({
                "key": r.key, "target": r.target, "line": r.line,
                "count": count(r.count), "drift": r.drift,
            })).collect::<Vec<_>>(),
            "default": self.default_route,
            "misses": count(self.misses),
            "devices": self.devices.iter().map(|d| json!({
                "name": d.name, "ifindex": d.ifindex, "egress": d.egress, "count": count(d.count),
            })).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|(g, c)| json!({"name": g, "count": count(*c)})).collect::<Vec<_>>(),
            "drift": match &self.drift_unknown {
                Some(why) => json!({"known": false, "why": why}),
                None => json!({
                    "known": true,
                    "operations": self.drift.ops.iter().map(|op| json!({
                        "op": op.verb(), "map": op.map, "what": op.why,
                        "old": op.op.old_value().map(|v| v.to_string()),
                        "new": op.op.new_value().map(|v| v.to_string()),
                    })).collect::<Vec<_>>(),
                }),
            },
        })
    }
}

/// Every deployment under `root` (a directory of pin directories).
pub fn list(root: &Path) -> Vec<PathBuf> {
    entries(root)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| {
            crate::pins::DirFd::open(p)
                .is_ok_and(|d| d.entry(crate::deploy::MANIFEST_PIN) == crate::pins::Entry::Pin)
        })
        .collect()
}

/// Per-CPU `{packets, bytes}` counters of an array, summed; `None` when the
/// object has no such map.
fn read_counters(pinned: &Pinned, map: &str) -> Option<Vec<Count>> {
    let fd = pinned.map_fd(map)?;
    let info = map_info(fd)?;
    let mut out = Vec::with_capacity(info.max_entries as usize);
    for i in 0..info.max_entries {
        out.push(percpu_count(fd, &i.to_ne_bytes()).unwrap_or_default());
    }
    Some(out)
}

fn read_key_counters(pinned: &Pinned) -> Option<Vec<(Vec<u8>, Count)>> {
    let fd = pinned.map_fd(names::KEY_COUNTERS)?;
    let mut out = Vec::new();
    let mut prev: Option<[u8; 4]> = None;
    let mut next = [0u8; 4];
    loop {
        let prev_ptr = prev.as_ref().map_or(std::ptr::null(), |p| p.as_ptr().cast());
        // SAFETY: 4-byte key buffers, the map's key size.
        if unsafe { libbpf_sys::bpf_map_get_next_key(fd.as_raw_fd(), prev_ptr, next.as_mut_ptr().cast()) } < 0
        {
            return Some(out);
        }
        out.push((next.to_vec(), percpu_count(fd, &next).unwrap_or_default()));
        prev = Some(next);
    }
}

/// The per-CPU `{packets, bytes}` at `key` of a counter map, summed over
/// CPUs; `None` when the entry cannot be read.
pub(crate) fn percpu_count(fd: BorrowedFd<'_>, key: &[u8]) -> Option<Count> {
    // SAFETY: a plain libbpf query.
    let cpus = usize::try_from(unsafe { libbpf_sys::libbpf_num_possible_cpus() }).ok()?;
    let mut value = vec![0u8; 16 * cpus];
    // SAFETY: key of the map's key size, value of 16 bytes per possible CPU.
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_elem(fd.as_raw_fd(), key.as_ptr().cast(), value.as_mut_ptr().cast())
    };
    if rc < 0 {
        return None;
    }
    let mut c = Count::default();
    for cpu in value.chunks_exact(16) {
        c.packets += u64::from_ne_bytes(cpu[..8].try_into().ok()?);
        c.bytes += u64::from_ne_bytes(cpu[8..].try_into().ok()?);
    }
    Some(c)
}

fn map_info(fd: BorrowedFd<'_>) -> Option<libbpf_sys::bpf_map_info> {
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a zeroed bpf_map_info of `len` bytes.
    let rc = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            (&mut info as *mut libbpf_sys::bpf_map_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    /// Text from a manifest cannot forge a line or reach the terminal as
    /// an escape sequence.
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(one_line("10.0.0.1\n\u{1b}[2Jfake"), "10.0.0.1\\n\\u{1b}[2Jfake");
        let mut out = Escaped(String::new());
        let name = "a\u{1b}[31m\r";
        writeln!(out, "  {name} → b").unwrap();
        assert_eq!(out.0, "  a\\u{1b}[31m\\r → b\n");
    }
}
