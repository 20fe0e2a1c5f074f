//! Every path hostfwd uses on bpffs, in one place.
//!
//! ```text
//! <root>/                              default /sys/fs/bpf/hostfwd
//!   maps/<map name>                    every datapath map (hf_links, hf_ct4, …)
//!   links/tcx-<ifindex>-<direction>    tcx links (direction: ingress | egress)
//!   links/tcxnew-<ifindex>-<direction> a tcx link being moved to the front,
//!                                      renamed over the one above at once
//! ```
//!
//! Legacy tc attachments cannot be pinned: they are found again by querying
//! the device for hostfwd's own (handle, priority).

use std::path::{Path, PathBuf};

use super::{dir_from_name, dir_name, Direction};

/// The default bpffs root.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/hostfwd";

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn tcx_link(&self, ifindex: u32, dir: Direction) -> PathBuf {
        self.links_dir().join(format!("tcx-{ifindex}-{}", dir_name(dir)))
    }

    /// Where a new link is pinned before it replaces [`Paths::tcx_link`]
    /// (a name [`Paths::parse_tcx_link`] does not take for a link; bpffs
    /// refuses names with a dot).
    pub fn tcx_link_tmp(&self, ifindex: u32, dir: Direction) -> PathBuf {
        self.links_dir().join(format!("tcxnew-{ifindex}-{}", dir_name(dir)))
    }

    /// Parses a file name made by [`Paths::tcx_link`].
    pub fn parse_tcx_link(name: &str) -> Option<(u32, Direction)> {
        let rest = name.strip_prefix("tcx-")?;
        let (ifindex, dir) = rest.split_once('-')?;
        Some((ifindex.parse().ok()?, dir_from_name(dir)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcx_link_names_round_trip() {
        let p = Paths::new("/x");
        let path = p.tcx_link(42, Direction::Egress);
        assert_eq!(path, PathBuf::from("/x/links/tcx-42-egress"));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap();
        assert_eq!(Paths::parse_tcx_link(name), Some((42, Direction::Egress)));
        assert_eq!(Paths::parse_tcx_link("tcx-x-egress"), None);
        assert_eq!(Paths::parse_tcx_link("tcx-4-sideways"), None);
        let tmp = p.tcx_link_tmp(42, Direction::Egress);
        assert_eq!(tmp.parent(), path.parent(), "renamed within one directory");
        assert_eq!(Paths::parse_tcx_link(tmp.file_name().and_then(|n| n.to_str()).unwrap()), None);
    }
}
