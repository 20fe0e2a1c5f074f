//! `Datapath::apply_policy` empties the generation it reuses before writing
//! it: with the keys it wrote there two swaps before (no read-back), or,
//! when it does not know them (maps adopted from an earlier process), by
//! reading the maps back. Either way the generation then holds exactly the
//! new policy. Root and bpffs, like the datapath tests.

mod common;

use common::{allow_tcp, TestDp};
use hostfwd::datapath::{self, AttachModeChoice, Datapath, Direction};
use hostfwd::policy::compiler::compile;
use hostfwd::policy::model::{Rule, RuleSet};

/// `n` /24s with one TCP port each.
fn rules(n: u32, port: u16) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            allow_tcp(
                i + 1,
                Direction::Ingress,
                &[&format!("10.{}.{}.0/24", i / 256, i % 256)],
                port,
            )
        })
        .collect()
}

/// (identity, rule) entries a policy has in a generation of its own.
fn entries_alone(rules: Vec<Rule>) -> (usize, usize) {
    let mut dp = TestDp::load("clear-ref", AttachModeChoice::Auto);
    dp.apply(rules);
    dp.policy_entries(dp.policy_generation().expect("generation"))
}

#[test]
fn a_reused_generation_holds_exactly_the_new_policy() {
    let small = entries_alone(rules(50, 443));
    let big = entries_alone(rules(400, 80));
    assert!(big.0 > small.0 && big.1 > small.1, "{big:?} {small:?}");

    let mut dp = TestDp::load("clear", AttachModeChoice::Auto);
    dp.apply(rules(400, 80));
    let g1 = dp.policy_generation().expect("generation");
    dp.apply(rules(10, 22));
    let g0 = dp.policy_generation().expect("generation");
    assert_ne!(g0, g1);
    // Back to g1: the 400-rule policy written there is deleted by its keys.
    dp.apply(rules(50, 443));
    assert_eq!(dp.policy_generation().expect("generation"), g1);
    assert_eq!(dp.policy_entries(g1), small);

    // A new process adopts the maps (the daemon restarted): it knows no
    // keys, reads g0 back and replaces the 10-rule policy there.
    let mut adopted = Datapath::load(&datapath::Config {
        bpffs_root: dp.root.clone(),
        attach_mode: AttachModeChoice::Auto,
        ..Default::default()
    })
    .expect("adopt the pinned maps");
    let image = compile(&RuleSet::new(rules(400, 80))).expect("compile");
    adopted.apply_policy(&image).expect("apply");
    assert_eq!(adopted.policy_generation().expect("generation"), g0);
    assert_eq!(adopted.policy_entries(g0), big);
    assert_eq!(
        adopted.policy_entries(g1),
        small,
        "the previous generation is left for packets in flight"
    );
    // And its next apply deletes by the keys it wrote itself.
    let image = compile(&RuleSet::new(rules(50, 443))).expect("compile");
    adopted.apply_policy(&image).expect("apply");
    let image = compile(&RuleSet::new(rules(50, 443))).expect("compile");
    adopted.apply_policy(&image).expect("apply");
    assert_eq!(adopted.policy_generation().expect("generation"), g0);
    assert_eq!(adopted.policy_entries(g0), small);
}
