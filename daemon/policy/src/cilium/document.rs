//! Parsing documents: a policy file into [`Policy`] values (apiVersion,
//! kind, metadata, `spec`/`specs`), duplicate names within and across
//! sources, and the entry points [`parse_policies`] and [`load_sources`].
//! Rules are parsed by `rules`, node selectors by `selector`.

use std::collections::{BTreeMap, HashMap};

use super::errors::{Checker, PolicyError, PolicyWarning, Pos};
use super::limits::{MAX_ERRORS, MAX_POLICIES, MAX_RULES_PER_POLICY};
use super::rules::parse_rule;
use super::schema::*;
use super::selector::{parse_selector, selector_is_empty};
use super::types::{Policy, PolicyKind, PolicyRule, PolicySpec, API_VERSION};
use super::walk::*;
use super::yaml::{parse_yaml, Node, Value};
use crate::model::{Action, Direction};

/// Parses one policy file (any number of `---`-separated documents). `file`
/// is how errors name it. All errors of the file are returned; a file with
/// any error yields no policy. Duplicate policy names within the file are
/// errors too (see [`load_sources`] for several files).
///
/// What is accepted but changes nothing here is a warning kept in
/// [`Policy::warnings`]; see [`parse_policies_with`] for strict mode.
pub fn parse_policies(file: &str, text: &str) -> Result<Vec<Policy>, Vec<PolicyError>> {
    parse_policies_with(file, text, false)
}

/// [`parse_policies`]; with `strict` (`strict_policies = true`) every
/// warning is an error instead.
pub fn parse_policies_with(file: &str, text: &str, strict: bool) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let mut cx = Checker::new(file);
    let docs = match parse_yaml(text) {
        Ok(docs) => docs,
        Err((pos, message)) => {
            cx.error(pos, "", message);
            return Err(cx.errors);
        }
    };
    let mut policies = Vec::new();
    for doc in &docs {
        let before = cx.warnings.len();
        match cx.clean(|cx| parse_document(cx, doc)) {
            Some(mut p) => {
                p.warnings = cx.warnings.split_off(before);
                policies.push(p);
            }
            // A document with errors loads nothing: its warnings are moot.
            None => cx.warnings.truncate(before),
        }
    }
    if let Some(last) = policies.iter_mut().rev().find(|p| !p.warnings.is_empty()) {
        if cx.warnings_left_out > 0 {
            let pos = last.warnings.last().map_or(last.pos, |w| Pos::new(w.line, w.column));
            last.warnings.push(PolicyWarning {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                path: String::new(),
                message: format!("{} more warnings not shown (at most {MAX_ERRORS} are reported)", cx.warnings_left_out),
            });
        }
    }
    if strict {
        for w in policies.iter().flat_map(|p| p.warnings.iter().cloned()) {
            let e = w.into_error();
            cx.error(Pos::new(e.line, e.column), &e.path, e.message);
        }
    }
    for e in duplicate_errors(&policies, |_, _| true) {
        cx.error(Pos::new(e.line, e.column), &e.path, e.message);
    }
    if cx.reported == 0 {
        Ok(policies)
    } else {
        Err(cx.into_errors())
    }
}

/// Validates a policy text offline (no daemon, no kernel): every problem
/// as `name:line:column: field: message`; empty when valid.
pub fn validate_policy(name: &str, yaml: &str) -> Vec<String> {
    validate_policy_with(name, yaml, false)
}

/// [`validate_policy`] as `strict_policies` says: strict, every warning is
/// an error, as the daemon would refuse the file.
pub fn validate_policy_with(name: &str, yaml: &str, strict: bool) -> Vec<String> {
    match parse_policies_with(name, yaml, strict) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Parses several files (`(name, text)` pairs) and checks that policy names
/// are unique across them. Returns every error of every file.
pub fn load_sources<'a, I>(sources: I) -> Result<Vec<Policy>, Vec<PolicyError>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    load_sources_with(sources, false)
}

/// [`load_sources`], strict or not (see [`parse_policies_with`]).
pub fn load_sources_with<'a, I>(sources: I, strict: bool) -> Result<Vec<Policy>, Vec<PolicyError>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in sources {
        match parse_policies_with(file, text, strict) {
            Ok(p) => policies.extend(p),
            Err(e) => errors.extend(e),
        }
    }
    // Duplicates within a file were reported by parse_policies.
    errors.extend(duplicate_errors(&policies, |a, b| a.file != b.file));
    if policies.len() > MAX_POLICIES {
        let p = &policies[MAX_POLICIES];
        errors.push(PolicyError {
            file: p.file.clone(),
            line: p.pos.line,
            column: p.pos.column,
            path: "metadata.name".into(),
            message: format!("too many policies (at most {MAX_POLICIES})"),
        });
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

pub(super) fn duplicate_errors(
    policies: &[Policy],
    report: impl Fn(&Policy, &Policy) -> bool,
) -> Vec<PolicyError> {
    let mut first: HashMap<String, &Policy> = HashMap::new();
    let mut errors = Vec::new();
    for p in policies {
        match first.get(&p.key()) {
            Some(f) if report(f, p) => errors.push(PolicyError {
                file: p.file.clone(),
                line: p.pos.line,
                column: p.pos.column,
                path: "metadata.name".into(),
                message: format!(
                    "policy {:?} is already defined at {}:{}",
                    p.key(),
                    f.file,
                    f.pos
                ),
            }),
            Some(_) => {}
            None => {
                first.insert(p.key(), p);
            }
        }
    }
    errors
}

pub(super) fn parse_document(cx: &mut Checker, doc: &Node) -> Option<Policy> {
    let obj = object(cx, doc, "", &DOCUMENT)?;
    if let Some(v) = required(
        cx,
        &obj,
        "apiVersion",
        "every policy needs apiVersion: cilium.io/v2",
    ) {
        if let Some(s) = string(cx, v, "apiVersion") {
            if s != API_VERSION {
                cx.error(
                    v.pos,
                    "apiVersion",
                    format!("unsupported apiVersion {s:?} (expected {API_VERSION})"),
                );
            }
        }
    }
    let kind = required(
        cx,
        &obj,
        "kind",
        "every policy needs kind: CiliumClusterwideNetworkPolicy",
    )
    .and_then(|v| {
        let s = string(cx, v, "kind")?;
        match s.as_str() {
            "CiliumClusterwideNetworkPolicy" => Some(PolicyKind::CiliumClusterwideNetworkPolicy),
            "CiliumNetworkPolicy" => Some(PolicyKind::CiliumNetworkPolicy),
            _ => {
                cx.error(
                    v.pos,
                    "kind",
                    format!(
                        "unsupported kind {s:?} (expected CiliumClusterwideNetworkPolicy or CiliumNetworkPolicy)"
                    ),
                );
                None
            }
        }
    });

    let mut name = None;
    let mut name_pos = obj.pos;
    let mut namespace = None;
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if let Some(m) = required(cx, &obj, "metadata", "every policy needs metadata.name") {
        if let Some(meta) = object(cx, m, "metadata", &METADATA) {
            if let Some(n) = required(cx, &meta, "name", "every policy needs a name") {
                name_pos = n.pos;
                if let Some(s) = string(cx, n, "metadata.name") {
                    match check_name(&s) {
                        Ok(()) => name = Some(s),
                        Err(e) => cx.error(n.pos, "metadata.name", e),
                    }
                }
            }
            if let Some(n) = meta.get("namespace") {
                if let Some(s) = string(cx, n, "metadata.namespace") {
                    match check_name(&s) {
                        Ok(()) => namespace = Some(s),
                        Err(e) => cx.error(n.pos, "metadata.namespace", e),
                    }
                }
            }
            if let Some(l) = meta.get("labels") {
                labels = string_map(cx, l, "metadata.labels");
            }
            if let Some(a) = meta.get("annotations") {
                annotations = string_map(cx, a, "metadata.annotations");
            }
        }
    }

    let mut specs = Vec::new();
    let spec = obj.get("spec");
    let spec_list = obj.get("specs");
    if spec.is_none() && spec_list.is_none() {
        cx.error(
            obj.pos,
            "spec",
            "missing: a policy needs spec (or specs, a list of them)",
        );
    }
    if let Some(s) = spec {
        specs.extend(parse_spec(cx, s, "spec".into()));
    }
    if let Some(l) = spec_list {
        if let Some(items) = list(cx, l, "specs") {
            for (i, s) in items.iter().enumerate() {
                specs.extend(parse_spec(cx, s, index("specs", i)));
            }
        }
    }
    let rules: usize = specs.iter().map(|s: &PolicySpec| s.rules.len()).sum();
    if rules > MAX_RULES_PER_POLICY {
        cx.error(
            name_pos,
            "metadata.name",
            format!(
                "too many rules in one policy ({rules}, at most {MAX_RULES_PER_POLICY}): split it"
            ),
        );
    }
    let kind = kind?;
    Some(Policy {
        kind,
        name: name?,
        namespace: namespace.filter(|_| kind == PolicyKind::CiliumNetworkPolicy),
        labels,
        annotations,
        file: cx.file.to_string(),
        pos: name_pos,
        specs,
        warnings: Vec::new(), // filled in by parse_policies
    })
}

/// A Kubernetes object name: an RFC 1123 subdomain.
pub(super) fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"
        ))
    }
}

pub(super) fn parse_spec(cx: &mut Checker, node: &Node, path: String) -> Option<PolicySpec> {
    let obj = object(cx, node, &path, &SPEC)?;
    let description = match obj.get("description") {
        Some(d) => string(cx, d, &obj.path("description")).unwrap_or_default(),
        None => String::new(),
    };

    let node_selector = obj
        .get("nodeSelector")
        .map(|n| parse_selector(cx, n, &obj.path("nodeSelector")));
    match obj.get("endpointSelector") {
        Some(es) => {
            let epath = obj.path("endpointSelector");
            let empty = selector_is_empty(es);
            if !empty {
                cx.error(
                    obj.key_pos("endpointSelector").unwrap_or(es.pos),
                    &epath,
                    "endpointSelector selects pods; hostfwd enforces host policies only (select nodes with nodeSelector)",
                );
            } else if node_selector.is_none() {
                cx.error(
                    obj.key_pos("endpointSelector").unwrap_or(es.pos),
                    &epath,
                    "an endpointSelector selects pods, not hosts: a host policy selects nodes with nodeSelector (nodeSelector: {} selects every node)",
                );
            }
        }
        None if node_selector.is_none() => cx.error(
            obj.pos,
            &obj.path("nodeSelector"),
            "missing: a host policy selects nodes with nodeSelector (nodeSelector: {} selects every node)",
        ),
        None => {}
    }

    let mut rules = Vec::new();
    for (key, direction, action) in [
        ("ingress", Direction::Ingress, Action::Allow),
        ("ingressDeny", Direction::Ingress, Action::Deny),
        ("egress", Direction::Egress, Action::Allow),
        ("egressDeny", Direction::Egress, Action::Deny),
    ] {
        let Some(section) = obj.get(key) else {
            continue;
        };
        let spath = obj.path(key);
        let Some(items) = list(cx, section, &spath) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let path = index(&spath, i);
            if !cx.count_rule(item.pos, &path) {
                break;
            }
            rules.extend(parse_rule(cx, item, path, direction, action));
        }
    }

    if let Some(dd) = obj.get("enableDefaultDeny") {
        if let Some(dd) = object(cx, dd, &obj.path("enableDefaultDeny"), &DEFAULT_DENY) {
            for (key, direction) in [
                ("ingress", Direction::Ingress),
                ("egress", Direction::Egress),
            ] {
                let Some(v) = dd.get(key) else { continue };
                let dpath = dd.path(key);
                let Some(on) = boolean(cx, v, &dpath) else {
                    continue;
                };
                let has_rules = obj
                    .fields
                    .iter()
                    .filter(|(k, _, _)| {
                        matches!(
                            (direction, *k),
                            (Direction::Ingress, "ingress" | "ingressDeny")
                                | (Direction::Egress, "egress" | "egressDeny")
                        )
                    })
                    .any(|(_, _, n)| matches!(&n.value, Value::Seq(items) if !items.is_empty()));
                if on && !has_rules {
                    rules.push(PolicyRule {
                        path: dpath,
                        pos: v.pos,
                        direction,
                        action: Action::Allow,
                        peers: Vec::new(),
                        ports: Vec::new(),
                        inert: Vec::new(),
                    });
                } else if !on && has_rules {
                    cx.error(
                        v.pos,
                        &dpath,
                        format!(
                            "enableDefaultDeny.{key}: false cannot be enforced: hostfwd puts every direction that has rules into default-deny (remove it, or move these rules to a policy that should enforce)"
                        ),
                    );
                }
            }
        }
    }

    if let Some(l) = obj.get("labels") {
        let lpath = obj.path("labels");
        if let Some(items) = list(cx, l, &lpath) {
            for (i, item) in items.iter().enumerate() {
                let ipath = index(&lpath, i);
                if let Some(o) = object(cx, item, &ipath, &RULE_LABEL) {
                    required(cx, &o, "key", "a rule label needs a key");
                    for k in ["key", "value", "source"] {
                        if let Some(v) = o.get(k) {
                            string(cx, v, &o.path(k));
                        }
                    }
                }
            }
        }
    }

    Some(PolicySpec {
        path,
        pos: node.pos,
        description,
        node_selector: node_selector.unwrap_or_default(),
        rules,
    })
}
