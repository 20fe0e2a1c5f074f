//! Kernel against model: random frames ([`gen`]) judged by the reference
//! model ([`model`]) and by the eBPF program through `BPF_PROG_TEST_RUN`
//! (`tests/tests/datapath_fuzz.rs`), which must agree on verdict, reason
//! and rule id.

pub mod gen;
pub mod model;

// The project's seeded generator (the policy crate's, feature `testing`).
pub use hostfwd_policy::test_rng::Rng;

/// Lowercase hex of a frame, for replaying a failure by hand.
pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}
