//! libFuzzer target: arbitrary bytes through the policy parser, and what
//! parses through entity resolution and the compiler. The invariants are in
//! `src/lib.rs` ([`hostfwd_fuzz::check_policy_input`]), shared with the
//! stable corpus test `tests/tests/policy_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostfwd_fuzz::check_policy_input(data);
});
