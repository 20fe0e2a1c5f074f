//! Kernel against model: random frames (tag stacks, IPv4 options, IPv6
//! extension chains, fragments in any order, truncations, odd flags) run
//! through the eBPF program with BPF_PROG_TEST_RUN and through the reference
//! model (`hostfwd_tests::fuzz::model`); verdict, reason, rule id and audit
//! flag must agree. The configuration (policy, enforcement, audit, VLANs,
//! host addresses, failsafe ports) is drawn again for every batch.
//!
//! `HOSTFWD_FUZZ_FRAMES` sets the number of frames (default 20,000),
//! `HOSTFWD_FUZZ_SEED` replays a run; a failure prints both, with every
//! disagreeing frame in hex.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::*;
use hostfwd::datapath::{AttachModeChoice, Direction, EventReader, GlobalSettings};
use hostfwd_bpf::layout as l;
use hostfwd_bpf::DropReason;
use hostfwd_tests::fuzz::model::{judge, test_run_refuses, Config, Outcome, State};
use hostfwd_tests::fuzz::{gen, hex, Rng};

const IF: u32 = 1;
const DEFAULT_FRAMES: u64 = 20_000;
/// Cases per configuration.
const BATCH: usize = 250;
/// Disagreements printed in full (all are counted); `HOSTFWD_FUZZ_SHOW`
/// for more.
const SHOWN: u64 = 12;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// Puts a batch's configuration into the maps, replacing the previous one.
fn configure(dp: &mut TestDp, cfg: &Config) {
    let flags = if cfg.enforce_ingress {
        l::L_ENFORCE_INGRESS
    } else {
        0
    } | if cfg.enforce_egress {
        l::L_ENFORCE_EGRESS
    } else {
        0
    } | if cfg.audit_link { l::L_AUDIT } else { 0 }
        | if cfg.vlan_allow_all {
            l::L_VLAN_ALLOW_ALL
        } else {
            0
        };
    dp.set_link(IF, flags).expect("set link");
    dp.set_global(GlobalSettings {
        audit: cfg.audit_global,
        drop_non_ip: cfg.drop_non_ip,
        // Every drop reported: the event carries the rule id.
        events_per_sec: 1_000_000,
        events_burst: 1_000_000,
    })
    .expect("set global");
    for (ifindex, vid) in dp.vlans() {
        dp.disallow_vlan(ifindex, vid).expect("disallow vlan");
    }
    for &vid in &cfg.vlans {
        dp.allow_vlan(IF, vid).expect("allow vlan");
    }
    for a in dp.host_addrs() {
        dp.remove_host_addr(a).expect("remove host addr");
    }
    for &a in &cfg.host_addrs {
        dp.add_host_addr(a).expect("add host addr");
    }
    dp.set_failsafe(&cfg.failsafe).expect("set failsafe");
    cfg.rules
        .validate()
        .unwrap_or_else(|e| panic!("generated rules: {e}"));
    dp.apply(cfg.rules.rules.clone());
}

/// What the kernel did with one frame: its verdict and the event of its
/// drop (reason, rule id, audit), if any.
fn kernel(
    dp: &TestDp,
    reader: &EventReader,
    dir: Direction,
    frame: &[u8],
) -> Result<Outcome, String> {
    let run = dp
        .test_run(dir, frame, 1)
        .map_err(|e| format!("test_run: {e}"))?;
    let events = reader
        .poll(Duration::ZERO)
        .map_err(|e| format!("reading events: {e}"))?;
    let dropped = match run.retval {
        PASS => false,
        DROP => true,
        other => return Err(format!("return code {other}")),
    };
    match events.as_slice() {
        [] => Ok(Outcome {
            dropped,
            reason: None,
            rule_id: 0,
            audit: false,
        }),
        [e] => Ok(Outcome {
            dropped,
            reason: Some(
                DropReason::from_name(&e.reason)
                    .ok_or_else(|| format!("unknown reason {}", e.reason))?,
            ),
            rule_id: e.rule_id,
            audit: e.audit,
        }),
        many => Err(format!("{} events for one frame: {many:?}", many.len())),
    }
}

#[derive(Default)]
struct Tally {
    frames: u64,
    refused: u64,
    /// Model outcomes by reason, passes by the step that passed them.
    by_reason: BTreeMap<String, u64>,
    /// Disagreements by (expected, got).
    mismatches: BTreeMap<(String, String), u64>,
    report: String,
    shown: u64,
    /// The batch whose configuration the report shows last.
    config_shown: Option<usize>,
}

#[test]
fn kernel_agrees_with_the_model_on_random_frames() {
    let frames = env_u64("HOSTFWD_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let seed = env_u64("HOSTFWD_FUZZ_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
    });
    eprintln!("datapath fuzz: HOSTFWD_FUZZ_SEED={seed:#x} HOSTFWD_FUZZ_FRAMES={frames}");
    let show = env_u64("HOSTFWD_FUZZ_SHOW").unwrap_or(SHOWN);
    let mut dp = TestDp::load("fuzz", AttachModeChoice::Auto);
    let reader = EventReader::open(dp.paths()).expect("event reader");
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    let start = Instant::now();
    let mut batch = 0;
    while t.frames < frames {
        let cfg = gen::config(&mut rng);
        configure(&mut dp, &cfg);
        dp.reset_counters().expect("reset counters");
        let mut expected: BTreeMap<(u8, bool), u64> = BTreeMap::new();
        // Every case starts from empty conntrack and fragment tables. A
        // flush walks every bucket of the maps (most of a case's time), so
        // it is done only after cases that may have left entries.
        dp.flush_flows().expect("flush flows");
        for case_no in 0..BATCH {
            let case = gen::case(&mut rng, &cfg);
            let mut state = State::default();
            let mut agreed = true;
            for (i, frame) in case.frames.iter().enumerate() {
                t.frames += 1;
                let refused = test_run_refuses(frame);
                let want = (!refused).then(|| judge(frame, case.dir, &cfg, &mut state));
                let got = kernel(&dp, &reader, case.dir, frame);
                if let Some(w) = want {
                    let name = match w.reason {
                        Some(r) => r.name().to_string(),
                        None => format!("pass ({})", state.passed_by),
                    };
                    *t.by_reason.entry(name).or_default() += 1;
                    if let Some(r) = w.reason {
                        *expected.entry((r.code(), w.audit)).or_default() += 1;
                    }
                } else {
                    t.refused += 1;
                }
                let agree = match (&want, &got) {
                    (None, Err(_)) => true,
                    (Some(w), Ok(g)) => w == g,
                    _ => false,
                };
                if !agree {
                    agreed = false;
                    let w = want.map_or("refused by test_run".to_string(), |w| w.to_string());
                    let g = got.as_ref().map_or_else(|e| e.clone(), |g| g.to_string());
                    *t.mismatches.entry((w.clone(), g.clone())).or_default() += 1;
                    if t.shown < show {
                        t.shown += 1;
                        if t.config_shown != Some(batch) {
                            t.config_shown = Some(batch);
                            let _ = writeln!(t.report, "config of batch {batch}: {cfg:?}");
                        }
                        let _ = writeln!(
                            t.report,
                            "batch {batch} case {case_no} frame {i}/{} {:?}: expected {w}, got {g}\n  frame {}",
                            case.frames.len(),
                            case.dir,
                            hex(frame)
                        );
                    }
                }
            }
            // After a disagreement the kernel may have kept state the model
            // did not expect: flush, so that it stays one disagreement.
            if state.touched || !agreed {
                dp.flush_flows().expect("flush flows");
            }
        }
        // The counters are exact: per (reason, audit), what the model
        // expects over the whole batch.
        let counted: BTreeMap<(u8, bool), u64> = dp
            .counters()
            .expect("counters")
            .into_iter()
            .filter(|c| c.ifindex == IF)
            .fold(BTreeMap::new(), |mut m, c| {
                *m.entry((c.reason_code, c.audit)).or_default() += c.packets;
                m
            });
        if t.mismatches.is_empty() {
            assert_eq!(
                counted, expected,
                "drop counters of batch {batch} (HOSTFWD_FUZZ_SEED={seed:#x}), config {cfg:?}"
            );
        }
        batch += 1;
    }
    let took = start.elapsed();
    eprintln!(
        "datapath fuzz: {} frames ({} refused by test_run) in {batch} configurations, {:.1} s; model verdicts {:?}",
        t.frames,
        t.refused,
        took.as_secs_f64(),
        t.by_reason
    );
    if !t.mismatches.is_empty() {
        let total: u64 = t.mismatches.values().sum();
        let mut kinds = String::new();
        for ((w, g), n) in &t.mismatches {
            let _ = writeln!(kinds, "  {n:>6} x expected {w}, got {g}");
        }
        panic!(
            "kernel and model disagree on {total} of {} frames (replay: HOSTFWD_FUZZ_SEED={seed:#x} HOSTFWD_FUZZ_FRAMES={frames})\n{kinds}first ones:\n{}",
            t.frames, t.report
        );
    }
}
