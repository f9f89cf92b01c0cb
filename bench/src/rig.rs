//! What every kernel-facing part of the harness stands on: specs built with
//! devmapc, a throw-away network namespace with veth pairs, a receiver that
//! counts delivered frames, pin directories that clean up after themselves.

use devmapc::ir::Ir;
use devmapc_runtime::deploy;
use devmapc_runtime::Device;
use devmapc_testkit::bpf;
use devmapc_testkit::netns::{Iface, Netns};
use devmapc_testkit::{objects, wait_until};
use libbpf_rs::{Link, Object};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Writes `spec` to `dir/<name>.devmap` and builds it there: the object and
/// the plan read back from the manifest, as the runtime reads it.
pub fn build(dir: &Path, name: &str, spec: &str) -> Result<(PathBuf, Ir)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.devmap"));
    std::fs::write(&path, spec)?;
    let outputs = devmapc::Builder::new(&path).out_dir(dir).build()?;
    if !outputs.clang_output.is_empty() {
        return Err(format!("clang warned on {name}: {:?}", outputs.clang_output).into());
    }
    let manifest = outputs.manifest.ok_or("no manifest")?;
    Ok(deploy::read_manifest_file(&manifest)?)
}

/// The hand-written references, kept with the compiler's tests.
pub fn reference_source(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compiler/tests/reference").join(file)
}

/// Compiles a reference with the clang and flags devmapc uses for
/// generated C.
pub fn compile_reference(file: &str, out_dir: &Path) -> Result<PathBuf> {
    let obj = out_dir.join(file.replace(".bpf.c", ".ref.bpf.o"));
    let warnings = devmapc::builder::compile_bpf_c(&reference_source(file), &obj)?;
    if !warnings.is_empty() {
        return Err(format!("clang warned on {file}: {warnings:?}").into());
    }
    Ok(obj)
}

/// A namespace with veth pairs `<name>`/`p<name>`, the test kit's `count`
/// program on every `p<name>` (a veth accepts redirected frames only when
/// its peer has an XDP program), and a scratch directory.
pub struct Rig {
    pub ifaces: Vec<Iface>,
    pub peers: Vec<Iface>,
    counts: Object,
    _counting: Vec<Link>,
    pub dir: tempfile::TempDir,
    // Dropped last: deleting the namespace deletes its devices.
    pub ns: Netns,
}

impl Rig {
    pub fn new(names: &[&str]) -> Result<Rig> {
        let ns = Netns::new()?;
        let counts = bpf::load(objects::COUNT)?;
        let (mut ifaces, mut peers, mut counting) = (vec![], vec![], vec![]);
        for name in names {
            let (iface, peer) = ns.veth(name, &format!("p{name}"))?;
            let counter = bpf::prog(&counts, "count")?;
            counting.push(ns.enter(|| counter.attach_xdp(peer.ifindex as i32))?);
            ifaces.push(iface);
            peers.push(peer);
        }
        Ok(Rig { ifaces, peers, counts, _counting: counting, dir: tempfile::tempdir()?, ns })
    }

    pub fn iface(&self, name: &str) -> &Iface {
        self.ifaces.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no device {name}"))
    }

    pub fn peer(&self, name: &str) -> &Iface {
        let i = self.ifaces.iter().position(|i| i.name == name).unwrap_or_else(|| panic!("no device {name}"));
        &self.peers[i]
    }

    pub fn device(&self, name: &str) -> Device {
        let i = self.iface(name);
        Device { ifindex: i.ifindex, mac: i.mac }
    }

    /// The kernel's devices for the plan's devices (bound by ifname).
    pub fn devices(&self, ir: &Ir) -> Vec<Device> {
        ir.data
            .devices
            .iter()
            .map(|d| match &d.binding {
                devmapc::model::Binding::Ifname(name) => self.device(name),
                other => panic!("bench specs bind by ifname, not {other:?}"),
            })
            .collect()
    }

    /// Frames counted behind device `name` (on its peer) so far.
    pub fn received(&self, name: &str) -> u64 {
        let counts = bpf::map(&self.counts, "counts").expect("the counter's map");
        bpf::rx_count(&counts, self.peer(name).ifindex).expect("reading the counter").0
    }

    /// Waits until the count behind `name` stops moving (frames still in a
    /// veth's queue), at most `timeout`; returns it.
    pub fn settled(&self, name: &str, timeout: Duration) -> u64 {
        let mut last = self.received(name);
        wait_until(timeout, || {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.received(name);
            let still = now == last;
            last = now;
            still
        });
        last
    }
}

/// A pin directory below /sys/fs/bpf, unique to this process, removed with
/// everything in it on drop (also on a panic).
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(label: &str) -> PinDir {
        // Left behind by a killed run: remove them.
        if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("devmapc-bench-").and_then(|r| r.split('-').next()) {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
        PinDir(PathBuf::from(format!("/sys/fs/bpf/devmapc-bench-{}-{label}", std::process::id())))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                eprintln!("warning: could not remove {}: {e}", self.0.display());
            }
        }
    }
}
