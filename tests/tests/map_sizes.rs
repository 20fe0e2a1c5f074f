//! Map sizes from the configuration: the loader applies them, reports what
//! the maps cost the kernel, adopts pinned maps of the same size and
//! replaces those of another (as root).

mod common;

use common::{ensure_bpffs, unique_root};
use hostfwd::config::{Config, DatapathConfig as _};
use hostfwd::datapath::{Datapath, MapSize};

struct Root(std::path::PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.0);
    }
}

fn config(root: &Root, overrides: &[(&str, &str)]) -> hostfwd::datapath::Config {
    let env = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let cfg = Config::load_with_env(None, env).expect("configuration");
    let mut dp = cfg.datapath().expect("datapath configuration");
    dp.bpffs_root = root.0.clone();
    dp
}

fn max_entries(dp: &Datapath, map: &str) -> u32 {
    dp.map_memory().expect("map memory").into_iter().find(|m| m.map == map).unwrap_or_else(|| panic!("no map {map}")).max_entries
}

#[test]
fn default_sizes_apply_and_fit_the_memory_budget() {
    ensure_bpffs();
    let root = Root(unique_root("sizes"));
    let cfg = config(&root, &[]);
    let dp = Datapath::load(&cfg).expect("load");
    let mem = dp.map_memory().expect("map memory");
    for MapSize { map, entries, .. } in &cfg.map_sizes {
        assert_eq!(max_entries(&dp, map), *entries, "{map}");
    }
    // Every sized map has memory from the start (an empty LPM trie, which
    // allocates per entry, may report none).
    let sized = |m: &&hostfwd::datapath::MapMemory| m.map != "hf_local_nets" && cfg.map_sizes.iter().any(|s| s.map == m.map);
    assert!(mem.iter().filter(sized).all(|m| m.memlock > 0), "{mem:?}");
    let total: u64 = mem.iter().map(|m| m.memlock).sum();
    // The budget for the default configuration (the maps of the
    // policy grow as policies are written; this is the loaded datapath).
    assert!(total <= 64 << 20, "default maps take {} MiB: {mem:?}", total >> 20);
    let snap = hostfwd::inspect::snapshot(&dp).expect("inspect");
    assert_eq!(snap.memory.total_bytes, total);
    assert!(snap.lines().contains(&format!("memory {total}\n")));
}

#[test]
fn pinned_maps_of_another_size_are_replaced() {
    ensure_bpffs();
    let root = Root(unique_root("resize"));
    let small = config(&root, &[("HOSTFWD_MAPS__HOST_ADDRS", "1024")]);
    let dp = Datapath::load(&small).expect("load");
    dp.add_host_addr("192.0.2.1".parse().unwrap()).expect("add host address");
    drop(dp);

    // Same sizes: the pinned map is adopted with its entries.
    let dp = Datapath::load(&small).expect("load again");
    assert_eq!(dp.host_addrs(), vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]);
    drop(dp);

    // Another size: a new map of that size (the old entries are gone; the
    // reconciler writes the addresses again).
    let large = config(&root, &[("HOSTFWD_MAPS__HOST_ADDRS", "2048")]);
    let dp = Datapath::load(&large).expect("load resized");
    assert_eq!(max_entries(&dp, "hf_host_addrs"), 2048);
    assert!(dp.host_addrs().is_empty());
    let pinned = libbpf_rs::MapHandle::from_pinned_path(root.0.join("maps/hf_host_addrs")).expect("pinned map");
    assert_eq!(libbpf_rs::MapCore::max_entries(&pinned), 2048, "the new map is pinned");
}

#[test]
fn a_size_for_a_map_the_object_lacks_is_an_error() {
    ensure_bpffs();
    let root = Root(unique_root("nomap"));
    let mut cfg = config(&root, &[]);
    cfg.map_sizes.push(MapSize { map: "hf_nonexistent", key: "maps.nonexistent", entries: 1024 });
    let e = Datapath::load(&cfg).err().expect("load must fail").to_string();
    assert!(e.contains("hf_nonexistent") && e.contains("maps.nonexistent"), "{e}");
}

/// A reader (`hostfwd inspect`) with another configuration takes the
/// daemon's pinned maps as they are: it never replaces them.
#[test]
fn a_reader_adopts_pinned_maps_of_any_size() {
    ensure_bpffs();
    let root = Root(unique_root("reader"));
    let daemon = Datapath::load(&config(&root, &[("HOSTFWD_MAPS__HOST_ADDRS", "1024")])).expect("load");
    daemon.add_host_addr("192.0.2.1".parse().unwrap()).expect("add host address");
    let reader = Datapath::load_maps(&config(&root, &[])).expect("open the maps");
    assert_eq!(max_entries(&reader, "hf_host_addrs"), 1024);
    assert_eq!(reader.host_addrs(), vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]);
    drop(reader);
    // The daemon's map is still the pinned one.
    daemon.add_host_addr("192.0.2.2".parse().unwrap()).expect("add host address");
    let again = Datapath::load_maps(&config(&root, &[])).expect("open the maps");
    assert_eq!(again.host_addrs().len(), 2);
}

/// The object's own sizes are the default configuration's: a datapath
/// loaded without sizes (tests, tools) and the daemon agree on every pin.
#[test]
fn the_object_defaults_are_the_configuration_defaults() {
    ensure_bpffs();
    let root = Root(unique_root("objdef"));
    let cfg = config(&root, &[]);
    let bare = Datapath::load(&hostfwd::datapath::Config { bpffs_root: root.0.clone(), ..Default::default() }).expect("load");
    for MapSize { map, entries, key } in &cfg.map_sizes {
        assert_eq!(max_entries(&bare, map), *entries, "{map}: bpf/c/lib/maps.h and {key} in daemon/hostfwd.toml differ");
    }
}
