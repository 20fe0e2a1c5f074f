//! The kernel seam: every system call that reaches the kernel's networking
//! or BPF goes through here, and nothing else in the crate makes one.
//!
//! - [`netlink`]: rtnetlink — the link, address and route dumps and the
//!   event stream the link table follows (read only: hostfwd never
//!   configures links or addresses);
//! - [`datapath`]: libbpf and bpffs — loading the eBPF object, pinning,
//!   attaching (tcx or legacy tc), every map read and write, the event ring
//!   buffer.
//!
//! The rest of the daemon gets kernel state from these as values (a link
//! table, an [`datapath::Datapath::actual`] read back) and hands them
//! desired state; it holds no BPF or netlink descriptor of its own.

pub mod datapath;
pub mod netlink;
