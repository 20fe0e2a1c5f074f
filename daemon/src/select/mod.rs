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
//!    received on its controller, so the controller is where they are judged. A port
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
/// the receiving link of its controller (eth0 → bond0 → br0). `None` when `i` is not
/// in the table or the controller chain loops. The result may be an ifindex
/// that is not in the table (a controller the table has not seen yet).
pub fn receiving_link(table: &Table, i: Ifindex) -> Option<Ifindex> {
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

    /// A port that `devices` lists or `auto` would pick selects the receiving link
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
        let target = receiving_link(self.table, port.ifindex);
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
            match receiving_link(table, v) {
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
    /// without passing another lower device: `v` itself, its receiving link (bridged
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
            if let Some(p) = receiving_link(self.table, i) {
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
pub(crate) mod topo;

#[cfg(test)]
mod tests;
