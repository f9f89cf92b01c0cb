//! One test per kernel fact devmapc relies on (docs/kernel.md says which
//! test pins which fact), named after the fact. A kernel that behaves differently fails here first,
//! with the fact's name, instead of somewhere deep in a runtime test.
//!
//! Map facts use maps created with `MapHandle::create`; program facts use the
//! objects of `testkit/bpf/`. Anything that names a device runs inside a
//! throw-away namespace (`Netns::enter`), because the kernel resolves
//! ifindexes in the caller's namespace.

use std::fmt::Debug;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use devmapc_testkit::bpf::{self, RedirectCfg, XDP_ABORTED, XDP_REDIRECT};
use devmapc_testkit::netns::Netns;
use devmapc_testkit::packet::{self, Frame};
use devmapc_testkit::{objects, require_privileged, wait_until};
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, Object};

/// The kernel's internal "operation not supported" (not EOPNOTSUPP).
const ENOTSUPP: i32 = 524;
const BPF_F_BROADCAST: u64 = 1 << 3;
const BPF_F_EXCLUDE_INGRESS: u64 = 1 << 4;
const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// Frames per live run. At most 256, the ring of a veth receive queue, so
/// that even if the receiver's NAPI runs only after the whole run, nothing
/// is dropped for lack of room and counts stay exact.
const FRAMES: u32 = 200;

fn create(key_size: u32, value_size: u32, max_entries: u32, flags: u32) -> libbpf_rs::Result<MapHandle> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: flags,
        ..Default::default()
    };
    MapHandle::create(MapType::DevmapHash, Some("dmc_fact"), key_size, value_size, max_entries, &opts)
}

fn devmap_hash(max_entries: u32) -> MapHandle {
    create(4, 8, max_entries, 0).expect("creating a DEVMAP_HASH")
}

#[track_caller]
fn errno<T: Debug>(result: libbpf_rs::Result<T>) -> i32 {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(e) => bpf::errno(&e).unwrap_or_else(|| panic!("no errno in: {e:#}")),
    }
}

/// Raw libbpf calls return -errno.
#[track_caller]
fn raw_errno(rc: i32) -> i32 {
    assert!(rc < 0, "expected an error, got {rc}");
    -rc
}

fn key(k: u32) -> [u8; 4] {
    k.to_ne_bytes()
}

fn entry(ifindex: u32) -> [u8; 8] {
    bpf::devmap_val(ifindex, None)
}

fn entry_with(ifindex: u32, prog: BorrowedFd<'_>) -> [u8; 8] {
    bpf::devmap_val(ifindex, Some(prog))
}

fn lookup(map: &impl MapCore, k: u32) -> Option<(u32, u32)> {
    map.lookup(&key(k), MapFlags::ANY).unwrap().map(|v| bpf::parse_devmap_val(&v))
}

fn egress() -> Object {
    bpf::load(objects::EGRESS).unwrap()
}

fn redirect() -> Object {
    bpf::load(objects::REDIRECT).unwrap()
}

fn set_cfg(obj: &Object, cfg: RedirectCfg) {
    bpf::map(obj, "cfg").unwrap().update(&key(0), &cfg.to_bytes(), MapFlags::ANY).unwrap();
}

fn udp_frame() -> Vec<u8> {
    Frame::new().udp(1000, 2000).payload(&[0xab; 18]).build()
}

// ---------------------------------------------------------------- creating

#[test]
fn devmap_hash_key_size_must_be_4() {
    require_privileged!();
    create(4, 8, 1, 0).unwrap();
    for key_size in [1, 2, 8, 16] {
        assert_eq!(errno(create(key_size, 8, 1, 0)), libc::EINVAL, "key_size {key_size}");
    }
}

#[test]
fn devmap_hash_value_size_is_4_or_8() {
    require_privileged!();
    create(4, 4, 1, 0).unwrap();
    create(4, 8, 1, 0).unwrap();
    for value_size in [0, 1, 2, 3, 5, 6, 7, 12, 16] {
        assert_eq!(errno(create(4, value_size, 1, 0)), libc::EINVAL, "value_size {value_size}");
    }
}

#[test]
fn devmap_hash_flags_only_numa_node_rdonly_wronly() {
    require_privileged!();
    let allowed = [libbpf_sys::BPF_F_NUMA_NODE, libbpf_sys::BPF_F_RDONLY, libbpf_sys::BPF_F_WRONLY];
    for flags in [0].into_iter().chain(allowed) {
        let map = create(4, 8, 1, flags).unwrap_or_else(|e| panic!("flags {flags:#x}: {e:#}"));
        // The kernel adds BPF_F_RDONLY_PROG; RDONLY/WRONLY belong to the fd.
        let reported = map.info().unwrap().info.map_flags;
        let expected = BPF_F_RDONLY_PROG | (flags & libbpf_sys::BPF_F_NUMA_NODE);
        assert_eq!(reported, expected, "flags {flags:#x} reported as {reported:#x}");
    }
    let both = libbpf_sys::BPF_F_RDONLY | libbpf_sys::BPF_F_WRONLY;
    assert_eq!(errno(create(4, 8, 1, both)), libc::EINVAL, "RDONLY|WRONLY");
    for bit in 0..32 {
        let flag = 1u32 << bit;
        if allowed.contains(&flag) {
            continue;
        }
        assert_eq!(errno(create(4, 8, 1, flag)), libc::EINVAL, "flag bit {bit} ({flag:#x})");
    }
}

/// `numa_node` places a spec's maps on a node, but per-CPU maps (the
/// counters) are refused the flag: they live on every CPU's node. Their
/// ordinary counterparts take it.
#[test]
fn per_cpu_maps_refuse_numa_node() {
    require_privileged!();
    let make = |map_type, flags| {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: flags,
            numa_node: 0,
            ..Default::default()
        };
        MapHandle::create(map_type, Some("dmc_fact"), 4, 16, 4, &opts)
    };
    let numa = libbpf_sys::BPF_F_NUMA_NODE;
    for map_type in [MapType::PercpuArray, MapType::PercpuHash] {
        assert_eq!(errno(make(map_type, numa)), libc::EINVAL, "{map_type:?}");
        make(map_type, 0).unwrap_or_else(|e| panic!("{map_type:?} without the flag: {e:#}"));
    }
    for map_type in [MapType::Array, MapType::Hash] {
        make(map_type, numa).unwrap_or_else(|e| panic!("{map_type:?}: {e:#}"));
    }
}

#[test]
fn devmap_hash_max_entries_0_rejected() {
    require_privileged!();
    assert_eq!(errno(create(4, 8, 0, 0)), libc::EINVAL);
    create(4, 8, 1, 0).unwrap();
}

/// The bucket of a DEVMAP_HASH key is `key & (n_buckets - 1)`, with
/// `n_buckets = roundup_pow_of_two(max_entries)`: the key is not hashed.
/// Seen without timing: `get_next_key` walks the buckets in index order and
/// each bucket's list newest first, so the order of the keys read back is
/// the order of `key & 7` for a map of 6 entries (8 buckets), ties newest
/// first. Hashed keys, or 16 buckets, would come back in another order.
#[test]
fn devmap_hash_bucket_is_key_and_buckets_minus_1() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = devmap_hash(6);
    let inserted = [0x10u32, 0x03, 0x21, 0x08, 0x1f, 0x0b];
    ns.enter(|| {
        for k in inserted {
            map.update(&key(k), &entry(1), MapFlags::NO_EXIST).unwrap();
        }
    });
    let read: Vec<u32> = map.keys().map(|k| u32::from_ne_bytes(k.try_into().unwrap())).collect();
    // Bucket 0: 0x08, 0x10 (newest first); 1: 0x21; 3: 0x0b, 0x03; 7: 0x1f.
    assert_eq!(read, [0x08, 0x10, 0x21, 0x0b, 0x03, 0x1f], "{read:x?}");
}

/// A lookup walks its bucket's list, so a miss in a bucket holding many
/// keys costs about one comparison per key. Same map, same run: 4,096 keys
/// sharing their low 12 bits (one bucket of 4,096), then a missing key in
/// that bucket against one in an empty bucket. Times are compared as a
/// ratio within the run (the kernel's own per-run average), never as
/// absolute figures.
#[test]
fn devmap_hash_miss_walks_its_bucket() {
    require_privileged!();
    const KEYS: u32 = 4096;
    let ns = Netns::new().unwrap();
    let obj = bpf::load_with(objects::REDIRECT, |open| {
        let mut map = open.maps_mut().find(|m| m.name() == "tx_ports").expect("tx_ports");
        map.set_max_entries(KEYS)
    })
    .unwrap();
    let map = bpf::map(&obj, "tx_ports").unwrap();
    ns.enter(|| {
        for k in 1..=KEYS {
            map.update(&key(k << 12), &entry(1), MapFlags::NO_EXIST).unwrap();
        }
    });
    let prog = bpf::prog(&obj, "redirect").unwrap();
    let frame = udp_frame();
    let miss_ns = |k: u32| {
        set_cfg(&obj, RedirectCfg { key: k, flags: 2, ..Default::default() });
        let run = bpf::test_run(&prog, &frame, None, 200).unwrap();
        assert_eq!(run.retval, 2, "key {k:#x} misses (XDP_PASS from the flags)");
        run.duration_ns.max(1)
    };
    // The fastest of a few alternating runs: noise only adds time.
    let (mut crowded, mut empty) = (u64::MAX, u64::MAX);
    for _ in 0..5 {
        crowded = crowded.min(miss_ns(0));
        empty = empty.min(miss_ns(1));
    }
    println!("miss beside {KEYS} keys of its bucket: {crowded} ns, in an empty bucket: {empty} ns");
    assert!(
        crowded >= 20 * empty,
        "a miss beside {KEYS} keys of its bucket: {crowded} ns; in an empty bucket: {empty} ns"
    );
}

// ------------------------------------------------------------ syscall side

#[test]
fn devmap_hash_batch_ops_and_lookup_and_delete_unsupported() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = devmap_hash(4);
    ns.enter(|| map.update(&key(1), &entry(1), MapFlags::ANY)).unwrap();

    let fd = map.as_fd().as_raw_fd();
    let (mut keys, mut values) = ([0u32; 4], [0u64; 4]);
    let mut count = 4u32;
    let mut batch = 0u32;
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    // SAFETY: buffers hold `count` keys and values of the map's sizes.
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            fd,
            std::ptr::null_mut(),
            (&mut batch as *mut u32).cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    assert_eq!(raw_errno(rc), ENOTSUPP, "lookup_batch");
    let mut count = 4u32;
    // SAFETY: as above.
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_and_delete_batch(
            fd,
            std::ptr::null_mut(),
            (&mut batch as *mut u32).cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    assert_eq!(raw_errno(rc), ENOTSUPP, "lookup_and_delete_batch");
    let update = ns.enter(|| map.update_batch(&key(2), &entry(1), 1, MapFlags::ANY, MapFlags::ANY));
    assert_eq!(errno(update), ENOTSUPP, "update_batch");
    assert_eq!(errno(map.delete_batch(&key(1), 1, MapFlags::ANY, MapFlags::ANY)), ENOTSUPP);
    assert_eq!(errno(map.lookup_and_delete(&key(1))), ENOTSUPP, "lookup_and_delete");

    // Nothing was changed by the failed calls.
    assert_eq!(lookup(&map, 1), Some((1, 0)));
    assert_eq!(lookup(&map, 2), None);
    // The single-entry operations that are supported.
    assert_eq!(map.keys().collect::<Vec<_>>(), vec![key(1).to_vec()]);
    map.delete(&key(1)).unwrap();
    assert_eq!(lookup(&map, 1), None);
}

#[test]
fn devmap_hash_update_ifindex_0_or_unknown_is_einval() {
    require_privileged!();
    let a = Netns::new().unwrap();
    let b = Netns::new().unwrap();
    let (va, _) = a.veth("dmcva", "dmcvb").unwrap();
    let map = devmap_hash(4);
    let map4 = create(4, 4, 4, 0).unwrap();

    b.enter(|| {
        assert_eq!(errno(map.update(&key(1), &entry(0), MapFlags::ANY)), libc::EINVAL, "ifindex 0");
        assert_eq!(errno(map4.update(&key(1), &0u32.to_ne_bytes(), MapFlags::ANY)), libc::EINVAL);
        assert_eq!(errno(map.update(&key(1), &entry(999_999), MapFlags::ANY)), libc::EINVAL);
        // A device of another namespace does not exist for this caller.
        assert!(va.ifindex > 1);
        assert_eq!(errno(map.update(&key(1), &entry(va.ifindex), MapFlags::ANY)), libc::EINVAL);
        // Its own loopback device does.
        map.update(&key(1), &entry(1), MapFlags::ANY).unwrap();
        map4.update(&key(1), &1u32.to_ne_bytes(), MapFlags::ANY).unwrap();
    });
    a.enter(|| map.update(&key(2), &entry(va.ifindex), MapFlags::ANY)).unwrap();
    assert_eq!(lookup(&map, 2), Some((va.ifindex, 0)));
}

#[test]
fn devmap_hash_noexist_on_existing_key_is_eexist() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = devmap_hash(4);
    ns.enter(|| {
        map.update(&key(1), &entry(1), MapFlags::NO_EXIST).unwrap();
        assert_eq!(errno(map.update(&key(1), &entry(1), MapFlags::NO_EXIST)), libc::EEXIST);
    });
}

#[test]
fn devmap_hash_exist_on_missing_key_inserts() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = devmap_hash(4);
    ns.enter(|| map.update(&key(5), &entry(1), MapFlags::EXIST)).unwrap();
    assert_eq!(lookup(&map, 5), Some((1, 0)));
}

#[test]
fn devmap_hash_new_key_in_full_map_is_e2big() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = devmap_hash(2);
    ns.enter(|| {
        map.update(&key(1), &entry(1), MapFlags::ANY).unwrap();
        map.update(&key(2), &entry(1), MapFlags::ANY).unwrap();
        assert_eq!(errno(map.update(&key(3), &entry(1), MapFlags::ANY)), libc::E2BIG);
        // Replacing an entry of a full map is fine.
        map.update(&key(2), &entry(1), MapFlags::EXIST).unwrap();
    });
}

#[test]
fn devmap_hash_lookup_returns_egress_prog_id_not_fd() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let obj = egress();
    let prog = bpf::prog(&obj, "egress_rewrite").unwrap();
    let map = devmap_hash(4);
    ns.enter(|| map.update(&key(1), &entry_with(1, prog.as_fd()), MapFlags::ANY)).unwrap();
    let id = bpf::prog_id(&prog).unwrap();
    assert_ne!(id as i32, prog.as_fd().as_raw_fd(), "id and fd coincide: test proves nothing");
    assert_eq!(lookup(&map, 1), Some((1, id)));
    // fd -1 and fd 0 both mean "no program".
    ns.enter(|| {
        map.update(&key(2), &entry(1), MapFlags::ANY).unwrap();
        let mut zero = entry(1);
        zero[4..].copy_from_slice(&0i32.to_ne_bytes());
        map.update(&key(3), &zero, MapFlags::ANY).unwrap();
    });
    assert_eq!(lookup(&map, 2), Some((1, 0)));
    assert_eq!(lookup(&map, 3), Some((1, 0)));
}

#[test]
fn devmap_hash_rejects_program_not_loaded_for_xdp_devmap() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let pass = bpf::load(objects::PASS).unwrap();
    let obj = egress();
    let map = devmap_hash(4);
    ns.enter(|| {
        for prog in [bpf::prog(&pass, "xdp_pass").unwrap(), bpf::prog(&obj, "egress_rewrite_xdp").unwrap()] {
            let result = map.update(&key(1), &entry_with(1, prog.as_fd()), MapFlags::ANY);
            assert_eq!(errno(result), libc::EINVAL, "{:?}", prog.name());
        }
        // The same body loaded with BPF_XDP_DEVMAP through the load hook is taken.
        let fixed = bpf::load_with(objects::EGRESS, |open| {
            bpf::set_attach_type(open, "egress_rewrite_xdp", libbpf_rs::ProgramAttachType::XdpDevmap)
        });
        // egress_rewrite_xdp reads only ingress_ifindex, so it loads either way.
        let fixed = fixed.unwrap();
        let prog = bpf::prog(&fixed, "egress_rewrite_xdp").unwrap();
        map.update(&key(1), &entry_with(1, prog.as_fd()), MapFlags::ANY).unwrap();
    });
}

#[test]
fn devmap_hash_frags_and_non_frags_programs_do_not_mix() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let obj = egress();
    let plain = bpf::prog(&obj, "egress_rewrite").unwrap();
    let frags = bpf::prog(&obj, "egress_rewrite_frags").unwrap();
    ns.enter(|| {
        for (first, second) in [(&plain, &frags), (&frags, &plain)] {
            let map = devmap_hash(4);
            map.update(&key(1), &entry_with(1, first.as_fd()), MapFlags::ANY).unwrap();
            let mixed = map.update(&key(2), &entry_with(1, second.as_fd()), MapFlags::ANY);
            assert_eq!(errno(mixed), libc::EINVAL, "{:?} after {:?}", second.name(), first.name());
            map.update(&key(3), &entry_with(1, first.as_fd()), MapFlags::ANY).unwrap();
            // The first program stored fixed the kind, even once it is gone.
            map.delete(&key(1)).unwrap();
            map.delete(&key(3)).unwrap();
            let mixed = map.update(&key(2), &entry_with(1, second.as_fd()), MapFlags::ANY);
            assert_eq!(errno(mixed), libc::EINVAL, "empty map keeps its kind");
        }
    });
}

#[test]
fn devmap_hash_readonly_fd_update_eperm() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let created_ro = create(4, 8, 4, libbpf_sys::BPF_F_RDONLY).unwrap();
    ns.enter(|| {
        assert_eq!(errno(created_ro.update(&key(1), &entry(1), MapFlags::ANY)), libc::EPERM);
    });
    assert_eq!(errno(created_ro.delete(&key(1))), libc::EPERM);
    assert_eq!(lookup(&created_ro, 1), None, "lookup is allowed");

    // A read-only fd to a map that is writable through another fd.
    let map = devmap_hash(4);
    ns.enter(|| map.update(&key(1), &entry(1), MapFlags::ANY)).unwrap();
    let id = map.info().unwrap().info.id;
    let opts = libbpf_sys::bpf_get_fd_by_id_opts {
        sz: size_of::<libbpf_sys::bpf_get_fd_by_id_opts>() as _,
        open_flags: libbpf_sys::BPF_F_RDONLY,
        ..Default::default()
    };
    // SAFETY: plain syscall wrapper; the fd is closed below.
    let ro = unsafe { libbpf_sys::bpf_map_get_fd_by_id_opts(id, &opts) };
    assert!(ro >= 0, "bpf_map_get_fd_by_id_opts: {ro}");
    let (k, v) = (key(1), entry(1));
    let mut out = [0u8; 8];
    ns.enter(|| unsafe {
        // SAFETY: key and value buffers match the map's sizes.
        assert_eq!(
            raw_errno(libbpf_sys::bpf_map_update_elem(ro, k.as_ptr().cast(), v.as_ptr().cast(), 0)),
            libc::EPERM
        );
        assert_eq!(raw_errno(libbpf_sys::bpf_map_delete_elem(ro, k.as_ptr().cast())), libc::EPERM);
        assert_eq!(libbpf_sys::bpf_map_lookup_elem(ro, k.as_ptr().cast(), out.as_mut_ptr().cast()), 0);
        libc::close(ro);
    });
    assert_eq!(bpf::parse_devmap_val(&out), (1, 0));
}

/// RDONLY belongs to the creating fd, not the map: an fd reopened by id is
/// writable, until the map is frozen (through a writable fd), after which
/// no fd can write it. `access = read_only` is built on this: devmapc fills
/// through a reopened fd, then freezes.
#[test]
fn devmap_hash_created_rdonly_is_writable_by_id_until_frozen() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let created_ro = create(4, 8, 4, libbpf_sys::BPF_F_RDONLY).unwrap();
    let id = created_ro.info().unwrap().info.id;
    // SAFETY: plain syscall wrapper; the fd is closed below.
    let rw = unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) };
    assert!(rw >= 0, "bpf_map_get_fd_by_id: {rw}");
    let (k, v) = (key(1), entry(1));
    ns.enter(|| unsafe {
        // SAFETY: key and value buffers match the map's sizes.
        assert_eq!(
            libbpf_sys::bpf_map_update_elem(rw, k.as_ptr().cast(), v.as_ptr().cast(), 0),
            0,
            "written through the reopened fd"
        );
        assert_eq!(
            raw_errno(libbpf_sys::bpf_map_freeze(created_ro.as_fd().as_raw_fd())),
            libc::EPERM,
            "freezing needs a writable fd"
        );
        assert_eq!(libbpf_sys::bpf_map_freeze(rw), 0);
        assert_eq!(
            raw_errno(libbpf_sys::bpf_map_update_elem(rw, k.as_ptr().cast(), v.as_ptr().cast(), 0)),
            libc::EPERM,
            "frozen: not even the writable fd"
        );
        libc::close(rw);
    });
    assert_eq!(lookup(&created_ro, 1), Some((1, 0)));
}

#[test]
fn devmap_hash_writeonly_fd_lookup_eperm() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = create(4, 8, 4, libbpf_sys::BPF_F_WRONLY).unwrap();
    ns.enter(|| map.update(&key(1), &entry(1), MapFlags::ANY)).unwrap();
    assert_eq!(errno(map.lookup(&key(1), MapFlags::ANY)), libc::EPERM);
    let mut next = [0u8; 4];
    // SAFETY: a NULL key asks for the first key; `next` holds one key.
    let rc = unsafe {
        libbpf_sys::bpf_map_get_next_key(map.as_fd().as_raw_fd(), std::ptr::null(), next.as_mut_ptr().cast())
    };
    assert_eq!(raw_errno(rc), libc::EPERM, "get_next_key");
    map.delete(&key(1)).unwrap();
}

#[test]
fn devmap_hash_frozen_map_update_eperm() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let map = devmap_hash(4);
    ns.enter(|| map.update(&key(1), &entry(1), MapFlags::ANY)).unwrap();
    map.freeze().unwrap();
    ns.enter(|| {
        assert_eq!(errno(map.update(&key(2), &entry(1), MapFlags::ANY)), libc::EPERM);
        assert_eq!(errno(map.update(&key(1), &entry(1), MapFlags::ANY)), libc::EPERM);
    });
    assert_eq!(errno(map.delete(&key(1))), libc::EPERM);
    assert_eq!(lookup(&map, 1), Some((1, 0)));
}

// --------------------------------------------------------- bpf_redirect_map

#[test]
fn redirect_map_miss_returns_flags_and_3() {
    require_privileged!();
    let obj = redirect();
    let prog = bpf::prog(&obj, "redirect").unwrap();
    let frame = udp_frame();
    for flags in 0..=3u64 {
        set_cfg(&obj, RedirectCfg { key: 99, flags, ..Default::default() });
        let run = bpf::test_run(&prog, &frame, None, 1).unwrap();
        assert_eq!(run.retval as u64, flags, "miss with flags {flags}");
        // EXCLUDE_INGRESS without BROADCAST is ignored.
        set_cfg(&obj, RedirectCfg { key: 99, flags: flags | BPF_F_EXCLUDE_INGRESS, ..Default::default() });
        assert_eq!(bpf::test_run(&prog, &frame, None, 1).unwrap().retval as u64, flags);
    }
}

#[test]
fn redirect_map_hit_returns_xdp_redirect() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let (tx, _) = ns.veth("dmctx", "dmcrx").unwrap();
    let obj = redirect();
    let prog = bpf::prog(&obj, "redirect").unwrap();
    let map = bpf::map(&obj, "tx_ports").unwrap();
    ns.enter(|| map.update(&key(5), &entry(tx.ifindex), MapFlags::ANY)).unwrap();
    let frame = udp_frame();
    ns.enter(|| {
        for flags in [0, 1, 2, 3, BPF_F_EXCLUDE_INGRESS] {
            set_cfg(&obj, RedirectCfg { key: 5, flags, ..Default::default() });
            let run = bpf::test_run(&prog, &frame, Some(tx.ifindex), 1).unwrap();
            assert_eq!(run.retval, XDP_REDIRECT, "hit with flags {flags:#x}");
            assert_eq!(run.data, frame, "the program does not touch the frame");
        }
        // The key may come from the context.
        set_cfg(&obj, RedirectCfg { key_from_ingress: true, ..Default::default() });
        map.update(&key(tx.ifindex), &entry(tx.ifindex), MapFlags::ANY).unwrap();
        assert_eq!(bpf::test_run(&prog, &frame, Some(tx.ifindex), 1).unwrap().retval, XDP_REDIRECT);
        assert_eq!(bpf::test_run(&prog, &frame, Some(1), 1).unwrap().retval, XDP_ABORTED);
    });
}

#[test]
fn redirect_map_unknown_flag_bit_aborts_even_on_hit() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let obj = redirect();
    let prog = bpf::prog(&obj, "redirect").unwrap();
    let map = bpf::map(&obj, "tx_ports").unwrap();
    ns.enter(|| map.update(&key(5), &entry(1), MapFlags::ANY)).unwrap();
    let frame = udp_frame();
    for flags in [1 << 2, 1 << 5, 1 << 31, 1 << 32, (1 << 5) | 2] {
        for k in [5, 99] {
            set_cfg(&obj, RedirectCfg { key: k, flags, ..Default::default() });
            let run = ns.enter(|| bpf::test_run(&prog, &frame, None, 1)).unwrap();
            assert_eq!(run.retval, XDP_ABORTED, "flags {flags:#x}, key {k}");
        }
    }
}

#[test]
fn redirect_map_broadcast_ignores_the_key() {
    require_privileged!();
    let obj = redirect();
    let prog = bpf::prog(&obj, "redirect").unwrap();
    // An empty map: BROADCAST still returns XDP_REDIRECT (the frame is freed).
    for flags in [BPF_F_BROADCAST, BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS, BPF_F_BROADCAST | 2] {
        set_cfg(&obj, RedirectCfg { key: 99, flags, ..Default::default() });
        assert_eq!(bpf::test_run(&prog, &udp_frame(), None, 1).unwrap().retval, XDP_REDIRECT);
    }
}

// ----------------------------------------------------------- egress programs

#[test]
fn egress_programs_rejected_by_prog_test_run() {
    require_privileged!();
    let obj = egress();
    let frame = udp_frame();
    for name in ["egress_rewrite", "egress_rewrite_frags"] {
        let prog = bpf::prog(&obj, name).unwrap();
        assert!(matches!(prog.attach_type(), libbpf_rs::ProgramAttachType::XdpDevmap), "{name}");
        assert_eq!(errno(bpf::test_run(&prog, &frame, None, 1)), libc::EINVAL, "{name}");
    }
    // The same body as a plain XDP program runs (and sees lo, ifindex 1, as
    // its device when no context names one).
    let prog = bpf::prog(&obj, "egress_rewrite_xdp").unwrap();
    let run = bpf::test_run(&prog, &frame, None, 1).unwrap();
    assert_eq!(run.retval, bpf::XDP_PASS);
    assert_eq!(packet::parse(&run.data).unwrap().src, [0x02, 0, 0, 0, 0, 1]);
}

// ----------------------------------------------------------------- lifecycle

#[test]
fn devmap_hash_entries_of_deleted_device_are_removed() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let (a0, _) = ns.veth("dmca0", "dmcb0").unwrap();
    let (a1, b1) = ns.veth("dmca1", "dmcb1").unwrap();
    let map = devmap_hash(8);
    ns.enter(|| {
        map.update(&key(1), &entry(a0.ifindex), MapFlags::ANY).unwrap();
        map.update(&key(2), &entry(a1.ifindex), MapFlags::ANY).unwrap();
        map.update(&key(3), &entry(b1.ifindex), MapFlags::ANY).unwrap();
    });
    // Link down keeps the entry.
    ns.set_down("dmca1").unwrap();
    assert_eq!(lookup(&map, 2), Some((a1.ifindex, 0)));
    // Deleting a device deletes its entries.
    ns.delete_link("dmca0").unwrap();
    assert_eq!(lookup(&map, 1), None);
    assert_eq!(lookup(&map, 2), Some((a1.ifindex, 0)));
    // Destroying the namespace unregisters its devices (asynchronously).
    drop(ns);
    assert!(
        wait_until(Duration::from_secs(5), || lookup(&map, 2).is_none() && lookup(&map, 3).is_none()),
        "entries of a destroyed namespace's devices are still there"
    );
}

// ------------------------------------------------------- traffic, live frames

/// A namespace with an ingress veth (`dmcin` / `dmcinp`) and a target veth
/// (`dmctx` → `dmcrx`), the redirect program, and tx_ports[7] = dmctx.
struct Bench {
    ns: Netns,
    ingress: u32,
    tx: u32,
    rx: u32,
    redirect: Object,
}

impl Bench {
    fn new() -> Bench {
        let ns = Netns::new().unwrap();
        let (ingress, _) = ns.veth("dmcin", "dmcinp").unwrap();
        let (tx, rx) = ns.veth("dmctx", "dmcrx").unwrap();
        let redirect = redirect();
        let map = bpf::map(&redirect, "tx_ports").unwrap();
        ns.enter(|| map.update(&key(7), &entry(tx.ifindex), MapFlags::ANY)).unwrap();
        set_cfg(&redirect, RedirectCfg { key: 7, ..Default::default() });
        Bench { ns, ingress: ingress.ifindex, tx: tx.ifindex, rx: rx.ifindex, redirect }
    }

    /// Send FRAMES frames arriving on dmcin through the redirect program.
    fn send(&self) {
        let prog = bpf::prog(&self.redirect, "redirect").unwrap();
        self.ns.enter(|| bpf::test_run_live(&prog, &udp_frame(), self.ingress, FRAMES, 0)).unwrap();
    }
}

#[test]
fn live_frames_redirect_into_veth_with_xdp_peer_delivers() {
    require_privileged!();
    let bench = Bench::new();
    let count = bpf::load(objects::COUNT).unwrap();
    let counts = bpf::map(&count, "counts").unwrap();
    let counter = bpf::prog(&count, "count").unwrap();
    let _link = bench.ns.enter(|| counter.attach_xdp(bench.rx as i32)).unwrap();

    bench.send();
    let delivered = || bpf::rx_count(&counts, bench.rx).unwrap().0;
    wait_until(Duration::from_secs(2), || delivered() >= FRAMES as u64);
    assert_eq!(delivered(), FRAMES as u64);
    let (_, src) = bpf::rx_count(&counts, bench.rx).unwrap();
    assert_eq!(src, Some(packet::DEFAULT_SRC), "no egress program: frame unchanged");

    // With an egress program on the entry: it runs once per frame and its
    // rewrite (source MAC 02:00:00:00:HH:LL = egress ifindex) arrives.
    let egress = egress();
    let rewrite = bpf::prog(&egress, "egress_rewrite").unwrap();
    let map = bpf::map(&bench.redirect, "tx_ports").unwrap();
    bench.ns.enter(|| map.update(&key(7), &entry_with(bench.tx, rewrite.as_fd()), MapFlags::ANY)).unwrap();
    bench.send();
    wait_until(Duration::from_secs(2), || delivered() >= 2 * FRAMES as u64);
    assert_eq!(delivered(), 2 * FRAMES as u64);
    let (_, src) = bpf::rx_count(&counts, bench.rx).unwrap();
    let t = bench.tx;
    assert_eq!(src, Some([0x02, 0, 0, 0, (t >> 8) as u8, t as u8]));
}

#[test]
fn live_frames_redirect_into_veth_without_xdp_peer_silently_dropped() {
    require_privileged!();
    let bench = Bench::new();
    bench.ns.set_gro("dmcrx", false).unwrap();
    let before_rx = bench.ns.stats("dmcrx").unwrap();
    let before_tx = bench.ns.stats("dmctx").unwrap();
    bench.send(); // the program returns XDP_REDIRECT for every frame ...
    std::thread::sleep(Duration::from_millis(50));
    let after_rx = bench.ns.stats("dmcrx").unwrap();
    let after_tx = bench.ns.stats("dmctx").unwrap();
    // ... but nothing arrives and nothing is transmitted.
    assert_eq!(after_rx.rx_packets, before_rx.rx_packets, "{after_rx:?}");
    assert_eq!(after_tx.tx_packets, before_tx.tx_packets, "{after_tx:?}");
    assert_eq!(after_rx.rx_dropped, before_rx.rx_dropped, "{after_rx:?}");
    assert_eq!(after_tx.tx_dropped, before_tx.tx_dropped, "no counter moves: {after_tx:?}");

    // With GRO on the peer (and still no XDP program) the veth takes them.
    bench.ns.set_gro("dmcrx", true).unwrap();
    bench.send();
    let arrived = || bench.ns.stats("dmcrx").unwrap().rx_packets - before_rx.rx_packets;
    wait_until(Duration::from_secs(2), || arrived() >= FRAMES as u64);
    assert_eq!(arrived(), FRAMES as u64);
}

#[test]
fn redirect_into_another_namespace_delivers() {
    require_privileged!();
    let sender = Netns::new().unwrap();
    let receiver = Netns::new().unwrap();
    let (ingress, _) = sender.veth("dmcin", "dmcinp").unwrap();
    let (tx, rx) = receiver.veth("dmctx", "dmcrx").unwrap();
    let count = bpf::load(objects::COUNT).unwrap();
    let counts = bpf::map(&count, "counts").unwrap();
    let _link = receiver.enter(|| bpf::prog(&count, "count").unwrap().attach_xdp(rx.ifindex as i32)).unwrap();
    let obj = redirect();
    let map = bpf::map(&obj, "tx_ports").unwrap();
    // The entry is made in the target's namespace, the frames enter in the other.
    receiver.enter(|| map.update(&key(7), &entry(tx.ifindex), MapFlags::ANY)).unwrap();
    set_cfg(&obj, RedirectCfg { key: 7, ..Default::default() });
    let prog = bpf::prog(&obj, "redirect").unwrap();
    sender.enter(|| bpf::test_run_live(&prog, &udp_frame(), ingress.ifindex, FRAMES, 0)).unwrap();
    let delivered = || bpf::rx_count(&counts, rx.ifindex).unwrap().0;
    wait_until(Duration::from_secs(2), || delivered() >= FRAMES as u64);
    assert_eq!(delivered(), FRAMES as u64);
}

#[test]
fn broadcast_exclude_ingress_reaches_every_entry_but_the_ingress_device() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let count = bpf::load(objects::COUNT).unwrap();
    let counts = bpf::map(&count, "counts").unwrap();
    let counter = bpf::prog(&count, "count").unwrap();
    let obj = redirect();
    let map = bpf::map(&obj, "tx_ports").unwrap();
    let mut ports = Vec::new(); // (near end in the map, far end counting)
    let mut links = Vec::new();
    for i in 0..3 {
        let (near, far) = ns.veth(&format!("dmcp{i}"), &format!("dmcq{i}")).unwrap();
        ns.enter(|| {
            map.update(&key(i + 1), &entry(near.ifindex), MapFlags::ANY).unwrap();
            links.push(counter.attach_xdp(far.ifindex as i32).unwrap());
        });
        ports.push((near.ifindex, far.ifindex));
    }
    let prog = bpf::prog(&obj, "redirect").unwrap();
    let ingress = ports[0].0;
    let received = |i: usize| bpf::rx_count(&counts, ports[i].1).unwrap().0;
    let n = FRAMES as u64;

    set_cfg(
        &obj,
        RedirectCfg { key: 99, flags: BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS, ..Default::default() },
    );
    ns.enter(|| bpf::test_run_live(&prog, &udp_frame(), ingress, FRAMES, 0)).unwrap();
    wait_until(Duration::from_secs(2), || received(1) >= n && received(2) >= n);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!([received(0), received(1), received(2)], [0, n, n]);

    // Without EXCLUDE_INGRESS the ingress device gets its copy too.
    set_cfg(&obj, RedirectCfg { key: 99, flags: BPF_F_BROADCAST, ..Default::default() });
    ns.enter(|| bpf::test_run_live(&prog, &udp_frame(), ingress, FRAMES, 0)).unwrap();
    wait_until(Duration::from_secs(2), || received(0) >= n && received(1) >= 2 * n && received(2) >= 2 * n);
    assert_eq!([received(0), received(1), received(2)], [n, 2 * n, 2 * n]);
}
