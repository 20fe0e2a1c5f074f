//! `#[repr(C)]` mirrors of `c/lib/types.h`. Each struct's size and field
//! offsets are checked against the BTF of the compiled object by the tests
//! below, so the two sides cannot drift apart silently.

/// Direction of a packet relative to the host (`HF_DIR_*`).
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const G_AUDIT: u32 = 1 << 0;
pub const G_DROP_NON_IP: u32 = 1 << 1;
/// `hf_local_nets` holds entries: the datapath consults it.
pub const G_LOCAL_NETS: u32 = 1 << 2;

pub const L_ENFORCE_INGRESS: u32 = 1 << 0;
pub const L_ENFORCE_EGRESS: u32 = 1 << 1;
pub const L_AUDIT: u32 = 1 << 2;
pub const L_VLAN_ALLOW_ALL: u32 = 1 << 3;
/// Marks a used slot of `hf_link_slots` (set by the writer, never by users).
pub const L_CONFIGURED: u32 = 1 << 31;
/// The datapath reads the flags of links with an ifindex below this from
/// the `hf_link_slots` array, of the others from the `hf_links` hash, which
/// also lists every link for user space (`HF_LINK_SLOTS`).
pub const LINK_SLOTS: u32 = 16384;

pub const P_ENFORCE_INGRESS: u32 = 1 << 0;
pub const P_ENFORCE_EGRESS: u32 = 1 << 1;

pub const ACTION_ALLOW: u8 = 1;
pub const ACTION_DENY: u8 = 2;

/// Prefix lengths an identity table can hold, per family (`HF_IDENT*_LENS`).
pub const IDENT4_LENS: usize = 33;
pub const IDENT6_LENS: usize = 129;

/// `max_entries` of `hf_rules`; both policy generations share it.
pub const RULES_MAX_ENTRIES: u32 = 1 << 18;

/// `max_entries` of `hf_host_addrs` (full-length local addresses) and of
/// `hf_local_nets` (shorter local prefixes).
pub const HOST_ADDRS_MAX_ENTRIES: u32 = 16384;
pub const LOCAL_NETS_MAX_ENTRIES: u32 = 16384;

/// `hf_rule_key.kind` of a (identity, direction, protocol) head.
pub const RK_PROTO: u8 = 0x80;
/// `hf_rule_key.kind` of the any-protocol entry of (identity, direction).
pub const RK_ANY: u8 = 0x81;
/// A head's `port_blocks` has one bit per `1 << PORT_BLOCK_SHIFT` ports
/// (`HF_PORT_BLOCK_SHIFT`).
pub const PORT_BLOCK_SHIFT: u32 = 10;
/// A block entry's `port_blocks` has one bit per `1 << PORT_GRANULE_SHIFT`
/// ports of its block (`HF_PORT_GRANULE_SHIFT`).
pub const PORT_GRANULE_SHIFT: u32 = 4;
/// `hf_rule_key.kind` of a head's detail of one port block (`port`: the block).
pub const RK_BLOCK: u8 = 0x82;

pub const CT_SYN_SENT: u8 = 1;
pub const CT_ESTABLISHED: u8 = 2;
pub const CT_CLOSING: u8 = 3;
pub const CT_OTHER: u8 = 4;
pub const CT_SYN_RECV: u8 = 5;
pub const CT_PICKUP: u8 = 6;

pub const CT_SEEN_REPLY: u8 = 1 << 0;
pub const CT_FIN_ORIG: u8 = 1 << 1;
pub const CT_FIN_REPLY: u8 = 1 << 2;
pub const CT_DENIED: u8 = 1 << 3;
pub const CT_SEQ_ORIG: u8 = 1 << 4;
pub const CT_SEQ_REPLY: u8 = 1 << 5;

/// Plain-old-data map keys and values: safe to view as bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]`, contain only integers and byte arrays,
/// and have no implicit padding.
pub unsafe trait Pod: Copy + Default + 'static {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: Pod types have no padding and no invalid bit patterns.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), std::mem::size_of::<Self>()) }
    }

    /// Reads a value from bytes the kernel returned; `None` if the length is wrong.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != std::mem::size_of::<Self>() {
            return None;
        }
        let mut v = Self::default();
        // SAFETY: lengths match and every bit pattern is valid for Pod types.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut v as *mut Self).cast::<u8>(), bytes.len()) };
        Some(v)
    }
}

// SAFETY: plain integers have no padding and no invalid bit patterns.
unsafe impl Pod for u8 {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}

/// A byte array of any length with `Default` (std has it up to 32 only).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Bytes([0; N])
    }
}

macro_rules! pod {
    ($($(#[$m:meta])* $name:ident = $c:literal { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? })*) => {
        $(
            $(#[$m])*
            #[doc = concat!("Mirror of `struct ", $c, "`.")]
            #[repr(C)]
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
            pub struct $name { $($(#[$fm])* pub $f: $t),* }
            // SAFETY: repr(C), integer and byte-array fields, padding explicit
            // (checked against BTF in the tests).
            unsafe impl Pod for $name {}
        )*
        /// (Rust name, C name, size, [(field, offset)]) of every mirror, for the layout tests.
        #[cfg(all(test, feature = "skel"))]
        fn mirrors() -> Vec<(&'static str, usize, Vec<(&'static str, usize)>)> {
            vec![$(($c, std::mem::size_of::<$name>(), vec![$((stringify!($f), std::mem::offset_of!($name, $f))),*])),*]
        }
    };
}

pod! {
    Global = "hf_global" {
        policy_gen: u32, flags: u32, events_per_sec: u32, events_burst: u32, host_gen: u32, tick_ns: u32,
        jiffies_epoch: u64, epoch: u32, pad: u32,
    }
    Link = "hf_link" { flags: u32 }
    VlanKey = "hf_vlan_key" { ifindex: u32, vid: u16, pad: u16 }
    AddrKey = "hf_addr_key" { addr: [u8; 16] }
    PolicyMeta = "hf_policy_meta" {
        flags: u32, ident4_nlens: u8, ident6_nlens: u8, pad: [u8; 2], ident4_lens: Bytes<36>, ident6_lens: Bytes<132>,
    }
    Ident4Key = "hf_ident4_key" { gen: u8, plen: u8, pad: [u8; 2], addr: [u8; 4] }
    Ident6Key = "hf_ident6_key" { gen: u8, plen: u8, pad: [u8; 2], addr: [u8; 16] }
    RuleKey = "hf_rule_key" { identity: u32, gen: u8, dir: u8, proto: u8, kind: u8, port: u16, pad: [u8; 2] }
    RuleVal = "hf_rule_val" { rule_id: u32, action: u8, pad: u8, port_lens: u16, port_blocks: u64, port_detail: u64 }
    FailsafeKey = "hf_failsafe_key" { dir: u8, proto: u8, port: u16 }
    Ct4Key = "hf_ct4_key" { addr_a: [u8; 4], addr_b: [u8; 4], port_a: u16, port_b: u16, proto: u8, pad: [u8; 3] }
    Ct6Key = "hf_ct6_key" { addr_a: [u8; 16], addr_b: [u8; 16], port_a: u16, port_b: u16, proto: u8, pad: [u8; 3] }
    CtVal = "hf_ct_val" {
        last_seen_ns: u64, ifindex: u32, host_gen: u32, epoch: u32, seq_next: [u32; 2], pol_port: u16,
        state: u8, flags: u8, origin_dir: u8, origin_a: u8, pad: [u8; 6],
    }
    FragKey = "hf_frag_key" { saddr: [u8; 16], daddr: [u8; 16], id: u32, proto: u8, pad: [u8; 3] }
    FragVal = "hf_frag_val" { ts_ns: u64, rule_id: u32, reason: u8, pad: [u8; 3] }
    CounterKey = "hf_counter_key" { ifindex: u32, dir: u8, reason: u8, audit: u8, pad: u8 }
    Ratelimit = "hf_ratelimit" { last_ns: u64, tokens: u64, suppressed: u64 }
    Event = "hf_event" {
        ts_ns: u64, ifindex: u32, rule_id: u32, saddr: [u8; 16], daddr: [u8; 16],
        sport: u16, dport: u16, vlan: u16, proto: u8, dir: u8, reason: u8, audit: u8,
        family: u8, pad: [u8; 5],
    }
    LocalNetKey = "hf_local_net_key" { prefixlen: u32, addr: [u8; 16] }
}

/// An address as the datapath stores it: IPv4 mapped into IPv6.
pub fn addr16(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`addr16`]: mapped addresses come back as IPv4.
pub fn ip_from16(a: [u8; 16]) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "skel")]
    use libbpf_rs::btf::types::{MemberAttr, Struct};
    #[cfg(feature = "skel")]
    use libbpf_rs::btf::{Btf, HasSize};

    // The two checks against the compiled object need it (feature `skel`).
    #[cfg(feature = "skel")]
    #[test]
    fn mirrors_match_btf_of_the_object() {
        let btf = Btf::from_raw("hostfwd", crate::OBJECT).expect("parse BTF").expect("object has BTF");
        for (c_name, size, fields) in mirrors() {
            let s: Struct = btf.type_by_name(c_name).unwrap_or_else(|| panic!("struct {c_name} not in BTF"));
            assert_eq!(s.size(), size, "size of struct {c_name}");
            let members: Vec<(String, usize)> = s
                .iter()
                .map(|m| {
                    let off = match m.attr {
                        MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => offset as usize / 8,
                    };
                    (m.name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), off)
                })
                .collect();
            let ours: Vec<(String, usize)> = fields.iter().map(|(f, o)| (f.to_string(), *o)).collect();
            assert_eq!(ours, members, "fields and offsets of struct {c_name}");
        }
    }

    /// Constants that size maps: a writer that disagreed with the datapath
    /// about the slot array would leave links unconfigured.
    #[cfg(feature = "skel")]
    #[test]
    fn constants_match_the_object() {
        let obj = libbpf_rs::ObjectBuilder::default().open_memory(crate::OBJECT).expect("open object");
        let max_entries = |name: &str| {
            obj.maps().find(|m| m.name() == name).unwrap_or_else(|| panic!("map {name}")).max_entries()
        };
        assert_eq!(max_entries("hf_link_slots"), LINK_SLOTS);
        assert_eq!(max_entries("hf_rules"), RULES_MAX_ENTRIES);
        assert_eq!(max_entries("hf_host_addrs"), HOST_ADDRS_MAX_ENTRIES);
        assert_eq!(max_entries("hf_local_nets"), LOCAL_NETS_MAX_ENTRIES);
    }

    #[test]
    fn reasons_round_trip() {
        assert_eq!(crate::DropReason::from_name("vlan-filtered"), Some(crate::DropReason::VlanFiltered));
        for r in crate::DropReason::ALL {
            assert_eq!(crate::DropReason::from_code(r.code()), Some(*r));
            assert_eq!(crate::DropReason::from_name(r.name()), Some(*r));
        }
        assert_eq!(crate::DropReason::from_code(0), None);
    }

    #[test]
    fn v4_addresses_are_mapped() {
        let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let a = addr16(ip);
        assert_eq!(&a[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(ip_from16(a), ip);
    }
}
