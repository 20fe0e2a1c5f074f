//! The datapath test fixture shared by the test_run suites: ifindex 1
//! enforcing both directions, a host and two remotes per family, and a
//! small web policy.

use std::net::IpAddr;

use hostfwd::datapath::{AttachModeChoice, Direction};
use hostfwd::policy::model::{Action, CidrSet, IcmpFamily, PortMatch, Rule};

use super::*;

pub const IF: u32 = 1;
pub const IN: Direction = Direction::Ingress;
pub const OUT: Direction = Direction::Egress;

/// (host, remote, far remote outside the allowed CIDR) per family.
pub fn addrs(v6: bool) -> (IpAddr, IpAddr, IpAddr) {
    if v6 {
        (ip("fd77::1"), ip("fd77::2"), ip("2001:db8::9"))
    } else {
        (ip("10.77.0.1"), ip("10.77.0.2"), ip("192.0.2.9"))
    }
}

pub fn setup(tag: &str) -> TestDp {
    setup_sized(tag, Vec::new())
}

/// [`setup`] with map sizes of its own.
pub fn setup_sized(tag: &str, map_sizes: Vec<hostfwd::datapath::MapSize>) -> TestDp {
    let dp = TestDp::load_sized(tag, AttachModeChoice::Auto, map_sizes);
    dp.enforce(IF);
    for v6 in [false, true] {
        dp.add_host_addr(addrs(v6).0).expect("host addr");
    }
    dp
}

pub fn run(dp: &TestDp, dir: Direction, frame: &[u8]) -> i32 {
    dp.test_run(dir, frame, 1).expect("test run").retval
}

/// Ingress default-deny with TCP/80 allowed from the remote's /24 (/64).
pub fn web_policy(dp: &mut TestDp) {
    dp.apply(vec![
        allow_tcp(10, IN, &["10.77.0.0/24", "fd77::/64"], 80),
        Rule::new(11, IN, Action::Allow, vec![CidrSet::cidr(net("0.0.0.0/0")), CidrSet::cidr(net("::/0"))], vec![
            PortMatch::Icmp { family: IcmpFamily::V4, icmp_type: 8 },
            PortMatch::Icmp { family: IcmpFamily::V6, icmp_type: 128 },
        ]),
    ]);
}

