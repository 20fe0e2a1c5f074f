//! Why a command failed, as the exit status scripts see and the message
//! people read (`cli::EXIT_CODES` documents the statuses).

use std::fmt;

use hostfwd_dbus::Error as BusError;

/// The exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The daemon refused or failed, or another error.
    Error = 1,
    Usage = 2,
    /// No bus at the address, or nobody owns hostfwd's name on it.
    Unreachable = 3,
    /// polkit refused the caller.
    Denied = 4,
    /// `policy validate` found problems.
    Invalid = 5,
    /// `status`: the daemon is degraded or enforces no policy.
    Degraded = 6,
}

/// A failed command: the exit status and the message after `hostfwdctl: `.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into() }
    }

    pub fn error(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Error, message)
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    /// A failure to reach the bus at `address` (the system bus when `None`).
    pub fn connect(address: Option<&str>, e: zbus::Error) -> Failure {
        match e {
            zbus::Error::Address(why) => {
                Failure::usage(format!("invalid bus address {:?}: {why}", address.unwrap_or("(the system bus's)")))
            }
            e => Failure::new(Exit::Unreachable, format!("cannot connect to {}: {}", describe_bus(address), plain_zbus(&e))),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Error names that mean "hostfwd is not there to answer".
const UNREACHABLE: &[&str] = &[
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
    "org.freedesktop.DBus.Error.Disconnected",
];

/// polkit's own refusal, should a daemon pass it through unchanged.
const POLKIT_NOT_AUTHORIZED: &str = "org.freedesktop.PolicyKit1.Error.NotAuthorized";

impl From<BusError> for Failure {
    fn from(e: BusError) -> Failure {
        let with = |exit, what: &str, msg: String| {
            let message = if msg.is_empty() { what.to_string() } else { format!("{what}: {msg}") };
            Failure::new(exit, message)
        };
        match e {
            BusError::InvalidPolicy(m) => with(Exit::Error, "invalid policy", m),
            BusError::NoSuchLink(m) => with(Exit::Error, "no such link", m),
            BusError::NoSuchPolicy(m) => with(Exit::Error, "no such policy", m),
            BusError::NoPendingConfirm(m) => with(Exit::Error, "nothing to confirm", m),
            BusError::Busy(m) => with(Exit::Error, "busy", m),
            BusError::Failed(m) => with(Exit::Error, "failed", m),
            BusError::AccessDenied(m) => with(Exit::Denied, "access denied", m),
            BusError::InteractiveAuthorizationRequired(m) => {
                let hint = "(polkit wants a password; run without --no-ask-password, from a terminal or with a polkit agent)";
                with(Exit::Denied, "interactive authorization required", format!("{m} {hint}").trim().to_string())
            }
            BusError::ZBus(e) => from_zbus(e),
        }
    }
}

/// How the bus is named in messages.
pub fn describe_bus(address: Option<&str>) -> String {
    match address {
        Some(a) => format!("the bus at {a}"),
        None => "the system bus".into(),
    }
}

impl From<zbus::Error> for Failure {
    fn from(e: zbus::Error) -> Failure {
        BusError::from(e).into()
    }
}

fn from_zbus(e: zbus::Error) -> Failure {
    let (name, msg) = match &e {
        zbus::Error::MethodError(name, msg, _) => (name.to_string(), msg.clone().unwrap_or_default()),
        zbus::Error::FDO(f) => (zbus::DBusError::name(&**f).to_string(), zbus::DBusError::description(&**f).unwrap_or_default().to_string()),
        zbus::Error::InputOutput(_) | zbus::Error::Handshake(_) => {
            return Failure::new(Exit::Unreachable, format!("lost the bus: {}", plain_zbus(&e)))
        }
        _ => return Failure::error(plain_zbus(&e)),
    };
    if UNREACHABLE.contains(&name.as_str()) {
        let why = if msg.is_empty() { name } else { msg };
        return Failure::new(Exit::Unreachable, format!("hostfwd is not reachable: {why}"));
    }
    if name == POLKIT_NOT_AUTHORIZED {
        return Failure::new(Exit::Denied, format!("access denied: {msg}"));
    }
    let short = name.rsplit('.').next().unwrap_or(&name).to_string();
    Failure::error(if msg.is_empty() { name } else { format!("{short}: {msg} ({name})") })
}

/// A zbus error without zbus's own wording where a plainer one exists.
fn plain_zbus(e: &zbus::Error) -> String {
    match e {
        zbus::Error::InputOutput(io) => io.to_string(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_error() {
        let f: Failure = BusError::AccessDenied("not allowed".into()).into();
        assert_eq!((f.exit, f.message.as_str()), (Exit::Denied, "access denied: not allowed"));
        let f: Failure = BusError::InteractiveAuthorizationRequired(String::new()).into();
        assert_eq!(f.exit, Exit::Denied);
        assert!(f.message.starts_with("interactive authorization required: "), "{}", f.message);
        let f: Failure = BusError::NoSuchLink("eth9".into()).into();
        assert_eq!((f.exit, f.message.as_str()), (Exit::Error, "no such link: eth9"));
        let f: Failure = zbus::Error::from(zbus::fdo::Error::ServiceUnknown("nobody owns it".into())).into();
        assert_eq!((f.exit, f.message.as_str()), (Exit::Unreachable, "hostfwd is not reachable: nobody owns it"));
        let f: Failure = zbus::Error::from(zbus::fdo::Error::UnknownMethod("Frob".into())).into();
        assert_eq!(f.exit, Exit::Error);
        assert!(f.message.contains("UnknownMethod: Frob"), "{}", f.message);
        let io = zbus::Error::InputOutput(std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::NotFound)));
        assert_eq!(Failure::connect(None, io).exit, Exit::Unreachable);
        let f = Failure::connect(Some("bogus"), zbus::Error::Address("bad".into()));
        assert_eq!((f.exit, f.message.as_str()), (Exit::Usage, "invalid bus address \"bogus\": bad"));
    }
}
