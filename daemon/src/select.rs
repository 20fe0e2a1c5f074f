//! Device selection: a [`Role`] and a human-readable reason for every link of
//! the [`Table`] (design §4). Pure and synchronous: the same table and
//! configuration always give the same answer, so a link that NetworkManager
//! enslaves, renames, deletes and re-creates (new ifindex) or strips of its
//! address simply gets the answer for the new table on the next pass.
//!
//! # Roles
//!
//! * **enforce** — attached, and the link carries host addresses (a global
//!   unicast address): the host policy is evaluated here.
//! * **vlan-guard** — attached, no host address of its own. Untagged frames
//!   are enforced like on an enforce link (a host address of another link
//!   can be reached through it under Linux's weak host model); tagged frames
//!   pass only for the VIDs in its allow set ([`crate::vlan`]), every other
//!   tag is dropped (`vlan-filtered`). A selected device with neither
//!   addresses nor VLAN subinterfaces is a vlan-guard too: its untagged
//!   frames are enforced and every tagged frame is dropped.
//! * **ignored** — nothing attached; the reason says why.
//!
//! The datapath treats both attached roles alike (the VLAN admission check
//! runs on every attached link, the policy applies to traffic addressed to
//! the host); the role tells the operator *why* the link is attached.
//!
//! # How links are picked
//!
//! 1. **Never**: loopback; ports (bond slaves, bridge ports, anything whose
//!    `controller` is set, except ports of a VRF, which is an L3 master and
//!    leaves its ports receiving their own traffic). A port's frames are
//!    received on its controller, so the controller is "the place". A port
//!    listed in `devices` selects its controller instead (warning on the
//!    port): listing `eth0` after NetworkManager enslaved it to `bond0` keeps
//!    the traffic protected instead of silently protecting nothing.
//! 2. **Excluded** by an `exclude` pattern: never attached, whatever else
//!    says so (`exclude` wins).
//! 3. **Explicit** `devices` patterns (names or globs) select what they match,
//!    plumbing included.
//! 4. **`auto`** selects links with a global unicast address or a default
//!    route, except container/virtual plumbing (veth without a default route,
//!    tunnels, tun/tap, names `docker*`, `cni*`, `lxc*`, `cilium_*`, `virbr*`,
//!    `flannel*`, `cali*`, …, Docker's `br-<12 hex>` bridges). A port that
//!    `auto` would pick selects its controller (the bond is picked when any
//!    slave would be). In `auto` mode the lower device of every attached VLAN
//!    subinterface is attached as well: tagged frames for the VLAN arrive
//!    there, and without a program on it untagged frames and frames of other
//!    VIDs reach the host's addresses unevaluated.
//! 5. **Closure below every attached link**: each VLAN subinterface on an
//!    attached lower device is attached too — enforce when it carries host
//!    addresses ("VLAN 1000 on selected bond0 carries host addresses"),
//!    vlan-guard otherwise — and if the subinterface is a port (bridged VLAN),
//!    its controller is attached in its place. That is what lets the lower
//!    device's allow set contain the VID: tagged traffic is let through only
//!    towards a link where it is evaluated, and VLANs used for bridges,
//!    macvlans or QinQ keep working instead of being cut off (the Cilium
//!    outage of design §1). Nested VLANs (QinQ) follow the same rule through
//!    their lower chain. A VLAN subinterface excluded by a pattern is not
//!    attached and its VID is *not* allowed on the lower device (fail
//!    closed); when it carries host addresses that is a loud warning.
//!
//! Explicit lists are taken as given otherwise: a listed VLAN subinterface
//! whose lower device is not selected is attached, with a warning that the
//! lower device's untagged and other-VLAN frames are not evaluated.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::Serialize;

use crate::links::{Ifindex, Link, LinkKind, Table, Vid};

/// What hostfwd does with a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Attached; carries host addresses: the policy is evaluated here.
    Enforce,
    /// Attached; no host address of its own: untagged frames are enforced,
    /// tagged frames pass only for the VIDs of its allow set.
    VlanGuard,
    /// Nothing attached.
    Ignored,
}

impl Role {
    /// The name shown to users (`enforce`, `vlan-guard`, `ignored`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Enforce => "enforce",
            Role::VlanGuard => "vlan-guard",
            Role::Ignored => "ignored",
        }
    }

    /// Whether programs are attached to a link with this role.
    pub fn is_attached(self) -> bool {
        !matches!(self, Role::Ignored)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The role of one link, why, and what the operator should know about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub role: Role,
    pub reason: String,
    /// Something the operator should act on (logged as a warning, shown with
    /// the link); several are joined with "; ".
    pub warning: Option<String>,
}

/// The part of the configuration that selection reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectConfig {
    /// `"auto"` and/or link names and globs (`eth*`, `bond0.*`).
    pub devices: Vec<String>,
    /// Names and globs never attached; wins over everything else.
    pub exclude: Vec<String>,
    /// VIDs that pass every attached link unevaluated; `0` = every tag.
    pub vlan_bypass: Vec<u16>,
}

/// Whether `bypass` lets `vid` through (`0` = every tag).
pub(crate) fn bypasses(bypass: &[u16], vid: Vid) -> bool {
    bypass.iter().any(|&b| b == 0 || b == vid.get())
}

/// The controller that makes `link` a port: set and not an L3 master (VRF),
/// whose ports keep receiving their own traffic.
fn port_controller(table: &Table, link: &Link) -> Option<Ifindex> {
    link.controller.filter(|c| !table.get(*c).is_some_and(is_l3_master))
}

fn is_l3_master(link: &Link) -> bool {
    matches!(&link.kind, LinkKind::Other { name } if name == "vrf")
}

fn is_loopback(link: &Link) -> bool {
    link.kind == LinkKind::Loopback
}

/// Where the traffic of link `i` is received: the link itself, or for a port
/// the place of its controller (eth0 → bond0 → br0). `None` when `i` is not
/// in the table or the controller chain loops. The result may be an ifindex
/// that is not in the table (a controller the table has not seen yet).
pub fn place(table: &Table, i: Ifindex) -> Option<Ifindex> {
    let mut cur = table.get(i)?;
    for _ in 0..=table.len() {
        match port_controller(table, cur) {
            None => return Some(cur.ifindex),
            Some(c) => match table.get(c) {
                Some(next) => cur = next,
                None => return Some(c),
            },
        }
    }
    None
}

/// A list of name patterns; an entry that is not a valid glob (the config
/// rejects those) matches its exact text.
struct Patterns<'a> {
    list: Vec<(&'a str, Option<glob::Pattern>)>,
}

impl<'a> Patterns<'a> {
    fn new(list: &'a [String]) -> Self {
        Patterns { list: list.iter().filter(|p| *p != "auto").map(|p| (p.as_str(), glob::Pattern::new(p).ok())).collect() }
    }

    fn first_match(&self, name: &str) -> Option<&'a str> {
        self.list.iter().find(|(text, g)| g.as_ref().map_or(*text == name, |g| g.matches(name))).map(|(text, _)| *text)
    }
}

/// Name prefixes of container and virtual plumbing that `auto` never picks.
const PLUMBING_PREFIXES: &[&str] =
    &["docker", "cni", "lxc", "cilium_", "virbr", "flannel", "cali", "vxlan", "tun", "tap", "podman", "weave", "kube-ipvs"];

/// Why `auto` leaves a link alone even though it has an address.
fn plumbing(link: &Link) -> Option<String> {
    match &link.kind {
        LinkKind::Veth if !link.default_route => {
            let peer = if link.peer_in_other_netns { ", peer in another network namespace" } else { "" };
            return Some(format!("veth without a default route (container plumbing{peer})"));
        }
        LinkKind::Tunnel { name } => return Some(format!("tunnel ({name})")),
        LinkKind::Other { name } if name == "tun" || name == "tap" => return Some(format!("{name} device")),
        _ => {}
    }
    if let Some(p) = PLUMBING_PREFIXES.iter().find(|p| link.name.starts_with(**p)) {
        return Some(format!("container/virtual plumbing (name starts with `{p}`)"));
    }
    // Docker's user-defined networks: `br-` and 12 hex digits.
    if let Some(id) = link.name.strip_prefix("br-") {
        if id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some("container/virtual plumbing (a Docker network bridge)".into());
        }
    }
    None
}

/// What `auto` sees in a link (without the plumbing check).
fn auto_detail(link: &Link) -> Option<&'static str> {
    if link.has_global_unicast() {
        Some("carries a global unicast address")
    } else if link.default_route {
        Some("has a default route")
    } else {
        None
    }
}

/// Why a link is attached (the first reason found wins).
#[derive(Debug, Clone)]
enum Why {
    Explicit { pattern: String },
    Auto { detail: &'static str },
    /// A port matched `devices`; its controller is attached instead.
    ForPort { port: String, pattern: String },
    /// `auto` would pick a port; its controller is attached instead.
    AutoForPort { port: String, detail: &'static str },
    /// A VLAN subinterface on an attached lower device.
    VlanOn { vid: Vid, lower: String },
    /// The controller of a VLAN subinterface (bridged VLAN) on an attached
    /// lower device.
    ControllerOfVlan { vlan: String, vid: Vid, lower: String },
    /// `auto`: the lower device of an attached VLAN subinterface.
    AutoLower { upper: String },
}

const GUARD_CLAUSE: &str =
    "without host addresses: untagged frames are enforced here, tagged frames pass only for VIDs of its enforced VLAN subinterfaces";

impl Why {
    fn render(&self, role: Role) -> String {
        let why = match self {
            Why::Explicit { pattern } => format!("selected by `{pattern}` in devices"),
            Why::Auto { detail } => format!("auto: {detail}"),
            Why::ForPort { port, pattern } => {
                format!("selected in place of its port {port} (matched by `{pattern}` in devices; ports are never attached)")
            }
            Why::AutoForPort { port, detail } => format!("auto: controller of {port}, which {detail}"),
            Why::VlanOn { vid, lower } => {
                if role == Role::Enforce {
                    return format!("VLAN {vid} on selected {lower} carries host addresses");
                }
                format!("VLAN {vid} on selected {lower}")
            }
            Why::ControllerOfVlan { vlan, vid, lower } => format!("controller of {vlan} (VLAN {vid} on selected {lower})"),
            Why::AutoLower { upper } => format!("auto: lower device of {upper}, whose tagged frames arrive here"),
        };
        match role {
            Role::Enforce => format!("{why}; carries host addresses"),
            _ => format!("{why}; {GUARD_CLAUSE}"),
        }
    }
}

struct Selector<'a> {
    table: &'a Table,
    cfg: &'a SelectConfig,
    auto: bool,
    devices: Patterns<'a>,
    exclude: Patterns<'a>,
    /// lower → its VLAN subinterfaces, in ifindex order.
    vlans_on: BTreeMap<Ifindex, Vec<Ifindex>>,
    attached: BTreeMap<Ifindex, Why>,
    queue: VecDeque<Ifindex>,
    warnings: BTreeMap<Ifindex, Vec<String>>,
    /// Added to the reason of an ignored link.
    notes: BTreeMap<Ifindex, String>,
}

impl<'a> Selector<'a> {
    fn new(table: &'a Table, cfg: &'a SelectConfig) -> Self {
        let mut vlans_on: BTreeMap<Ifindex, Vec<Ifindex>> = BTreeMap::new();
        for l in table.iter() {
            if let LinkKind::Vlan { lower, .. } = l.kind {
                vlans_on.entry(lower).or_default().push(l.ifindex);
            }
        }
        Selector {
            table,
            cfg,
            auto: cfg.devices.iter().any(|d| d == "auto"),
            devices: Patterns::new(&cfg.devices),
            exclude: Patterns::new(&cfg.exclude),
            vlans_on,
            attached: BTreeMap::new(),
            queue: VecDeque::new(),
            warnings: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    fn warn(&mut self, i: Ifindex, w: String) {
        self.warnings.entry(i).or_default().push(w);
    }

    fn name(&self, i: Ifindex) -> String {
        self.table.get(i).map_or_else(|| format!("ifindex {i}"), |l| l.name.clone())
    }

    fn excluded(&self, link: &Link) -> Option<&'a str> {
        self.exclude.first_match(&link.name)
    }

    /// Why link `i` can never be attached: not in the table, loopback, a
    /// port, excluded.
    fn blocked(&self, i: Ifindex) -> Option<String> {
        let Some(link) = self.table.get(i) else { return Some(format!("ifindex {i} is not in the link table")) };
        if is_loopback(link) {
            return Some(format!("{} is loopback", link.name));
        }
        if let Some(c) = port_controller(self.table, link) {
            return Some(format!("{} is a port of {}", link.name, self.name(c)));
        }
        self.excluded(link).map(|p| format!("{} is excluded by `{p}`", link.name))
    }

    /// Attaches `i` unless it is blocked; the first reason is kept.
    fn attach(&mut self, i: Ifindex, why: Why) -> Result<(), String> {
        if let Some(b) = self.blocked(i) {
            return Err(b);
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.attached.entry(i) {
            e.insert(why);
            self.queue.push_back(i);
        }
        Ok(())
    }

    /// Step 1–4: what `devices` and `auto` pick directly.
    fn seed(&mut self) {
        let table = self.table;
        for link in table.iter() {
            if is_loopback(link) {
                if let Some(p) = self.devices.first_match(&link.name) {
                    self.warn(link.ifindex, format!("`{p}` in devices matches {}, but loopback is never attached", link.name));
                }
                continue;
            }
            if let Some(c) = port_controller(table, link) {
                self.seed_port(link, c);
                continue;
            }
            if self.excluded(link).is_some() {
                continue;
            }
            if let Some(p) = self.devices.first_match(&link.name) {
                let _ = self.attach(link.ifindex, Why::Explicit { pattern: p.to_string() });
            } else if self.auto && plumbing(link).is_none() {
                if let Some(detail) = auto_detail(link) {
                    let _ = self.attach(link.ifindex, Why::Auto { detail });
                }
            }
        }
    }

    /// A port that `devices` lists or `auto` would pick selects the place
    /// of its traffic, its controller.
    fn seed_port(&mut self, port: &Link, controller: Ifindex) {
        if self.excluded(port).is_some() {
            return;
        }
        let explicit = self.devices.first_match(&port.name);
        let why = match (explicit, self.auto && plumbing(port).is_none()) {
            (Some(p), _) => Why::ForPort { port: port.name.clone(), pattern: p.to_string() },
            (None, true) => match auto_detail(port) {
                Some(detail) => Why::AutoForPort { port: port.name.clone(), detail },
                None => return,
            },
            (None, false) => return,
        };
        let target = place(self.table, port.ifindex);
        let outcome = match target {
            Some(t) => self.attach(t, why).map(|()| self.name(t)),
            None => Err(format!("the controllers of {} form a loop", port.name)),
        };
        if let Some(p) = explicit {
            let cname = self.name(controller);
            let w = match outcome {
                Ok(t) => format!("`{p}` in devices matches {}, a port of {cname}: programs are never attached to ports; {t} is selected in its place", port.name),
                Err(why) => format!("`{p}` in devices matches {}, a port of {cname}: programs are never attached to ports, and nothing is attached in its place ({why})", port.name),
            };
            self.warn(port.ifindex, w);
        }
    }

    /// Step 4–5 to a fixpoint: VLAN subinterfaces below attached links (and
    /// their controllers), lower devices above them in `auto` mode.
    fn close(&mut self) {
        while let Some(d) = self.queue.pop_front() {
            let Some(dl) = self.table.get(d) else { continue };
            let dname = dl.name.clone();
            for v in self.vlans_on.get(&d).cloned().unwrap_or_default() {
                self.close_vlan(d, &dname, v);
            }
            if let (true, LinkKind::Vlan { lower, .. }) = (self.auto, &dl.kind) {
                let _ = self.attach(*lower, Why::AutoLower { upper: dname.clone() });
            }
        }
    }

    /// VLAN subinterface `v` on attached `d`.
    fn close_vlan(&mut self, d: Ifindex, dname: &str, v: Ifindex) {
        let table = self.table;
        let Some(vl) = table.get(v) else { return };
        let LinkKind::Vlan { vid, .. } = vl.kind else { return };
        let bypassed = bypasses(&self.cfg.vlan_bypass, vid);
        let result = if let Some(p) = self.excluded(vl) {
            Err(format!("is excluded by `{p}`"))
        } else if port_controller(table, vl).is_some() {
            let why = Why::ControllerOfVlan { vlan: vl.name.clone(), vid, lower: dname.to_string() };
            match place(table, v) {
                Some(t) => self.attach(t, why).map_err(|b| format!("its traffic goes to a link that is not attached ({b})")),
                None => Err("its controllers form a loop".into()),
            }
        } else {
            self.attach(v, Why::VlanOn { vid, lower: dname.to_string() })
        };
        let Err(cause) = result else { return };
        let fate = if bypassed {
            format!("tag {vid} passes {dname} unevaluated (vlan_bypass)")
        } else {
            format!("tag {vid} is dropped on {dname}")
        };
        if !self.attached.contains_key(&v) && port_controller(table, vl).is_none() {
            self.notes.insert(v, fate.clone());
        }
        if let Some(holder) = self.host_addr_holder(v) {
            let has = if holder == v { "carries host addresses".to_string() } else { format!("leads to host addresses on {}", self.name(holder)) };
            let w = if bypassed {
                format!(
                    "{} (VLAN {vid}) {has} but {cause}, and VID {vid} is in vlan_bypass: its tagged traffic passes {dname} and reaches host addresses without evaluation",
                    vl.name
                )
            } else {
                format!(
                    "{} (VLAN {vid}) {has} but {cause}: its tagged traffic would reach host addresses without enforcement, so VID {vid} is not allowed and is dropped on {dname} (fail closed)",
                    vl.name
                )
            };
            self.warn(d, w.clone());
            self.warn(v, w);
        }
    }

    /// A link with host addresses that traffic entering link `v` can reach
    /// without passing another lower device: `v` itself, its place (bridged
    /// VLAN), or, recursively, a VLAN subinterface on either (QinQ).
    fn host_addr_holder(&self, v: Ifindex) -> Option<Ifindex> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![v];
        while let Some(i) = todo.pop() {
            if !seen.insert(i) {
                continue;
            }
            let Some(link) = self.table.get(i) else { continue };
            if link.has_global_unicast() {
                return Some(i);
            }
            if let Some(p) = place(self.table, i) {
                todo.push(p);
            }
            todo.extend(self.vlans_on.get(&i).into_iter().flatten().rev());
        }
        None
    }

    /// Warnings about the finished selection.
    fn check(&mut self) {
        let table = self.table;
        let attached: Vec<Ifindex> = self.attached.keys().copied().collect();
        for i in attached {
            let Some(link) = table.get(i) else { continue };
            // A listed VLAN subinterface whose lower device is not attached.
            if let LinkKind::Vlan { lower, .. } = link.kind {
                if table.get(lower).is_some() && !self.attached.contains_key(&lower) {
                    let lname = self.name(lower);
                    let cause = self.blocked(lower).unwrap_or_else(|| format!("{lname} is not selected"));
                    self.warn(
                        i,
                        format!(
                            "its lower device is not attached ({cause}): untagged frames and other VLANs arriving on {lname} are not evaluated and can reach host addresses (weak host model); select {lname} too (it becomes a vlan-guard)"
                        ),
                    );
                }
            }
            let is_lower = self.vlans_on.contains_key(&i) || !link.has_global_unicast();
            if is_lower && self.cfg.vlan_bypass.contains(&0) {
                self.warn(i, "bypass 0: every tag passes unevaluated — VLAN subinterfaces without hostfwd would see unfiltered traffic".into());
            }
        }
    }

    fn decide(&self, link: &Link) -> Decision {
        let warning = self.warnings.get(&link.ifindex).map(|w| w.join("; "));
        if let Some(why) = self.attached.get(&link.ifindex) {
            let role = if link.has_global_unicast() { Role::Enforce } else { Role::VlanGuard };
            return Decision { role, reason: why.render(role), warning };
        }
        let mut reason = if is_loopback(link) {
            "loopback".to_string()
        } else if let Some(c) = port_controller(self.table, link) {
            let cname = self.table.get(c).map_or_else(|| format!("ifindex {c} (not seen yet)"), |l| l.name.clone());
            format!("port of {cname}: its controller is the place")
        } else if let Some(p) = self.excluded(link) {
            format!("excluded by `{p}`")
        } else if let (true, Some(what)) = (self.auto && self.devices.first_match(&link.name).is_none(), plumbing(link)) {
            format!("{what}: auto does not select container or virtual plumbing")
        } else if self.auto {
            format!("not selected by devices = {:?}: no global unicast address or default route", self.cfg.devices)
        } else {
            format!("not selected by devices = {:?}", self.cfg.devices)
        };
        if let Some(n) = self.notes.get(&link.ifindex) {
            reason = format!("{reason}: {n}");
        }
        Decision { role: Role::Ignored, reason, warning }
    }
}

/// The role of every link in `table` (each one gets exactly one decision).
pub fn select(table: &Table, cfg: &SelectConfig) -> BTreeMap<Ifindex, Decision> {
    let mut s = Selector::new(table, cfg);
    s.seed();
    s.close();
    s.check();
    table.iter().map(|l| (l.ifindex, s.decide(l))).collect()
}

/// The `devices` patterns (other than `auto`) that match no link in `table`:
/// a misspelt or not-yet-created device, for the log. They keep applying:
/// a link created later with a matching name is selected.
pub fn unmatched_patterns(table: &Table, cfg: &SelectConfig) -> Vec<String> {
    let pats = Patterns::new(&cfg.devices);
    pats.list
        .iter()
        .filter(|(text, g)| !table.iter().any(|l| g.as_ref().map_or(*text == l.name, |g| g.matches(&l.name))))
        .map(|(text, _)| text.to_string())
        .collect()
}

/// Topology builders shared by the tests of `select`, `vlan` and `reconcile`.
#[cfg(test)]
pub(crate) mod topo {
    use crate::links::{Change, Ifindex, Link, LinkKind, Table, Vid};

    pub fn ifx(i: u32) -> Ifindex {
        Ifindex::new(i).expect("test ifindex")
    }

    pub fn vid(v: u16) -> Vid {
        Vid::new(v).expect("test vid")
    }

    /// A table under construction.
    #[derive(Default, Clone)]
    pub struct Topo {
        pub t: Table,
    }

    impl Topo {
        pub fn new() -> Topo {
            Topo::default()
        }

        pub fn link(mut self, i: u32, name: &str, kind: LinkKind) -> Topo {
            self.t.apply(Change::Link(Link::new(ifx(i), name, kind)));
            self
        }

        pub fn lo(self) -> Topo {
            self.link(1, "lo", LinkKind::Loopback).addr(1, "127.0.0.1/8").addr(1, "::1/128")
        }

        pub fn phys(self, i: u32, name: &str) -> Topo {
            self.link(i, name, LinkKind::Physical)
        }

        pub fn bond(self, i: u32, name: &str) -> Topo {
            self.link(i, name, LinkKind::Bond)
        }

        pub fn bridge(self, i: u32, name: &str) -> Topo {
            self.link(i, name, LinkKind::Bridge)
        }

        pub fn vlan(self, i: u32, name: &str, v: u16, lower: u32) -> Topo {
            self.link(i, name, LinkKind::Vlan { vid: vid(v), lower: ifx(lower) })
        }

        /// Sets `i`'s controller (a NEWLINK with IFLA_MASTER).
        pub fn enslave(mut self, i: u32, controller: u32) -> Topo {
            let mut l = self.t.get(ifx(i)).expect("link").clone();
            l.controller = Some(ifx(controller));
            self.t.apply(Change::Link(l));
            self
        }

        pub fn release(mut self, i: u32) -> Topo {
            let mut l = self.t.get(ifx(i)).expect("link").clone();
            l.controller = None;
            self.t.apply(Change::Link(l));
            self
        }

        pub fn rename(mut self, i: u32, name: &str) -> Topo {
            let mut l = self.t.get(ifx(i)).expect("link").clone();
            l.name = name.into();
            self.t.apply(Change::Link(l));
            self
        }

        pub fn peer_elsewhere(mut self, i: u32) -> Topo {
            let mut l = self.t.get(ifx(i)).expect("link").clone();
            l.peer_in_other_netns = true;
            self.t.apply(Change::Link(l));
            self
        }

        pub fn addr(mut self, i: u32, a: &str) -> Topo {
            self.t.apply(Change::AddrAdded(ifx(i), a.parse().expect("test address")));
            self
        }

        pub fn unaddr(mut self, i: u32, a: &str) -> Topo {
            self.t.apply(Change::AddrRemoved(ifx(i), a.parse().expect("test address")));
            self
        }

        pub fn gone(mut self, i: u32) -> Topo {
            self.t.apply(Change::LinkGone(ifx(i)));
            self
        }

        /// The IPv4 default route leaves through `via`.
        pub fn default_v4(mut self, via: &[u32]) -> Topo {
            self.t.apply(Change::DefaultRoutes { v6: false, via: via.iter().map(|i| ifx(*i)).collect() });
            self
        }

        /// The reference report's topology: bond0 (no address) over eth0 and
        /// eth1; bond0.1000 with the host address and the default route.
        pub fn reference() -> Topo {
            Topo::new()
                .lo()
                .phys(2, "eth0")
                .phys(3, "eth1")
                .bond(4, "bond0")
                .enslave(2, 4)
                .enslave(3, 4)
                .addr(4, "fe80::1/64")
                .vlan(5, "bond0.1000", 1000, 4)
                .addr(5, "192.168.1.201/24")
                .addr(5, "fe80::2/64")
                .default_v4(&[5])
        }
    }

    pub fn cfg(devices: &[&str], exclude: &[&str], bypass: &[u16]) -> super::SelectConfig {
        super::SelectConfig {
            devices: devices.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            vlan_bypass: bypass.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topo::*;
    use super::*;

    type Decisions = BTreeMap<Ifindex, Decision>;

    fn sel(t: &Topo, devices: &[&str], exclude: &[&str], bypass: &[u16]) -> Decisions {
        let d = select(&t.t, &cfg(devices, exclude, bypass));
        assert_eq!(d.len(), t.t.len(), "every link gets exactly one decision");
        d
    }

    fn role(d: &Decisions, i: u32) -> Role {
        d[&ifx(i)].role
    }

    fn reason(d: &Decisions, i: u32) -> &str {
        &d[&ifx(i)].reason
    }

    fn warning(d: &Decisions, i: u32) -> &str {
        d[&ifx(i)].warning.as_deref().unwrap_or("")
    }

    fn roles(d: &Decisions) -> Vec<(u32, Role)> {
        d.iter().map(|(i, d)| (i.get(), d.role)).collect()
    }

    use Role::{Enforce as E, Ignored as I, VlanGuard as G};

    #[test]
    fn reference_report_topology_explicit_bond0() {
        let t = Topo::reference();
        let d = sel(&t, &["bond0"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
        assert_eq!(reason(&d, 1), "loopback");
        assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
        assert_eq!(reason(&d, 3), "port of bond0: its controller is the place");
        assert!(reason(&d, 4).starts_with("selected by `bond0` in devices; without host addresses"), "{}", reason(&d, 4));
        assert!(reason(&d, 4).contains("tagged frames pass only for VIDs of its enforced VLAN subinterfaces"));
        assert_eq!(reason(&d, 5), "VLAN 1000 on selected bond0 carries host addresses");
        assert!(d.values().all(|d| d.warning.is_none()), "{d:#?}");
    }

    #[test]
    fn reference_report_topology_auto_attaches_the_lower_bond_as_guard() {
        let t = Topo::reference();
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
        assert!(reason(&d, 5).starts_with("auto: carries a global unicast address"), "{}", reason(&d, 5));
        assert!(reason(&d, 4).starts_with("auto: lower device of bond0.1000"), "{}", reason(&d, 4));
        assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
        assert!(d.values().all(|d| d.warning.is_none()), "{d:#?}");
    }

    #[test]
    fn explicit_vlan_without_its_lower_warns_about_the_gap() {
        let t = Topo::reference();
        let d = sel(&t, &["bond0.1000"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, E)]);
        assert!(reason(&d, 5).starts_with("selected by `bond0.1000` in devices"));
        assert!(warning(&d, 5).contains("lower device is not attached (bond0 is not selected)"), "{}", warning(&d, 5));
        assert!(warning(&d, 5).contains("select bond0 too"));
        assert_eq!(reason(&d, 4), r#"not selected by devices = ["bond0.1000"]"#);
        // auto with the lower excluded: attached VLAN, the same warning.
        let d = sel(&t, &["auto"], &["bond0"], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, E)]);
        assert_eq!(reason(&d, 4), "excluded by `bond0`");
        assert!(warning(&d, 5).contains("bond0 is excluded by `bond0`"), "{}", warning(&d, 5));
    }

    #[test]
    fn vlan_subinterfaces_follow_the_lower_device() {
        let t = Topo::reference();
        // A new VLAN with an address: enforce, without being listed.
        let t2 = t.clone().vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
        let d = sel(&t2, &["bond0"], &[], &[]);
        assert_eq!(role(&d, 6), E);
        assert_eq!(reason(&d, 6), "VLAN 2000 on selected bond0 carries host addresses");
        // Without an address: a guard (its traffic to the host is enforced).
        let t3 = t.clone().vlan(6, "bond0.2000", 2000, 4);
        let d = sel(&t3, &["bond0"], &[], &[]);
        assert_eq!(role(&d, 6), G);
        assert!(reason(&d, 6).starts_with("VLAN 2000 on selected bond0; without host addresses"), "{}", reason(&d, 6));
        // Deleted again: gone from the answer.
        let d = sel(&t2.gone(6), &["bond0"], &[], &[]);
        assert!(!d.contains_key(&ifx(6)));
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
    }

    #[test]
    fn excluded_vlan_with_host_addresses_is_a_loud_fail_closed_warning() {
        let t = Topo::reference();
        let d = sel(&t, &["bond0"], &["bond0.1000"], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, I)]);
        assert_eq!(reason(&d, 5), "excluded by `bond0.1000`: tag 1000 is dropped on bond0");
        let w = warning(&d, 4);
        assert!(w.contains("bond0.1000 (VLAN 1000) carries host addresses but is excluded by `bond0.1000`"), "{w}");
        assert!(w.contains("would reach host addresses without enforcement"), "{w}");
        assert!(w.contains("VID 1000 is not allowed and is dropped on bond0 (fail closed)"), "{w}");
        assert_eq!(warning(&d, 5), w, "the VLAN carries the warning too");
        // Bypassing the tag on purpose: allowed, but said loudly.
        let d = sel(&t, &["bond0"], &["bond0.1000"], &[1000]);
        assert_eq!(reason(&d, 5), "excluded by `bond0.1000`: tag 1000 passes bond0 unevaluated (vlan_bypass)");
        assert!(warning(&d, 4).contains("VID 1000 is in vlan_bypass: its tagged traffic passes bond0 and reaches host addresses without evaluation"));
        // An excluded VLAN without addresses: dropped, said in its reason only.
        let t2 = t.vlan(6, "bond0.2000", 2000, 4);
        let d = sel(&t2, &["bond0"], &["bond0.2000"], &[]);
        assert_eq!(role(&d, 6), I);
        assert_eq!(reason(&d, 6), "excluded by `bond0.2000`: tag 2000 is dropped on bond0");
        assert_eq!(warning(&d, 4), "");
    }

    #[test]
    fn bypass_zero_warns_on_lower_devices() {
        let t = Topo::reference();
        let d = sel(&t, &["bond0"], &[], &[0]);
        assert!(warning(&d, 4).contains("bypass 0: every tag passes unevaluated"), "{}", warning(&d, 4));
        assert_eq!(warning(&d, 5), "", "bond0.1000 has addresses and no VLANs of its own");
        // A plain VID does not warn: its subinterface is enforced.
        let d = sel(&t, &["bond0"], &[], &[5]);
        assert_eq!(warning(&d, 4), "");
        // An enforced device with VLANs on it is a lower device too.
        let t2 = Topo::new().phys(2, "eth0").addr(2, "192.0.2.1/24").vlan(3, "eth0.7", 7, 2);
        let d = sel(&t2, &["eth0"], &[], &[0]);
        assert_eq!(roles(&d), vec![(2, E), (3, G)]);
        assert!(warning(&d, 2).contains("bypass 0"));
        assert!(warning(&d, 3).contains("bypass 0"), "a guard without VLANs still admits tags");
    }

    #[test]
    fn explicitly_listed_port_selects_its_controller_and_warns() {
        let t = Topo::reference();
        let d = sel(&t, &["eth0"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
        assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
        assert!(warning(&d, 2).contains("`eth0` in devices matches eth0, a port of bond0: programs are never attached to ports; bond0 is selected in its place"), "{}", warning(&d, 2));
        assert!(reason(&d, 4).starts_with("selected in place of its port eth0"), "{}", reason(&d, 4));
        // Globs over ports: each port warns, nothing is attached to them.
        let d = sel(&t, &["eth*"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
        assert!(warning(&d, 3).contains("`eth*` in devices matches eth1"));
        // The controller excluded: nothing attached, said so.
        let d = sel(&t, &["eth0"], &["bond0"], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, I)]);
        assert!(warning(&d, 2).contains("nothing is attached in its place (bond0 is excluded by `bond0`)"), "{}", warning(&d, 2));
        // The port excluded itself: no promotion.
        let d = sel(&t, &["eth0"], &["eth0"], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, I)]);
    }

    #[test]
    fn loopback_is_never_attached() {
        let t = Topo::new().lo().phys(2, "eth0").addr(2, "192.0.2.1/24");
        let d = sel(&t, &["lo", "eth0"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, E)]);
        assert_eq!(reason(&d, 1), "loopback");
        assert!(warning(&d, 1).contains("loopback is never attached"));
        let d = sel(&t, &["*"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, E)]);
    }

    #[test]
    fn auto_skips_plumbing_with_reasons() {
        let t = Topo::new()
            .lo()
            .phys(2, "eth0")
            .addr(2, "192.0.2.10/24")
            .addr(2, "fe80::1/64")
            .phys(3, "eth1")
            .addr(3, "fe80::2/64")
            .bridge(4, "docker0")
            .addr(4, "172.17.0.1/16")
            .link(5, "veth12ab", LinkKind::Veth)
            .enslave(5, 4)
            .link(6, "lxc1234", LinkKind::Veth)
            .addr(6, "10.0.0.1/32")
            .peer_elsewhere(6)
            .link(7, "flannel.1", LinkKind::Tunnel { name: "vxlan".into() })
            .addr(7, "10.244.0.0/32")
            .bridge(8, "br-0123456789ab")
            .addr(8, "172.18.0.1/16")
            .bridge(9, "cni0")
            .addr(9, "10.244.0.1/24")
            .link(10, "wg0", LinkKind::Tunnel { name: "wireguard".into() })
            .addr(10, "10.99.0.1/24")
            .link(11, "tun0", LinkKind::Other { name: "tun".into() })
            .addr(11, "10.8.0.1/24")
            .link(12, "uplink", LinkKind::Veth)
            .addr(12, "198.51.100.7/24")
            .peer_elsewhere(12)
            .default_v4(&[12])
            .bridge(13, "br-lan")
            .addr(13, "192.0.2.200/24")
            .default_v4(&[12]);
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(
            roles(&d),
            vec![(1, I), (2, E), (3, I), (4, I), (5, I), (6, I), (7, I), (8, I), (9, I), (10, I), (11, I), (12, E), (13, E)]
        );
        assert_eq!(reason(&d, 3), r#"not selected by devices = ["auto"]: no global unicast address or default route"#);
        assert_eq!(reason(&d, 4), "container/virtual plumbing (name starts with `docker`): auto does not select container or virtual plumbing");
        assert_eq!(reason(&d, 5), "port of docker0: its controller is the place");
        assert_eq!(
            reason(&d, 6),
            "veth without a default route (container plumbing, peer in another network namespace): auto does not select container or virtual plumbing"
        );
        assert!(reason(&d, 7).starts_with("tunnel (vxlan)"));
        assert!(reason(&d, 8).starts_with("container/virtual plumbing (a Docker network bridge)"));
        assert!(reason(&d, 9).contains("`cni`"));
        assert!(reason(&d, 10).starts_with("tunnel (wireguard)"));
        assert!(reason(&d, 11).starts_with("tun device"));
        assert!(reason(&d, 12).starts_with("auto: carries a global unicast address"), "the netns uplink veth: {}", reason(&d, 12));
        // Listed explicitly, plumbing is selected.
        let d = sel(&t, &["auto", "wg0", "docker0"], &[], &[]);
        assert_eq!(role(&d, 10), E);
        assert_eq!(role(&d, 4), E);
        assert_eq!(role(&d, 5), I, "docker0's ports stay ignored");
    }

    #[test]
    fn auto_default_route_without_address_is_a_guard() {
        let t = Topo::new().phys(2, "ppp-ish").addr(2, "fe80::5/64").default_v4(&[2]);
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(role(&d, 2), G);
        assert!(reason(&d, 2).starts_with("auto: has a default route; without host addresses"));
    }

    #[test]
    fn auto_picks_the_bond_for_its_slaves_and_itself() {
        // A slave still holding an address (before NetworkManager moved it):
        // the bond is picked, never the slave.
        let t = Topo::new().phys(2, "eth0").phys(3, "eth1").bond(4, "bond0").enslave(2, 4).enslave(3, 4).addr(2, "192.0.2.1/24");
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(roles(&d), vec![(2, I), (3, I), (4, G)]);
        assert!(reason(&d, 4).starts_with("auto: controller of eth0, which carries a global unicast address"), "{}", reason(&d, 4));
        // The bond with its own address.
        let t = t.unaddr(2, "192.0.2.1/24").addr(4, "192.0.2.1/24");
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(roles(&d), vec![(2, I), (3, I), (4, E)]);
        assert!(reason(&d, 4).starts_with("auto: carries a global unicast address"));
    }

    #[test]
    fn explicit_device_without_addresses_or_vlans_is_a_guard() {
        let t = Topo::new().phys(2, "eth0").addr(2, "192.0.2.1/24").phys(3, "eth1");
        let d = sel(&t, &["eth*"], &["eth9*"], &[]);
        assert_eq!(roles(&d), vec![(2, E), (3, G)]);
        assert!(reason(&d, 2).starts_with("selected by `eth*` in devices; carries host addresses"));
        assert!(reason(&d, 3).contains("without host addresses: untagged frames are enforced here"));
        let t = t.phys(9, "eth9");
        let d = sel(&t, &["eth*"], &["eth9*"], &[]);
        assert_eq!(reason(&d, 9), "excluded by `eth9*`");
    }

    #[test]
    fn vlan_glob_selects_subinterfaces() {
        let t = Topo::reference().vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
        let d = sel(&t, &["bond0.*"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, E), (6, E)]);
        assert!(warning(&d, 5).contains("select bond0 too"));
    }

    #[test]
    fn qinq_follows_the_lower_chain() {
        let t = Topo::new()
            .phys(2, "eth0")
            .vlan(3, "eth0.100", 100, 2)
            .vlan(4, "eth0.100.200", 200, 3)
            .addr(4, "192.0.2.9/24")
            .vlan(5, "eth0.100.300", 300, 3);
        let d = sel(&t, &["eth0"], &[], &[]);
        assert_eq!(roles(&d), vec![(2, G), (3, G), (4, E), (5, G)]);
        assert_eq!(reason(&d, 4), "VLAN 200 on selected eth0.100 carries host addresses");
        // auto climbs the chain from the addressed inner VLAN.
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(roles(&d), vec![(2, G), (3, G), (4, E), (5, G)]);
        assert!(reason(&d, 3).starts_with("auto: lower device of eth0.100.200"));
        assert!(reason(&d, 2).starts_with("auto: lower device of eth0.100"));
        // The middle excluded: the inner one is cut off (fail closed).
        let d = sel(&t, &["eth0"], &["eth0.100"], &[]);
        assert_eq!(roles(&d), vec![(2, G), (3, I), (4, I), (5, I)]);
        assert_eq!(reason(&d, 4), r#"not selected by devices = ["eth0"]"#);
        assert!(warning(&d, 2).contains("eth0.100 (VLAN 100) leads to host addresses on eth0.100.200 but is excluded by `eth0.100`"), "{}", warning(&d, 2));
    }

    #[test]
    fn bridged_vlan_attaches_its_bridge_instead() {
        // Hypervisor: bond0.2000 is a port of br-vm (VMs, no host address);
        // bond0.3000 is a port of br-mgmt, which carries the host address.
        let t = Topo::reference()
            .vlan(6, "bond0.2000", 2000, 4)
            .bridge(7, "br-vm")
            .enslave(6, 7)
            .link(8, "vnet0", LinkKind::Other { name: "tun".into() })
            .enslave(8, 7)
            .vlan(9, "bond0.3000", 3000, 4)
            .bridge(10, "br-mgmt")
            .enslave(9, 10)
            .addr(10, "10.30.0.2/24");
        let d = sel(&t, &["bond0"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E), (6, I), (7, G), (8, I), (9, I), (10, E)]);
        assert_eq!(reason(&d, 6), "port of br-vm: its controller is the place");
        assert!(reason(&d, 7).starts_with("controller of bond0.2000 (VLAN 2000 on selected bond0)"), "{}", reason(&d, 7));
        assert!(reason(&d, 10).starts_with("controller of bond0.3000 (VLAN 3000 on selected bond0); carries host addresses"));
        // The management bridge excluded: loud warning, fail closed.
        let d = sel(&t, &["bond0"], &["br-mgmt"], &[]);
        assert_eq!(role(&d, 10), I);
        assert!(
            warning(&d, 4).contains("bond0.3000 (VLAN 3000) leads to host addresses on br-mgmt but its traffic goes to a link that is not attached (br-mgmt is excluded by `br-mgmt`)"),
            "{}",
            warning(&d, 4)
        );
        assert!(warning(&d, 4).contains("VID 3000 is not allowed and is dropped on bond0 (fail closed)"));
    }

    #[test]
    fn vrf_ports_keep_their_own_role() {
        let t = Topo::new().link(2, "vrf-blue", LinkKind::Other { name: "vrf".into() }).phys(3, "eth0").addr(3, "192.0.2.1/24").enslave(3, 2);
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(roles(&d), vec![(2, I), (3, E)]);
        assert_eq!(place(&t.t, ifx(3)), Some(ifx(3)));
    }

    #[test]
    fn transitions_follow_the_table() {
        let devices = ["eth0"];
        // eth0 with the address.
        let t = Topo::new().lo().phys(2, "eth0").addr(2, "192.0.2.1/24").default_v4(&[2]);
        assert_eq!(roles(&sel(&t, &devices, &[], &[])), vec![(1, I), (2, E)]);
        // NetworkManager creates bond0, enslaves eth0, moves the address.
        let t = t.bond(4, "bond0").enslave(2, 4).unaddr(2, "192.0.2.1/24").addr(4, "192.0.2.1/24").default_v4(&[4]);
        let d = sel(&t, &devices, &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (4, E)]);
        assert!(warning(&d, 2).contains("bond0 is selected in its place"));
        let d = sel(&t, &["auto"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (4, E)]);
        // bond0 deleted and re-created with a new ifindex.
        let t = t.gone(4).release(2).bond(14, "bond0").enslave(2, 14).addr(14, "192.0.2.1/24");
        let d = sel(&t, &["bond0"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, I), (14, E)]);
        assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
        // Released again: eth0 is its own place.
        let t = t.release(2).addr(2, "198.51.100.1/24");
        let d = sel(&t, &["eth0"], &[], &[]);
        assert_eq!(roles(&d), vec![(1, I), (2, E), (14, I)]);
        // Renamed: a name-based selection follows the name.
        let t = t.rename(2, "lan0");
        let d = sel(&t, &["eth0"], &[], &[]);
        assert_eq!(role(&d, 2), I);
        assert_eq!(unmatched_patterns(&t.t, &cfg(&["eth0", "auto", "bond*"], &[], &[])), vec!["eth0".to_string()]);
        let d = sel(&t, &["lan*"], &[], &[]);
        assert_eq!(role(&d, 2), E);
        // Address removed: the selected link becomes a guard.
        let t = t.unaddr(2, "198.51.100.1/24");
        assert_eq!(role(&sel(&t, &["lan*"], &[], &[]), 2), G);
        // ... and auto no longer picks it.
        assert_eq!(role(&sel(&t, &["auto"], &[], &[]), 2), I);
        // A port whose controller the table has not seen yet.
        let t = t.enslave(2, 99);
        let d = sel(&t, &["lan0"], &[], &[]);
        assert_eq!(reason(&d, 2), "port of ifindex 99 (not seen yet): its controller is the place");
        assert!(warning(&d, 2).contains("nothing is attached in its place (ifindex 99 is not in the link table)"), "{}", warning(&d, 2));
    }

    #[test]
    fn a_thousand_vlans_on_one_bond() {
        let mut t = Topo::reference();
        for v in 1..=1000u16 {
            let i = 100 + v as u32;
            t = t.vlan(i, &format!("bond0.{}", 2000 + v), 2000 + v, 4).addr(i, &format!("10.{}.{}.1/24", v / 256, v % 256));
        }
        let d = sel(&t, &["bond0"], &[], &[]);
        assert_eq!(d.values().filter(|d| d.role == E).count(), 1001);
        assert_eq!(role(&d, 4), G);
        assert_eq!(reason(&d, 1100), "VLAN 3000 on selected bond0 carries host addresses");
    }

    #[test]
    fn empty_devices_select_nothing_and_unmatched_patterns_are_reported() {
        let t = Topo::reference();
        let d = sel(&t, &[], &[], &[]);
        assert!(d.values().all(|d| d.role == I));
        assert_eq!(reason(&d, 4), "not selected by devices = []");
        assert_eq!(
            unmatched_patterns(&t.t, &cfg(&["auto", "bond0", "eth9", "bond1.*", "eth?"], &[], &[])),
            vec!["eth9".to_string(), "bond1.*".to_string()]
        );
    }

    #[test]
    fn role_names_and_place() {
        assert_eq!(Role::VlanGuard.to_string(), "vlan-guard");
        assert_eq!(serde_json::to_string(&Role::VlanGuard).unwrap_or_default(), "\"vlan-guard\"");
        assert!(Role::Enforce.is_attached() && Role::VlanGuard.is_attached() && !Role::Ignored.is_attached());
        let t = Topo::new().phys(2, "eth0").bond(3, "bond0").bridge(4, "br0").enslave(2, 3).enslave(3, 4);
        assert_eq!(place(&t.t, ifx(2)), Some(ifx(4)));
        assert_eq!(place(&t.t, ifx(7)), None);
        // A controller loop (never from a real kernel) does not hang.
        let t = t.enslave(4, 2);
        assert_eq!(place(&t.t, ifx(2)), None);
        let d = sel(&t, &["eth0"], &[], &[]);
        assert!(d.values().all(|d| d.role == I));
        assert!(warning(&d, 2).contains("loop"));
        // Nested controllers: a listed slave selects the top.
        let t = Topo::new().phys(2, "eth0").bond(3, "bond0").bridge(4, "br0").enslave(2, 3).enslave(3, 4).addr(4, "192.0.2.1/24");
        let d = sel(&t, &["eth0"], &[], &[]);
        assert_eq!(roles(&d), vec![(2, I), (3, I), (4, E)]);
        assert_eq!(reason(&d, 3), "port of br0: its controller is the place");
    }
}
