//! From parsed policies to the model for one node: rule ids and their
//! origins, which specs select this node (and why), entities resolved
//! against the node's context, and the [`RuleSet`] with its report. It may
//! not look at YAML.

use std::collections::BTreeMap;
use std::fmt;

use super::errors::{PolicyError, Pos};
use super::limits::{MAX_POLICIES, MAX_RULES_PER_POLICY};
use super::selector::NodeLabels;
use super::types::{Peer, Policy, PolicyKind, PolicyRule};
use crate::entities::{Entity, EntityContext};
use crate::model::{CidrSet, Direction, Rule, RuleSet};

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
    /// Why it is active or not (see [`NodeSelector::select`](super::NodeSelector::select)).
    pub reason: String,
    /// Ids of its rules (in the rule set only if active).
    pub rule_ids: Vec<u32>,
    /// Remarks on entity resolution, e.g. `spec.ingress[0]: entity
    /// remote-node resolves to no addresses (…)`.
    pub notes: Vec<String>,
    /// Its rules with peers that select nothing here, one line each:
    /// `spec.ingress[1]: inert here: fromEndpoints: …` (every peer) or
    /// `… partly inert here (its other peers apply): …`.
    pub inert: Vec<String>,
}

/// Inert rules a summary lists by name; the rest are counted.
const MAX_INERT_SHOWN: usize = 20;

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
    /// The parser's warnings (`file:line:column: path: warning: …`).
    pub warnings: Vec<String>,
    /// Each direction in which this policy has rules on this node and every
    /// one of them is inert: it puts the direction into default deny and
    /// allows nothing there, which the file's author hardly meant.
    pub inert_directions: Vec<Direction>,
}

impl PolicyStatus {
    /// Active if any of its specs is.
    pub fn active(&self) -> bool {
        self.specs.iter().any(|s| s.active)
    }

    /// `active: <reason>` / `inactive: <reason>`, spec by spec when there
    /// are several; then, a line each, its rules that are inert here and
    /// the directions in which all its rules are.
    pub fn summary(&self) -> String {
        let mut s = self.state_summary();
        let inert: Vec<&String> = self.specs.iter().flat_map(|s| &s.inert).collect();
        for line in inert.iter().take(MAX_INERT_SHOWN) {
            s.push('\n');
            s.push_str(line);
        }
        if inert.len() > MAX_INERT_SHOWN {
            s.push_str(&format!("\n{} more rules inert here", inert.len() - MAX_INERT_SHOWN));
        }
        for d in &self.inert_directions {
            let d = match d {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            };
            s.push_str(&format!(
                "\nevery {d} rule is inert here: this policy allows no {d} traffic but puts {d} into default deny"
            ));
        }
        s
    }

    fn state_summary(&self) -> String {
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
pub(super) fn ordered(policies: &[Policy]) -> Vec<&Policy> {
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
pub(super) fn resolve_rule(r: &PolicyRule, id: u32, ctx: &EntityContext) -> (Rule, Vec<String>) {
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
            warnings: p.warnings.iter().map(ToString::to_string).collect(),
            inert_directions: Vec::new(),
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
                    inert: Vec::new(),
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
                inert: Vec::new(),
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
                    if r.is_inert() {
                        spec.inert.push(format!("{}: inert here: {}", r.path, r.inert.join("; ")));
                    } else if !r.inert.is_empty() {
                        spec.inert.push(format!(
                            "{}: partly inert here (its other peers apply): {}",
                            r.path,
                            r.inert.join("; ")
                        ));
                    }
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
        let selected: Vec<&PolicyRule> = p
            .specs
            .iter()
            .zip(&status.specs)
            .filter(|(_, st)| st.active)
            .flat_map(|(s, _)| &s.rules)
            .collect();
        for d in Direction::ALL {
            let mut rules = selected.iter().filter(|r| r.direction == d).peekable();
            if rules.peek().is_some() && rules.all(|r| r.is_inert()) {
                status.inert_directions.push(d);
            }
        }
        report.policies.push(status);
    }
    (RuleSet::new(rules), report)
}

/// Errors for entities the context cannot resolve: `kube-apiserver`
/// without `[entities] kube_apiserver` in the configuration. Any rule
/// counts, active or not: the configuration is what is missing.
pub fn unresolvable_entities(policies: &[Policy], ctx: &EntityContext) -> Vec<PolicyError> {
    if !ctx.kube_apiserver.is_empty() {
        return Vec::new();
    }
    policies
        .iter()
        .flat_map(|p| p.rules().map(move |(_, r)| (p, r)))
        .filter(|(_, r)| r.peers.contains(&Peer::Entity(Entity::KubeApiserver)))
        .map(|(p, r)| PolicyError {
            file: p.file.clone(),
            line: r.pos.line,
            column: r.pos.column,
            path: r.path.clone(),
            message: "entity kube-apiserver needs the API server's addresses: set kube_apiserver in the [entities] section of the configuration".into(),
        })
        .collect()
}
