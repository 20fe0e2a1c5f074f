//! The bounds of one policy source and of a rule set. Every input past a
//! bound ends in an error with a position (see `errors`), never a crash.
//! Constants only: this file may not depend on anything.

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
