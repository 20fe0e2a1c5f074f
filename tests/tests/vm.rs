//! The datapath on other kernels, in qemu guests (tests/vm/): Debian's 6.1
//! (no tcx: legacy tc) and 6.12 (tcx). Kernels are fetched once into a cache
//! outside the repository by tests/vm/fetch-kernels.sh.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn fetch_kernels() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let st = Command::new(repo().join("tests/vm/fetch-kernels.sh")).status().expect("running fetch-kernels.sh");
        assert!(st.success(), "tests/vm/fetch-kernels.sh failed");
    });
}

/// Boots `kernel` with hostfwd and `script` as payload; the guest prints
/// the verdict line that run-guest.sh checks.
fn guest(kernel: &str, script: &str) {
    fetch_kernels();
    let payload = tempfile::tempdir().expect("tempdir");
    std::fs::copy(common::hostfwd_bin(), payload.path().join("hostfwd")).expect("copy hostfwd");
    std::fs::copy(env!("CARGO_BIN_EXE_nettest"), payload.path().join("nettest")).expect("copy nettest");
    for entry in std::fs::read_dir(repo().join("tests/vm/guest")).expect("guest scripts").flatten() {
        std::fs::copy(entry.path(), payload.path().join(entry.file_name())).expect("copy guest script");
    }
    let out = Command::new(repo().join("tests/vm/run-guest.sh"))
        .args(["--kernel", kernel, "--timeout", "240", "--quiet", "--payload"])
        .arg(payload.path())
        .args(["--script", script])
        .output()
        .expect("running run-guest.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "guest {kernel} {script} failed:\n{text}");
}

#[test]
fn loads_and_attaches_on_6_1_legacy_tc() {
    guest("6.1", "probe.sh");
}

#[test]
fn loads_and_attaches_on_6_12_tcx() {
    guest("6.12", "probe.sh");
}

// Bonds and VLANs (this kernel has neither): the reference report's
// topology with hostfwd's daemon, real traffic from a "switch" namespace.

#[test]
fn bond_vlan_scenarios_on_6_1() {
    guest("6.1", "bond-vlan.sh");
}

#[test]
fn bond_vlan_scenarios_on_6_12() {
    guest("6.12", "bond-vlan.sh");
}

#[test]
fn auto_mode_on_6_1() {
    guest("6.1", "auto.sh");
}

#[test]
fn auto_mode_on_6_12() {
    guest("6.12", "auto.sh");
}

#[test]
fn vlan_storm_on_6_1() {
    guest("6.1", "storm.sh");
}

#[test]
fn vlan_storm_on_6_12() {
    guest("6.12", "storm.sh");
}
