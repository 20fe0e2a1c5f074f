//! The policy language: Cilium's host-policy schema (`cilium.io/v2`
//! `CiliumClusterwideNetworkPolicy` / `CiliumNetworkPolicy`), parsed from YAML
//! into a typed intermediate ([`Policy`]), checked strictly, and turned into
//! the model's [`RuleSet`](crate::model::RuleSet) for one node ([`to_rule_set`]).
//!
//! Everything here is pure: text in, values out. Reading files, watching the
//! config directory and knowing the node's labels and addresses is the
//! daemon's business.
//!
//! # Strictness
//!
//! A field hostfwd would enforce differently than the file says (L7 `rules`,
//! `toFQDNs`, `fromNodes`/`toNodes`, `authentication`, CIDR groups, TLS,
//! listeners, …) is an error that says so, as is any unknown field inside
//! `spec`, value of the wrong type, bad CIDR, port, protocol or ICMP type.
//! Every error names the file, line, column and field path ([`PolicyError`]),
//! and all errors of a file are reported, not only the first. A file with any
//! error contributes no policy.
//!
//! What changes nothing on a host without Cilium is a warning
//! ([`PolicyWarning`], kept in [`Policy::warnings`]), as Kubernetes and
//! Cilium accept it: unknown fields outside `spec` (Kubernetes prunes them),
//! and peers that select nothing here — `fromEndpoints`/`toEndpoints`,
//! `fromRequires`/`toRequires`, `toServices` (not in deny rules) and the
//! entities `health`, `init`, `ingress`, `unmanaged`, `none`. Such a peer is
//! inert: it matches nothing, the rest of its rule applies
//! ([`PolicyRule::inert`]); the report shows each such rule and each
//! direction whose every rule is inert. With `strict` ([`parse_policies_with`],
//! `strict_policies = true`) every warning is an error.
//!
//! # Semantics (as Cilium's)
//!
//! * A rule's peer selectors (`fromEntities`, `fromCIDR`, `fromCIDRSet`, or
//!   the `to…` ones on egress) are ORed; its `toPorts`/`icmps` are ORed; the
//!   two are ANDed (peers × ports). One policy rule is one model [`Rule`](crate::model::Rule).
//! * A rule with ports but no peer selector applies to every peer (Cilium's
//!   wildcard endpoint selector): its peers are [`Entity::All`].
//! * A rule with neither (`ingress: [{}]`) allows nothing, but — like any rule
//!   — puts its direction into default-deny. This is Cilium's documented
//!   "default deny without allowing anything" idiom; the model expresses it as
//!   a rule with no peers.
//! * `toPorts` without `protocol` means `ANY` (TCP, UDP and SCTP, not ICMP);
//!   `port: 0` means every port; `endPort` makes a range. `icmps` without
//!   `family` means IPv4.
//! * `ingressDeny`/`egressDeny` rules are [`Action::Deny`](crate::model::Action::Deny); deny wins.
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

//!
//! # Files
//!
//! One concern each, in dependency order (none imports a later one):
//! `limits` (the bounds), `errors` (positions, errors, the collector),
//! `yaml` (the tree with positions), `schema` (the field tables), `walk`
//! (checking mappings and scalars against a table), `selector` (node
//! selectors), `types` (the typed intermediate), `rules` (a rule's peers,
//! ports and ICMP), `document` (documents and the entry points), `resolve`
//! (rule ids, node selection and the model rule set). The checks of the
//! rule / peer / port / ICMP schema are in `rules`, against the tables of
//! `schema`. The tests are the `tests_*` files beside them.

mod document;
mod errors;
mod limits;
mod protocols;
mod resolve;
mod rules;
mod schema;
mod selector;
mod types;
mod walk;
mod yaml;

pub use self::document::{load_sources, load_sources_with, parse_policies, parse_policies_with, validate_policy, validate_policy_with};
pub use self::errors::{PolicyError, PolicyWarning, Pos};
pub use self::limits::*;
pub use self::resolve::{rule_id, rule_origins, split_rule_id, to_rule_set, unresolvable_entities, PolicyReport, PolicyStatus, RuleOrigin, SpecStatus};
pub use self::schema::icmp_type_by_name;
pub use self::selector::{LabelRequirement, NodeLabels, NodeSelector, Selection, SelectorOp};
pub use self::types::{Peer, Policy, PolicyKind, PolicyRule, PolicySpec, API_VERSION};
pub use crate::entities::{Entity, EntityContext};

// The tests see every file's items, as they did in one file.
#[cfg(test)]
use self::{schema::*, yaml::*};

#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_golden;
#[cfg(test)]
mod tests_lenient;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_semantics;
#[cfg(test)]
mod tests_support;
