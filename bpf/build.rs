//! Builds the eBPF objects into libbpf-rs skeletons and generates the Rust
//! side of the verdict-reason table from `c/lib/drop_reasons.h`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

#[cfg(feature = "skel")]
const OBJECTS: &[&str] = &["hostfwd", "empty", "pass"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    #[cfg(feature = "skel")]
    skeletons(&out);

    let table = fs::read_to_string("c/lib/drop_reasons.h").expect("reading c/lib/drop_reasons.h");
    fs::write(out.join("reasons.rs"), reasons_rs(&table)).expect("writing reasons.rs");
    println!("cargo:rerun-if-changed=c/lib/drop_reasons.h");
}

/// The objects and their skeletons (feature `skel`).
#[cfg(feature = "skel")]
fn skeletons(out: &std::path::Path) {
    use libbpf_cargo::SkeletonBuilder;
    // Debian keeps asm/ under the multiarch directory, which clang's BPF
    // target does not search on its own.
    let multiarch = format!("-I/usr/include/{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into()));

    for name in OBJECTS {
        let src = format!("c/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .obj(out.join(format!("{name}.bpf.o")))
            .clang_args([multiarch.as_str(), "-Wall", "-Werror"])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=c/lib");
}

/// `HF_REASON(1, VLAN_FILTERED, "vlan-filtered")` lines → a Rust enum with
/// `code`, `name` and `from_code`.
fn reasons_rs(table: &str) -> String {
    let mut rows = Vec::new();
    for line in table.lines() {
        let Some(rest) = line.trim().strip_prefix("HF_REASON(") else { continue };
        let Some(args) = rest.split(')').next() else { continue };
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            continue;
        }
        let code: u8 = parts[0].parse().unwrap_or_else(|_| panic!("bad reason code in {line}"));
        let variant: String = parts[1]
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()).unwrap_or_default()
            })
            .collect();
        rows.push((code, variant, parts[2].to_string()));
    }
    assert!(!rows.is_empty(), "no HF_REASON rows found in drop_reasons.h");

    let mut s = String::from(
        "/// Why a packet was dropped (or would have been, in audit mode).\n\
         /// Generated from `bpf/c/lib/drop_reasons.h`.\n\
         #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(u8)]\npub enum DropReason {\n",
    );
    for (code, v, _) in &rows {
        let _ = writeln!(s, "    {v} = {code},");
    }
    s.push_str("}\n\nimpl DropReason {\n    /// Every reason, in code order.\n    pub const ALL: &'static [DropReason] = &[");
    for (_, v, _) in &rows {
        let _ = write!(s, "DropReason::{v}, ");
    }
    s.push_str("];\n\n    /// The user-visible name (`vlan-filtered`, …).\n    pub fn name(self) -> &'static str {\n        match self {\n");
    for (_, v, n) in &rows {
        let _ = writeln!(s, "            DropReason::{v} => {n},");
    }
    s.push_str("        }\n    }\n\n    /// The code used in counters and events.\n    pub fn code(self) -> u8 {\n        self as u8\n    }\n\n    /// The reason for a code read from the kernel, if known.\n    pub fn from_code(code: u8) -> Option<Self> {\n        Self::ALL.iter().copied().find(|r| r.code() == code)\n    }\n\n    /// The reason with this user-visible name.\n    pub fn from_name(name: &str) -> Option<Self> {\n        Self::ALL.iter().copied().find(|r| r.name() == name)\n    }\n}\n");
    s
}
