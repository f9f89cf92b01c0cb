//! The typed Rust module of a build (`<name>.rs`): the spec's devices,
//! groups and key as Rust types, and a `Deployment` that loads, attaches,
//! reads counters and changes routes without strings.
//!
//! The module embeds the object and the manifest (`include_bytes!` and
//! `include_str!` of the files next to it) and calls the untyped engine
//! `devmapc_runtime::embed`; an application depends on `devmapc-runtime`
//! and includes it in a module of its own:
//!
//! ```text
//! mod vlan_switch {
//!     include!(concat!(env!("OUT_DIR"), "/vlan_switch.rs"));
//! }
//! ```
//!
//! The text is deterministic (it depends on the IR and the name only) and
//! formatted as rustfmt would format it.

use crate::fields::{Field, Ty};
use crate::ir::{Ir, KeyPlan};
use crate::model::{Access, Binding};
use std::fmt::Write;

/// The Rust type of one key field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `ingress.port`: the generated `Device`.
    Device,
    /// `vlan.id`: `embed::VlanId`, 0..=4095.
    VlanId,
    Mac,
    Ipv4,
    Ipv6,
    U8,
    U16,
    U32,
}

impl Part {
    fn of(field: Field) -> Part {
        match field.ty() {
            Ty::Device => Part::Device,
            Ty::Mac => Part::Mac,
            Ty::Ipv4 => Part::Ipv4,
            Ty::Ipv6 => Part::Ipv6,
            Ty::VLAN_ID => Part::VlanId,
            Ty::Uint { max } if max <= u64::from(u8::MAX) => Part::U8,
            Ty::Uint { max } if max <= u64::from(u16::MAX) => Part::U16,
            Ty::Uint { .. } => Part::U32,
        }
    }

    /// The type as generated code names it.
    fn rust(self) -> &'static str {
        match self {
            Part::Device => "Device",
            Part::VlanId => "VlanId",
            Part::Mac => "Mac",
            Part::Ipv4 => "::std::net::Ipv4Addr",
            Part::Ipv6 => "::std::net::Ipv6Addr",
            Part::U8 => "u8",
            Part::U16 => "u16",
            Part::U32 => "u32",
        }
    }

    /// The type re-exported from `devmapc_runtime::embed`, if it is one.
    fn reexport(self) -> Option<&'static str> {
        match self {
            Part::VlanId => Some("VlanId"),
            Part::Mac => Some("Mac"),
            _ => None,
        }
    }
}

/// `vlan.id` → `vlan_id`: a struct field name.
fn snake(field: Field) -> String {
    field.path().replace('.', "_")
}

/// `site_a` → `SiteA`, `port1` → `Port1`, `_x` → `X`.
fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// CamelCase variant names for `names`, unique: a name whose CamelCase form
/// is taken (`port_1` after `port1`) or is a keyword (`self`) gets a
/// trailing `_` until it is free. Returns the names and whether any is
/// not plain CamelCase.
fn variants(names: &[&str]) -> (Vec<String>, bool) {
    let mut out: Vec<String> = Vec::new();
    let mut odd = false;
    for name in names {
        let mut v = camel(name);
        if v.is_empty() || v.starts_with(|c: char| c.is_ascii_digit()) {
            v.insert(0, 'D');
        }
        while v == "Self" || out.contains(&v) {
            v.push('_');
            odd = true;
        }
        out.push(v);
    }
    (out, odd)
}

fn binding_text(binding: &Binding) -> String {
    match binding {
        Binding::Ifname(name) => format!("ifname {name:?}"),
        Binding::Ifindex(index) => format!("ifindex {index}"),
    }
}

/// An enum of named things (devices, groups) with `ALL`, `name()`,
/// `index()`, `from_name()` and `Display`.
fn named_enum(out: &mut String, ty: &str, doc: &str, names: &[&str], docs: &[String]) {
    let (variants, odd) = variants(names);
    let n = names.len();
    writeln!(out, "/// {doc}").unwrap();
    writeln!(out, "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]").unwrap();
    if odd {
        writeln!(out, "#[allow(non_camel_case_types)]").unwrap();
    }
    writeln!(out, "pub enum {ty} {{").unwrap();
    for (v, d) in variants.iter().zip(docs) {
        writeln!(out, "    /// {d}").unwrap();
        writeln!(out, "    {v},").unwrap();
    }
    writeln!(out, "}}\n").unwrap();
    writeln!(out, "impl {ty} {{").unwrap();
    writeln!(out, "    /// All of them, in the spec's order.").unwrap();
    let all: Vec<String> = variants.iter().map(|v| format!("{ty}::{v}")).collect();
    let one_line = format!("    pub const ALL: [{ty}; {n}] = [{}];", all.join(", "));
    if one_line.len() <= 100 {
        writeln!(out, "{one_line}").unwrap();
    } else {
        writeln!(out, "    pub const ALL: [{ty}; {n}] = [").unwrap();
        for a in &all {
            writeln!(out, "        {a},").unwrap();
        }
        writeln!(out, "    ];").unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "    /// The name in the spec.").unwrap();
    writeln!(out, "    pub fn name(self) -> &'static str {{").unwrap();
    writeln!(out, "        match self {{").unwrap();
    for (v, name) in variants.iter().zip(names) {
        writeln!(out, "            {ty}::{v} => {name:?},").unwrap();
    }
    writeln!(out, "        }}").unwrap();
    writeln!(out, "    }}\n").unwrap();
    writeln!(out, "    /// The one named `name` in the spec.").unwrap();
    writeln!(out, "    pub fn from_name(name: &str) -> Option<{ty}> {{").unwrap();
    writeln!(out, "        {ty}::ALL.into_iter().find(|x| x.name() == name)").unwrap();
    writeln!(out, "    }}\n").unwrap();
    writeln!(out, "    /// Its index in the manifest.").unwrap();
    writeln!(out, "    pub fn index(self) -> usize {{").unwrap();
    writeln!(out, "        self as usize").unwrap();
    writeln!(out, "    }}\n").unwrap();
    writeln!(out, "    fn from_index(index: usize) -> Option<{ty}> {{").unwrap();
    writeln!(out, "        {ty}::ALL.get(index).copied()").unwrap();
    writeln!(out, "    }}").unwrap();
    writeln!(out, "}}\n").unwrap();
    writeln!(out, "impl ::std::fmt::Display for {ty} {{").unwrap();
    writeln!(out, "    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{").unwrap();
    writeln!(out, "        f.write_str(self.name())").unwrap();
    writeln!(out, "    }}").unwrap();
    writeln!(out, "}}\n").unwrap();
}

/// The generated module for `ir`, built as `name` (`vlan_switch`), next to
/// `name.bpf.o` and `name.manifest.json`.
pub fn generate(ir: &Ir, name: &str) -> String {
    let mut out = String::new();
    let o = &mut out;
    let fields = ir.code.key.fields();
    let lpm = matches!(ir.code.key, KeyPlan::Lpm { .. });
    let parts: Vec<Part> = fields.iter().map(|f| Part::of(*f)).collect();
    let has_groups = !ir.code.groups.is_empty();
    let key_text = if fields.len() == 1 {
        if lpm {
            format!("lpm({})", fields[0])
        } else {
            fields[0].to_string()
        }
    } else {
        let paths: Vec<&str> = fields.iter().map(|f| f.path()).collect();
        format!("({})", paths.join(", "))
    };

    // Header.
    writeln!(o, "// {name}.rs: the typed interface of {}, generated by devmapc.", ir.spec).unwrap();
    writeln!(o, "// Do not edit: it is rebuilt with the spec.").unwrap();
    writeln!(o, "//").unwrap();
    writeln!(o, "// Include it in a module of its own; it needs the `devmapc-runtime` crate:").unwrap();
    writeln!(o, "//").unwrap();
    writeln!(o, "//     mod {name} {{").unwrap();
    writeln!(o, "//         include!(concat!(env!(\"OUT_DIR\"), \"/{name}.rs\"));").unwrap();
    writeln!(o, "//     }}").unwrap();
    writeln!(o).unwrap();
    writeln!(o, "use ::devmapc_runtime::embed;").unwrap();
    let mut reexports: Vec<&str> = vec!["DeployError", "Options", "Report"];
    if ir.code.counters {
        reexports.push("Count");
    }
    for p in &parts {
        if let Some(r) = p.reexport() {
            if !reexports.contains(&r) {
                reexports.push(r);
            }
        }
    }
    if lpm {
        reexports.push(if parts[0] == Part::Ipv4 { "Ipv4Prefix" } else { "Ipv6Prefix" });
    }
    reexports.sort();
    writeln!(o, "pub use ::devmapc_runtime::embed::{{{}}};", reexports.join(", ")).unwrap();
    writeln!(o).unwrap();
    writeln!(o, "/// The build's name: the default pin directory is named after it.").unwrap();
    writeln!(o, "pub const NAME: &str = {name:?};").unwrap();
    writeln!(o, "/// The BPF object compiled from the spec.").unwrap();
    writeln!(o, "pub const OBJECT: &[u8] = include_bytes!(\"{name}.bpf.o\");").unwrap();
    writeln!(o, "/// The build's manifest: the plan the runtime loads and fills the object with.").unwrap();
    writeln!(o, "pub const MANIFEST: &str = include_str!(\"{name}.manifest.json\");").unwrap();
    writeln!(o, "/// Whether the spec counts packets and bytes (`counters` in its table).").unwrap();
    writeln!(o, "pub const COUNTERS: bool = {};", ir.code.counters).unwrap();
    writeln!(o).unwrap();

    // Devices and groups.
    let device_names: Vec<&str> = ir.data.devices.iter().map(|d| d.name.as_str()).collect();
    let device_docs: Vec<String> = ir
        .data
        .devices
        .iter()
        .map(|d| format!("`{}` ({}), line {}.", d.name, binding_text(&d.binding), d.line))
        .collect();
    named_enum(o, "Device", "A device of the spec.", &device_names, &device_docs);
    if has_groups {
        let group_names: Vec<&str> = ir.code.groups.iter().map(|g| g.name.as_str()).collect();
        let group_docs: Vec<String> = ir
            .code
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let members: Vec<&str> = ir
                    .data
                    .devices
                    .iter()
                    .filter(|d| d.groups.contains(&g))
                    .map(|d| d.name.as_str())
                    .collect();
                format!("`{}`: {}, line {}.", group.name, members.join(", "), group.line)
            })
            .collect();
        named_enum(
            o,
            "Group",
            "A group of the spec: a route to it floods its members.",
            &group_names,
            &group_docs,
        );
    }

    // Targets.
    writeln!(o, "/// Where a route sends frames.").unwrap();
    writeln!(o, "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]").unwrap();
    writeln!(o, "pub enum Target {{").unwrap();
    writeln!(o, "    Device(Device),").unwrap();
    if has_groups {
        writeln!(o, "    Group(Group),").unwrap();
    }
    writeln!(o, "}}\n").unwrap();
    writeln!(o, "impl Target {{").unwrap();
    writeln!(o, "    fn to_ref(self) -> embed::TargetRef {{").unwrap();
    writeln!(o, "        match self {{").unwrap();
    writeln!(o, "            Target::Device(d) => embed::TargetRef::Device(d.index()),").unwrap();
    if has_groups {
        writeln!(o, "            Target::Group(g) => embed::TargetRef::Group(g.index()),").unwrap();
    }
    writeln!(o, "        }}").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    fn from_ref(target: embed::TargetRef) -> Option<Target> {{").unwrap();
    writeln!(o, "        match target {{").unwrap();
    writeln!(o, "            embed::TargetRef::Device(d) => Device::from_index(d).map(Target::Device),")
        .unwrap();
    if has_groups {
        writeln!(o, "            embed::TargetRef::Group(g) => Group::from_index(g).map(Target::Group),")
            .unwrap();
    } else {
        writeln!(o, "            embed::TargetRef::Group(_) => None,").unwrap();
    }
    writeln!(o, "        }}").unwrap();
    writeln!(o, "    }}").unwrap();
    writeln!(o, "}}\n").unwrap();
    writeln!(o, "impl From<Device> for Target {{").unwrap();
    writeln!(o, "    fn from(device: Device) -> Target {{").unwrap();
    writeln!(o, "        Target::Device(device)").unwrap();
    writeln!(o, "    }}").unwrap();
    writeln!(o, "}}\n").unwrap();
    if has_groups {
        writeln!(o, "impl From<Group> for Target {{").unwrap();
        writeln!(o, "    fn from(group: Group) -> Target {{").unwrap();
        writeln!(o, "        Target::Group(group)").unwrap();
        writeln!(o, "    }}").unwrap();
        writeln!(o, "}}\n").unwrap();
    }
    writeln!(o, "impl ::std::fmt::Display for Target {{").unwrap();
    writeln!(o, "    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{").unwrap();
    writeln!(o, "        match self {{").unwrap();
    writeln!(o, "            Target::Device(d) => d.fmt(f),").unwrap();
    if has_groups {
        writeln!(o, "            Target::Group(g) => write!(f, \"group {{g}}\"),").unwrap();
    }
    writeln!(o, "        }}").unwrap();
    writeln!(o, "    }}").unwrap();
    writeln!(o, "}}\n").unwrap();

    // The key.
    if parts.contains(&Part::Device) {
        writeln!(o, "impl embed::KeyPart for Device {{").unwrap();
        writeln!(o, "    fn to_key_value(&self) -> embed::KeyValue {{").unwrap();
        writeln!(o, "        embed::KeyValue::Device(self.index())").unwrap();
        writeln!(o, "    }}\n").unwrap();
        writeln!(o, "    fn from_key_value(value: &embed::KeyValue) -> Option<Device> {{").unwrap();
        writeln!(o, "        match value {{").unwrap();
        writeln!(o, "            embed::KeyValue::Device(d) => Device::from_index(*d),").unwrap();
        writeln!(o, "            _ => None,").unwrap();
        writeln!(o, "        }}").unwrap();
        writeln!(o, "    }}").unwrap();
        writeln!(o, "}}\n").unwrap();
    }
    if fields.len() == 1 {
        let ty = if lpm {
            if parts[0] == Part::Ipv4 {
                "Ipv4Prefix"
            } else {
                "Ipv6Prefix"
            }
        } else {
            parts[0].rust()
        };
        writeln!(o, "/// The table's key: `{key_text}`.").unwrap();
        writeln!(o, "pub type Key = {ty};").unwrap();
        writeln!(o).unwrap();
    } else {
        writeln!(o, "/// The table's key: `{key_text}`.").unwrap();
        writeln!(o, "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]").unwrap();
        writeln!(o, "pub struct Key {{").unwrap();
        for (f, p) in fields.iter().zip(&parts) {
            writeln!(o, "    /// `{f}`").unwrap();
            writeln!(o, "    pub {}: {},", snake(*f), p.rust()).unwrap();
        }
        writeln!(o, "}}\n").unwrap();
        let names: Vec<String> = fields.iter().map(|f| snake(*f)).collect();
        writeln!(o, "impl embed::KeyPart for Key {{").unwrap();
        writeln!(o, "    fn to_key_value(&self) -> embed::KeyValue {{").unwrap();
        writeln!(o, "        embed::KeyValue::Composite(vec![").unwrap();
        for n in &names {
            writeln!(o, "            embed::KeyPart::to_key_value(&self.{n}),").unwrap();
        }
        writeln!(o, "        ])").unwrap();
        writeln!(o, "    }}\n").unwrap();
        writeln!(o, "    fn from_key_value(value: &embed::KeyValue) -> Option<Key> {{").unwrap();
        writeln!(o, "        match value {{").unwrap();
        let pattern: Vec<String> = (0..names.len()).map(|i| format!("p{i}")).collect();
        writeln!(o, "            embed::KeyValue::Composite(parts) => match parts.as_slice() {{").unwrap();
        writeln!(o, "                [{}] => Some(Key {{", pattern.join(", ")).unwrap();
        for (i, n) in names.iter().enumerate() {
            writeln!(o, "                    {n}: embed::KeyPart::from_key_value(p{i})?,").unwrap();
        }
        writeln!(o, "                }}),").unwrap();
        writeln!(o, "                _ => None,").unwrap();
        writeln!(o, "            }},").unwrap();
        writeln!(o, "            _ => None,").unwrap();
        writeln!(o, "        }}").unwrap();
        writeln!(o, "    }}").unwrap();
        writeln!(o, "}}\n").unwrap();
        writeln!(o, "/// As a route of the spec writes it: the fields in parentheses.").unwrap();
        writeln!(o, "impl ::std::fmt::Display for Key {{").unwrap();
        writeln!(o, "    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{").unwrap();
        let holes = vec!["{}"; names.len()].join(", ");
        let args: Vec<String> = names.iter().map(|n| format!("self.{n}")).collect();
        let call = format!("        write!(f, \"({holes})\", {})", args.join(", "));
        if call.len() <= 100 {
            writeln!(o, "{call}").unwrap();
        } else {
            writeln!(o, "        write!(").unwrap();
            writeln!(o, "            f,").unwrap();
            writeln!(o, "            \"({holes})\",").unwrap();
            for a in &args {
                writeln!(o, "            {a},").unwrap();
            }
            writeln!(o, "        )").unwrap();
        }
        writeln!(o, "    }}").unwrap();
        writeln!(o, "}}\n").unwrap();
    }

    // The deployment.
    writeln!(o, "/// The spec deployed in the kernel, in this process's network namespace.").unwrap();
    writeln!(o, "#[derive(Debug)]").unwrap();
    writeln!(o, "pub struct Deployment(embed::Deployment);").unwrap();
    writeln!(o).unwrap();
    writeln!(o, "impl Deployment {{").unwrap();
    writeln!(o, "    /// Where it is pinned unless told otherwise: `/sys/fs/bpf/devmapc/{name}`.").unwrap();
    writeln!(o, "    pub fn default_pin_dir() -> ::std::path::PathBuf {{").unwrap();
    writeln!(o, "        embed::default_pin_dir(NAME)").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// Loads, fills and attaches the spec as built, pinned in `pin_dir`").unwrap();
    writeln!(o, "    /// (default: [`Deployment::default_pin_dir`]); on an existing deployment,").unwrap();
    writeln!(o, "    /// makes the kernel match the build again (routes set since are undone).").unwrap();
    writeln!(
        o,
        "    pub fn apply(pin_dir: Option<&::std::path::Path>) -> Result<Deployment, DeployError> {{"
    )
    .unwrap();
    writeln!(o, "        let dir = pin_dir.map_or_else(Deployment::default_pin_dir, |d| d.to_path_buf());")
        .unwrap();
    writeln!(o, "        Deployment::apply_with(Options::new(dir))").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// [`Deployment::apply`] with the runtime's options (`make_ready`, ...).").unwrap();
    writeln!(o, "    pub fn apply_with(options: Options) -> Result<Deployment, DeployError> {{").unwrap();
    writeln!(o, "        embed::Deployment::apply(OBJECT, MANIFEST, options).map(Deployment)").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// The deployment of this build pinned in `pin_dir`, as it is: changes nothing.")
        .unwrap();
    writeln!(o, "    pub fn open(pin_dir: Option<&::std::path::Path>) -> Result<Deployment, DeployError> {{")
        .unwrap();
    writeln!(o, "        let dir = pin_dir.map_or_else(Deployment::default_pin_dir, |d| d.to_path_buf());")
        .unwrap();
    writeln!(o, "        embed::Deployment::open(OBJECT, MANIFEST, Options::new(dir)).map(Deployment)")
        .unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// Routes frames with `key` to `to`, replacing its route if it has one.").unwrap();
    match ir.code.access {
        Access::ReadWrite => {
            writeln!(o, "    /// A data change: only the map entries that differ are written.").unwrap();
        }
        Access::ReadOnly | Access::WriteOnly => {
            let access = if ir.code.access == Access::ReadOnly { "read_only" } else { "write_only" };
            writeln!(o, "    /// The table is `access = {access}`: new programs are loaded and swapped in.")
                .unwrap();
        }
    }
    writeln!(
        o,
        "    pub fn set_route(&mut self, key: Key, to: impl Into<Target>) -> Result<Report, DeployError> {{"
    )
    .unwrap();
    writeln!(o, "        let key = embed::KeyPart::to_key_value(&key);").unwrap();
    writeln!(o, "        self.0.set_route(key, to.into().to_ref())").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// Removes the route of `key`, if it has one.").unwrap();
    writeln!(o, "    pub fn remove_route(&mut self, key: Key) -> Result<Report, DeployError> {{").unwrap();
    writeln!(o, "        self.0.remove_route(&embed::KeyPart::to_key_value(&key))").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// The routes, as last applied or read by this process.").unwrap();
    writeln!(o, "    pub fn routes(&self) -> Vec<(Key, Target)> {{").unwrap();
    writeln!(o, "        let typed = |r: &embed::RouteData| {{").unwrap();
    writeln!(o, "            let key = <Key as embed::KeyPart>::from_key_value(&r.key)?;").unwrap();
    writeln!(o, "            Some((key, Target::from_ref(r.target)?))").unwrap();
    writeln!(o, "        }};").unwrap();
    writeln!(o, "        self.0.routes().iter().filter_map(typed).collect()").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// The route of `key`.").unwrap();
    writeln!(o, "    pub fn route(&self, key: Key) -> Option<Target> {{").unwrap();
    writeln!(o, "        let found = self.routes().into_iter().find(|(k, _)| *k == key);").unwrap();
    writeln!(o, "        found.map(|(_, t)| t)").unwrap();
    writeln!(o, "    }}\n").unwrap();
    if ir.code.counters {
        writeln!(o, "    /// Frames (and bytes) redirected to `device`.").unwrap();
        writeln!(o, "    pub fn counters(&self, device: Device) -> Result<Count, DeployError> {{").unwrap();
        writeln!(o, "        self.0.counters(device.index())").unwrap();
        writeln!(o, "    }}\n").unwrap();
        if has_groups {
            writeln!(o, "    /// Frames (and bytes) flooded to `group`.").unwrap();
            writeln!(o, "    pub fn group_counters(&self, group: Group) -> Result<Count, DeployError> {{")
                .unwrap();
            writeln!(o, "        self.0.group_counters(group.index())").unwrap();
            writeln!(o, "    }}\n").unwrap();
        }
        writeln!(o, "    /// Frames (and bytes) no route matched.").unwrap();
        writeln!(o, "    pub fn misses(&self) -> Result<Count, DeployError> {{").unwrap();
        writeln!(o, "        self.0.misses()").unwrap();
        writeln!(o, "    }}\n").unwrap();
    }
    writeln!(o, "    /// What the last apply did (`None` after [`Deployment::open`]).").unwrap();
    writeln!(o, "    pub fn report(&self) -> Option<&Report> {{").unwrap();
    writeln!(o, "        self.0.report()").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// Where it is pinned.").unwrap();
    writeln!(o, "    pub fn pin_dir(&self) -> &::std::path::Path {{").unwrap();
    writeln!(o, "        self.0.pin_dir()").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// The untyped engine, for what this module does not wrap (`status`, ...).").unwrap();
    writeln!(o, "    pub fn engine(&self) -> &embed::Deployment {{").unwrap();
    writeln!(o, "        &self.0").unwrap();
    writeln!(o, "    }}\n").unwrap();
    writeln!(o, "    /// Detaches it and removes its pins.").unwrap();
    writeln!(o, "    pub fn detach(self) -> Result<embed::Detached, DeployError> {{").unwrap();
    writeln!(o, "        self.0.detach()").unwrap();
    writeln!(o, "    }}").unwrap();
    writeln!(o, "}}").unwrap();
    allow_unused(&out)
}

/// Marks every item an application may leave unused with
/// `#[allow(dead_code)]`: the module is an API, used in part.
fn allow_unused(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1024);
    for line in text.lines() {
        let item =
            ["pub const ", "pub enum ", "pub struct ", "pub type "].iter().any(|p| line.starts_with(p))
                || (line.starts_with("impl ") && !line.contains(" for "));
        if item {
            out.push_str("#[allow(dead_code)]\n");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_unique_camel_case_variants() {
        assert_eq!(camel("site_a"), "SiteA");
        assert_eq!(camel("port1"), "Port1");
        assert_eq!(camel("_x"), "X");
        assert_eq!(camel("Uplink"), "Uplink");
        let (v, odd) = variants(&["uplink", "red", "gw_blue"]);
        assert_eq!(v, ["Uplink", "Red", "GwBlue"]);
        assert!(!odd);
        let (v, odd) = variants(&["port1", "port_1", "self", "_1"]);
        assert_eq!(v, ["Port1", "Port1_", "Self_", "D1"]);
        assert!(odd);
    }

    #[test]
    fn key_fields_have_rust_types() {
        assert_eq!(Part::of(Field::VlanId), Part::VlanId);
        assert_eq!(Part::of(Field::IngressPort), Part::Device);
        assert_eq!(Part::of(Field::EthDst), Part::Mac);
        assert_eq!(Part::of(Field::Ipv4Dst), Part::Ipv4);
        assert_eq!(Part::of(Field::Ipv6Src), Part::Ipv6);
        assert_eq!(Part::of(Field::IpProto), Part::U8);
        assert_eq!(Part::of(Field::L4Dport), Part::U16);
        assert_eq!(snake(Field::L4Dport), "l4_dport");
    }
}
