//! hostfwd's eBPF datapath as seen from Rust: the libbpf-rs skeletons built
//! from `c/`, `#[repr(C)]` mirrors of every map key and value
//! ([`layout`]), and the verdict-reason table generated from
//! `c/lib/drop_reasons.h` ([`DropReason`]). The skeletons and objects need
//! the default feature `skel` (libbpf); the layouts and reasons do not.

pub mod layout;

include!(concat!(env!("OUT_DIR"), "/reasons.rs"));

/// The datapath skeleton (`c/hostfwd.bpf.c`).
#[cfg(feature = "skel")]
pub mod skel {
    #![allow(clippy::all, missing_docs, non_camel_case_types, unused)]
    include!(concat!(env!("OUT_DIR"), "/hostfwd.skel.rs"));
}

/// The benchmark baseline: an empty tc program (`c/empty.bpf.c`).
#[cfg(feature = "skel")]
pub mod empty_skel {
    #![allow(clippy::all, missing_docs, non_camel_case_types, unused)]
    include!(concat!(env!("OUT_DIR"), "/empty.skel.rs"));
}

/// Someone else's program that ends the chain (`c/pass.bpf.c`: returns
/// TC_ACT_OK on both hooks), for the hook-order tests.
#[cfg(feature = "skel")]
pub mod pass_skel {
    #![allow(clippy::all, missing_docs, non_camel_case_types, unused)]
    include!(concat!(env!("OUT_DIR"), "/pass.skel.rs"));
}

/// The pass program's object file (for `tc filter add … bpf obj`).
#[cfg(feature = "skel")]
pub const PASS_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pass.bpf.o"));

/// The benchmark baseline's object file (also a handy "someone else's
/// program" in tests).
#[cfg(feature = "skel")]
pub const EMPTY_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/empty.bpf.o"));

/// The datapath object file, for BTF inspection.
#[cfg(feature = "skel")]
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostfwd.bpf.o"));
