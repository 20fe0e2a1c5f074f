//! hostfwd's policy, pure: no kernel, no daemon. Parses Cilium network
//! policies with positions ([`cilium`]), resolves entities ([`entities`]),
//! compiles the typed rule set ([`model`]) to the datapath's map image
//! ([`compiler`], [`image`]) and evaluates it with the reference model.
//! Reading policy files from disk ([`files`]) is the only I/O; where the
//! daemon keeps its policy sources is the daemon's business, not this crate's.

pub mod cilium;
pub mod compiler;
pub mod encode;
pub mod entities;
pub mod files;
pub mod image;
pub mod model;
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::should_implement_trait)]
pub mod test_rng;

pub use compiler::{compile, port_prefixes};
pub use image::{IdentityEntry, ImageLookup, MapImage, RuleEntry};
pub use model::{
    Action, CidrSet, Direction, IcmpFamily, L4Proto, PortMatch, Rule, RuleSet, ValidationError, Verdict,
};
