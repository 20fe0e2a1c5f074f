//! The policy language: Cilium's host-policy schema (`cilium.io/v2`
//! `CiliumClusterwideNetworkPolicy` / `CiliumNetworkPolicy`), parsed from YAML
//! into a typed intermediate ([`Policy`]), checked strictly, and turned into
//! the model's [`RuleSet`] for one node ([`to_rule_set`]).
//!
//! Everything here is pure: text in, values out. Reading files, watching the
//! config directory and knowing the node's labels and addresses is the
//! daemon's business.
//!
//! # Strictness
//!
//! A field hostfwd cannot enforce (L7 `rules`, `toFQDNs`, `toServices`, pod
//! selectors, `fromRequires`, `authentication`, CIDR groups, TLS, listeners,
//! …) is an error that says so, as is any unknown field, value of the wrong
//! type, bad CIDR, port, protocol or ICMP type. Every error names the file,
//! line, column and field path ([`PolicyError`]), and all errors of a file are
//! reported, not only the first. A file with any error contributes no policy.
//!
//! # Semantics (as Cilium's)
//!
//! * A rule's peer selectors (`fromEntities`, `fromCIDR`, `fromCIDRSet`, or
//!   the `to…` ones on egress) are ORed; its `toPorts`/`icmps` are ORed; the
//!   two are ANDed (peers × ports). One policy rule is one model [`Rule`].
//! * A rule with ports but no peer selector applies to every peer (Cilium's
//!   wildcard endpoint selector): its peers are [`Entity::All`].
//! * A rule with neither (`ingress: [{}]`) allows nothing, but — like any rule
//!   — puts its direction into default-deny. This is Cilium's documented
//!   "default deny without allowing anything" idiom; the model expresses it as
//!   a rule with no peers.
//! * `toPorts` without `protocol` means `ANY` (TCP, UDP and SCTP, not ICMP);
//!   `port: 0` means every port; `endPort` makes a range. `icmps` without
//!   `family` means IPv4.
//! * `ingressDeny`/`egressDeny` rules are [`Action::Deny`]; deny wins.
//! * A direction with any rule is default-deny. `enableDefaultDeny: {x: true}`
//!   without rules in that direction adds a rule with no peers (default-deny,
//!   nothing allowed); `enableDefaultDeny: {x: false}` with rules in that
//!   direction cannot be expressed and is an error.
//! * Explicitly empty peer lists (`fromEntities: []`) are rejected: Cilium
//!   gives them different meanings per field (an empty `fromEntities` selects
//!   nothing, an empty `fromCIDR` is as if absent).
//! * A `toPorts` entry without ports, or an `icmps` entry without fields,
//!   makes Cilium match nothing for the whole rule; it is rejected too.
//! * `icmps` and `toPorts` in the same rule are rejected, as Cilium does.
//! * A policy selects this node by `nodeSelector` (`{}` selects every node);
//!   a non-empty `endpointSelector` selects pods and is rejected. Each `spec`
//!   of a policy (`spec` and every element of `specs`) is active or inactive
//!   on its own, always with a reason ([`SpecStatus`]).
//! * `CiliumNetworkPolicy` is accepted with the same schema (Cilium itself
//!   only applies host policies from the clusterwide kind); it is named
//!   `namespace/name` if it has a namespace. A clusterwide policy's
//!   namespace is ignored, as Kubernetes does.
//! * Entities resolve to CIDRs ([`EntityContext`]); a CIDR peer means its
//!   addresses. This differs from Cilium, whose CIDR selectors by default do
//!   not select addresses that have a cluster identity (nodes, pods):
//!   hostfwd has no identities besides addresses. To leave the cluster out of
//!   a CIDR, write `fromCIDRSet` with the cluster prefixes as `except`.
//!
//! # Rule ids
//!
//! The datapath reports a rule id in drop events. Ids are
//! `policy_ordinal << 16 | rule_ordinal` ([`rule_id`]), both 1-based:
//! policies are numbered in order of their name (`namespace/name`) across
//! all files, and rules within a policy in document order — `spec` then
//! `specs[0]`, `specs[1]`, …; within each, `ingress`, `ingressDeny`, `egress`,
//! `egressDeny`, then synthetic `enableDefaultDeny` rules; within a section
//! by index. Inactive specs still consume their ids, so node labels never
//! renumber anything, and editing one policy never renumbers another's rules
//! (adding or removing whole policies shifts the policies named after it).
//! [`PolicyReport::rule_origin`] maps an id back to the policy name and the
//! rule's path (`spec.ingress[1]`), file and position; in hex, an id reads
//! as `0xPPPP_RRRR`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

pub use super::entities::{Entity, EntityContext};
use super::model::{Action, CidrSet, Direction, IcmpFamily, L4Proto, PortMatch, Rule, RuleSet};

/// The only API version accepted.
pub const API_VERSION: &str = "cilium.io/v2";

/// The node's labels, matched by `nodeSelector`.
pub type NodeLabels = BTreeMap<String, String>;

/// Most policies a rule set can hold, and most rules per policy: the two
/// 16-bit halves of a rule id.
pub const MAX_POLICIES: usize = 0xffff;
pub const MAX_RULES_PER_POLICY: usize = 0xffff;

// Bounds on one source (a file or a text sent over D-Bus), so that any
// input ends in an error with a position instead of exhausting the stack,
// memory or time of the daemon (ValidatePolicy is open to every user).
// Each is far above what a policy needs: the 10,000-rule bench set is
// 1.6 MiB, 16,500 CIDRs and 12 levels deep.

/// Most bytes in one source.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;
/// Most nested collections. The tree and everything walking it recurse
/// per level (clone, drop, the schema), so this bounds their stack use;
/// Cilium's schema needs 9.
pub const MAX_DEPTH: usize = 64;
/// Most nodes per source, counted after expanding aliases (which can
/// duplicate large subtrees: the "billion laughs").
pub const MAX_NODES: usize = 1_000_000;
/// Most rules (items of ingress, ingressDeny, egress, egressDeny) per source.
pub const MAX_RULES_PER_SOURCE: usize = 0xffff;
/// Most CIDRs (`fromCIDR`/`toCIDR` items, CIDR sets' `cidr` and `except`
/// items) per source.
pub const MAX_CIDRS_PER_SOURCE: usize = 0x10000;
/// Most errors reported per source; one more says how many were left out.
pub const MAX_ERRORS: usize = 100;

// ---------------------------------------------------------------------------
// Positions and errors
// ---------------------------------------------------------------------------

/// A position in a policy file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a policy file, e.g.
/// `policies/ssh.yaml:14:9: spec.ingress[1].toPorts[0].rules: L7 rules cannot be enforced …`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path from the document root (`spec.ingress[1].toPorts[0]`);
    /// empty for YAML syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

// ---------------------------------------------------------------------------
// The typed intermediate
// ---------------------------------------------------------------------------

/// The two accepted kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum PolicyKind {
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
}

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
        }
    }
}

/// One policy document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    pub kind: PolicyKind,
    pub name: String,
    /// Only kept for `CiliumNetworkPolicy` (a clusterwide policy has none).
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The file as named by the caller.
    pub file: String,
    /// Where `metadata.name` is.
    pub pos: Pos,
    /// `spec` (if present) then each element of `specs`.
    pub specs: Vec<PolicySpec>,
}

impl Policy {
    /// The policy's name in reports and rule origins: `name`, or
    /// `namespace/name` for a namespaced policy.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// All rules of all specs, in rule-id order.
    pub fn rules(&self) -> impl Iterator<Item = (&PolicySpec, &PolicyRule)> {
        self.specs
            .iter()
            .flat_map(|s| s.rules.iter().map(move |r| (s, r)))
    }
}

/// One Cilium rule (`spec` or an element of `specs`): a node selector and the
/// rules that apply where it selects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicySpec {
    /// `spec` or `specs[N]`.
    pub path: String,
    pub pos: Pos,
    pub description: String,
    pub node_selector: NodeSelector,
    pub rules: Vec<PolicyRule>,
}

/// One rule of a section, entities not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyRule {
    /// `spec.ingress[1]`, `specs[0].egressDeny[2]`, or
    /// `spec.enableDefaultDeny.ingress` for a synthetic default-deny rule.
    pub path: String,
    pub pos: Pos,
    pub direction: Direction,
    pub action: Action,
    /// ORed. Empty: matches nothing (see the module docs).
    pub peers: Vec<Peer>,
    /// ORed. Empty: every protocol and port.
    pub ports: Vec<PortMatch>,
}

/// A peer selector of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    Entity(Entity),
    Cidr(CidrSet),
}

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
    fn requirements(&self) -> Vec<(&str, SelectorOp, Vec<&str>)> {
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
fn show_value(v: &str) -> &str {
    if v.is_empty() {
        "\"\""
    } else {
        v
    }
}

fn describe_requirement(key: &str, op: SelectorOp, values: &[&str]) -> String {
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

// ---------------------------------------------------------------------------
// YAML: a tree with a position on every node
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Node {
    pos: Pos,
    value: Value,
}

#[derive(Debug, Clone)]
enum Value {
    Scalar {
        text: String,
        /// Plain (unquoted, not a block scalar): typed by the YAML 1.2 core
        /// schema unless tagged.
        plain: bool,
        tag: Option<CoreTag>,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoreTag {
    Str,
    Int,
    Bool,
    Null,
    Float,
    Seq,
    Map,
}

/// A scalar's type under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Typed<'a> {
    Null,
    Bool(bool),
    /// Saturated to the i128 range.
    Int(i128),
    Float,
    Str(&'a str),
}

impl Node {
    fn typed(&self) -> Option<Typed<'_>> {
        let Value::Scalar { text, plain, tag } = &self.value else {
            return None;
        };
        let t = text.as_str();
        Some(match tag {
            Some(CoreTag::Str) => Typed::Str(t),
            Some(CoreTag::Null) => Typed::Null,
            Some(CoreTag::Bool) => core_bool(t).map_or(Typed::Str(t), Typed::Bool),
            Some(CoreTag::Int) => core_int(t).map_or(Typed::Str(t), Typed::Int),
            Some(CoreTag::Float) => Typed::Float,
            Some(CoreTag::Seq | CoreTag::Map) => Typed::Str(t),
            None if !plain => Typed::Str(t),
            None => {
                if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
                    Typed::Null
                } else if let Some(b) = core_bool(t) {
                    Typed::Bool(b)
                } else if let Some(i) = core_int(t) {
                    Typed::Int(i)
                } else if core_float(t) {
                    Typed::Float
                } else {
                    Typed::Str(t)
                }
            }
        })
    }

    fn is_null(&self) -> bool {
        matches!(self.typed(), Some(Typed::Null))
    }

    /// "a string", "an integer (22)", "a list", … for error messages.
    fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar { text, .. } => match self.typed() {
                Some(Typed::Null) => "null".into(),
                Some(Typed::Bool(b)) => format!("a boolean ({b})"),
                Some(Typed::Int(_)) => format!("an integer ({text})"),
                Some(Typed::Float) => format!("a floating-point number ({text})"),
                _ => format!("a string ({text:?})"),
            },
        }
    }
}

fn core_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn core_int(t: &str) -> Option<i128> {
    let digits_ok = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let saturate = |s: &str, radix: u32, neg: bool| {
        let v = i128::from_str_radix(s, radix).unwrap_or(i128::MAX);
        if neg {
            -v
        } else {
            v
        }
    };
    if let Some(h) = t.strip_prefix("0x") {
        return digits_ok(h, 16).then(|| saturate(h, 16, false));
    }
    if let Some(o) = t.strip_prefix("0o") {
        return digits_ok(o, 8).then(|| saturate(o, 8, false));
    }
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    digits_ok(d, 10).then(|| saturate(d, 10, neg))
}

fn core_float(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    if matches!(t, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = match exp {
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
        None => true,
    };
    mantissa_ok && exp_ok
}

fn core_tag(tag: Option<&Tag>) -> Result<Option<CoreTag>, String> {
    let Some(tag) = tag else { return Ok(None) };
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(Some(CoreTag::Str)); // the non-specific tag `!`
    }
    if tag.is_yaml_core_schema() {
        let t = match tag.suffix.as_str() {
            "str" => CoreTag::Str,
            "int" => CoreTag::Int,
            "bool" => CoreTag::Bool,
            "null" => CoreTag::Null,
            "float" => CoreTag::Float,
            "seq" => CoreTag::Seq,
            "map" => CoreTag::Map,
            _ => return Err(format!("unsupported YAML tag {tag}")),
        };
        return Ok(Some(t));
    }
    Err(format!("unsupported YAML tag {tag}"))
}

/// A collection being built, with what its node will need: the node
/// count when it started (its size is the difference at its end) and the
/// greatest height among its items.
struct Frame {
    pos: Pos,
    anchor: usize,
    start_nodes: usize,
    height: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// An anchored node with its size (nodes) and height (levels; a scalar
/// is 1), which an alias adds to the document.
struct Anchored {
    node: Node,
    size: usize,
    height: usize,
}

#[derive(Default)]
struct TreeBuilder {
    docs: Vec<Node>,
    root: Option<Node>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
}

fn too_many_nodes(pos: Pos) -> (Pos, String) {
    (
        pos,
        format!("document too large: more than {MAX_NODES} nodes (after expanding aliases)"),
    )
}

fn too_deep(pos: Pos, alias: bool) -> (Pos, String) {
    let why = if alias {
        " (after expanding this alias)"
    } else {
        ""
    };
    (pos, format!("nesting deeper than {MAX_DEPTH}{why}"))
}

impl TreeBuilder {
    /// Adds `node` of `height` levels, which brings `new_nodes` nodes to
    /// the document: 1 for a scalar or a collection (whose items were
    /// counted as they came), the whole subtree for an alias (checked by
    /// the caller before it was copied). `size` is the node's own size.
    fn add(
        &mut self,
        node: Node,
        anchor: usize,
        new_nodes: usize,
        size: usize,
        height: usize,
    ) -> Result<(), (Pos, String)> {
        self.nodes += new_nodes;
        if self.nodes > MAX_NODES {
            return Err(too_many_nodes(node.pos));
        }
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size,
                    height,
                },
            );
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.height = frame.height.max(height);
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    /// Starts a collection, unless that nests too deep.
    fn open(&mut self, pos: Pos, anchor: usize, kind: FrameKind) -> Result<(), (Pos, String)> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(pos, false));
        }
        self.stack.push(Frame {
            pos,
            anchor,
            start_nodes: self.nodes,
            height: 0,
            kind,
        });
        Ok(())
    }

    fn finish_document(&mut self) {
        if let Some(root) = self.root.take() {
            // Empty documents (e.g. a leading or trailing `---`) are skipped.
            if !root.is_null() {
                self.docs.push(root);
            }
        }
    }
}

/// The position of a YAML syntax error at saphyr's `line` and 0-based
/// `col`. saphyr-parser 0.3 counts the name and parameters of a directive
/// (`%YAML`, `%TAG`, or a reserved one) in bytes, not characters
/// (`fetch_while_is_yaml_non_space` returns a byte count, which the scanner
/// adds to the column), so on a `%` line — directives start in column 1 —
/// the column is a byte offset into the line, and an error after non-ASCII
/// text there would point past the line's end. It is converted to
/// characters, as every other position is.
fn syntax_error_pos(text: &str, line: usize, col: usize) -> Pos {
    let column = match line_text(text, line) {
        Some(l) if l.starts_with('%') => {
            let mut byte = col.min(l.len());
            while !l.is_char_boundary(byte) {
                byte -= 1;
            }
            l[..byte].chars().count()
        }
        _ => col,
    };
    Pos::new(line, column + 1)
}

/// Line `line` (1-based) of `text` without its break; lines end at `\n`,
/// `\r\n` or a lone `\r`, as in YAML.
fn line_text(text: &str, line: usize) -> Option<&str> {
    let mut rest = text;
    for _ in 1..line {
        let i = rest.find(['\n', '\r'])?;
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    Some(&rest[..rest.find(['\n', '\r']).unwrap_or(rest.len())])
}

/// The position of byte `offset` of `text` (rounded down to a character).
fn pos_of_byte(text: &str, offset: usize) -> Pos {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    // Line breaks as in YAML: `\n`, `\r\n` or a lone `\r`.
    let line = 1 + before.matches('\n').count() + before.matches('\r').count()
        - before.matches("\r\n").count();
    let start = before.rfind(['\n', '\r']).map_or(0, |i| i + 1);
    Pos::new(line, before[start..].chars().count() + 1)
}

/// Parses a YAML stream into one tree per (non-empty) document. A syntax
/// error stops the whole file (nothing after it can be trusted), as does a
/// bound of the source exceeded (the `MAX_*` constants).
fn parse_yaml(text: &str) -> Result<Vec<Node>, (Pos, String)> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err((
            pos_of_byte(text, MAX_SOURCE_BYTES),
            format!("document too large: more than {MAX_SOURCE_BYTES} bytes"),
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut b = TreeBuilder::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            (
                syntax_error_pos(text, e.marker().line(), e.marker().col()),
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        let pos = Pos::of(&span);
        match event {
            Event::Nothing | Event::StreamStart => {}
            Event::StreamEnd => b.finish_document(),
            Event::DocumentStart(_) => {
                b.anchors.clear();
                b.root = None;
            }
            Event::DocumentEnd => b.finish_document(),
            Event::Scalar(text, style, anchor, tag) => {
                let tag = core_tag(tag.as_deref()).map_err(|m| (pos, m))?;
                if matches!(tag, Some(CoreTag::Seq | CoreTag::Map)) {
                    return Err((pos, "a scalar cannot be tagged as a collection".into()));
                }
                let node = Node {
                    pos,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag,
                    },
                };
                b.add(node, anchor, 1, 1, 1)?;
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = core_tag(tag.as_deref()).map_err(|m| (pos, m))?;
                if tag.is_some_and(|t| t != CoreTag::Seq) {
                    return Err((pos, "a list cannot be tagged as a scalar or mapping".into()));
                }
                b.open(pos, anchor, FrameKind::Seq(Vec::new()))?;
            }
            Event::MappingStart(anchor, tag) => {
                let tag = core_tag(tag.as_deref()).map_err(|m| (pos, m))?;
                if tag.is_some_and(|t| t != CoreTag::Map) {
                    return Err((pos, "a mapping cannot be tagged as a scalar or list".into()));
                }
                b.open(
                    pos,
                    anchor,
                    FrameKind::Map {
                        entries: Vec::new(),
                        key: None,
                    },
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = b.stack.pop() else {
                    return Err((pos, "unbalanced YAML collection".into()));
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { entries, .. } => Value::Map(entries),
                };
                let node = Node {
                    pos: frame.pos,
                    value,
                };
                // Its items were counted as they came.
                let size = b.nodes - frame.start_nodes + 1;
                b.add(node, frame.anchor, 1, size, frame.height + 1)?;
            }
            Event::Alias(id) => {
                let a = b
                    .anchors
                    .get(&id)
                    .ok_or_else(|| (pos, "alias to an unknown anchor".to_string()))?;
                // Checked before copying: the copy is what would be too large.
                if b.stack.len() + a.height > MAX_DEPTH {
                    return Err(too_deep(pos, true));
                }
                if b.nodes + a.size > MAX_NODES {
                    return Err(too_many_nodes(pos));
                }
                let (node, size, height) = (a.node.clone(), a.size, a.height);
                b.add(node, 0, size, size, height)?;
            }
        }
    }
    Ok(b.docs)
}

// ---------------------------------------------------------------------------
// Schema walking helpers
// ---------------------------------------------------------------------------

struct Cx<'f> {
    file: &'f str,
    /// The first [`MAX_ERRORS`] errors.
    errors: Vec<PolicyError>,
    /// Every error reported, kept or not.
    reported: usize,
    /// Rules and CIDRs so far, against the per-source bounds.
    rules: usize,
    cidrs: usize,
}

impl<'f> Cx<'f> {
    fn new(file: &'f str) -> Cx<'f> {
        Cx {
            file,
            errors: Vec::new(),
            reported: 0,
            rules: 0,
            cidrs: 0,
        }
    }

    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.reported += 1;
        if self.errors.len() >= MAX_ERRORS {
            return;
        }
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Runs `f` and tells whether it reported no error.
    fn clean<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let before = self.reported;
        let v = f(self);
        if self.reported == before {
            v
        } else {
            None
        }
    }

    /// Counts one rule at `pos`; false (and an error, once) past the bound.
    fn count_rule(&mut self, pos: Pos, path: &str) -> bool {
        self.rules += 1;
        if self.rules == MAX_RULES_PER_SOURCE + 1 {
            self.error(
                pos,
                path,
                format!(
                    "too many rules in one source (more than {MAX_RULES_PER_SOURCE}): split it"
                ),
            );
        }
        self.rules <= MAX_RULES_PER_SOURCE
    }

    /// Counts one CIDR at `pos`; false (and an error, once) past the bound.
    fn count_cidr(&mut self, pos: Pos, path: &str) -> bool {
        self.cidrs += 1;
        if self.cidrs == MAX_CIDRS_PER_SOURCE + 1 {
            self.error(
                pos,
                path,
                format!(
                    "too many CIDRs in one source (more than {MAX_CIDRS_PER_SOURCE}): split it"
                ),
            );
        }
        self.cidrs <= MAX_CIDRS_PER_SOURCE
    }

    /// The errors, in file order, with a last one saying how many were
    /// left out.
    fn into_errors(mut self) -> Vec<PolicyError> {
        // A stable sort keeps the order of errors at one place.
        self.errors.sort_by_key(|e| (e.line, e.column));
        if self.reported > self.errors.len() {
            let last = self
                .errors
                .last()
                .map_or(Pos::new(1, 1), |e| Pos::new(e.line, e.column));
            let more = self.reported - self.errors.len();
            self.errors.push(PolicyError {
                file: self.file.to_string(),
                line: last.line,
                column: last.column,
                path: String::new(),
                message: format!(
                    "{more} more errors not shown (at most {MAX_ERRORS} are reported)"
                ),
            });
        }
        self.errors
    }
}

// Paths are built for every rule (its origin) and for errors, in one
// allocation of the right size (`format!` guesses and grows: several times
// the cost on a large policy).
fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_string();
    }
    let mut s = String::with_capacity(path.len() + 1 + key.len());
    s.push_str(path);
    s.push('.');
    s.push_str(key);
    s
}

fn index(path: &str, i: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(path.len() + 8);
    s.push_str(path);
    let _ = write!(s, "[{i}]"); // writing to a String cannot fail
    s
}

/// The fields a mapping may have.
struct Schema {
    /// "an ingress rule", for messages.
    what: &'static str,
    known: &'static [&'static str],
    /// Fields of the Cilium schema that hostfwd rejects, with the reason.
    unsupported: &'static [(&'static str, &'static str)],
    /// Fields accepted and ignored (Kubernetes bookkeeping).
    ignored: &'static [&'static str],
    /// Fields that belong elsewhere, with a hint.
    misplaced: &'static [(&'static str, &'static str)],
}

/// A mapping whose keys were checked against a [`Schema`].
struct Obj<'n> {
    path: String,
    pos: Pos,
    fields: Vec<(&'n str, Pos, &'n Node)>,
    /// How many fields were rejected (unsupported, unknown, misplaced).
    rejected: usize,
}

impl<'n> Obj<'n> {
    /// The value of `key`, unless absent or null (Kubernetes treats an
    /// explicit null as absent).
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.fields
            .iter()
            .find(|(k, _, v)| *k == key && !v.is_null())
            .map(|(_, _, v)| *v)
    }

    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.fields
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, p, _)| *p)
    }

    fn path(&self, key: &str) -> String {
        field(&self.path, key)
    }
}

/// Mappings with more keys than this check duplicates with a hash map.
const SEEN_LINEAR: usize = 16;

fn object<'n>(cx: &mut Cx, node: &'n Node, path: &str, schema: &Schema) -> Option<Obj<'n>> {
    let Value::Map(entries) = &node.value else {
        cx.error(
            node.pos,
            path,
            format!(
                "expected {} (a mapping), found {}",
                schema.what,
                node.describe()
            ),
        );
        return None;
    };
    let mut obj = Obj {
        path: path.to_string(),
        pos: node.pos,
        fields: Vec::new(),
        rejected: 0,
    };
    // Every key seen, for duplicates: a short list searched linearly (the
    // usual mapping has a handful of keys), a hash map past that.
    let mut seen: Vec<(&str, Pos)> = Vec::new();
    let mut seen_many: HashMap<&str, Pos> = HashMap::new();
    for (k, v) in entries {
        let Value::Scalar { text: key, .. } = &k.value else {
            cx.error(
                k.pos,
                path,
                format!("a key must be a field name, found {}", k.describe()),
            );
            continue;
        };
        let key = key.as_str();
        let first = if seen_many.is_empty() {
            seen.iter().find(|(s, _)| *s == key).map(|(_, p)| *p)
        } else {
            seen_many.get(key).copied()
        };
        if let Some(first) = first {
            cx.error(
                k.pos,
                &field(path, key),
                format!("duplicate field (first at {first})"),
            );
            continue;
        }
        if seen.len() < SEEN_LINEAR {
            seen.push((key, k.pos));
        } else {
            if seen_many.is_empty() {
                seen_many.extend(seen.iter().copied());
            }
            seen_many.insert(key, k.pos);
        }
        if let Some((_, why)) = schema.unsupported.iter().find(|(u, _)| *u == key) {
            obj.rejected += 1;
            cx.error(k.pos, &field(path, key), *why);
        } else if let Some((_, hint)) = schema.misplaced.iter().find(|(m, _)| *m == key) {
            obj.rejected += 1;
            cx.error(
                k.pos,
                &field(path, key),
                format!("not a field of {}: {hint}", schema.what),
            );
        } else if schema.known.contains(&key) {
            obj.fields.push((key, k.pos, v));
        } else if !schema.ignored.contains(&key) {
            obj.rejected += 1;
            let msg = match suggest(key, schema) {
                Some(s) => format!("unknown field in {}; did you mean {s:?}?", schema.what),
                None => format!(
                    "unknown field in {} (known fields: {})",
                    schema.what,
                    schema.known.join(", ")
                ),
            };
            cx.error(k.pos, &field(path, key), msg);
        }
    }
    Some(obj)
}

/// A known field the unknown `key` is probably a misspelling of.
fn suggest(key: &str, schema: &Schema) -> Option<&'static str> {
    let candidates = schema
        .known
        .iter()
        .copied()
        .chain(schema.unsupported.iter().map(|(k, _)| *k));
    let lower = key.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for c in candidates {
        let cl = c.to_ascii_lowercase();
        let d = if cl == lower {
            0
        } else if lower.len() >= 4 && (cl.starts_with(&lower) || lower.starts_with(&cl)) {
            1
        } else {
            edit_distance(&lower, &cl)
        };
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn string(cx: &mut Cx, node: &Node, path: &str) -> Option<String> {
    match node.typed() {
        Some(Typed::Str(s)) => Some(s.to_string()),
        Some(Typed::Int(_) | Typed::Bool(_) | Typed::Float) => {
            let Value::Scalar { text, .. } = &node.value else {
                unreachable!("typed scalar")
            };
            cx.error(
                node.pos,
                path,
                format!(
                    "expected a string, found {} (quote it: \"{text}\")",
                    node.describe()
                ),
            );
            None
        }
        _ => {
            cx.error(
                node.pos,
                path,
                format!("expected a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// [`string`] with the path built only for an error (list items: most are
/// fine, and a policy can list thousands).
fn string_at(cx: &mut Cx, node: &Node, path: impl FnOnce() -> String) -> Option<String> {
    match node.typed() {
        Some(Typed::Str(s)) => Some(s.to_string()),
        _ => string(cx, node, &path()),
    }
}

fn list<'n>(cx: &mut Cx, node: &'n Node, path: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            cx.error(
                node.pos,
                path,
                format!("expected a list, found {}", node.describe()),
            );
            None
        }
    }
}

fn boolean(cx: &mut Cx, node: &Node, path: &str) -> Option<bool> {
    match node.typed() {
        Some(Typed::Bool(b)) => Some(b),
        _ => {
            cx.error(
                node.pos,
                path,
                format!("expected true or false, found {}", node.describe()),
            );
            None
        }
    }
}

fn string_map(cx: &mut Cx, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &node.value else {
        cx.error(
            node.pos,
            path,
            format!("expected a mapping of strings, found {}", node.describe()),
        );
        return out;
    };
    for (k, v) in entries {
        let Value::Scalar { text: key, .. } = &k.value else {
            cx.error(
                k.pos,
                path,
                format!("a key must be a string, found {}", k.describe()),
            );
            continue;
        };
        let vpath = field(path, key);
        if out.contains_key(key) {
            cx.error(k.pos, &vpath, "duplicate field");
            continue;
        }
        if let Some(s) = string(cx, v, &vpath) {
            out.insert(key.clone(), s);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Field tables
// ---------------------------------------------------------------------------

const WHY_L7: &str = "L7 rules cannot be enforced by a host firewall (hostfwd enforces L3/L4 only)";
const WHY_ENDPOINTS: &str = "pod selectors cannot be enforced: hostfwd has no pod identities (select peers with fromEntities/toEntities or CIDRs)";
const WHY_REQUIRES: &str = "label requirements on peers cannot be enforced: hostfwd has no peer labels (hostfwd enforces L3/L4 only)";
const WHY_AUTH: &str = "mutual authentication cannot be enforced: hostfwd has no authentication layer (hostfwd enforces L3/L4 only)";
const WHY_GROUPS: &str = "cloud-provider groups cannot be enforced: hostfwd does not query cloud APIs (list the addresses with CIDRs)";
const WHY_NODES: &str = "node selectors on peers cannot be enforced: hostfwd does not know other nodes' labels (use the remote-node entity or CIDRs)";
const WHY_FQDNS: &str = "DNS names cannot be enforced: hostfwd has no DNS proxy to learn their addresses (use toCIDR/toCIDRSet)";
const WHY_SERVICES: &str = "Kubernetes services cannot be enforced: hostfwd does not watch services (use toCIDR/toCIDRSet)";
const WHY_LISTENER: &str =
    "Envoy listeners cannot be enforced: hostfwd has no L7 proxy (hostfwd enforces L3/L4 only)";
const WHY_SNI: &str = "TLS server names cannot be enforced: hostfwd does not inspect TLS (hostfwd enforces L3/L4 only)";
const WHY_TLS: &str =
    "TLS interception cannot be enforced: hostfwd has no L7 proxy (hostfwd enforces L3/L4 only)";
const WHY_CIDR_GROUP: &str = "CiliumCIDRGroup references cannot be resolved: hostfwd has no CIDR groups (write the CIDRs in cidr/except)";
const WHY_LOG: &str =
    "policy logging is not supported by hostfwd (drops are reported with their rule id)";

const DOCUMENT: Schema = Schema {
    what: "a policy document",
    known: &["apiVersion", "kind", "metadata", "spec", "specs"],
    unsupported: &[],
    ignored: &["status"],
    misplaced: &[],
};

const METADATA: Schema = Schema {
    what: "metadata",
    known: &["name", "namespace", "labels", "annotations"],
    unsupported: &[],
    ignored: &[
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "finalizers",
        "ownerReferences",
        "generateName",
        "selfLink",
    ],
    misplaced: &[],
};

const SPEC: Schema = Schema {
    what: "a policy spec",
    known: &[
        "description",
        "nodeSelector",
        "endpointSelector",
        "ingress",
        "ingressDeny",
        "egress",
        "egressDeny",
        "enableDefaultDeny",
        "labels",
    ],
    unsupported: &[("log", WHY_LOG)],
    ignored: &[],
    misplaced: &[],
};

const SELECTOR: Schema = Schema {
    what: "a label selector",
    known: &["matchLabels", "matchExpressions"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

const REQUIREMENT: Schema = Schema {
    what: "a label selector requirement",
    known: &["key", "operator", "values"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

const DEFAULT_DENY: Schema = Schema {
    what: "enableDefaultDeny",
    known: &["ingress", "egress"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

const RULE_LABEL: Schema = Schema {
    what: "a rule label",
    known: &["key", "value", "source"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

const INGRESS: Schema = Schema {
    what: "an ingress rule",
    known: &[
        "fromEntities",
        "fromCIDR",
        "fromCIDRSet",
        "toPorts",
        "icmps",
    ],
    unsupported: &[
        ("fromEndpoints", WHY_ENDPOINTS),
        ("fromRequires", WHY_REQUIRES),
        ("fromGroups", WHY_GROUPS),
        ("fromNodes", WHY_NODES),
        ("authentication", WHY_AUTH),
    ],
    ignored: &[],
    misplaced: &[
        ("toEntities", "ingress rules select peers with fromEntities"),
        ("toCIDR", "ingress rules select peers with fromCIDR"),
        ("toCIDRSet", "ingress rules select peers with fromCIDRSet"),
        (
            "toEndpoints",
            "it belongs in egress rules (and pod selectors cannot be enforced)",
        ),
        (
            "toFQDNs",
            "it belongs in egress rules (and DNS names cannot be enforced)",
        ),
        (
            "toServices",
            "it belongs in egress rules (and services cannot be enforced)",
        ),
    ],
};

const EGRESS: Schema = Schema {
    what: "an egress rule",
    known: &["toEntities", "toCIDR", "toCIDRSet", "toPorts", "icmps"],
    unsupported: &[
        ("toEndpoints", WHY_ENDPOINTS),
        ("toRequires", WHY_REQUIRES),
        ("toGroups", WHY_GROUPS),
        ("toNodes", WHY_NODES),
        ("toFQDNs", WHY_FQDNS),
        ("toServices", WHY_SERVICES),
        ("authentication", WHY_AUTH),
    ],
    ignored: &[],
    misplaced: &[
        ("fromEntities", "egress rules select peers with toEntities"),
        ("fromCIDR", "egress rules select peers with toCIDR"),
        ("fromCIDRSet", "egress rules select peers with toCIDRSet"),
        (
            "fromEndpoints",
            "it belongs in ingress rules (and pod selectors cannot be enforced)",
        ),
    ],
};

const CIDR_RULE: Schema = Schema {
    what: "a CIDR set",
    known: &["cidr", "except"],
    unsupported: &[
        ("cidrGroupRef", WHY_CIDR_GROUP),
        ("cidrGroupSelector", WHY_CIDR_GROUP),
    ],
    ignored: &[],
    misplaced: &[],
};

const PORT_RULE: Schema = Schema {
    what: "a toPorts entry",
    known: &["ports"],
    unsupported: &[
        ("rules", WHY_L7),
        ("listener", WHY_LISTENER),
        ("serverNames", WHY_SNI),
        ("originatingTLS", WHY_TLS),
        ("terminatingTLS", WHY_TLS),
    ],
    ignored: &[],
    misplaced: &[],
};

const PORT: Schema = Schema {
    what: "a port",
    known: &["port", "endPort", "protocol"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

const ICMP_RULE: Schema = Schema {
    what: "an icmps entry",
    known: &["fields"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

const ICMP_FIELD: Schema = Schema {
    what: "an ICMP field",
    known: &["type", "family"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
};

/// Cilium's ICMP type names (IANA's, in CamelCase), IPv4.
const ICMP_V4_NAMES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

/// Cilium's ICMPv6 type names.
const ICMP_V6_NAMES: &[(&str, u8)] = &[
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

/// The ICMP type number of a Cilium type name for `family`.
pub fn icmp_type_by_name(family: IcmpFamily, name: &str) -> Option<u8> {
    let table = match family {
        IcmpFamily::V4 => ICMP_V4_NAMES,
        IcmpFamily::V6 => ICMP_V6_NAMES,
    };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

// ---------------------------------------------------------------------------
// Parsing documents
// ---------------------------------------------------------------------------

/// Parses one policy file (any number of `---`-separated documents). `file`
/// is how errors name it. All errors of the file are returned; a file with
/// any error yields no policy. Duplicate policy names within the file are
/// errors too (see [`load_sources`] for several files).
pub fn parse_policies(file: &str, text: &str) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let mut cx = Cx::new(file);
    let docs = match parse_yaml(text) {
        Ok(docs) => docs,
        Err((pos, message)) => {
            cx.error(pos, "", message);
            return Err(cx.errors);
        }
    };
    let mut policies = Vec::new();
    for doc in &docs {
        if let Some(p) = cx.clean(|cx| parse_document(cx, doc)) {
            policies.push(p);
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

/// Parses several files (`(name, text)` pairs) and checks that policy names
/// are unique across them. Returns every error of every file.
pub fn load_sources<'a, I>(sources: I) -> Result<Vec<Policy>, Vec<PolicyError>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in sources {
        match parse_policies(file, text) {
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

fn duplicate_errors(
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

fn required<'n>(cx: &mut Cx, obj: &Obj<'n>, key: &str, what: &str) -> Option<&'n Node> {
    let v = obj.get(key);
    if v.is_none() {
        let pos = obj.key_pos(key).unwrap_or(obj.pos);
        cx.error(pos, &obj.path(key), format!("missing: {what}"));
    }
    v
}

fn parse_document(cx: &mut Cx, doc: &Node) -> Option<Policy> {
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
    })
}

/// A Kubernetes object name: an RFC 1123 subdomain.
fn check_name(s: &str) -> Result<(), String> {
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

fn parse_spec(cx: &mut Cx, node: &Node, path: String) -> Option<PolicySpec> {
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

/// `{}`, or only empty `matchLabels`/`matchExpressions`.
fn selector_is_empty(node: &Node) -> bool {
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
fn label_key(key: &str) -> &str {
    key.strip_prefix("k8s:")
        .or_else(|| key.strip_prefix("any:"))
        .unwrap_or(key)
}

fn parse_selector(cx: &mut Cx, node: &Node, path: &str) -> NodeSelector {
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

fn selector_is_empty_list(node: &Node) -> bool {
    matches!(&node.value, Value::Seq(s) if s.is_empty())
}

fn parse_rule(
    cx: &mut Cx,
    node: &Node,
    path: String,
    direction: Direction,
    action: Action,
) -> Option<PolicyRule> {
    let (schema, entities_key, cidr_key, cidr_set_key) = match direction {
        Direction::Ingress => (&INGRESS, "fromEntities", "fromCIDR", "fromCIDRSet"),
        Direction::Egress => (&EGRESS, "toEntities", "toCIDR", "toCIDRSet"),
    };
    cx.clean(|cx| {
        let obj = object(cx, node, &path, schema)?;
        let mut peers: Vec<Peer> = Vec::new();
        let has_peer_field = [entities_key, cidr_key, cidr_set_key]
            .iter()
            .any(|k| obj.get(k).is_some());

        if let Some((items, lpath)) = peer_list(cx, &obj, entities_key) {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = string_at(cx, item, || index(&lpath, i)) {
                    match Entity::parse(&s) {
                        Ok(e) => peers.push(Peer::Entity(e)),
                        Err(msg) => cx.error(item.pos, &index(&lpath, i), msg),
                    }
                }
            }
        }
        if let Some((items, lpath)) = peer_list(cx, &obj, cidr_key) {
            for (i, item) in items.iter().enumerate() {
                if !cx.count_cidr(item.pos, &index(&lpath, i)) {
                    break;
                }
                if let Some(s) = string_at(cx, item, || index(&lpath, i)) {
                    match parse_cidr(&s, true) {
                        Ok(net) => peers.push(Peer::Cidr(CidrSet::cidr(net))),
                        Err(msg) => cx.error(item.pos, &index(&lpath, i), msg),
                    }
                }
            }
        }
        if let Some((items, lpath)) = peer_list(cx, &obj, cidr_set_key) {
            for (i, item) in items.iter().enumerate() {
                peers.extend(parse_cidr_set(cx, item, &index(&lpath, i)));
            }
        }

        let mut ports: Vec<PortMatch> = Vec::new();
        let to_ports = obj.get("toPorts");
        let icmps = obj.get("icmps");
        if let Some(tp) = to_ports {
            let tpath = obj.path("toPorts");
            for (i, item) in list(cx, tp, &tpath).unwrap_or_default().iter().enumerate() {
                ports.extend(parse_port_rule(cx, item, &index(&tpath, i)));
            }
        }
        if let Some(ic) = icmps {
            let ipath = obj.path("icmps");
            let items = list(cx, ic, &ipath).unwrap_or_default();
            let non_empty = |n: Option<&Node>| {
                n.is_some_and(|n| matches!(&n.value, Value::Seq(s) if !s.is_empty()))
            };
            if non_empty(to_ports) && non_empty(Some(ic)) {
                cx.error(
                    obj.key_pos("icmps").unwrap_or(ic.pos),
                    &ipath,
                    "icmps and toPorts cannot be combined in one rule (Cilium rejects it): write them as two rules",
                );
            }
            for (i, item) in items.iter().enumerate() {
                ports.extend(parse_icmp_rule(cx, item, &index(&ipath, i)));
            }
        }
        dedup_in_order(&mut ports);

        // No L3 selector but ports: every peer (Cilium's wildcard selector).
        if !has_peer_field && !ports.is_empty() {
            peers.push(Peer::Entity(Entity::All));
        }
        dedup_in_order(&mut peers);

        Some(PolicyRule {
            path: path.clone(),
            pos: node.pos,
            direction,
            action,
            peers,
            ports,
        })
    })
}

/// Drops repeated elements, keeping the first of each: by linear search in
/// the usual short list, with a hash set in a long one.
fn dedup_in_order<T: Clone + Eq + std::hash::Hash>(v: &mut Vec<T>) {
    if v.len() <= SEEN_LINEAR {
        let mut i = 0;
        while i < v.len() {
            if v[..i].contains(&v[i]) {
                v.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(v.len());
        v.retain(|p| seen.insert(p.clone()));
    }
}

/// A peer list field, unless absent or invalid. Present and empty is
/// ambiguous in Cilium (an empty entity list selects nothing, an empty CIDR
/// list is as if absent), so it is rejected.
fn peer_list<'n>(cx: &mut Cx, obj: &Obj<'n>, key: &str) -> Option<(&'n [Node], String)> {
    let v = obj.get(key)?;
    let lpath = obj.path(key);
    let items = list(cx, v, &lpath)?;
    if items.is_empty() {
        cx.error(
            obj.key_pos(key).unwrap_or(v.pos),
            &lpath,
            "an empty peer list is ambiguous (Cilium reads an empty entity list as \"nothing\" but an empty CIDR list as \"absent\"): remove the field or list peers",
        );
        return None;
    }
    Some((items, lpath))
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or, if `bare_ok`, a bare address
/// (a /32 or /128). The prefix is kept as written (the model truncates).
fn parse_cidr(s: &str, bare_ok: bool) -> Result<IpNet, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid CIDR {s:?}: {addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None if bare_ok => max,
        None => {
            return Err(format!(
                "invalid CIDR {s:?}: a prefix length is required here (e.g. {s}/{max})"
            ))
        }
        Some(l) => {
            let n: u8 = l
                .parse()
                .ok()
                .filter(|_| l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("invalid CIDR {s:?}: prefix length {l:?} is not a number")
                })?;
            if n > max {
                let fam = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(format!(
                    "invalid CIDR {s:?}: prefix length {n} is too long for {fam} (at most {max})"
                ));
            }
            n
        }
    };
    IpNet::new(ip, len).map_err(|e| format!("invalid CIDR {s:?}: {e}"))
}

fn parse_cidr_set(cx: &mut Cx, node: &Node, path: &str) -> Option<Peer> {
    cx.clean(|cx| {
        let obj = object(cx, node, path, &CIDR_RULE)?;
        let c = required(cx, &obj, "cidr", "a CIDR set needs a cidr")?;
        let cpath = obj.path("cidr");
        if !cx.count_cidr(c.pos, &cpath) {
            return None;
        }
        let cidr = string(cx, c, &cpath).and_then(|s| match parse_cidr(&s, false) {
            Ok(n) => Some(n),
            Err(m) => {
                cx.error(c.pos, &cpath, m);
                None
            }
        });
        let mut except = Vec::new();
        if let Some(e) = obj.get("except") {
            let epath = obj.path("except");
            for (i, item) in list(cx, e, &epath).unwrap_or_default().iter().enumerate() {
                let ipath = || index(&epath, i);
                if !cx.count_cidr(item.pos, &ipath()) {
                    break;
                }
                let Some(s) = string_at(cx, item, ipath) else {
                    continue;
                };
                let ex = match parse_cidr(&s, false) {
                    Ok(n) => n,
                    Err(m) => {
                        cx.error(item.pos, &ipath(), m);
                        continue;
                    }
                };
                if let Some(cidr) = cidr {
                    let same_family = matches!(
                        (cidr, ex),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    );
                    if !same_family {
                        cx.error(
                            item.pos,
                            &ipath(),
                            format!("{s} is not of the same address family as cidr {cidr}"),
                        );
                        continue;
                    }
                    if !cidr.trunc().contains(&ex.trunc()) {
                        cx.error(item.pos, &ipath(), format!("{s} is not inside cidr {cidr}"));
                        continue;
                    }
                }
                except.push(ex);
            }
        }
        Some(Peer::Cidr(CidrSet::new(cidr?, except)))
    })
}

fn parse_port_rule(cx: &mut Cx, node: &Node, path: &str) -> Vec<PortMatch> {
    let mut out = Vec::new();
    let Some(obj) = object(cx, node, path, &PORT_RULE) else {
        return out;
    };
    let items = match obj.get("ports") {
        Some(p) => list(cx, p, &obj.path("ports")).unwrap_or_default(),
        None => &[],
    };
    if items.is_empty() {
        // An entry with only rejected fields (e.g. L7 `rules`) has its error.
        if obj.rejected == 0 {
            cx.error(
                obj.key_pos("ports").unwrap_or(obj.pos),
                &obj.path("ports"),
                "no ports: Cilium matches nothing for a toPorts entry without ports, so the whole rule would allow nothing (use port: \"0\" for every port)",
            );
        }
    }
    let ppath = obj.path("ports");
    for (i, item) in items.iter().enumerate() {
        out.extend(parse_port(cx, item, &index(&ppath, i)));
    }
    out
}

fn parse_port(cx: &mut Cx, node: &Node, path: &str) -> Option<PortMatch> {
    cx.clean(|cx| {
        let obj = object(cx, node, path, &PORT)?;
        let port = required(cx, &obj, "port", "a port needs port (\"0\" for every port)")
            .and_then(|p| port_number(cx, p, || obj.path("port")));
        let epath = || obj.path("endPort");
        let end_port = obj.get("endPort").and_then(|e| {
            match e.typed() {
                Some(Typed::Int(n)) if (0..=65535).contains(&n) => Some(n as u16),
                Some(Typed::Int(n)) => {
                    cx.error(e.pos, &epath(), format!("endPort {n} is out of range (0-65535)"));
                    None
                }
                _ => {
                    cx.error(
                        e.pos,
                        &epath(),
                        format!("expected a port number, found {}", e.describe()),
                    );
                    None
                }
            }
        });
        let proto = match obj.get("protocol") {
            None => Some(L4Proto::Any),
            Some(p) => {
                let ppath = || obj.path("protocol");
                string_at(cx, p, ppath).and_then(|s| match s.to_ascii_uppercase().as_str() {
                    "TCP" => Some(L4Proto::Tcp),
                    "UDP" => Some(L4Proto::Udp),
                    "SCTP" => Some(L4Proto::Sctp),
                    "ANY" => Some(L4Proto::Any),
                    "ICMP" | "ICMPV6" => {
                        cx.error(
                            p.pos,
                            &ppath(),
                            format!("protocol {s:?} is not matched with toPorts: use icmps (with family IPv4 or IPv6)"),
                        );
                        None
                    }
                    _ => {
                        cx.error(
                            p.pos,
                            &ppath(),
                            format!("unknown protocol {s:?} (expected TCP, UDP, SCTP or ANY)"),
                        );
                        None
                    }
                })
            }
        };
        let (port, proto) = (port?, proto?);
        if let Some(end) = end_port {
            let epos = obj.get("endPort").map_or(obj.pos, |e| e.pos);
            if port == 0 {
                cx.error(
                    epos,
                    &epath(),
                    "endPort needs a non-zero port (port 0 already means every port)",
                );
                return None;
            }
            if end < port {
                cx.error(epos, &epath(), format!("endPort {end} is below port {port}"));
                return None;
            }
        }
        Some(PortMatch::l4(proto, port, end_port))
    })
}

fn port_number(cx: &mut Cx, node: &Node, path: impl FnOnce() -> String) -> Option<u16> {
    let n = match node.typed() {
        Some(Typed::Int(n)) => n,
        Some(Typed::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i128>().unwrap_or(i128::MAX)
        }
        Some(Typed::Str(s)) if s.bytes().any(|b| b.is_ascii_alphabetic()) => {
            cx.error(
                node.pos,
                &path(),
                format!("named port {s:?} cannot be enforced: hostfwd has no pods whose ports it could name (use the port number)"),
            );
            return None;
        }
        _ => {
            cx.error(
                node.pos,
                &path(),
                format!("expected a port number, found {}", node.describe()),
            );
            return None;
        }
    };
    match u16::try_from(n) {
        Ok(p) => Some(p),
        Err(_) => {
            cx.error(
                node.pos,
                &path(),
                format!("port {n} is out of range (0-65535)"),
            );
            None
        }
    }
}

fn parse_icmp_rule(cx: &mut Cx, node: &Node, path: &str) -> Vec<PortMatch> {
    let mut out = Vec::new();
    let Some(obj) = object(cx, node, path, &ICMP_RULE) else {
        return out;
    };
    let items = match obj.get("fields") {
        Some(f) => list(cx, f, &obj.path("fields")).unwrap_or_default(),
        None => &[],
    };
    if items.is_empty() {
        cx.error(
            obj.key_pos("fields").unwrap_or(obj.pos),
            &obj.path("fields"),
            "no fields: Cilium matches nothing for an icmps entry without fields, so the whole rule would allow nothing",
        );
    }
    let fpath = obj.path("fields");
    for (i, item) in items.iter().enumerate() {
        out.extend(parse_icmp_field(cx, item, &index(&fpath, i)));
    }
    out
}

fn parse_icmp_field(cx: &mut Cx, node: &Node, path: &str) -> Option<PortMatch> {
    cx.clean(|cx| {
        let obj = object(cx, node, path, &ICMP_FIELD)?;
        let family = match obj.get("family") {
            None => Some(IcmpFamily::V4),
            Some(f) => {
                let fpath = obj.path("family");
                string(cx, f, &fpath).and_then(|s| match s.as_str() {
                    "IPv4" => Some(IcmpFamily::V4),
                    "IPv6" => Some(IcmpFamily::V6),
                    _ => {
                        cx.error(
                            f.pos,
                            &fpath,
                            format!("unknown family {s:?} (expected IPv4 or IPv6)"),
                        );
                        None
                    }
                })
            }
        };
        let t = required(cx, &obj, "type", "an ICMP field needs a type (number or name)")?;
        let tpath = obj.path("type");
        let family = family?;
        let fam_name = match family {
            IcmpFamily::V4 => "IPv4",
            IcmpFamily::V6 => "IPv6",
        };
        let icmp_type = match t.typed() {
            Some(Typed::Int(n)) => u8::try_from(n).map_err(|_| format!("ICMP type {n} is out of range (0-255)")),
            Some(Typed::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse::<u8>()
                .map_err(|_| format!("ICMP type {s} is out of range (0-255)")),
            Some(Typed::Str(s)) => icmp_type_by_name(family, s).ok_or_else(|| {
                let other = match family {
                    IcmpFamily::V4 => IcmpFamily::V6,
                    IcmpFamily::V6 => IcmpFamily::V4,
                };
                let known = match family {
                    IcmpFamily::V4 => ICMP_V4_NAMES,
                    IcmpFamily::V6 => ICMP_V6_NAMES,
                };
                if icmp_type_by_name(other, s).is_some() {
                    let other_name = if fam_name == "IPv4" { "IPv6" } else { "IPv4" };
                    format!("ICMP type {s:?} is not an {fam_name} type name (it is one of {other_name}: set family: {other_name})")
                } else {
                    format!(
                        "unknown {fam_name} ICMP type name {s:?} (known: {})",
                        known.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    )
                }
            }),
            _ => Err(format!(
                "expected an ICMP type (0-255 or a name such as EchoRequest), found {}",
                t.describe()
            )),
        };
        match icmp_type {
            Ok(icmp_type) => Some(PortMatch::Icmp { family, icmp_type }),
            Err(m) => {
                cx.error(t.pos, &tpath, m);
                None
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Rule ids, node selection and the model rule set
// ---------------------------------------------------------------------------

/// The rule id of the `rule_ordinal`-th rule (1-based) of the
/// `policy_ordinal`-th policy (1-based, by name): `policy << 16 | rule`.
pub fn rule_id(policy_ordinal: u16, rule_ordinal: u16) -> u32 {
    (u32::from(policy_ordinal) << 16) | u32::from(rule_ordinal)
}

/// The inverse of [`rule_id`]: (policy ordinal, rule ordinal).
pub fn split_rule_id(id: u32) -> (u16, u16) {
    ((id >> 16) as u16, id as u16)
}

/// Where a rule id comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleOrigin {
    pub id: u32,
    /// [`Policy::key`].
    pub policy: String,
    /// `spec.ingress[1]`.
    pub path: String,
    pub file: String,
    pub pos: Pos,
    /// Whether the rule is in the rule set (its spec selects this node).
    pub active: bool,
}

impl fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {:#010x}: policy {} {} ({}:{})",
            self.id, self.policy, self.path, self.file, self.pos
        )
    }
}

/// One spec of a policy on this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecStatus {
    /// `spec` or `specs[N]`.
    pub path: String,
    pub description: String,
    pub active: bool,
    /// Why it is active or not (see [`NodeSelector::select`]).
    pub reason: String,
    /// Ids of its rules (in the rule set only if active).
    pub rule_ids: Vec<u32>,
    /// Remarks on entity resolution, e.g. `spec.ingress[0]: entity
    /// remote-node resolves to no addresses (…)`.
    pub notes: Vec<String>,
}

/// One policy on this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStatus {
    /// [`Policy::key`].
    pub name: String,
    pub kind: PolicyKind,
    pub file: String,
    pub pos: Pos,
    /// 1-based, the upper half of its rule ids; 0 if it got none.
    pub ordinal: u32,
    pub specs: Vec<SpecStatus>,
}

impl PolicyStatus {
    /// Active if any of its specs is.
    pub fn active(&self) -> bool {
        self.specs.iter().any(|s| s.active)
    }

    /// `active: <reason>` / `inactive: <reason>`, spec by spec when there
    /// are several.
    pub fn summary(&self) -> String {
        let state = if self.active() { "active" } else { "inactive" };
        match self.specs.as_slice() {
            [] => format!("{state}: no spec"),
            [one] => format!("{state}: {}", one.reason),
            many => {
                let parts: Vec<String> = many
                    .iter()
                    .map(|s| {
                        let st = if s.active { "active" } else { "inactive" };
                        format!("{} {st}: {}", s.path, s.reason)
                    })
                    .collect();
                format!("{state} ({})", parts.join("; "))
            }
        }
    }
}

/// What [`to_rule_set`] did: every policy with its state and reason, and the
/// origin of every rule id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyReport {
    /// In ordinal (name) order.
    pub policies: Vec<PolicyStatus>,
    /// Every rule of every policy, active or not.
    pub origins: BTreeMap<u32, RuleOrigin>,
}

impl PolicyReport {
    /// Where a rule id (e.g. from a drop event) comes from.
    pub fn rule_origin(&self, id: u32) -> Option<&RuleOrigin> {
        self.origins.get(&id)
    }

    pub fn policy(&self, name: &str) -> Option<&PolicyStatus> {
        self.policies.iter().find(|p| p.name == name)
    }
}

/// The policies in ordinal order: by name, then file and position (only
/// relevant for duplicates, which [`load_sources`] rejects).
fn ordered(policies: &[Policy]) -> Vec<&Policy> {
    let mut v: Vec<&Policy> = policies.iter().collect();
    v.sort_by(|a, b| (a.key(), &a.file, a.pos).cmp(&(b.key(), &b.file, b.pos)));
    v
}

/// The origin of every rule id of `policies` (independent of the node: ids
/// do not depend on which specs are active). `active` is left false.
pub fn rule_origins(policies: &[Policy]) -> BTreeMap<u32, RuleOrigin> {
    let mut out = BTreeMap::new();
    for (pi, p) in ordered(policies).into_iter().enumerate().take(MAX_POLICIES) {
        for (ri, (_, r)) in p.rules().enumerate().take(MAX_RULES_PER_POLICY) {
            let id = rule_id((pi + 1) as u16, (ri + 1) as u16);
            out.insert(
                id,
                RuleOrigin {
                    id,
                    policy: p.key(),
                    path: r.path.clone(),
                    file: p.file.clone(),
                    pos: r.pos,
                    active: false,
                },
            );
        }
    }
    out
}

/// Resolves a policy rule's peers for this node.
fn resolve_rule(r: &PolicyRule, id: u32, ctx: &EntityContext) -> (Rule, Vec<String>) {
    let mut peers: Vec<CidrSet> = Vec::new();
    let mut notes = Vec::new();
    for p in &r.peers {
        match p {
            Peer::Cidr(c) => peers.push(c.clone()),
            Peer::Entity(e) => {
                peers.extend(ctx.resolve(*e));
                if let Some(c) = ctx.caveat(*e) {
                    notes.push(format!("{}: {c}", r.path));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(peers.len());
    let unique: Vec<CidrSet> = peers
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect();
    (
        Rule {
            id,
            direction: r.direction,
            action: r.action,
            peers: unique,
            ports: r.ports.clone(),
        },
        notes,
    )
}

/// The model rule set of the policies for a node with `labels`, entities
/// resolved with `ctx`, and the report saying which policy is active and why
/// and where each rule id comes from. Rule ids are described in the module
/// docs. The result always validates (the parser checked what the model
/// would reject).
pub fn to_rule_set(
    policies: &[Policy],
    ctx: &EntityContext,
    labels: &NodeLabels,
) -> (RuleSet, PolicyReport) {
    let mut rules = Vec::new();
    let mut report = PolicyReport::default();
    for (pi, p) in ordered(policies).into_iter().enumerate() {
        let mut status = PolicyStatus {
            name: p.key(),
            kind: p.kind,
            file: p.file.clone(),
            pos: p.pos,
            ordinal: 0,
            specs: Vec::new(),
        };
        let total: usize = p.specs.iter().map(|s| s.rules.len()).sum();
        let over = if pi >= MAX_POLICIES {
            Some(format!("not loaded: more than {MAX_POLICIES} policies"))
        } else if total > MAX_RULES_PER_POLICY {
            Some(format!(
                "not loaded: more than {MAX_RULES_PER_POLICY} rules"
            ))
        } else {
            None
        };
        if let Some(reason) = over {
            status.specs = p
                .specs
                .iter()
                .map(|s| SpecStatus {
                    path: s.path.clone(),
                    description: s.description.clone(),
                    active: false,
                    reason: reason.clone(),
                    rule_ids: Vec::new(),
                    notes: Vec::new(),
                })
                .collect();
            report.policies.push(status);
            continue;
        }
        let ordinal = (pi + 1) as u16;
        status.ordinal = u32::from(ordinal);
        let mut next_rule: u16 = 0;
        for s in &p.specs {
            let sel = s.node_selector.select(labels);
            let mut spec = SpecStatus {
                path: s.path.clone(),
                description: s.description.clone(),
                active: sel.active,
                reason: sel.reason,
                rule_ids: Vec::new(),
                notes: Vec::new(),
            };
            for r in &s.rules {
                next_rule += 1;
                let id = rule_id(ordinal, next_rule);
                spec.rule_ids.push(id);
                report.origins.insert(
                    id,
                    RuleOrigin {
                        id,
                        policy: p.key(),
                        path: r.path.clone(),
                        file: p.file.clone(),
                        pos: r.pos,
                        active: sel.active,
                    },
                );
                if sel.active {
                    let (rule, notes) = resolve_rule(r, id, ctx);
                    rules.push(rule);
                    for n in notes {
                        if !spec.notes.contains(&n) {
                            spec.notes.push(n);
                        }
                    }
                }
            }
            status.specs.push(spec);
        }
        report.policies.push(status);
    }
    (RuleSet::new(rules), report)
}

#[cfg(test)]
#[path = "cilium_limits_tests.rs"]
mod limits_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;
    use crate::image::Verdict;
    use crate::model::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    };

    // --- fixtures and helpers ------------------------------------------------

    const DEMO: &str = include_str!("../../tests/policies/demo-host-policy.yaml");
    const ENTITIES: &str = include_str!("../../tests/policies/golden-entities.yaml");
    const CIDRS: &str = include_str!("../../tests/policies/golden-cidr.yaml");
    const PORTS: &str = include_str!("../../tests/policies/golden-ports.yaml");
    const ICMP: &str = include_str!("../../tests/policies/golden-icmp.yaml");
    const SECTIONS: &str = include_str!("../../tests/policies/golden-sections.yaml");
    const SELECTORS: &str = include_str!("../../tests/policies/golden-selectors.yaml");
    const REALWORLD: &str = include_str!("../../tests/policies/realworld.yaml");
    const INVALID_MANY: &str = include_str!("../../tests/policies/invalid-many.yaml");

    fn load(file: &str, text: &str) -> Vec<Policy> {
        match parse_policies(file, text) {
            Ok(p) => p,
            Err(errors) => panic!(
                "{file} should load:\n{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    fn errors_of(text: &str) -> Vec<String> {
        parse_policies("t.yaml", text)
            .expect_err("the policy should be rejected")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A clusterwide policy whose body starts on line 7 (after
    /// `nodeSelector: {}` on line 6).
    fn doc(body: &str) -> String {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  nodeSelector: {{}}\n{body}"
        )
    }

    /// The body yields exactly this one error.
    #[track_caller]
    fn assert_error(body: &str, expected: &str) {
        assert_eq!(
            errors_of(&doc(body)),
            vec![expected.to_string()],
            "body:\n{body}"
        );
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    fn ent(e: Entity) -> Peer {
        Peer::Entity(e)
    }

    fn cidr(s: &str) -> Peer {
        Peer::Cidr(CidrSet::cidr(net(s)))
    }

    fn cset(s: &str, except: &[&str]) -> Peer {
        Peer::Cidr(CidrSet::new(
            net(s),
            except.iter().map(|e| net(e)).collect(),
        ))
    }

    fn l4(proto: L4Proto, first: u16, last: u16) -> PortMatch {
        PortMatch::L4 { proto, first, last }
    }

    fn tcp(p: u16) -> PortMatch {
        l4(L4Proto::Tcp, p, p)
    }

    fn udp(p: u16) -> PortMatch {
        l4(L4Proto::Udp, p, p)
    }

    fn icmp4(t: u8) -> PortMatch {
        PortMatch::Icmp {
            family: IcmpFamily::V4,
            icmp_type: t,
        }
    }

    fn icmp6(t: u8) -> PortMatch {
        PortMatch::Icmp {
            family: IcmpFamily::V6,
            icmp_type: t,
        }
    }

    type Shape = (String, Direction, Action, Vec<Peer>, Vec<PortMatch>);

    fn shape(
        path: &str,
        d: Direction,
        a: Action,
        peers: Vec<Peer>,
        ports: Vec<PortMatch>,
    ) -> Shape {
        (path.to_string(), d, a, peers, ports)
    }

    fn ingress(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
        shape(path, Direction::Ingress, Action::Allow, peers, ports)
    }

    fn ingress_deny(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
        shape(path, Direction::Ingress, Action::Deny, peers, ports)
    }

    fn egress(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
        shape(path, Direction::Egress, Action::Allow, peers, ports)
    }

    fn egress_deny(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
        shape(path, Direction::Egress, Action::Deny, peers, ports)
    }

    fn shapes(p: &Policy) -> Vec<Shape> {
        p.rules()
            .map(|(_, r)| {
                (
                    r.path.clone(),
                    r.direction,
                    r.action,
                    r.peers.clone(),
                    r.ports.clone(),
                )
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// cluster 10.0.0.0/8, nodes 192.168.1.0/24, this host 192.168.1.201.
    fn context() -> EntityContext {
        EntityContext {
            host_addrs: [ip("192.168.1.201"), ip("fd00:1::201")]
                .into_iter()
                .collect(),
            node_cidrs: vec![net("192.168.1.0/24")],
            cluster_cidrs: vec![net("10.0.0.0/8"), net("fd00::/8")],
        }
    }

    const ECHO: u16 = 8 << 8;

    // --- the reference policy -----------------------------------------------

    #[test]
    fn reference_policy_loads_verbatim() {
        let policies = load("policies/demo-host-policy.yaml", DEMO);
        assert_eq!(policies.len(), 1);
        let p = &policies[0];
        assert_eq!(p.kind, PolicyKind::CiliumClusterwideNetworkPolicy);
        assert_eq!(p.name, "demo-host-policy");
        assert_eq!(p.key(), "demo-host-policy");
        assert_eq!(p.pos, Pos::new(4, 9));
        assert_eq!(p.specs.len(), 1);
        let spec = &p.specs[0];
        assert_eq!(spec.path, "spec");
        assert_eq!(spec.description, "");
        assert_eq!(
            spec.node_selector,
            NodeSelector {
                match_labels: labels(&[("node-access", "ssh")]),
                match_expressions: vec![],
            }
        );
        assert_eq!(
            shapes(p),
            vec![
                ingress("spec.ingress[0]", vec![ent(Entity::Cluster)], vec![]),
                ingress("spec.ingress[1]", vec![ent(Entity::All)], vec![tcp(22)]),
                ingress("spec.ingress[2]", vec![ent(Entity::All)], vec![icmp4(8)]),
            ]
        );
        assert_eq!(spec.rules[1].pos, Pos::new(13, 5));
    }

    #[test]
    fn reference_policy_compiles_to_the_expected_verdicts() {
        let policies = load("policies/demo-host-policy.yaml", DEMO);
        let ctx = EntityContext {
            cluster_cidrs: vec![net("10.0.0.0/8")],
            ..EntityContext::default()
        };
        let (rules, report) = to_rule_set(&policies, &ctx, &labels(&[("node-access", "ssh")]));
        assert_eq!(rules.validate(), Ok(()));
        let image = compile(&rules).expect("compiles");
        let cluster = ip("10.1.2.3");
        let outside = ip("203.0.113.9");
        let ingress = Direction::Ingress;
        let id = |r: u16| rule_id(1, r);

        // Cluster → tcp/80: the L3-only `fromEntities: [cluster]` rule.
        assert_eq!(
            image.evaluate(cluster, ingress, IPPROTO_TCP, 80),
            Verdict::Allow(id(1))
        );
        // Outside the cluster → tcp/80: nothing matches, ingress is enforced.
        assert_eq!(
            image.evaluate(outside, ingress, IPPROTO_TCP, 80),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(outside, ingress, IPPROTO_UDP, 22),
            Verdict::NoMatch
        );
        // tcp/22 and ICMP echo from anywhere.
        assert_eq!(
            image.evaluate(outside, ingress, IPPROTO_TCP, 22),
            Verdict::Allow(id(2))
        );
        assert_eq!(
            image.evaluate(ip("2001:db8::1"), ingress, IPPROTO_TCP, 22),
            Verdict::Allow(id(2))
        );
        assert_eq!(
            image.evaluate(outside, ingress, IPPROTO_ICMP, ECHO),
            Verdict::Allow(id(3))
        );
        assert_eq!(
            image.evaluate(outside, ingress, IPPROTO_ICMP, 0),
            Verdict::NoMatch
        );
        // The cluster matches both; the smallest id is reported.
        assert_eq!(
            image.evaluate(cluster, ingress, IPPROTO_TCP, 22),
            Verdict::Allow(id(1))
        );
        // Egress is not enforced.
        assert!(!image.enforces(Direction::Egress));
        assert_eq!(
            image.evaluate(outside, Direction::Egress, IPPROTO_TCP, 80),
            Verdict::NotEnforced
        );
        // The model and the image agree.
        for (a, proto, port) in [
            (cluster, IPPROTO_TCP, 80),
            (outside, IPPROTO_TCP, 80),
            (outside, IPPROTO_TCP, 22),
            (outside, IPPROTO_ICMP, ECHO),
        ] {
            assert_eq!(
                image.evaluate(a, ingress, proto, port),
                rules.evaluate(a, ingress, proto, port)
            );
        }

        let status = report.policy("demo-host-policy").expect("listed");
        assert!(status.active());
        assert_eq!(
            status.summary(),
            "active: nodeSelector matches this node (node-access=ssh)"
        );
        let origin = report.rule_origin(id(2)).expect("known id");
        assert_eq!(
            (origin.policy.as_str(), origin.path.as_str()),
            ("demo-host-policy", "spec.ingress[1]")
        );
        assert_eq!(
            origin.to_string(),
            "rule 0x00010002: policy demo-host-policy spec.ingress[1] (policies/demo-host-policy.yaml:13:5)"
        );
    }

    #[test]
    fn reference_policy_is_inactive_without_the_label() {
        let policies = load("policies/demo-host-policy.yaml", DEMO);
        let ctx = context();
        for (node, reason) in [
            (
                labels(&[]),
                "nodeSelector requires node-access=ssh; this node has no label node-access",
            ),
            (
                labels(&[("node-access", "http"), ("zone", "a")]),
                "nodeSelector requires node-access=ssh; this node has node-access=http",
            ),
        ] {
            let (rules, report) = to_rule_set(&policies, &ctx, &node);
            assert!(rules.rules.is_empty());
            let image = compile(&rules).expect("compiles");
            assert_eq!(
                image.evaluate(ip("203.0.113.9"), Direction::Ingress, IPPROTO_TCP, 80),
                Verdict::NotEnforced
            );
            let status = &report.policies[0];
            assert!(!status.active());
            assert_eq!(status.specs[0].reason, reason);
            assert_eq!(status.summary(), format!("inactive: {reason}"));
            // Inactive rules keep their ids and origins.
            assert_eq!(
                status.specs[0].rule_ids,
                vec![rule_id(1, 1), rule_id(1, 2), rule_id(1, 3)]
            );
            assert!(!report.rule_origin(rule_id(1, 2)).expect("known").active);
        }
    }

    // --- golden files -------------------------------------------------------

    #[test]
    fn golden_entities() {
        let p = load("golden-entities.yaml", ENTITIES);
        assert_eq!(
            shapes(&p[0]),
            vec![
                ingress(
                    "spec.ingress[0]",
                    vec![ent(Entity::Host), ent(Entity::RemoteNode)],
                    vec![]
                ),
                ingress(
                    "spec.ingress[1]",
                    vec![
                        ent(Entity::Cluster),
                        ent(Entity::World),
                        ent(Entity::WorldIpv4),
                        ent(Entity::WorldIpv6),
                        ent(Entity::All),
                        ent(Entity::Host),
                    ],
                    vec![]
                ),
                egress("spec.egress[0]", vec![ent(Entity::World)], vec![tcp(443)]),
            ]
        );
    }

    #[test]
    fn golden_cidrs() {
        let p = load("golden-cidr.yaml", CIDRS);
        assert_eq!(
            shapes(&p[0]),
            vec![
                ingress(
                    "spec.ingress[0]",
                    vec![
                        cidr("192.0.2.0/24"),
                        cidr("198.51.100.7/32"),
                        cidr("2001:db8::/32"),
                        cidr("2001:db8:1::1/128"),
                        cidr("203.0.113.0/24"),
                    ],
                    vec![]
                ),
                ingress(
                    "spec.ingress[1]",
                    vec![
                        ent(Entity::Host),
                        cidr("172.16.0.0/12"),
                        cset("10.0.0.0/8", &["10.96.0.0/12", "10.1.2.3/32"]),
                        cidr("fd00::/8"),
                    ],
                    vec![]
                ),
                egress("spec.egress[0]", vec![cidr("0.0.0.0/0")], vec![]),
                egress(
                    "spec.egress[1]",
                    vec![cset("0.0.0.0/0", &["169.254.169.254/32"])],
                    vec![]
                ),
            ]
        );
    }

    #[test]
    fn golden_ports() {
        let p = load("golden-ports.yaml", PORTS);
        assert_eq!(
            shapes(&p[0]),
            vec![
                ingress(
                    "spec.ingress[0]",
                    vec![ent(Entity::All)],
                    vec![
                        tcp(22),
                        udp(53),
                        l4(L4Proto::Tcp, 9000, 9100),
                        l4(L4Proto::Sctp, 3868, 3868),
                        l4(L4Proto::Any, 8080, 8080),
                        PortMatch::all_ports(L4Proto::Udp),
                        l4(L4Proto::Any, 443, 443),
                    ]
                ),
                ingress(
                    "spec.ingress[1]",
                    vec![ent(Entity::Cluster)],
                    vec![PortMatch::all_ports(L4Proto::Any)]
                ),
            ]
        );
    }

    #[test]
    fn golden_icmp() {
        let p = load("golden-icmp.yaml", ICMP);
        assert_eq!(
            shapes(&p[0]),
            vec![
                ingress(
                    "spec.ingress[0]",
                    vec![ent(Entity::All)],
                    vec![
                        icmp4(8),
                        icmp4(0),
                        icmp4(3),
                        icmp6(128),
                        icmp6(135),
                        icmp6(255)
                    ]
                ),
                egress("spec.egress[0]", vec![ent(Entity::World)], vec![icmp4(11)]),
            ]
        );
    }

    #[test]
    fn golden_sections_and_default_deny() {
        let p = load("golden-sections.yaml", SECTIONS);
        assert_eq!(p.len(), 2);
        assert_eq!(
            shapes(&p[0]),
            vec![
                ingress("spec.ingress[0]", vec![], vec![]),
                ingress_deny("spec.ingressDeny[0]", vec![cidr("198.51.100.0/24")], vec![]),
                ingress_deny(
                    "spec.ingressDeny[1]",
                    vec![ent(Entity::World)],
                    vec![tcp(23)]
                ),
                egress_deny("spec.egressDeny[0]", vec![ent(Entity::All)], vec![tcp(25)]),
            ]
        );
        assert_eq!(
            shapes(&p[1]),
            vec![egress("spec.enableDefaultDeny.egress", vec![], vec![])]
        );
        assert_eq!(p[1].specs[0].rules[0].pos, Pos::new(33, 13));
    }

    #[test]
    fn golden_selectors_specs_and_metadata() {
        let p = load("golden-selectors.yaml", SELECTORS);
        assert_eq!(p.len(), 2);
        let s = &p[0];
        assert_eq!(s.labels, labels(&[("team", "infra")]));
        assert_eq!(
            s.annotations,
            labels(&[("example.com/owner", "ops"), ("note", "1")])
        );
        assert_eq!(
            s.specs.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
            ["spec", "specs[0]", "specs[1]"]
        );
        assert_eq!(s.specs[0].description, "k8s: and any: prefixes are dropped");
        assert_eq!(s.specs[1].description, "second spec");
        assert_eq!(
            s.specs[0].node_selector,
            NodeSelector {
                match_labels: labels(&[("node-role.kubernetes.io/worker", ""), ("zone", "a")]),
                match_expressions: vec![
                    LabelRequirement {
                        key: "env".into(),
                        operator: SelectorOp::In,
                        values: vec!["prod".into(), "staging".into()]
                    },
                    LabelRequirement {
                        key: "tier".into(),
                        operator: SelectorOp::NotIn,
                        values: vec!["db".into()]
                    },
                    LabelRequirement {
                        key: "gpu".into(),
                        operator: SelectorOp::Exists,
                        values: vec![]
                    },
                    LabelRequirement {
                        key: "maintenance".into(),
                        operator: SelectorOp::DoesNotExist,
                        values: vec![]
                    },
                ],
            }
        );
        assert!(s.specs[1].node_selector.is_empty());
        assert_eq!(
            s.specs[2].node_selector.match_labels,
            labels(&[("role", "edge")])
        );
        assert_eq!(
            shapes(s),
            vec![
                ingress("spec.ingress[0]", vec![ent(Entity::Cluster)], vec![]),
                egress("specs[0].egress[0]", vec![ent(Entity::All)], vec![]),
                ingress(
                    "specs[1].ingress[0]",
                    vec![ent(Entity::World)],
                    vec![tcp(80)]
                ),
            ]
        );
        let n = &p[1];
        assert_eq!(n.kind, PolicyKind::CiliumNetworkPolicy);
        assert_eq!(n.key(), "kube-system/namespaced");
        assert_eq!(
            shapes(n),
            vec![ingress("spec.ingress[0]", vec![ent(Entity::Host)], vec![])]
        );
    }

    #[test]
    fn clusterwide_policy_drops_namespace() {
        let text = doc("  ingress:\n  - fromEntities: [host]\n")
            .replace("  name: t\n", "  name: t\n  namespace: ns\n");
        assert_eq!(load("t.yaml", &text)[0].key(), "t");
    }

    #[test]
    fn yaml_features_anchors_flow_tags_and_empty_documents() {
        let text = "---\n---\n# comment only\n---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: anchors}\nspec:\n  nodeSelector: {}\n  ingress:\n  - toPorts: &ssh\n    - ports: [{port: !!str 22, protocol: TCP}]\n    fromEntities: [cluster]\n  egress:\n  - toPorts: *ssh\n...\n";
        let p = load("t.yaml", text);
        assert_eq!(
            shapes(&p[0]),
            vec![
                ingress("spec.ingress[0]", vec![ent(Entity::Cluster)], vec![tcp(22)]),
                egress("spec.egress[0]", vec![ent(Entity::All)], vec![tcp(22)]),
            ]
        );
    }

    #[test]
    fn yaml_alias_expansion_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("document too large"), "{errors:?}");
    }

    #[test]
    fn syntax_errors_on_directive_lines_are_placed_in_characters() {
        // Found by the fuzz target: saphyr counts a directive's name in
        // bytes, so the NUL (the 6th character) was reported at column 10,
        // past the end of the line.
        let e = parse_policies("t.yaml", "%\u{e9}\u{e9}\u{e9}\u{e9}\0").expect_err("NUL");
        assert_eq!((e[0].line, e[0].column), (1, 6), "{e:?}");
        let e = parse_policies(
            "t.yaml",
            "a: b\r\n...\r%\u{e9}\u{e9}\u{e9}\u{e9} p\u{e9}\u{e9} \0",
        )
        .expect_err("NUL");
        assert_eq!((e[0].line, e[0].column), (3, 11), "{e:?}");
        assert_eq!(line_text("a\rb\r\nc\nd", 3), Some("c"));
        assert_eq!(line_text("a\n", 2), Some(""));
        assert_eq!(line_text("a", 2), None);
    }

    #[test]
    fn yaml_scalar_typing() {
        let node = |s: &str| parse_yaml(&format!("v: {s}\n")).expect("yaml")[0].clone();
        let typed = |s: &str| {
            let n = node(s);
            let Value::Map(e) = &n.value else {
                panic!("map")
            };
            format!("{:?}", e[0].1.typed().expect("scalar"))
        };
        assert_eq!(typed("22"), "Int(22)");
        assert_eq!(typed("-3"), "Int(-3)");
        assert_eq!(typed("0x10"), "Int(16)");
        assert_eq!(typed("0o10"), "Int(8)");
        assert_eq!(typed("\"22\""), "Str(\"22\")");
        assert_eq!(typed("'22'"), "Str(\"22\")");
        assert_eq!(typed("!!str 22"), "Str(\"22\")");
        assert_eq!(typed("true"), "Bool(true)");
        assert_eq!(typed("~"), "Null");
        assert_eq!(typed(""), "Null");
        assert_eq!(typed("1.5"), "Float");
        assert_eq!(typed("1e3"), "Float");
        assert_eq!(typed(".inf"), "Float");
        assert_eq!(typed("22/tcp"), "Str(\"22/tcp\")");
        assert_eq!(typed("yes"), "Str(\"yes\")");
        assert_eq!(typed("1.2.3"), "Str(\"1.2.3\")");
    }

    // --- real-world shapes --------------------------------------------------

    #[test]
    fn realworld_policies_load_and_compile() {
        let policies = load("policies/realworld.yaml", REALWORLD);
        assert_eq!(
            policies.iter().map(Policy::key).collect::<Vec<_>>(),
            ["host-fw-control-plane", "host-fw-common", "host-fw-deny"]
        );
        assert_eq!(
            policies
                .iter()
                .map(|p| p.rules().count())
                .collect::<Vec<_>>(),
            [3, 6, 4]
        );
        let ctx = EntityContext {
            host_addrs: [ip("10.20.1.11")].into_iter().collect(),
            node_cidrs: vec![net("10.20.1.0/24")],
            cluster_cidrs: vec![net("10.244.0.0/16"), net("10.96.0.0/12")],
        };
        let worker = labels(&[("kubernetes.io/os", "linux")]);
        let edge = labels(&[("node-role.example.com/edge", "")]);
        let cp = labels(&[("node-role.kubernetes.io/control-plane", "")]);

        // Ids: policies by name (common=1, control-plane=2, deny=3).
        let (rules, report) = to_rule_set(&policies, &ctx, &worker);
        assert_eq!(
            report
                .policies
                .iter()
                .map(|p| (p.name.as_str(), p.ordinal, p.active()))
                .collect::<Vec<_>>(),
            [
                ("host-fw-common", 1, true),
                ("host-fw-control-plane", 2, false),
                ("host-fw-deny", 3, true)
            ]
        );
        assert_eq!(
            report.policy("host-fw-control-plane").expect("listed").summary(),
            "inactive: nodeSelector requires node-role.kubernetes.io/control-plane=\"\"; this node has no label node-role.kubernetes.io/control-plane"
        );
        assert_eq!(
            report.policy("host-fw-common").expect("listed").summary(),
            "active (specs[0] active: nodeSelector is empty: it selects every node; specs[1] inactive: nodeSelector requires label node-role.example.com/edge; this node has no label node-role.example.com/edge)"
        );
        assert_eq!(rules.rules.len(), 5 + 4);
        let image = compile(&rules).expect("compiles");
        let ing = Direction::Ingress;
        let eg = Direction::Egress;
        // ssh from the admin network, not from its excepts.
        assert_eq!(
            image.evaluate(ip("10.20.5.5"), ing, IPPROTO_TCP, 22),
            Verdict::Allow(rule_id(1, 1))
        );
        assert_eq!(
            image.evaluate(ip("10.20.99.5"), ing, IPPROTO_TCP, 22),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("2001:db8:20::5"), ing, IPPROTO_TCP, 22),
            Verdict::Allow(rule_id(1, 1))
        );
        // Ping from anywhere, v4 and v6; NDP.
        assert_eq!(
            image.evaluate(ip("198.51.100.1"), ing, IPPROTO_ICMP, ECHO),
            Verdict::Allow(rule_id(1, 2))
        );
        assert_eq!(
            image.evaluate(ip("2001:db8:9::1"), ing, IPPROTO_ICMPV6, 135 << 8),
            Verdict::Allow(rule_id(1, 2))
        );
        // Remote nodes reach the kubelet and VXLAN; the host's own address is not a remote node.
        assert_eq!(
            image.evaluate(ip("10.20.1.12"), ing, IPPROTO_UDP, 8472),
            Verdict::Allow(rule_id(1, 3))
        );
        assert_eq!(
            image.evaluate(ip("10.20.1.11"), ing, IPPROTO_UDP, 8472),
            Verdict::NoMatch
        );
        // Edge ports are not open on a worker.
        assert_eq!(
            image.evaluate(ip("198.51.100.1"), ing, IPPROTO_TCP, 443),
            Verdict::NoMatch
        );
        // Deny wins: telnet from outside 10/8, everything from the bad network.
        assert_eq!(
            image.evaluate(ip("10.20.5.5"), ing, IPPROTO_TCP, 23),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("192.0.2.1"), ing, IPPROTO_TCP, 23),
            Verdict::Deny(rule_id(3, 1))
        );
        assert_eq!(
            image.evaluate(ip("203.0.113.5"), ing, IPPROTO_ICMP, ECHO),
            Verdict::Deny(rule_id(3, 2))
        );
        // Egress: cluster open, world on DNS/NTP/HTTPS, never metadata or SMTP.
        assert_eq!(
            image.evaluate(ip("10.244.3.3"), eg, IPPROTO_TCP, 5432),
            Verdict::Allow(rule_id(1, 4))
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), eg, IPPROTO_UDP, 53),
            Verdict::Allow(rule_id(1, 5))
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), eg, IPPROTO_SCTP, 53),
            Verdict::Allow(rule_id(1, 5))
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), eg, IPPROTO_TCP, 80),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("169.254.169.254"), eg, IPPROTO_TCP, 80),
            Verdict::Deny(rule_id(3, 3))
        );
        assert_eq!(
            image.evaluate(ip("fd00:ec2::254"), eg, IPPROTO_TCP, 80),
            Verdict::Deny(rule_id(3, 3))
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), eg, IPPROTO_TCP, 25),
            Verdict::Deny(rule_id(3, 4))
        );

        // On an edge node the second spec of host-fw-common is active too.
        let (rules, _) = to_rule_set(&policies, &ctx, &edge);
        let image = compile(&rules).expect("compiles");
        assert_eq!(
            image.evaluate(ip("198.51.100.1"), ing, IPPROTO_UDP, 31000),
            Verdict::Allow(rule_id(1, 6))
        );
        assert_eq!(
            image.evaluate(ip("198.51.100.1"), ing, IPPROTO_UDP, 32768),
            Verdict::NoMatch
        );
        // On a control-plane node, etcd's port range from the cluster.
        let (rules, _) = to_rule_set(&policies, &ctx, &cp);
        let image = compile(&rules).expect("compiles");
        assert_eq!(
            image.evaluate(ip("10.244.0.9"), ing, IPPROTO_TCP, 2380),
            Verdict::Allow(rule_id(2, 2))
        );
        assert_eq!(
            image.evaluate(ip("10.20.99.1"), ing, IPPROTO_TCP, 6443),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("10.20.98.1"), ing, IPPROTO_TCP, 6443),
            Verdict::Allow(rule_id(2, 3))
        );
    }

    #[test]
    fn every_fixture_yields_a_valid_rule_set_that_agrees_with_its_image() {
        let ctx = context();
        for (file, text) in [
            ("demo", DEMO),
            ("entities", ENTITIES),
            ("cidrs", CIDRS),
            ("ports", PORTS),
            ("icmp", ICMP),
            ("sections", SECTIONS),
            ("selectors", SELECTORS),
            ("realworld", REALWORLD),
        ] {
            let policies = load(file, text);
            for node in [
                labels(&[]),
                labels(&[("node-access", "ssh"), ("role", "edge")]),
            ] {
                let (rules, report) = to_rule_set(&policies, &ctx, &node);
                assert_eq!(rules.validate(), Ok(()), "{file}");
                let image = compile(&rules).expect("compiles");
                for r in &rules.rules {
                    let origin = report.rule_origin(r.id).expect("every id has an origin");
                    assert!(origin.active, "{file}: {origin}");
                }
                for a in [
                    "10.1.1.1",
                    "192.168.1.201",
                    "192.168.1.7",
                    "198.51.100.7",
                    "169.254.169.254",
                    "fd00::1",
                    "2001:db8:1::1",
                ] {
                    for d in Direction::ALL {
                        for (proto, port) in [
                            (IPPROTO_TCP, 22),
                            (IPPROTO_UDP, 53),
                            (IPPROTO_TCP, 23),
                            (IPPROTO_ICMP, ECHO),
                            (IPPROTO_ICMPV6, 128 << 8),
                        ] {
                            assert_eq!(
                                image.evaluate(ip(a), d, proto, port),
                                rules.evaluate(ip(a), d, proto, port),
                                "{file} {a} {d:?} {proto}/{port}"
                            );
                        }
                    }
                }
            }
        }
    }

    // --- semantics ----------------------------------------------------------

    #[test]
    fn empty_rule_allows_nothing_but_enforces_its_direction() {
        let p = load("t.yaml", &doc("  ingress:\n  - {}\n"));
        let (rules, _) = to_rule_set(&p, &context(), &labels(&[]));
        assert_eq!(rules.rules[0].peers, vec![]);
        let image = compile(&rules).expect("compiles");
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Direction::Ingress, IPPROTO_TCP, 22),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Direction::Egress, IPPROTO_TCP, 22),
            Verdict::NotEnforced
        );
    }

    #[test]
    fn default_deny_rule_enforces_egress() {
        let p = load("golden-sections.yaml", SECTIONS);
        let (rules, report) = to_rule_set(&p[1..], &context(), &labels(&[]));
        let image = compile(&rules).expect("compiles");
        assert!(image.enforces(Direction::Egress));
        assert!(!image.enforces(Direction::Ingress));
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), Direction::Egress, IPPROTO_TCP, 443),
            Verdict::NoMatch
        );
        assert_eq!(
            report.rule_origin(rule_id(1, 1)).map(|o| o.path.as_str()),
            Some("spec.enableDefaultDeny.egress")
        );
    }

    #[test]
    fn entities_resolve_per_node_context() {
        let p = load("golden-entities.yaml", ENTITIES);
        let (rules, report) = to_rule_set(&p, &context(), &labels(&[]));
        let ctx = context();
        let mut expected = ctx.resolve(Entity::Host);
        expected.extend(ctx.resolve(Entity::RemoteNode));
        assert_eq!(rules.rules[0].peers, expected);
        // world ∪ world-ipv4 ∪ world-ipv6 ∪ host duplicates are removed.
        let all = &rules.rules[1].peers;
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert_eq!(report.policies[0].specs[0].notes, Vec::<String>::new());

        let image = compile(&rules).expect("compiles");
        // world on egress 443: outside the cluster only.
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), Direction::Egress, IPPROTO_TCP, 443),
            Verdict::Allow(rule_id(1, 3))
        );
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Direction::Egress, IPPROTO_TCP, 443),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("192.168.1.201"), Direction::Egress, IPPROTO_TCP, 443),
            Verdict::NoMatch
        );

        // Without node CIDRs, remote-node is empty and the report says so.
        let bare = EntityContext {
            node_cidrs: vec![],
            ..context()
        };
        let (_, report) = to_rule_set(&p, &bare, &labels(&[]));
        assert_eq!(
            report.policies[0].specs[0].notes,
            vec!["spec.ingress[0]: entity remote-node resolves to no addresses (no node CIDRs are configured)"]
        );
    }

    #[test]
    fn node_selector_reasons() {
        let p = load("golden-selectors.yaml", SELECTORS);
        let sel = &p[0].specs[0].node_selector;
        let all_ok = labels(&[
            ("node-role.kubernetes.io/worker", ""),
            ("zone", "a"),
            ("env", "prod"),
            ("gpu", "nvidia"),
        ]);
        assert_eq!(
            sel.select(&all_ok),
            Selection {
                active: true,
                reason: "nodeSelector matches this node (node-role.kubernetes.io/worker=\"\", zone=a, env in (prod, staging), tier not in (db), label gpu, no label maintenance)".into()
            }
        );
        let mut bad = all_ok.clone();
        bad.insert("env".into(), "dev".into());
        bad.insert("tier".into(), "db".into());
        bad.remove("gpu");
        bad.insert("maintenance".into(), "yes".into());
        assert_eq!(
            sel.select(&bad).reason,
            "nodeSelector requires env in (prod, staging); this node has env=dev; and nodeSelector requires tier not in (db); this node has tier=db; and nodeSelector requires label gpu; this node has no label gpu; and nodeSelector requires no label maintenance; this node has maintenance=yes"
        );
        assert!(!sel.select(&bad).active);
        assert_eq!(
            NodeSelector::default().select(&labels(&[])),
            Selection {
                active: true,
                reason: "nodeSelector is empty: it selects every node".into()
            }
        );
    }

    #[test]
    fn rule_ids_are_stable_and_map_back() {
        let a = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: a\nspec:\n  nodeSelector: {matchLabels: {x: y}}\n  egress:\n  - toEntities: [world]\n  ingress:\n  - fromEntities: [host]\nspecs:\n- nodeSelector: {}\n  ingressDeny:\n  - fromCIDR: [192.0.2.0/24]\n";
        let b = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: b\nspec:\n  nodeSelector: {}\n  ingress:\n  - fromEntities: [cluster]\n";
        // File order does not matter; names do.
        let policies = load_sources([("b.yaml", b), ("a.yaml", a)]).expect("loads");
        let (rules, report) = to_rule_set(&policies, &context(), &labels(&[]));
        let origin = |id| {
            let o = report.rule_origin(id).expect("known id");
            (
                o.policy.as_str(),
                o.path.as_str(),
                o.file.as_str(),
                o.active,
            )
        };
        assert_eq!(
            origin(0x0001_0001),
            ("a", "spec.ingress[0]", "a.yaml", false)
        );
        assert_eq!(
            origin(0x0001_0002),
            ("a", "spec.egress[0]", "a.yaml", false)
        );
        assert_eq!(
            origin(0x0001_0003),
            ("a", "specs[0].ingressDeny[0]", "a.yaml", true)
        );
        assert_eq!(
            origin(0x0002_0001),
            ("b", "spec.ingress[0]", "b.yaml", true)
        );
        assert_eq!(report.rule_origin(0x0002_0002), None);
        assert_eq!(report.origins.len(), 4);
        assert_eq!(
            rules.rules.iter().map(|r| r.id).collect::<Vec<_>>(),
            [0x0001_0003, 0x0002_0001]
        );
        assert_eq!(split_rule_id(0x0001_0003), (1, 3));
        assert_eq!(
            rule_origins(&policies).keys().copied().collect::<Vec<_>>(),
            report.origins.keys().copied().collect::<Vec<_>>()
        );

        // Node labels never renumber; another policy's edits do not either.
        let (_, on) = to_rule_set(&policies, &context(), &labels(&[("x", "y")]));
        assert_eq!(
            on.origins.keys().collect::<Vec<_>>(),
            report.origins.keys().collect::<Vec<_>>()
        );
        let a2 = a.replace(
            "  - fromEntities: [host]\n",
            "  - fromEntities: [host]\n  - fromEntities: [world]\n",
        );
        let policies = load_sources([("a.yaml", a2.as_str()), ("b.yaml", b)]).expect("loads");
        let (_, report) = to_rule_set(&policies, &context(), &labels(&[]));
        assert_eq!(
            report.rule_origin(0x0002_0001).map(|o| o.policy.as_str()),
            Some("b")
        );
        assert_eq!(
            report.rule_origin(0x0001_0002).map(|o| o.path.as_str()),
            Some("spec.ingress[1]")
        );
    }

    #[test]
    fn report_serializes() {
        let p = load("policies/demo-host-policy.yaml", DEMO);
        let (_, report) = to_rule_set(&p, &context(), &labels(&[]));
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["policies"][0]["name"], "demo-host-policy");
        assert_eq!(json["policies"][0]["specs"][0]["active"], false);
        let p = serde_json::to_value(&p[0]).expect("serializes");
        assert_eq!(p["specs"][0]["rules"][0]["peers"][0]["entity"], "cluster");
    }

    // --- errors: unsupported fields -----------------------------------------

    #[test]
    fn error_l7_rules() {
        assert_error(
            "  ingress:\n  - fromEntities: [world]\n  - toPorts:\n    - ports:\n      - port: \"80\"\n        protocol: TCP\n      rules:\n        http:\n        - method: GET\n",
            "t.yaml:13:7: spec.ingress[1].toPorts[0].rules: L7 rules cannot be enforced by a host firewall (hostfwd enforces L3/L4 only)",
        );
    }

    #[test]
    fn error_unsupported_rule_fields() {
        let cases = [
            (
                "ingress",
                "fromEndpoints: [{}]",
                "pod selectors cannot be enforced",
            ),
            (
                "egress",
                "toEndpoints: [{}]",
                "pod selectors cannot be enforced",
            ),
            (
                "ingress",
                "fromRequires: [{}]",
                "label requirements on peers cannot be enforced",
            ),
            (
                "egress",
                "toRequires: [{}]",
                "label requirements on peers cannot be enforced",
            ),
            (
                "ingress",
                "fromGroups: [{aws: {}}]",
                "cloud-provider groups cannot be enforced",
            ),
            (
                "egress",
                "toGroups: [{aws: {}}]",
                "cloud-provider groups cannot be enforced",
            ),
            (
                "ingress",
                "fromNodes: [{}]",
                "node selectors on peers cannot be enforced",
            ),
            (
                "egress",
                "toNodes: [{}]",
                "node selectors on peers cannot be enforced",
            ),
            (
                "egress",
                "toFQDNs: [{matchName: example.com}]",
                "DNS names cannot be enforced",
            ),
            (
                "egress",
                "toServices: [{k8sService: {serviceName: x}}]",
                "Kubernetes services cannot be enforced",
            ),
            (
                "ingress",
                "authentication: {mode: required}",
                "mutual authentication cannot be enforced",
            ),
            (
                "egress",
                "authentication: {mode: required}",
                "mutual authentication cannot be enforced",
            ),
            (
                "ingressDeny",
                "fromEndpoints: [{}]",
                "pod selectors cannot be enforced",
            ),
            (
                "egressDeny",
                "toFQDNs: [{matchName: x}]",
                "DNS names cannot be enforced",
            ),
        ];
        for (section, field, why) in cases {
            let key = field.split(':').next().expect("key");
            let errors = errors_of(&doc(&format!("  {section}:\n  - {field}\n")));
            assert_eq!(errors.len(), 1, "{errors:?}");
            let prefix = format!("t.yaml:8:5: spec.{section}[0].{key}: {why}");
            assert!(
                errors[0].starts_with(&prefix),
                "{} does not start with {prefix}",
                errors[0]
            );
        }
    }

    #[test]
    fn error_unsupported_port_rule_fields() {
        for (field, why) in [
            (
                "listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: x}, name: y}",
                "Envoy listeners cannot be enforced",
            ),
            (
                "serverNames: [example.com]",
                "TLS server names cannot be enforced",
            ),
            (
                "originatingTLS: {secret: {name: x}}",
                "TLS interception cannot be enforced",
            ),
            (
                "terminatingTLS: {secret: {name: x}}",
                "TLS interception cannot be enforced",
            ),
        ] {
            let key = field.split(':').next().expect("key");
            let body = format!("  egress:\n  - toPorts:\n    - ports: [{{port: \"443\", protocol: TCP}}]\n      {field}\n");
            let errors = errors_of(&doc(&body));
            assert_eq!(errors.len(), 1, "{errors:?}");
            let prefix = format!("t.yaml:10:7: spec.egress[0].toPorts[0].{key}: {why}");
            assert!(
                errors[0].starts_with(&prefix),
                "{} does not start with {prefix}",
                errors[0]
            );
        }
    }

    #[test]
    fn error_cidr_groups() {
        for key in [
            "cidrGroupRef: my-group",
            "cidrGroupSelector: {matchLabels: {a: b}}",
        ] {
            let errors = errors_of(&doc(&format!(
                "  ingress:\n  - fromCIDRSet:\n    - {key}\n"
            )));
            let name = key.split(':').next().expect("key");
            assert_eq!(
                errors,
                vec![
                    format!("t.yaml:9:7: spec.ingress[0].fromCIDRSet[0].{name}: CiliumCIDRGroup references cannot be resolved: hostfwd has no CIDR groups (write the CIDRs in cidr/except)"),
                    format!("t.yaml:9:7: spec.ingress[0].fromCIDRSet[0].cidr: missing: a CIDR set needs a cidr"),
                ]
            );
        }
    }

    #[test]
    fn error_endpoint_selector() {
        let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEntities: [world]\n";
        assert_eq!(
            errors_of(text),
            vec!["t.yaml:6:3: spec.endpointSelector: endpointSelector selects pods; hostfwd enforces host policies only (select nodes with nodeSelector)"]
        );
        let text = text.replace("\n    matchLabels:\n      app: web", " {}");
        assert_eq!(
            errors_of(&text),
            vec!["t.yaml:6:3: spec.endpointSelector: an endpointSelector selects pods, not hosts: a host policy selects nodes with nodeSelector (nodeSelector: {} selects every node)"]
        );
        // An empty endpointSelector beside a nodeSelector is harmless.
        assert_eq!(load("t.yaml", &doc("  endpointSelector: {}\n")).len(), 1);
        // Neither.
        let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  ingress: []\n";
        assert_eq!(
            errors_of(text),
            vec!["t.yaml:6:3: spec.nodeSelector: missing: a host policy selects nodes with nodeSelector (nodeSelector: {} selects every node)"]
        );
    }

    #[test]
    fn error_log_and_unknown_fields() {
        assert_error(
            "  log: {value: x}\n",
            "t.yaml:7:3: spec.log: policy logging is not supported by hostfwd (drops are reported with their rule id)",
        );
        assert_error(
            "  ingress:\n  - fromCidr: [10.0.0.0/8]\n",
            "t.yaml:8:5: spec.ingress[0].fromCidr: unknown field in an ingress rule; did you mean \"fromCIDR\"?",
        );
        assert_error(
            "  ingress:\n  - toEntities: [world]\n",
            "t.yaml:8:5: spec.ingress[0].toEntities: not a field of an ingress rule: ingress rules select peers with fromEntities",
        );
        assert_error(
            "  egress:\n  - fromCIDR: [10.0.0.0/8]\n",
            "t.yaml:8:5: spec.egress[0].fromCIDR: not a field of an egress rule: egress rules select peers with toCIDR",
        );
        assert_error(
            "  ingress:\n  - toPorts:\n    - ports:\n      - port: \"22\"\n        proto: TCP\n",
            "t.yaml:11:9: spec.ingress[0].toPorts[0].ports[0].proto: unknown field in a port; did you mean \"protocol\"?",
        );
        assert_error(
            "  frobnicate: 1\n",
            "t.yaml:7:3: spec.frobnicate: unknown field in a policy spec (known fields: description, nodeSelector, endpointSelector, ingress, ingressDeny, egress, egressDeny, enableDefaultDeny, labels)",
        );
        assert_error(
            "  ingress:\n  - icmps:\n    - fields:\n      - type: 8\n        code: 0\n",
            "t.yaml:11:9: spec.ingress[0].icmps[0].fields[0].code: unknown field in an ICMP field (known fields: type, family)",
        );
        let text = doc("").replace("spec:\n", "extra: true\nspec:\n");
        assert_eq!(
            errors_of(&text),
            vec!["t.yaml:5:1: extra: unknown field in a policy document (known fields: apiVersion, kind, metadata, spec, specs)"]
        );
        let text = doc("").replace("  name: t\n", "  name: t\n  nmae: u\n");
        assert_eq!(
            errors_of(&text),
            vec!["t.yaml:5:3: metadata.nmae: unknown field in metadata; did you mean \"name\"?"]
        );
        assert_error(
            "  nodeSelector: {}\n",
            "t.yaml:7:3: spec.nodeSelector: duplicate field (first at 6:3)",
        );
        let text = doc("").replace(
            "  nodeSelector: {}\n",
            "  nodeSelector: {matchLabel: {a: b}}\n",
        );
        assert_eq!(
            errors_of(&text),
            vec!["t.yaml:6:18: spec.nodeSelector.matchLabel: unknown field in a label selector; did you mean \"matchLabels\"?"]
        );
        // Kubernetes bookkeeping is accepted.
        let text = doc("").replace(
            "  name: t\n",
            "  name: t\n  uid: 1234\n  resourceVersion: \"5\"\n",
        ) + "status:\n  ok: true\n";
        assert_eq!(load("t.yaml", &text).len(), 1);
    }

    #[test]
    fn error_entities() {
        assert_error(
            "  egress:\n  - toEntities: [world, kube-apiserver]\n",
            "t.yaml:8:25: spec.egress[0].toEntities[1]: entity \"kube-apiserver\" cannot be enforced by hostfwd: hostfwd does not know the API server's addresses (use toCIDR/fromCIDR with them); supported entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all",
        );
        assert_error(
            "  ingress:\n  - fromEntities:\n    - clutser\n",
            "t.yaml:9:7: spec.ingress[0].fromEntities[0]: unknown entity \"clutser\" (supported entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all)",
        );
        assert_error(
            "  ingress:\n  - fromEntities: []\n    toPorts: [{ports: [{port: \"22\"}]}]\n",
            "t.yaml:8:5: spec.ingress[0].fromEntities: an empty peer list is ambiguous (Cilium reads an empty entity list as \"nothing\" but an empty CIDR list as \"absent\"): remove the field or list peers",
        );
    }

    // --- errors: bad values -------------------------------------------------

    #[test]
    fn error_bad_cidrs() {
        let cases = [
            ("fromCIDR: [10.0.0.0/33]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.0/33\": prefix length 33 is too long for IPv4 (at most 32)"),
            ("fromCIDR: [\"2001:db8::/129\"]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"2001:db8::/129\": prefix length 129 is too long for IPv6 (at most 128)"),
            ("fromCIDR: [10.0.0.256]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.256\": \"10.0.0.256\" is not an IP address"),
            ("fromCIDR: [10.0.0.0/x]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.0/x\": prefix length \"x\" is not a number"),
            ("fromCIDR: [example.com]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"example.com\": \"example.com\" is not an IP address"),
            ("fromCIDR: [10.0.0.1, 8]", "t.yaml:8:26: spec.ingress[0].fromCIDR[1]: expected a string, found an integer (8) (quote it: \"8\")"),
            ("fromCIDRSet: [{cidr: 10.1.2.3}]", "t.yaml:8:26: spec.ingress[0].fromCIDRSet[0].cidr: invalid CIDR \"10.1.2.3\": a prefix length is required here (e.g. 10.1.2.3/32)"),
            ("fromCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}]", "t.yaml:8:47: spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8"),
            ("fromCIDRSet: [{cidr: 10.0.0.0/8, except: [\"fd00::/8\"]}]", "t.yaml:8:47: spec.ingress[0].fromCIDRSet[0].except[0]: fd00::/8 is not of the same address family as cidr 10.0.0.0/8"),
            ("fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0]}]", "t.yaml:8:47: spec.ingress[0].fromCIDRSet[0].except[0]: invalid CIDR \"10.1.0.0\": a prefix length is required here (e.g. 10.1.0.0/32)"),
            ("fromCIDR: 10.0.0.0/8", "t.yaml:8:15: spec.ingress[0].fromCIDR: expected a list, found a string (\"10.0.0.0/8\")"),
        ];
        for (rule, expected) in cases {
            assert_error(&format!("  ingress:\n  - {rule}\n"), expected);
        }
    }

    #[test]
    fn error_bad_ports() {
        let port_rule =
            |port: &str| format!("  ingress:\n  - toPorts:\n    - ports:\n      - {port}\n");
        let cases = [
            ("port: \"70000\"", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range (0-65535)"),
            ("port: 65536", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port 65536 is out of range (0-65535)"),
            ("port: -1", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port -1 is out of range (0-65535)"),
            ("port: http", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: named port \"http\" cannot be enforced: hostfwd has no pods whose ports it could name (use the port number)"),
            ("port: 22.5", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: expected a port number, found a floating-point number (22.5)"),
            ("port: true", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: expected a port number, found a boolean (true)"),
            ("port: [22]", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: expected a port number, found a list"),
            ("port: \"22\"\n        endPort: 21", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: endPort 21 is below port 22"),
            ("port: \"0\"\n        endPort: 100", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: endPort needs a non-zero port (port 0 already means every port)"),
            ("port: \"1\"\n        endPort: \"100\"", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: expected a port number, found a string (\"100\")"),
            ("port: \"1\"\n        endPort: 65536", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: endPort 65536 is out of range (0-65535)"),
            ("port: \"22\"\n        protocol: FOO", "t.yaml:11:19: spec.ingress[0].toPorts[0].ports[0].protocol: unknown protocol \"FOO\" (expected TCP, UDP, SCTP or ANY)"),
            ("port: \"22\"\n        protocol: ICMP", "t.yaml:11:19: spec.ingress[0].toPorts[0].ports[0].protocol: protocol \"ICMP\" is not matched with toPorts: use icmps (with family IPv4 or IPv6)"),
            ("port: \"22\"\n        protocol: 6", "t.yaml:11:19: spec.ingress[0].toPorts[0].ports[0].protocol: expected a string, found an integer (6) (quote it: \"6\")"),
            ("protocol: TCP", "t.yaml:10:9: spec.ingress[0].toPorts[0].ports[0].port: missing: a port needs port (\"0\" for every port)"),
        ];
        for (port, expected) in cases {
            assert_error(&port_rule(port), expected);
        }
        assert_error(
            "  ingress:\n  - toPorts:\n    - {}\n",
            "t.yaml:9:7: spec.ingress[0].toPorts[0].ports: no ports: Cilium matches nothing for a toPorts entry without ports, so the whole rule would allow nothing (use port: \"0\" for every port)",
        );
        assert_error(
            "  ingress:\n  - toPorts:\n    - ports: []\n",
            "t.yaml:9:7: spec.ingress[0].toPorts[0].ports: no ports: Cilium matches nothing for a toPorts entry without ports, so the whole rule would allow nothing (use port: \"0\" for every port)",
        );
    }

    #[test]
    fn error_bad_icmp() {
        let field = |f: &str| format!("  ingress:\n  - icmps:\n    - fields:\n      - {f}\n");
        let cases = [
            ("type: Bogus", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: unknown IPv4 ICMP type name \"Bogus\" (known: EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)"),
            ("type: NeighborSolicitation", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type \"NeighborSolicitation\" is not an IPv4 type name (it is one of IPv6: set family: IPv6)"),
            ("type: Redirect\n        family: IPv6", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type \"Redirect\" is not an IPv6 type name (it is one of IPv4: set family: IPv4)"),
            ("type: 256", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type 256 is out of range (0-255)"),
            ("type: \"300\"", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type 300 is out of range (0-255)"),
            ("type: [8]", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: expected an ICMP type (0-255 or a name such as EchoRequest), found a list"),
            ("type: 8\n        family: ipv4", "t.yaml:11:17: spec.ingress[0].icmps[0].fields[0].family: unknown family \"ipv4\" (expected IPv4 or IPv6)"),
            ("family: IPv4", "t.yaml:10:9: spec.ingress[0].icmps[0].fields[0].type: missing: an ICMP field needs a type (number or name)"),
        ];
        for (f, expected) in cases {
            assert_error(&field(f), expected);
        }
        assert_error(
            "  ingress:\n  - icmps:\n    - fields: []\n",
            "t.yaml:9:7: spec.ingress[0].icmps[0].fields: no fields: Cilium matches nothing for an icmps entry without fields, so the whole rule would allow nothing",
        );
        assert_error(
            "  ingress:\n  - toPorts: [{ports: [{port: \"22\"}]}]\n    icmps: [{fields: [{type: 8}]}]\n",
            "t.yaml:9:5: spec.ingress[0].icmps: icmps and toPorts cannot be combined in one rule (Cilium rejects it): write them as two rules",
        );
    }

    #[test]
    fn error_wrong_types() {
        let cases = [
            ("  ingress:\n    fromEntities: [world]\n", "t.yaml:8:5: spec.ingress: expected a list, found a mapping"),
            ("  ingress:\n  - world\n", "t.yaml:8:5: spec.ingress[0]: expected an ingress rule (a mapping), found a string (\"world\")"),
            ("  egress: [~]\n", "t.yaml:7:12: spec.egress[0]: expected an egress rule (a mapping), found null"),
            ("  ingress:\n  - fromEntities: world\n", "t.yaml:8:19: spec.ingress[0].fromEntities: expected a list, found a string (\"world\")"),
            ("  description: 42\n", "t.yaml:7:16: spec.description: expected a string, found an integer (42) (quote it: \"42\")"),
            ("  enableDefaultDeny: {ingress: yes}\n", "t.yaml:7:32: spec.enableDefaultDeny.ingress: expected true or false, found a string (\"yes\")"),
            ("  labels: {a: b}\n", "t.yaml:7:11: spec.labels: expected a list, found a mapping"),
        ];
        for (body, expected) in cases {
            assert_error(body, expected);
        }
        let with_selector =
            |sel: &str| doc("").replace("  nodeSelector: {}\n", &format!("  nodeSelector:\n{sel}"));
        assert_eq!(
            errors_of(&with_selector("    matchLabels:\n      enabled: true\n")),
            vec!["t.yaml:8:16: spec.nodeSelector.matchLabels.enabled: expected a string, found a boolean (true) (quote it: \"true\")"]
        );
        assert_eq!(
            errors_of(&with_selector("    - a\n")),
            vec!["t.yaml:7:5: spec.nodeSelector: expected a label selector (a mapping), found a list"]
        );
        assert_eq!(
            errors_of(&with_selector("    matchExpressions:\n    - {key: a, operator: Equals, values: [b]}\n")),
            vec!["t.yaml:8:26: spec.nodeSelector.matchExpressions[0].operator: unknown operator \"Equals\" (expected In, NotIn, Exists or DoesNotExist)"]
        );
        assert_eq!(
            errors_of(&with_selector("    matchExpressions:\n    - {key: a, operator: In}\n")),
            vec!["t.yaml:8:7: spec.nodeSelector.matchExpressions[0].values: operator In needs at least one value"]
        );
        assert_eq!(
            errors_of(&with_selector("    matchExpressions:\n    - {key: a, operator: Exists, values: [b]}\n")),
            vec!["t.yaml:8:34: spec.nodeSelector.matchExpressions[0].values: operator Exists takes no values"]
        );
        assert_eq!(
            errors_of(&with_selector("    matchLabels:\n      k8s:a: x\n      a: y\n")),
            vec!["t.yaml:8:7: spec.nodeSelector.matchLabels: label a is given twice (with and without a source prefix)"]
        );
        assert_eq!(
            errors_of(&with_selector("    matchExpressions:\n    - {operator: Exists}\n")),
            vec!["t.yaml:8:7: spec.nodeSelector.matchExpressions[0].key: missing: a requirement needs a label key"]
        );
    }

    #[test]
    fn error_documents() {
        let d = doc("");
        let cases = [
            (d.replace("cilium.io/v2", "cilium.io/v1"), "t.yaml:1:13: apiVersion: unsupported apiVersion \"cilium.io/v1\" (expected cilium.io/v2)"),
            (d.replace("CiliumClusterwideNetworkPolicy", "NetworkPolicy"), "t.yaml:2:7: kind: unsupported kind \"NetworkPolicy\" (expected CiliumClusterwideNetworkPolicy or CiliumNetworkPolicy)"),
            (d.replace("kind: CiliumClusterwideNetworkPolicy\n", ""), "t.yaml:1:1: kind: missing: every policy needs kind: CiliumClusterwideNetworkPolicy"),
            (d.replace("  name: t\n", "  name: Bad_Name\n"), "t.yaml:4:9: metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"),
            (d.replace("  name: t\n", "  name: 7\n"), "t.yaml:4:9: metadata.name: expected a string, found an integer (7) (quote it: \"7\")"),
            (d.replace("  name: t\n", "  labels: {a: b}\n"), "t.yaml:4:3: metadata.name: missing: every policy needs a name"),
            (d.replace("spec:\n  nodeSelector: {}\n", ""), "t.yaml:1:1: spec: missing: a policy needs spec (or specs, a list of them)"),
            ("- a\n- b\n".to_string(), "t.yaml:1:1: expected a policy document (a mapping), found a list"),
            (d.replace("spec:\n  nodeSelector: {}\n", "specs:\n  nodeSelector: {}\n"), "t.yaml:6:3: specs: expected a list, found a mapping"),
            ("a: [1, 2\n".to_string(), "t.yaml:2:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"),
            (d.replace("spec:\n", "spec: !custom\n"), "t.yaml:5:7: unsupported YAML tag !custom"),
        ];
        for (text, expected) in cases {
            assert_eq!(errors_of(&text), vec![expected.to_string()], "{text}");
        }
    }

    #[test]
    fn error_default_deny_false_with_rules() {
        assert_error(
            "  ingress:\n  - fromEntities: [world]\n  enableDefaultDeny:\n    ingress: false\n",
            "t.yaml:10:14: spec.enableDefaultDeny.ingress: enableDefaultDeny.ingress: false cannot be enforced: hostfwd puts every direction that has rules into default-deny (remove it, or move these rules to a policy that should enforce)",
        );
    }

    #[test]
    fn error_duplicate_policy_names() {
        let one = doc("");
        let two = format!("{one}---\n{one}");
        assert_eq!(
            errors_of(&two),
            vec!["t.yaml:11:9: metadata.name: policy \"t\" is already defined at t.yaml:4:9"]
        );
        let errors = load_sources([("a.yaml", one.as_str()), ("b.yaml", one.as_str())])
            .expect_err("duplicate");
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["b.yaml:4:9: metadata.name: policy \"t\" is already defined at a.yaml:4:9"]
        );
        // Same name in two namespaces is fine for CiliumNetworkPolicy.
        let cnp = |ns: &str| {
            one.replace("CiliumClusterwideNetworkPolicy", "CiliumNetworkPolicy")
                .replace("  name: t\n", &format!("  name: t\n  namespace: {ns}\n"))
        };
        let (a, b) = (cnp("a"), cnp("b"));
        assert_eq!(
            load_sources([("a.yaml", a.as_str()), ("b.yaml", b.as_str())])
                .expect("loads")
                .len(),
            2
        );
    }

    #[test]
    fn load_sources_reports_every_file() {
        let good = doc("");
        let bad1 = doc("  ingress: [{fromEntities: [nowhere]}]\n").replace("name: t", "name: u");
        let bad2 = doc("  egress: [{toFQDNs: []}]\n").replace("name: t", "name: v");
        let errors: Vec<String> = load_sources([
            ("good.yaml", good.as_str()),
            ("bad1.yaml", bad1.as_str()),
            ("bad2.yaml", bad2.as_str()),
        ])
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            errors,
            vec![
                "bad1.yaml:7:29: spec.ingress[0].fromEntities[0]: unknown entity \"nowhere\" (supported entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all)".to_string(),
                format!("bad2.yaml:7:13: spec.egress[0].toFQDNs: {WHY_FQDNS}"),
            ]
        );
    }

    #[test]
    fn all_errors_of_a_file_are_reported() {
        let errors: Vec<String> = parse_policies("policies/invalid-many.yaml", INVALID_MANY)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        let f = "policies/invalid-many.yaml";
        let expected = [
            format!("{f}:4:9: metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"),
            format!("{f}:10:5: spec.ingress[0].fromEndpoints: {WHY_ENDPOINTS}"),
            format!("{f}:17:7: spec.ingress[1].toPorts[0].rules: {WHY_L7}"),
            format!("{f}:20:16: spec.ingress[2].fromCIDR[0]: invalid CIDR \"10.0.0.0/33\": prefix length 33 is too long for IPv4 (at most 32)"),
            format!("{f}:23:15: spec.ingress[2].toPorts[0].ports[0].port: port 70000 is out of range (0-65535)"),
            format!("{f}:24:15: spec.ingress[2].toPorts[0].ports[1].port: named port \"http\" cannot be enforced: hostfwd has no pods whose ports it could name (use the port number)"),
            format!("{f}:26:18: spec.ingress[2].toPorts[0].ports[2].endPort: endPort 99 is below port 100"),
            format!("{f}:28:19: spec.ingress[2].toPorts[0].ports[3].protocol: protocol \"ICMP\" is not matched with toPorts: use icmps (with family IPv4 or IPv6)"),
            format!("{f}:30:5: spec.egress[0].toFQDNs: {WHY_FQDNS}"),
            format!("{f}:32:18: spec.egress[1].toEntities[0]: entity \"kube-apiserver\" cannot be enforced by hostfwd: hostfwd does not know the API server's addresses (use toCIDR/fromCIDR with them); supported entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all"),
            format!("{f}:35:15: spec.egress[1].icmps[0].fields[0].type: unknown IPv4 ICMP type name \"Bogus\" (known: EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)"),
            format!("{f}:42:3: spec.endpointSelector: endpointSelector selects pods; hostfwd enforces host policies only (select nodes with nodeSelector)"),
            format!("{f}:48:16: spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8"),
            format!("{f}:53:7: spec.ingress[0].toPorts[0].serverNames: {WHY_SNI}"),
            format!("{f}:54:3: spec.unknownField: unknown field in a policy spec (known fields: description, nodeSelector, endpointSelector, ingress, ingressDeny, egress, egressDeny, enableDefaultDeny, labels)"),
        ];
        assert_eq!(errors, expected);
    }
}
