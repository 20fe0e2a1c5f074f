//! The field tables of Cilium's policy schema: for each kind of mapping
//! (document, metadata, spec, rules, CIDR sets, ports, ICMP) the fields it
//! may have, the ones hostfwd rejects and why, and the ICMP type names.
//! Tables only: the checks that use them are in `walk`, `document`,
//! `rules` and `selector`.

use crate::model::IcmpFamily;

/// The fields a mapping may have.
pub(super) struct Schema {
    /// "an ingress rule", for messages.
    pub(super) what: &'static str,
    pub(super) known: &'static [&'static str],
    /// Fields of the Cilium schema that hostfwd rejects, with the reason.
    pub(super) unsupported: &'static [(&'static str, &'static str)],
    /// Fields accepted and ignored (Kubernetes bookkeeping).
    pub(super) ignored: &'static [&'static str],
    /// Fields that belong elsewhere, with a hint.
    pub(super) misplaced: &'static [(&'static str, &'static str)],
    /// Whether an unknown field is a warning (and ignored) instead of an
    /// error: only outside `spec`, where Kubernetes prunes unknown fields
    /// and they cannot change what a rule means.
    pub(super) unknown_warns: bool,
}

pub(super) const WHY_L7: &str = "L7 rules cannot be enforced by a host firewall (hostfwd enforces L3/L4 only)";
pub(super) const WHY_AUTH: &str = "mutual authentication cannot be enforced: hostfwd has no authentication layer (hostfwd enforces L3/L4 only)";
pub(super) const WHY_GROUPS: &str = "cloud-provider groups cannot be enforced: hostfwd does not query cloud APIs (list the addresses with CIDRs)";
pub(super) const WHY_NODES: &str = "node selectors on peers cannot be enforced until fleet mode: hostfwd does not know other nodes' labels (use the remote-node entity or CIDRs)";
pub(super) const WHY_FQDNS: &str = "DNS names cannot be enforced: hostfwd has no DNS proxy to learn their addresses (use toCIDR/toCIDRSet)";
pub(super) const WHY_LISTENER: &str =
    "Envoy listeners cannot be enforced: hostfwd has no L7 proxy (hostfwd enforces L3/L4 only)";
pub(super) const WHY_SNI: &str = "TLS server names cannot be enforced: hostfwd does not inspect TLS (hostfwd enforces L3/L4 only)";
pub(super) const WHY_TLS: &str =
    "TLS interception cannot be enforced: hostfwd has no L7 proxy (hostfwd enforces L3/L4 only)";
pub(super) const WHY_CIDR_GROUP: &str = "CiliumCIDRGroup references cannot be resolved: hostfwd has no CIDR groups (write the CIDRs in cidr/except)";
pub(super) const WHY_LOG: &str =
    "policy logging is not supported by hostfwd (drops are reported with their rule id)";

/// Peer fields that select nothing on a host without Cilium, with why: in a
/// rule they are accepted, match nothing and are reported ("inert here").
/// The rest of the rule applies.
pub(super) const INERT_PEERS: &[(&str, &str)] = &[
    ("fromEndpoints", "it selects Cilium endpoints (pods), and a host without Cilium has none"),
    ("toEndpoints", "it selects Cilium endpoints (pods), and a host without Cilium has none"),
    ("fromRequires", "it adds label requirements to fromEndpoints selectors, which select nothing here"),
    ("toRequires", "it adds label requirements to toEndpoints selectors, which select nothing here"),
    ("toServices", "it selects the backends of Kubernetes services, which hostfwd does not watch"),
];

pub(super) const WHY_DENY_SERVICES: &str = "toServices in a deny rule cannot be enforced: hostfwd does not know the services' backends, so it would allow what the rule denies (deny their CIDRs with toCIDR/toCIDRSet)";
pub(super) const WHY_RESERVED_LABEL: &str = "a selector on reserved: labels selects Cilium's reserved identities (host, world, …), not pods: write the entities with fromEntities/toEntities";
pub(super) const WHY_WILDCARD_ENDPOINTS: &str = "an empty endpoint selector selects every endpoint, the host and the world included, in a clusterwide policy: write fromEntities/toEntities [all] or the entities you mean";

pub(super) const DOCUMENT: Schema = Schema {
    what: "a policy document",
    known: &["apiVersion", "kind", "metadata", "spec", "specs"],
    unsupported: &[],
    ignored: &["status"],
    misplaced: &[],
    unknown_warns: true,
};

pub(super) const METADATA: Schema = Schema {
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
    unknown_warns: true,
};

pub(super) const SPEC: Schema = Schema {
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
    unknown_warns: false,
};

pub(super) const SELECTOR: Schema = Schema {
    what: "a label selector",
    known: &["matchLabels", "matchExpressions"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const REQUIREMENT: Schema = Schema {
    what: "a label selector requirement",
    known: &["key", "operator", "values"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const DEFAULT_DENY: Schema = Schema {
    what: "enableDefaultDeny",
    known: &["ingress", "egress"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const RULE_LABEL: Schema = Schema {
    what: "a rule label",
    known: &["key", "value", "source"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const INGRESS: Schema = Schema {
    what: "an ingress rule",
    known: &[
        "fromEntities",
        "fromCIDR",
        "fromCIDRSet",
        "fromEndpoints",
        "fromRequires",
        "toPorts",
        "icmps",
    ],
    unsupported: &[
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
    unknown_warns: false,
};

pub(super) const EGRESS: Schema = Schema {
    what: "an egress rule",
    known: &[
        "toEntities",
        "toCIDR",
        "toCIDRSet",
        "toEndpoints",
        "toRequires",
        "toServices",
        "toPorts",
        "icmps",
    ],
    unsupported: &[
        ("toGroups", WHY_GROUPS),
        ("toNodes", WHY_NODES),
        ("toFQDNs", WHY_FQDNS),
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
    unknown_warns: false,
};

pub(super) const CIDR_RULE: Schema = Schema {
    what: "a CIDR set",
    known: &["cidr", "except"],
    unsupported: &[
        ("cidrGroupRef", WHY_CIDR_GROUP),
        ("cidrGroupSelector", WHY_CIDR_GROUP),
    ],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const PORT_RULE: Schema = Schema {
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
    unknown_warns: false,
};

pub(super) const PORT: Schema = Schema {
    what: "a port",
    known: &["port", "endPort", "protocol"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const ICMP_RULE: Schema = Schema {
    what: "an icmps entry",
    known: &["fields"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

pub(super) const ICMP_FIELD: Schema = Schema {
    what: "an ICMP field",
    known: &["type", "family"],
    unsupported: &[],
    ignored: &[],
    misplaced: &[],
    unknown_warns: false,
};

/// Cilium's ICMP type names (IANA's, in CamelCase), IPv4.
pub(super) const ICMP_V4_NAMES: &[(&str, u8)] = &[
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
pub(super) const ICMP_V6_NAMES: &[(&str, u8)] = &[
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
