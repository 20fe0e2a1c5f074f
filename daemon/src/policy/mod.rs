//! Policy: the typed rule set and its compiler to the datapath's map image.

pub mod cilium;
pub mod compiler;
pub mod entities;
pub mod files;
pub mod image;
pub mod model;
pub mod store;

pub use compiler::{compile, port_prefixes};
pub use image::{IdentityEntry, ImageLookup, MapImage, RuleEntry, Verdict};
pub use model::{
    Action, CidrSet, Direction, IcmpFamily, L4Proto, PortMatch, Rule, RuleSet, ValidationError,
};
