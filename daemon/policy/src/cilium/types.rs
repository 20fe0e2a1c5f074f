//! The typed intermediate: what a policy document says once parsed and
//! checked ([`Policy`], its specs, rules and peers), entities not yet
//! resolved. Data only; parsing is in `document`/`rules`, resolving in
//! `resolve`.

use std::collections::BTreeMap;

use super::errors::Pos;
use super::selector::NodeSelector;
use crate::entities::Entity;
use crate::model::{Action, CidrSet, Direction, PortMatch};

/// The only API version accepted.
pub const API_VERSION: &str = "cilium.io/v2";

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
    /// What was accepted but changes nothing here (unknown fields outside
    /// `spec`, inert peers), in file order.
    pub warnings: Vec<super::errors::PolicyWarning>,
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
    /// The peers left out because they select nothing on a host without
    /// Cilium, each as `field: why` (`fromEndpoints: …`, `entity health:
    /// …`). A rule with these and no `peers` matches nothing ("inert here").
    pub inert: Vec<String>,
}

impl PolicyRule {
    /// Every peer it was written with selects nothing here.
    pub fn is_inert(&self) -> bool {
        self.peers.is_empty() && !self.inert.is_empty()
    }
}

/// A peer selector of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    Entity(Entity),
    Cidr(CidrSet),
}
