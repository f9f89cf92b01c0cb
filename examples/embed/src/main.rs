//! Embeds `examples/vlan-switch.devmap`: build.rs compiles it, and this
//! binary carries the object, the skeleton and the typed module generated
//! from it.
//!
//! Without arguments it lists the object's programs and maps and the
//! spec's devices and key, as Rust types. With `--load` (as root) it loads
//! the object, which runs the verifier on every program; then, when the
//! spec's devices (`eth0`, `veth-red`, `veth-blue`, `veth-mgmt`) are in
//! this network namespace, it applies the spec there, moves VLAN 300 from
//! `mgmt` to `red` by typed key, prints the counters and detaches again:
//!
//! ```text
//! ip netns add demo
//! for d in eth0 veth-red veth-blue veth-mgmt; do
//!     ip -n demo link add $d type veth peer name $d-p
//!     ip -n demo link set $d up; ip -n demo link set $d-p up
//! done
//! nsenter --net=/run/netns/demo devmapc-example-embed --load --make-ready
//! ```
//!
//! Options: `--pin-dir DIR` (default `/sys/fs/bpf/devmapc-example-embed`),
//! `--make-ready` (turn GRO on for the veth peers of redirect targets).

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use std::mem::MaybeUninit;
use std::path::PathBuf;

mod skel {
    include!(concat!(env!("OUT_DIR"), "/vlan_switch.skel.rs"));
}

/// The typed module: `Device`, `Group`, `Target`, `Key` (a `VlanId`) and
/// `Deployment`.
mod vlan_switch {
    include!(concat!(env!("OUT_DIR"), "/vlan_switch.rs"));
}

use vlan_switch::{Deployment, Device, Group, Key, VlanId};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut load = false;
    let mut make_ready = false;
    let mut pin_dir = PathBuf::from("/sys/fs/bpf/devmapc-example-embed");
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--load" => load = true,
            "--make-ready" => make_ready = true,
            "--pin-dir" => pin_dir = rest.next().ok_or("--pin-dir takes a directory")?.into(),
            other => {
                return Err(format!("unknown argument `{other}` (--load, --make-ready, --pin-dir DIR)").into())
            }
        }
    }

    let mut storage = MaybeUninit::uninit();
    let open = skel::VlanSwitchSkelBuilder::default().open(&mut storage)?;
    for prog in open.open_object().progs() {
        println!("program {}", prog.name().to_string_lossy());
    }
    for map in open.open_object().maps() {
        println!("map {}", map.name().to_string_lossy());
    }
    let manifest: serde_json::Value = serde_json::from_str(vlan_switch::MANIFEST)?;
    println!("code hash {}, data hash {}", manifest["code_hash"], manifest["data_hash"]);
    for device in Device::ALL {
        println!("device {device:?} ({})", device.name());
    }
    for group in Group::ALL {
        println!("group {group:?} ({})", group.name());
    }
    println!("key {}", std::any::type_name::<Key>());
    if !load {
        return Ok(());
    }

    let loaded = open.load()?;
    println!("loaded: {} programs passed the verifier", loaded.object().progs().count());
    drop(loaded);

    if Deployment::open(Some(&pin_dir)).is_ok() {
        return Err(format!(
            "{} already holds a deployment: detach it first (devmapc detach {0})",
            pin_dir.display()
        )
        .into());
    }
    let mut options = vlan_switch::Options::new(&pin_dir);
    options.make_ready = make_ready;
    let mut deployment = match Deployment::apply_with(options) {
        Ok(d) => d,
        Err(e @ vlan_switch::DeployError::Device(_)) => {
            println!("not applied here: {e}");
            println!("(create the spec's devices in a network namespace and run this there: see the docs of this example)");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(report) = deployment.report() {
        print!("{report}");
    }

    // Move VLAN 300 from the management port to red, by typed key.
    let vlan = VlanId::new(300).ok_or("300 is a VLAN id")?;
    println!("route {vlan} was {:?}", deployment.route(vlan));
    let report = deployment.set_route(vlan, Device::Red)?;
    print!("{report}");
    println!("route {vlan} is {:?}", deployment.route(vlan));

    for device in Device::ALL {
        let count = deployment.counters(device)?;
        println!("{device}: {} packets, {} bytes", count.packets, count.bytes);
    }
    let misses = deployment.misses()?;
    println!("misses: {} packets, {} bytes", misses.packets, misses.bytes);

    let detached = deployment.detach()?;
    println!("detached: {} links, {} pins removed", detached.links.len(), detached.pins);
    Ok(())
}
