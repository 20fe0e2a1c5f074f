//! The D-Bus contract of hostfwd (`org.hostfwd.Firewall1`): shared by the
//! daemon's objects and the clients.
//!
//! - names: [`BUS_NAME`], [`MANAGER_PATH`], [`MANAGER_INTERFACE`],
//!   [`LINK_INTERFACE`], [`LINK_PATH_PREFIX`];
//! - link object paths: [`link_path`] (ifindex → path, escaped as systemd's
//!   `sd_bus_path_encode`) and [`link_ifindex`] (path → ifindex);
//! - the errors of every method: [`Error`];
//! - the shipped files (introspection XML, bus policy, activation file) as
//!   constants, so that tests compare the live bus with what is installed.

pub mod proxy;

use std::fmt;

use zbus::message::Header;
use zbus::names::ErrorName;
use zbus::DBusError;

/// The well-known name the daemon owns.
pub const BUS_NAME: &str = "org.hostfwd.Firewall1";
/// The manager object (also the root of the ObjectManager).
pub const MANAGER_PATH: &str = "/org/hostfwd/Firewall1";
pub const MANAGER_INTERFACE: &str = "org.hostfwd.Firewall1.Manager";
pub const LINK_INTERFACE: &str = "org.hostfwd.Firewall1.Link";
/// Link objects are `LINK_PATH_PREFIX/<escaped ifindex>`.
pub const LINK_PATH_PREFIX: &str = "/org/hostfwd/Firewall1/link";
/// The prefix of hostfwd's own error names.
pub const ERROR_PREFIX: &str = "org.hostfwd.Firewall1.Error";

/// Introspection XML of the Manager interface, as installed to
/// `/usr/share/dbus-1/interfaces/org.hostfwd.Firewall1.Manager.xml`.
pub const MANAGER_XML: &str = include_str!("../org.hostfwd.Firewall1.Manager.xml");
/// Introspection XML of the Link interface, as installed to
/// `/usr/share/dbus-1/interfaces/org.hostfwd.Firewall1.Link.xml`.
pub const LINK_XML: &str = include_str!("../org.hostfwd.Firewall1.Link.xml");
/// The bus policy, as installed to `/usr/share/dbus-1/system.d/org.hostfwd.Firewall1.conf`.
pub const BUS_POLICY: &str = include_str!("../org.hostfwd.Firewall1.conf");

/// Options of `ApplyPolicy` / `RemovePolicy` (`a{sv}` keys).
pub mod options {
    /// b: also write (or delete) the file in the policy directory.
    pub const PERSIST: &str = "persist";
    /// u: roll back unless `ConfirmPolicy(revision)` comes within this many seconds.
    pub const CONFIRM_TIMEOUT_SEC: &str = "confirm-timeout-sec";
    /// The longest confirm timeout, a day: a change that waits longer is
    /// not a trial any more (and a deadline must fit the clocks).
    pub const MAX_CONFIRM_TIMEOUT_SEC: u64 = 86_400;
}

/// Filter keys of `OpenMonitor` (`a{sv}`); absent keys match everything.
pub mod monitor {
    /// s (link name) or i / u (ifindex).
    pub const LINK: &str = "link";
    /// s: drop reason (`policy-denied`, `vlan-filtered`, …).
    pub const REASON: &str = "reason";
    /// b: only audited (true) or only real (false) drops.
    pub const AUDIT: &str = "audit";
}

/// The object path of the link with `ifindex`: `/org/hostfwd/Firewall1/link/_32`
/// for ifindex 2 (the label escaped as systemd's `sd_bus_path_encode`: every
/// byte that is not an ASCII letter, or a digit after the first byte, as
/// `_` and two lowercase hex digits).
pub fn link_path(ifindex: u32) -> String {
    format!("{LINK_PATH_PREFIX}/{}", label_escape(&ifindex.to_string()))
}

/// The ifindex of a link object path made by [`link_path`]; `None` for any
/// other path.
pub fn link_ifindex(path: &str) -> Option<u32> {
    let label = path.strip_prefix(LINK_PATH_PREFIX)?.strip_prefix('/')?;
    let text = label_unescape(label)?;
    let ifindex: u32 = text.parse().ok()?;
    // Only the canonical spelling (escaped, no leading zeros, no `+`).
    (link_path(ifindex) == path).then_some(ifindex)
}

/// systemd's `bus_label_escape`.
pub fn label_escape(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(b as char);
        } else {
            out.push('_');
            out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
    }
    out
}

/// systemd's `bus_label_unescape`; `None` for a malformed label.
pub fn label_unescape(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let b = label.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every error a hostfwd method returns, on both sides of the bus.
///
/// hostfwd's own conditions are `org.hostfwd.Firewall1.Error.<Variant>`,
/// with a human message. Authorization failures keep the standard names
/// (`org.freedesktop.DBus.Error.AccessDenied`,
/// `…InteractiveAuthorizationRequired`) and a change that was valid but
/// could not be carried out is `org.freedesktop.DBus.Error.Failed`, so that
/// generic clients (busctl, gdbus) understand them.
///
/// `DBusError` is implemented by hand rather than derived: the derive names
/// its passthrough variant `org.freedesktop.zbus.Error` whatever it holds,
/// which would turn a polkit refusal into a non-standard error on the wire.
/// Here [`Error::ZBus`] keeps the name of the error it wraps.
#[derive(Debug)]
pub enum Error {
    /// The policy text does not parse or validate; one problem per line,
    /// each naming source:line:column and field.
    InvalidPolicy(String),
    NoSuchLink(String),
    NoSuchPolicy(String),
    /// `ConfirmPolicy`/`RollbackPolicy` with nothing (or another revision) pending.
    NoPendingConfirm(String),
    /// Another change awaits confirmation, or the daemon is shutting down.
    Busy(String),
    /// `org.freedesktop.DBus.Error.AccessDenied`: polkit said no (or could
    /// not be asked: hostfwd fails closed).
    AccessDenied(String),
    /// `org.freedesktop.DBus.Error.InteractiveAuthorizationRequired`: polkit
    /// would ask for a password, but the caller did not allow interaction.
    InteractiveAuthorizationRequired(String),
    /// `org.freedesktop.DBus.Error.Failed`: a valid change the daemon could
    /// not carry out (kernel, disk).
    Failed(String),
    /// Any other error from the bus, keeping its name.
    ZBus(zbus::Error),
}

const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
const INTERACTIVE_AUTH_REQUIRED: &str = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
const FAILED: &str = "org.freedesktop.DBus.Error.Failed";

impl Error {
    /// The full D-Bus error name.
    pub fn error_name(&self) -> String {
        match self {
            Error::InvalidPolicy(_) => format!("{ERROR_PREFIX}.InvalidPolicy"),
            Error::NoSuchLink(_) => format!("{ERROR_PREFIX}.NoSuchLink"),
            Error::NoSuchPolicy(_) => format!("{ERROR_PREFIX}.NoSuchPolicy"),
            Error::NoPendingConfirm(_) => format!("{ERROR_PREFIX}.NoPendingConfirm"),
            Error::Busy(_) => format!("{ERROR_PREFIX}.Busy"),
            Error::AccessDenied(_) => ACCESS_DENIED.into(),
            Error::InteractiveAuthorizationRequired(_) => INTERACTIVE_AUTH_REQUIRED.into(),
            Error::Failed(_) => FAILED.into(),
            Error::ZBus(e) => zbus_error_name(e),
        }
    }

    /// The human message: the error's description, else what zbus says.
    pub fn message(&self) -> String {
        match (zbus::DBusError::description(self), self) {
            (Some(m), _) => m.to_string(),
            (None, Error::ZBus(e)) => e.to_string(),
            (None, _) => String::new(),
        }
    }

    /// True for both authorization refusals.
    pub fn is_authorization(&self) -> bool {
        matches!(self, Error::AccessDenied(_) | Error::InteractiveAuthorizationRequired(_))
    }

    /// Builds the variant for a D-Bus error name (the reverse of
    /// [`Error::error_name`]); `None` for names that are not ours or the
    /// standard ones above.
    pub fn from_name(name: &str, message: String) -> Option<Error> {
        let e = match name {
            ACCESS_DENIED => Error::AccessDenied(message),
            INTERACTIVE_AUTH_REQUIRED => Error::InteractiveAuthorizationRequired(message),
            FAILED => Error::Failed(message),
            _ => match name.strip_prefix(ERROR_PREFIX)?.strip_prefix('.')? {
                "InvalidPolicy" => Error::InvalidPolicy(message),
                "NoSuchLink" => Error::NoSuchLink(message),
                "NoSuchPolicy" => Error::NoSuchPolicy(message),
                "NoPendingConfirm" => Error::NoPendingConfirm(message),
                "Busy" => Error::Busy(message),
                _ => return None,
            },
        };
        Some(e)
    }
}

fn zbus_error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(f) => f.name().to_string(),
        _ => "org.freedesktop.zbus.Error".into(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_name(), self.message())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ZBus(e) => Some(e),
            _ => None,
        }
    }
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Error {
        let known = match &e {
            zbus::Error::MethodError(name, msg, _) => Error::from_name(name.as_str(), msg.clone().unwrap_or_default()),
            zbus::Error::FDO(f) => Error::from_name(f.name().as_str(), f.description().unwrap_or_default().to_string()),
            _ => None,
        };
        known.unwrap_or(Error::ZBus(e))
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Error {
        zbus::Error::from(e).into()
    }
}

impl DBusError for Error {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        let name = self.name();
        zbus::message::Message::error(call, name)?.build(&(self.message(),))
    }

    fn name(&self) -> ErrorName<'_> {
        // Every name built here is valid: ours are static, the others come
        // from a parsed error.
        ErrorName::try_from(self.error_name())
            .unwrap_or_else(|_| ErrorName::from_static_str_unchecked("org.freedesktop.zbus.Error"))
    }

    fn description(&self) -> Option<&str> {
        match self {
            Error::InvalidPolicy(m)
            | Error::NoSuchLink(m)
            | Error::NoSuchPolicy(m)
            | Error::NoPendingConfirm(m)
            | Error::Busy(m)
            | Error::AccessDenied(m)
            | Error::InteractiveAuthorizationRequired(m)
            | Error::Failed(m) => Some(m),
            Error::ZBus(zbus::Error::MethodError(_, m, _)) => m.as_deref(),
            Error::ZBus(zbus::Error::FDO(e)) => e.description(),
            Error::ZBus(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_paths_escape_as_systemd() {
        assert_eq!(link_path(2), "/org/hostfwd/Firewall1/link/_32");
        assert_eq!(link_path(12), "/org/hostfwd/Firewall1/link/_312");
        assert_eq!(link_path(4096), "/org/hostfwd/Firewall1/link/_34096");
        assert_eq!(label_escape("bond0.100"), "bond0_2e100");
        assert_eq!(label_escape(""), "_");
        for i in [1u32, 2, 9, 10, 99, 1000, u32::MAX] {
            let p = link_path(i);
            assert!(zbus::zvariant::ObjectPath::try_from(p.as_str()).is_ok(), "{p}");
            assert_eq!(link_ifindex(&p), Some(i));
        }
        assert_eq!(link_ifindex("/org/hostfwd/Firewall1/link/2"), None);
        assert_eq!(link_ifindex("/org/hostfwd/Firewall1/link/_302"), None);
        assert_eq!(link_ifindex("/org/hostfwd/Firewall1/link/_3"), None);
        assert_eq!(link_ifindex("/org/hostfwd/Firewall1/link/_"), None);
        assert_eq!(link_ifindex("/org/hostfwd/Firewall1/links/_32"), None);
        assert_eq!(link_ifindex("/org/hostfwd/Firewall1"), None);
    }

    #[test]
    fn error_names_round_trip() {
        let all = [
            Error::InvalidPolicy("x".into()),
            Error::NoSuchLink("x".into()),
            Error::NoSuchPolicy("x".into()),
            Error::NoPendingConfirm("x".into()),
            Error::Busy("x".into()),
            Error::AccessDenied("x".into()),
            Error::InteractiveAuthorizationRequired("x".into()),
            Error::Failed("x".into()),
        ];
        for e in all {
            let name = e.error_name();
            assert_eq!(e.name().as_str(), name);
            let back = Error::from_name(&name, "x".into()).expect("known name");
            assert_eq!(back.error_name(), name);
            assert_eq!(back.message(), "x");
        }
        assert_eq!(Error::Busy(String::new()).error_name(), "org.hostfwd.Firewall1.Error.Busy");
        let fdo: Error = zbus::fdo::Error::AccessDenied("no".into()).into();
        assert!(matches!(fdo, Error::AccessDenied(ref m) if m == "no"), "{fdo:?}");
        let other: Error = zbus::fdo::Error::UnknownMethod("m".into()).into();
        assert_eq!(other.error_name(), "org.freedesktop.DBus.Error.UnknownMethod");
    }
}
