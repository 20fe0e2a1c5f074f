//! The shape of the source tree, as `docs/architecture.md` promises it:
//! files of a readable size, no import cycles between modules, every
//! kernel call behind the one seam (`daemon/src/kernel/`), and docs that
//! link only to files in the repository. No root needed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// "About 1,000 lines", tests included.
const MAX_LINES: usize = 1_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Every file under `dir` ending in `ext`, skipping build output and VCS.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                    stack.push(p);
                }
            } else if name.ends_with(ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn no_rust_source_file_is_over_a_thousand_lines() {
    let long: Vec<String> = files(&root(), ".rs")
        .into_iter()
        .filter_map(|p| {
            let n = fs::read_to_string(&p).ok()?.lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", rel(&p)))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern (at most {MAX_LINES} lines each):\n{}", long.join("\n"));
}

/// The code of a file without its comments and its `#[cfg(test)]` tail:
/// what the crate runs.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn only_the_kernel_seam_talks_to_the_kernel() {
    let src = root().join("daemon/src");
    let seam = src.join("kernel");
    // What reaches the kernel's BPF or networking: libbpf, the bpf(2)
    // syscall, netlink sockets and bpffs paths.
    let markers = ["libbpf_rs", "libbpf_sys", "SYS_bpf", "rtnetlink", "netlink_sys", "netlink_packet", "\"/sys/fs/bpf"];
    let mut found = Vec::new();
    for p in files(&src, ".rs").into_iter().filter(|p| !p.starts_with(&seam)) {
        let text = fs::read_to_string(&p).expect("readable source");
        for m in markers {
            if code(&text).contains(m) {
                found.push(format!("{}: {m}", rel(&p)));
            }
        }
    }
    assert!(found.is_empty(), "kernel access outside daemon/src/kernel/:\n{}", found.join("\n"));
    assert!(seam.is_dir(), "daemon/src/kernel/ is the seam and must exist");
}

/// The module path of a source file of a crate rooted at `src`
/// (`api/objects.rs` → `api::objects`, `api/mod.rs` → `api`).
fn module_of(src: &Path, p: &Path) -> Vec<String> {
    let r = p.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = r.iter().map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// Module-level import edges of one crate: `crate::a::b` and `super::x`
/// paths in code, resolved to the longest module that exists.
fn import_graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let paths = files(src, ".rs");
    let modules: BTreeSet<Vec<String>> = paths.iter().map(|p| module_of(src, p)).collect();
    let resolve = |path: Vec<String>| -> Option<Vec<String>> {
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| modules.contains(m))
    };
    let mut graph = BTreeMap::new();
    for p in &paths {
        let me = module_of(src, p);
        let text = code(&fs::read_to_string(p).expect("readable source"));
        let mut edges = BTreeSet::new();
        for (prefix, base) in [("crate::", Vec::new()), ("super::", me[..me.len().saturating_sub(1)].to_vec())] {
            for (i, _) in text.match_indices(prefix) {
                let rest: String = text[i + prefix.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                let mut path = base.clone();
                path.extend(rest.split("::").filter(|s| !s.is_empty() && s.chars().next().is_some_and(char::is_lowercase)).map(str::to_string));
                if let Some(m) = resolve(path) {
                    // A module and its own parent or children are one unit.
                    if !m.starts_with(&me) && !me.starts_with(&m) {
                        edges.insert(m);
                    }
                }
            }
        }
        graph.insert(me, edges);
    }
    graph
}

/// Every cycle's modules, found by depth-first search.
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        out: &mut Vec<String>,
    ) {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            out.push(stack[pos..].iter().chain([n]).map(|m| m.join("::")).collect::<Vec<_>>().join(" → "));
            return;
        }
        if !done.insert(n.clone()) {
            return;
        }
        stack.push(n.clone());
        for m in g.get(n).into_iter().flatten() {
            visit(m, g, stack, done, out);
        }
        stack.pop();
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, graph, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    let g = BTreeMap::from([(m("a"), BTreeSet::from([m("b")])), (m("b"), BTreeSet::from([m("c")])), (m("c"), BTreeSet::from([m("a")]))]);
    assert_eq!(cycles(&g), vec!["a → b → c → a"]);
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut found = Vec::new();
    for krate in ["daemon/src", "daemon/policy/src", "daemon/config/src", "dbus/src", "dbus/hostfwdctl/src", "bpf/src"] {
        let src = root().join(krate);
        if !src.is_dir() {
            continue;
        }
        found.extend(cycles(&import_graph(&src)).into_iter().map(|c| format!("{krate}: {c}")));
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn every_doc_link_resolves_inside_the_repository() {
    let mut bad = Vec::new();
    let docs = files(&root(), ".md").into_iter().chain(files(&root(), ".sh"));
    for p in docs {
        let text = fs::read_to_string(&p).expect("readable doc");
        for (n, line) in text.lines().enumerate() {
            // Design notes outside the repository must not be pointed to.
            if ["shared/notes", "shared/design", "shared/reference"].iter().any(|s| line.contains(s)) {
                bad.push(format!("{}:{}: points outside the repository: {line}", rel(&p), n + 1));
            }
            for (i, _) in line.match_indices("](") {
                let target: String = line[i + 2..].chars().take_while(|c| *c != ')').collect();
                let file = target.split('#').next().unwrap_or("");
                if file.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let dest = p.parent().expect("a file's directory").join(file);
                if !dest.exists() {
                    bad.push(format!("{}:{}: link to {target} does not resolve", rel(&p), n + 1));
                } else if !dest.canonicalize().is_ok_and(|d| d.starts_with(root())) {
                    bad.push(format!("{}:{}: link to {target} leaves the repository", rel(&p), n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
