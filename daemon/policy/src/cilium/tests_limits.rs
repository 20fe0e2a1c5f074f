//! The bounds of one source (`MAX_*`): each is an error with a position,
//! never a crash. The deep documents are the ones that aborted the parser
//! with a stack overflow (issue 11); the test threads have 2 MiB stacks,
//! as the daemon's tokio workers.

use super::*;

fn errors(text: &str) -> Vec<String> {
    parse_policies("t.yaml", text)
        .expect_err("the source should be refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A valid policy around `ingress` items (the first on line 7).
fn with_ingress(items: &str) -> String {
    format!("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  nodeSelector: {{}}\n  ingress:\n{items}")
}

#[test]
fn deep_block_sequences_are_refused_at_the_level_too_many() {
    // 300,000 levels on one line: `- - - … x`.
    let text = format!("{}x\n", "- ".repeat(300_000));
    let col = 2 * MAX_DEPTH + 1;
    assert_eq!(
        errors(&text),
        [format!("t.yaml:1:{col}: nesting deeper than {MAX_DEPTH}")]
    );
    // Exactly MAX_DEPTH levels is fine for the YAML (and wrong for the schema).
    let ok = format!("{}x\n", "- ".repeat(MAX_DEPTH));
    assert!(
        errors(&ok).iter().all(|e| !e.contains("nesting")),
        "{:?}",
        errors(&ok)
    );
}

#[test]
fn deep_block_and_flow_mappings_are_refused() {
    // Block mappings need one more space per level.
    let text: String = (0..200)
        .map(|i| format!("{}a:\n", " ".repeat(i)))
        .collect::<String>()
        + &" ".repeat(200)
        + "x\n";
    assert_eq!(
        errors(&text),
        [format!(
            "t.yaml:{}:{}: nesting deeper than {MAX_DEPTH}",
            MAX_DEPTH + 1,
            MAX_DEPTH + 1
        )]
    );
    // `- a: - a:` is not YAML; a sequence of mappings in block style is.
    let text: String = (0..100)
        .map(|i| format!("{}- a:\n", "  ".repeat(2 * i)))
        .collect();
    let e = errors(&text);
    assert!(
        e.len() == 1 && e[0].ends_with(&format!("nesting deeper than {MAX_DEPTH}")),
        "{e:?}"
    );
    // Deep flow collections: the tokenizer's own limit or this one, whichever comes first.
    for depth in [100, 5000] {
        let flow = format!("{}{}", "{a: ".repeat(depth), "}".repeat(depth));
        let e = errors(&flow);
        assert!(
            e.len() == 1
                && e[0].starts_with("t.yaml:1:")
                && (e[0].contains("nesting deeper than") || e[0].contains("recursion limit")),
            "{e:?}"
        );
    }
}

#[test]
fn aliases_cannot_nest_deeper_than_the_bound() {
    // An anchor 40 deep used 40 deep is 80 deep once expanded; each line alone is fine.
    let deep = |inner: &str| format!("{}{inner}{}", "[".repeat(40), "]".repeat(40));
    let text = format!("a: &x {}\nb: {}\n", deep("1"), deep("*x"));
    let e = errors(&text);
    assert_eq!(
        e,
        [format!(
            "t.yaml:2:44: nesting deeper than {MAX_DEPTH} (after expanding this alias)"
        )]
    );
    // Chained anchors, each a little deeper than the last.
    let mut text = String::from("a0: &a0 [0]\n");
    for i in 1..100 {
        text.push_str(&format!("a{i}: &a{i} [[*a{}]]\n", i - 1));
    }
    let e = errors(&text);
    assert!(
        e.len() == 1 && e[0].contains("after expanding this alias"),
        "{e:?}"
    );
}

#[test]
fn alias_expansion_is_bounded_before_copying() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let e = errors(&text);
    assert!(
        e.len() == 1 && e[0].contains(&format!("more than {MAX_NODES} nodes")),
        "{e:?}"
    );
}

#[test]
fn too_many_nodes_without_aliases() {
    let text = format!("[{}]\n", "0,".repeat(MAX_NODES));
    let e = errors(&text);
    assert!(
        e.len() == 1
            && e[0].starts_with("t.yaml:1:")
            && e[0].contains(&format!("more than {MAX_NODES} nodes")),
        "{e:?}"
    );
}

#[test]
fn sources_larger_than_the_bound_are_refused_with_the_position_of_the_limit() {
    let line = format!("# {}\n", "x".repeat(1021)); // 1 KiB
    let text = line.repeat(MAX_SOURCE_BYTES / 1024) + "a: b\n";
    let e = errors(&text);
    let line_no = MAX_SOURCE_BYTES / 1024 + 1;
    assert_eq!(
        e,
        [format!(
            "t.yaml:{line_no}:1: document too large: more than {MAX_SOURCE_BYTES} bytes"
        )]
    );
    // At the bound itself: parsed (a comment-only source has no policy).
    let exact = line.repeat(MAX_SOURCE_BYTES / 1024);
    assert_eq!(parse_policies("t.yaml", &exact).map(|p| p.len()), Ok(0));
}

#[test]
fn positions_of_bytes_count_characters_and_every_line_break() {
    assert_eq!(pos_of_byte("ab", 1), Pos::new(1, 2));
    assert_eq!(pos_of_byte("a\r\nb\rc\nää", 11), Pos::new(4, 3));
    // Inside a character: rounded down.
    assert_eq!(pos_of_byte("ää", 3), Pos::new(1, 2));
}

#[test]
fn too_many_rules_in_one_source() {
    // Two documents, so that neither policy alone has too many rules.
    let half = MAX_RULES_PER_SOURCE / 2 + 1;
    let items = "  - {}\n".repeat(half);
    let text = format!(
        "{}---\n{}",
        with_ingress(&items),
        with_ingress(&items).replace("name: t", "name: u")
    );
    let e = errors(&text);
    let over = MAX_RULES_PER_SOURCE - half; // index in the second document
    let line = 7 + half + 1 + 7 + 1 + over;
    assert_eq!(e, [format!("t.yaml:{line}:5: spec.ingress[{over}]: too many rules in one source (more than {MAX_RULES_PER_SOURCE}): split it")]);
}

#[test]
fn too_many_cidrs_in_one_source() {
    let cidrs: String = (0..=MAX_CIDRS_PER_SOURCE)
        .map(|i| format!("    - 10.{}.{}.0/24\n", i >> 8 & 0xff, i & 0xff))
        .collect();
    let text = with_ingress(&format!("  - fromCIDR:\n{cidrs}"));
    let e = errors(&text);
    let line = 8 + MAX_CIDRS_PER_SOURCE + 1;
    assert_eq!(
        e,
        [format!("t.yaml:{line}:7: spec.ingress[0].fromCIDR[{MAX_CIDRS_PER_SOURCE}]: too many CIDRs in one source (more than {MAX_CIDRS_PER_SOURCE}): split it")]
    );
    // Except lists count too.
    let excepts: String = (0..MAX_CIDRS_PER_SOURCE)
        .map(|i| format!("      - 10.{}.{}.0/24\n", i >> 8 & 0xff, i & 0xff))
        .collect();
    let text = with_ingress(&format!(
        "  - fromCIDRSet:\n    - cidr: 10.0.0.0/8\n      except:\n{excepts}"
    ));
    let e = errors(&text);
    assert!(
        e.len() == 1 && e[0].contains("too many CIDRs in one source"),
        "{e:?}"
    );
}

#[test]
fn errors_are_capped_with_a_count_of_the_rest() {
    let cidrs = "    - not-a-cidr\n".repeat(MAX_ERRORS + 50);
    let text = with_ingress(&format!("  - fromCIDR:\n{cidrs}"));
    let e = errors(&text);
    assert_eq!(e.len(), MAX_ERRORS + 1);
    assert!(
        e[0].starts_with("t.yaml:9:7: spec.ingress[0].fromCIDR[0]: invalid CIDR"),
        "{}",
        e[0]
    );
    let last_line = 9 + MAX_ERRORS - 1;
    assert_eq!(
        e[MAX_ERRORS],
        format!(
            "t.yaml:{last_line}:7: 50 more errors not shown (at most {MAX_ERRORS} are reported)"
        )
    );
}
