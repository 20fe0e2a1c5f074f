//! The fuzz target's invariants (`daemon/fuzz/src/lib.rs`, included here
//! as is) on its seed corpus, on stable Rust: the policy fixtures of
//! `daemon/tests/policies/` and `tests/policies/cilium-compat/`, and the seeds of `daemon/fuzz/seeds/` (which
//! also keep every input the fuzzer found a bug with). Each file is checked
//! whole and cut after every line, so that errors at the end of truncated
//! input are covered too. No root needed.

#[path = "../../daemon/fuzz/src/lib.rs"]
mod fuzz_check;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut v = files(&root.join("daemon/tests/policies"));
    v.extend(files(&root.join("daemon/fuzz/seeds/policy_parse")));
    // The Cilium compatibility corpus (tests/tests/policy_compat.rs).
    v.extend(files(&root.join("tests/policies/cilium-compat")).into_iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")));
    v
}

#[test]
fn seed_corpus_keeps_the_fuzz_invariants() {
    let corpus = corpus();
    assert!(corpus.len() >= 20, "seed corpus missing? {corpus:?}");
    for path in corpus {
        let data = std::fs::read(&path).expect("read seed");
        let run = |bytes: &[u8], what: &str| {
            if std::panic::catch_unwind(|| fuzz_check::check_policy_input(bytes)).is_err() {
                panic!(
                    "{} ({what}) breaks an invariant (message above)",
                    path.display()
                );
            }
        };
        run(&data, "whole");
        for (i, _) in data.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            run(&data[..i], &format!("cut before byte {i}"));
        }
    }
}

#[test]
fn line_lengths_follow_yaml_line_breaks() {
    assert_eq!(fuzz_check::line_lengths(""), [0]);
    assert_eq!(fuzz_check::line_lengths("ab\ncd"), [2, 2]);
    assert_eq!(fuzz_check::line_lengths("ab\r\ncd\n"), [2, 2, 0]);
    assert_eq!(fuzz_check::line_lengths("a\rb\r\r\n"), [1, 1, 0, 0]);
    assert_eq!(fuzz_check::line_lengths("é\n"), [1, 0]);
}
