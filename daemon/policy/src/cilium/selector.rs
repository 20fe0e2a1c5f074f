//! Node selectors (`nodeSelector`, a Kubernetes label selector): the
//! type, its parsing from the YAML tree, and whether it selects this node
//! (with a reason). It may not look at rules or peers.

use std::collections::BTreeMap;

use super::errors::Checker;
use super::schema::{REQUIREMENT, SELECTOR};
use super::walk::{index, list, object, required, string, string_map};
use super::yaml::{Node, Value};

/// The node's labels, matched by `nodeSelector`.
pub type NodeLabels = BTreeMap<String, String>;

/// A `nodeSelector` (a Kubernetes label selector). Empty selects every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeSelector {
    /// Keys without a Cilium source prefix (`k8s:`/`any:` are dropped).
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: SelectorOp,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Whether a selector selects this node, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Selection {
    pub active: bool,
    pub reason: String,
}

impl NodeSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Every requirement, `matchLabels` first, as (key, operator, values).
    pub(super) fn requirements(&self) -> Vec<(&str, SelectorOp, Vec<&str>)> {
        let mut v: Vec<(&str, SelectorOp, Vec<&str>)> = self
            .match_labels
            .iter()
            .map(|(k, val)| (k.as_str(), SelectorOp::In, vec![val.as_str()]))
            .collect();
        v.extend(self.match_expressions.iter().map(|r| {
            (
                r.key.as_str(),
                r.operator,
                r.values.iter().map(String::as_str).collect(),
            )
        }));
        v
    }

    /// Matches the node's labels (Kubernetes semantics: all requirements must
    /// hold; `NotIn` and `DoesNotExist` hold for a missing label). The reason
    /// names every requirement that fails and what the node has instead, e.g.
    /// `nodeSelector requires node-access=ssh; this node has no label node-access`.
    pub fn select(&self, labels: &NodeLabels) -> Selection {
        if self.is_empty() {
            return Selection {
                active: true,
                reason: "nodeSelector is empty: it selects every node".into(),
            };
        }
        let mut held = Vec::new();
        let mut failed = Vec::new();
        for (key, op, values) in self.requirements() {
            let have = labels.get(key).map(String::as_str);
            let ok = match op {
                SelectorOp::In => have.is_some_and(|h| values.contains(&h)),
                SelectorOp::NotIn => !have.is_some_and(|h| values.contains(&h)),
                SelectorOp::Exists => have.is_some(),
                SelectorOp::DoesNotExist => have.is_none(),
            };
            let req = describe_requirement(key, op, &values);
            if ok {
                held.push(req);
            } else {
                let has = match have {
                    Some(h) => format!("{key}={}", show_value(h)),
                    None => format!("no label {key}"),
                };
                failed.push(format!("nodeSelector requires {req}; this node has {has}"));
            }
        }
        if failed.is_empty() {
            Selection {
                active: true,
                reason: format!("nodeSelector matches this node ({})", held.join(", ")),
            }
        } else {
            Selection {
                active: false,
                reason: failed.join("; and "),
            }
        }
    }
}

/// A label value as shown in reasons: the empty value as `""`.
pub(super) fn show_value(v: &str) -> &str {
    if v.is_empty() {
        "\"\""
    } else {
        v
    }
}

pub(super) fn describe_requirement(key: &str, op: SelectorOp, values: &[&str]) -> String {
    let list = || {
        values
            .iter()
            .map(|v| show_value(v))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match op {
        SelectorOp::In if values.len() == 1 => format!("{key}={}", show_value(values[0])),
        SelectorOp::In => format!("{key} in ({})", list()),
        SelectorOp::NotIn => format!("{key} not in ({})", list()),
        SelectorOp::Exists => format!("label {key}"),
        SelectorOp::DoesNotExist => format!("no label {key}"),
    }
}

/// `{}`, or only empty `matchLabels`/`matchExpressions`.
pub(super) fn selector_is_empty(node: &Node) -> bool {
    match &node.value {
        Value::Map(entries) => entries.iter().all(|(_, v)| match &v.value {
            Value::Map(m) => m.is_empty(),
            Value::Seq(s) => s.is_empty(),
            Value::Scalar { .. } => v.is_null(),
        }),
        Value::Scalar { .. } => node.is_null(),
        Value::Seq(_) => false,
    }
}

/// Cilium writes label keys with a source prefix (`k8s:key`, `any:key`); node
/// labels have none.
pub(super) fn label_key(key: &str) -> &str {
    key.strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key)
}

pub(super) fn parse_selector(cx: &mut Checker, node: &Node, path: &str) -> NodeSelector {
    let mut sel = NodeSelector::default();
    let Some(obj) = object(cx, node, path, &SELECTOR) else {
        return sel;
    };
    if let Some(ml) = obj.get("matchLabels") {
        let mpath = obj.path("matchLabels");
        for (k, v) in string_map(cx, ml, &mpath) {
            let key = label_key(&k).to_string();
            if key.is_empty() {
                cx.error(ml.pos, &mpath, "a label key cannot be empty");
                continue;
            }
            if sel.match_labels.insert(key.clone(), v).is_some() {
                cx.error(
                    ml.pos,
                    &mpath,
                    format!("label {key} is given twice (with and without a source prefix)"),
                );
            }
        }
    }
    if let Some(me) = obj.get("matchExpressions") {
        let epath = obj.path("matchExpressions");
        if let Some(items) = list(cx, me, &epath) {
            for (i, item) in items.iter().enumerate() {
                let ipath = index(&epath, i);
                let Some(o) = object(cx, item, &ipath, &REQUIREMENT) else {
                    continue;
                };
                let key = required(cx, &o, "key", "a requirement needs a label key")
                    .and_then(|k| string(cx, k, &o.path("key")));
                let op = required(
                    cx,
                    &o,
                    "operator",
                    "a requirement needs an operator (In, NotIn, Exists or DoesNotExist)",
                )
                .and_then(|n| {
                    let s = string(cx, n, &o.path("operator"))?;
                    let op = match s.as_str() {
                        "In" => SelectorOp::In,
                        "NotIn" => SelectorOp::NotIn,
                        "Exists" => SelectorOp::Exists,
                        "DoesNotExist" => SelectorOp::DoesNotExist,
                        _ => {
                            cx.error(
                                n.pos,
                                &o.path("operator"),
                                format!(
                                    "unknown operator {s:?} (expected In, NotIn, Exists or DoesNotExist)"
                                ),
                            );
                            return None;
                        }
                    };
                    Some(op)
                });
                let mut values = Vec::new();
                if let Some(v) = o.get("values") {
                    let vpath = o.path("values");
                    if let Some(items) = list(cx, v, &vpath) {
                        for (j, item) in items.iter().enumerate() {
                            values.extend(string(cx, item, &index(&vpath, j)));
                        }
                    }
                }
                let (Some(key), Some(operator)) = (key, op) else {
                    continue;
                };
                let needs_values = matches!(operator, SelectorOp::In | SelectorOp::NotIn);
                let vpos = o.key_pos("values").unwrap_or(o.pos);
                if needs_values && values.is_empty() {
                    cx.error(
                        vpos,
                        &o.path("values"),
                        format!("operator {operator:?} needs at least one value"),
                    );
                    continue;
                }
                if !needs_values && o.get("values").is_some_and(|v| !selector_is_empty_list(v)) {
                    cx.error(
                        vpos,
                        &o.path("values"),
                        format!("operator {operator:?} takes no values"),
                    );
                    continue;
                }
                let key = label_key(&key).to_string();
                if key.is_empty() {
                    cx.error(o.pos, &o.path("key"), "a label key cannot be empty");
                    continue;
                }
                sel.match_expressions.push(LabelRequirement {
                    key,
                    operator,
                    values,
                });
            }
        }
    }
    sel
}

pub(super) fn selector_is_empty_list(node: &Node) -> bool {
    matches!(&node.value, Value::Seq(s) if s.is_empty())
}
