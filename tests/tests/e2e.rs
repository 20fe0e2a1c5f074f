//! End to end: the `.deb` in a full Debian guest with systemd, dbus,
//! polkitd and NetworkManager, booted twice under qemu with the 6.12 cloud
//! kernel (tests/vm/debian/). The guest script prints one `E2E PASS name` /
//! `E2E FAIL name: why` line per check and `E2E DONE` at the end; this test
//! requires every name in [`EXPECTED`] to have passed.
//!
//! The package is `make deb`'s `target/debian/hostfwd.deb`, built here
//! (incrementally) unless `HOSTFWD_E2E_DEB` names a package to use instead.
//! The Debian image is cached outside the repository (see
//! tests/vm/debian/build-rootfs.sh); each run boots a fresh copy of it.
//! The guest consoles of the last run are copied to
//! `target/tmp/e2e/boot{1,2}.log` (with `systemd-analyze security hostfwd`
//! and timings). A failure prints what failed and the consoles' tails, and
//! keeps the work directory with the disk image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Every check of tests/vm/debian/guest.sh, in the order it runs them.
const EXPECTED: &[&str] = &[
    // boot 1
    "deb-install",
    "unit-not-started-by-install",
    "enable-now",
    "notify-ready",
    "busctl-introspect",
    "hostfwdctl-status",
    "audit-default-on",
    "hardening",
    "nm-bond-vlan",
    "attach-bond-vlan",
    "vlan-traffic",
    "nm-recreate-reattach",
    "nm-undisturbed",
    "reload",
    "polkit-nonroot-denied",
    "polkit-group-allowed",
    "persist-policy",
    "persist-audit",
    "watchdog-quiet",
    // boot 2 (the same disk after a reboot)
    "boot2-enabled-active",
    "boot2-nm-up",
    "boot2-attached",
    "boot2-policy",
    "boot2-audit",
    "boot2-enforce",
    "deb-purge",
];

/// Console lines shown on failure, per boot.
const LOG_TAIL: usize = 200;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The package under test: `$HOSTFWD_E2E_DEB`, or `make deb`'s output.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("HOSTFWD_E2E_DEB") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "HOSTFWD_E2E_DEB={} is not a file", p.display());
        return p;
    }
    let t = Instant::now();
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .arg("--no-print-directory")
        .arg("deb")
        .output()
        .expect("running `make deb` (is make installed?)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`make deb` failed ({}):\n{text}", out.status);
    let deb = repo().join("target/debian/hostfwd.deb");
    assert!(deb.is_file(), "`make deb` succeeded but made no {}:\n{text}", deb.display());
    eprintln!("e2e: make deb: {:.0} s", t.elapsed().as_secs_f64());
    deb
}

/// A console line without CR, terminal escapes and whatever shared the line
/// before an `E2E ` marker.
fn clean(line: &str) -> String {
    let mut s = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                // CSI: ESC [ params final-byte; or a two-character escape.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c => s.push(c),
        }
    }
    s
}

#[derive(Default, Debug)]
struct Results {
    passed: Vec<String>,
    /// name -> why (the first failure of that name)
    failed: BTreeMap<String, String>,
    done: bool,
    boots: usize,
}

fn parse(console: &str, r: &mut Results) {
    for line in console.lines().map(clean) {
        let Some(at) = line.find("E2E ") else { continue };
        let rest = &line[at + 4..];
        if let Some(p) = rest.strip_prefix("PASS ") {
            r.passed.push(p.split_whitespace().next().unwrap_or_default().to_string());
        } else if let Some(f) = rest.strip_prefix("FAIL ") {
            let (name, why) = f.split_once(": ").unwrap_or((f, ""));
            r.failed.entry(name.trim().to_string()).or_insert_with(|| why.trim().to_string());
        } else if rest.starts_with("DONE") {
            r.done = true;
        } else if rest.starts_with("BOOT ") {
            r.boots += 1;
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<String> = text.lines().map(clean).collect();
    let from = lines.len().saturating_sub(n);
    let mut out = String::new();
    if from > 0 {
        out.push_str(&format!("[... {from} earlier lines]\n"));
    }
    for l in &lines[from..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[test]
fn deb_in_debian_guest_with_systemd_polkit_and_networkmanager() {
    let t0 = Instant::now();
    let deb = deb();
    let work = tempfile::Builder::new().prefix("hostfwd-e2e.").tempdir().expect("tempdir");
    let out = Command::new(repo().join("tests/vm/debian/run-e2e.sh"))
        .arg("--deb")
        .arg(&deb)
        .arg("--workdir")
        .arg(work.path())
        .arg("--quiet")
        .output()
        .expect("running tests/vm/debian/run-e2e.sh");
    let harness = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let mut results = Results::default();
    let mut consoles = Vec::new();
    let last = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    let _ = std::fs::remove_dir_all(&last);
    let _ = std::fs::create_dir_all(&last);
    for n in 1..=2 {
        let path = work.path().join(format!("boot{n}.log"));
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let _ = std::fs::write(last.join(format!("boot{n}.log")), text.lines().map(|l| clean(l) + "\n").collect::<String>());
            parse(&text, &mut results);
            consoles.push((n, text));
        }
    }

    let mut problems = Vec::new();
    match out.status.code() {
        Some(0) | Some(1) => {}
        Some(2) => problems.push("host problem: the kernel, the Debian image or qemu could not be prepared (see the harness output)".to_string()),
        Some(3) => problems.push("the guest kernel panicked (Oops/BUG/panic on the console)".to_string()),
        Some(4) => problems.push(format!("timeout: boot {} ran out of time", consoles.len().max(1))),
        other => problems.push(format!("run-e2e.sh ended with {other:?}")),
    }
    for name in EXPECTED {
        if let Some(why) = results.failed.get(*name) {
            problems.push(format!("FAIL {name}: {why}"));
        } else if !results.passed.iter().any(|p| p == name) {
            problems.push(format!("MISSING {name}: no result line"));
        }
    }
    for (name, why) in &results.failed {
        if !EXPECTED.contains(&name.as_str()) {
            problems.push(format!("FAIL {name}: {why}"));
        }
    }
    for name in &results.passed {
        if !EXPECTED.contains(&name.as_str()) {
            problems.push(format!("unexpected result line 'E2E PASS {name}': add it to EXPECTED in tests/tests/e2e.rs"));
        }
    }
    if !results.done {
        problems.push("the guest never printed 'E2E DONE'".to_string());
    }

    if problems.is_empty() {
        for (_, text) in &consoles {
            for l in text.lines().map(clean).filter(|l| l.starts_with("E2E INFO ")) {
                eprintln!("e2e: {}", &l[4..]);
            }
        }
        eprintln!(
            "e2e: {} checks passed in {} boots, {:.0} s in all (consoles: {})",
            results.passed.len(),
            results.boots,
            t0.elapsed().as_secs_f64(),
            last.display()
        );
        return;
    }
    // Keep the logs and the image for a look.
    let kept = work.keep();
    let mut msg = format!(
        "end-to-end test failed ({} of {} checks passed, {:.0} s):\n  {}\n\n--- harness (tests/vm/debian/run-e2e.sh):\n{}\n",
        EXPECTED.iter().filter(|n| results.passed.iter().any(|p| p == *n)).count(),
        EXPECTED.len(),
        t0.elapsed().as_secs_f64(),
        problems.join("\n  "),
        harness.trim_end()
    );
    for (n, text) in &consoles {
        msg.push_str(&format!("\n--- guest console, boot {n} (last {LOG_TAIL} lines):\n{}", tail(text, LOG_TAIL)));
    }
    msg.push_str(&format!("\nlogs and disk image kept in {}\n", kept.display()));
    panic!("{msg}");
}

#[cfg(test)]
mod parsing {
    use super::*;

    #[test]
    fn result_lines() {
        let console = "SeaBIOS\r\nBooting from ROM..\x1bc\x1b[?7l\x1b[2JE2E BOOT uptime=8s\r\n\
                       E2E PASS deb-install (812 ms)\r\n[   3.1] x E2E FAIL reload: systemctl reload failed (2 ms)\n\
                       E2E FAIL reload: again\nE2E DONE\n";
        let mut r = Results::default();
        parse(console, &mut r);
        assert_eq!(r.passed, vec!["deb-install"]);
        assert_eq!(r.failed.get("reload").map(String::as_str), Some("systemctl reload failed (2 ms)"));
        assert!(r.done);
        assert_eq!(r.boots, 1);
    }
}
