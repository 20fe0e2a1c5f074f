//! The arguments of the D-Bus methods, checked before anything else runs:
//! option maps (`a{sv}`) with unknown keys or wrong types, names, bounds.
//! Every refusal is `InvalidArgs` naming the argument or key, quoting at
//! most 64 characters of what the caller sent. Pure: no state, no bus.

use std::collections::HashMap;

use hostfwd_dbus::Error as BusError;
use zbus::zvariant::{OwnedValue, Value};

use crate::manager::ApplyOptions;
use crate::policy_store as store;

/// `a{sv}` arguments.
pub type Options = HashMap<String, OwnedValue>;


pub fn invalid_args(m: String) -> BusError {
    zbus::fdo::Error::InvalidArgs(m).into()
}

/// A `b` option.
fn opt_bool(key: &str, v: &Value<'_>) -> Result<bool, BusError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(invalid_args(format!("option {key:?} must be a boolean (b), not {}", other.value_signature()))),
    }
}

/// An unsigned option (`u`; `t`, `q`, `y` and non-negative `i`/`x` are
/// accepted too, for clients whose integers default to another type).
pub fn opt_uint(key: &str, v: &Value<'_>) -> Result<u64, BusError> {
    let n: Option<u64> = match v {
        Value::U8(n) => Some((*n).into()),
        Value::U16(n) => Some((*n).into()),
        Value::U32(n) => Some((*n).into()),
        Value::U64(n) => Some(*n),
        Value::I16(n) => u64::try_from(*n).ok(),
        Value::I32(n) => u64::try_from(*n).ok(),
        Value::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    // The signature, not the value: the value may be anything, of any size.
    n.ok_or_else(|| invalid_args(format!("option {key:?} must be an unsigned integer (u), not {} of that type or sign", v.value_signature())))
}

/// `ApplyPolicy` options.
pub fn apply_options(options: &Options) -> Result<ApplyOptions, BusError> {
    let mut out = ApplyOptions::default();
    for (k, v) in options {
        match k.as_str() {
            hostfwd_dbus::options::PERSIST => out.persist = opt_bool(k, v)?,
            hostfwd_dbus::options::CONFIRM_TIMEOUT_SEC => {
                let secs = opt_uint(k, v)?;
                let max = hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC;
                if secs > max {
                    return Err(invalid_args(format!("option {k:?} must be at most {max} (a day), not {secs}")));
                }
                out.confirm_timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            other => return Err(invalid_args(format!("unknown option {:?} (known: persist, confirm-timeout-sec)", shown(other)))),
        }
    }
    Ok(out)
}

/// `RemovePolicy` options: whether to persist.
pub fn remove_options(options: &Options) -> Result<bool, BusError> {
    let mut persist = false;
    for (k, v) in options {
        match k.as_str() {
            hostfwd_dbus::options::PERSIST => persist = opt_bool(k, v)?,
            other => return Err(invalid_args(format!("unknown option {:?} (known: persist)", shown(other)))),
        }
    }
    Ok(persist)
}

/// A caller's string in a message: at most 64 characters of it.
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The `name` argument of the policy methods: a policy source name.
pub(super) fn policy_name(name: &str) -> Result<(), BusError> {
    store::check_name(name).map_err(|_| {
        invalid_args(format!("argument \"name\": {:?} is not a policy name (1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-')", shown(name)))
    })
}

/// The `name` argument of `GetLinkByName`: a Linux interface name.
pub(super) fn link_name(name: &str) -> Result<(), BusError> {
    // IFNAMSIZ - 1 bytes, no '/', ':' or white space (dev_valid_name()).
    let ok = (1..=15).contains(&name.len()) && name != "." && name != ".." && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    ok.then_some(()).ok_or_else(|| invalid_args(format!("argument \"name\": {:?} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)", shown(name))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, Value<'_>)]) -> Options {
        kv.iter().map(|(k, v)| (k.to_string(), OwnedValue::try_from(v.try_clone().expect("clone")).expect("owned"))).collect()
    }

    fn invalid(e: BusError, key: &str) {
        assert_eq!(e.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(e.to_string().contains(&format!("{key:?}")), "names {key:?}: {e}");
    }

    #[test]
    fn confirm_timeouts_are_bounded() {
        let max = hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC;
        let ok = apply_options(&opts(&[("confirm-timeout-sec", Value::from(max as u32))])).expect("a day");
        assert_eq!(ok.confirm_timeout, Some(std::time::Duration::from_secs(max)));
        for v in [Value::from(u32::MAX), Value::from(u64::MAX), Value::from(max + 1)] {
            invalid(apply_options(&opts(&[("confirm-timeout-sec", v)])).unwrap_err(), "confirm-timeout-sec");
        }
    }

    #[test]
    fn options_of_unknown_keys_or_wrong_types_name_the_key() {
        invalid(apply_options(&opts(&[("persist", Value::from(1u32))])).unwrap_err(), "persist");
        invalid(apply_options(&opts(&[("confirm-timeout-sec", Value::from("60"))])).unwrap_err(), "confirm-timeout-sec");
        invalid(apply_options(&opts(&[("confirm-timeout-sec", Value::from(-1i32))])).unwrap_err(), "confirm-timeout-sec");
        invalid(apply_options(&opts(&[("persits", Value::from(true))])).unwrap_err(), "persits");
        invalid(remove_options(&opts(&[("confirm-timeout-sec", Value::from(1u32))])).unwrap_err(), "confirm-timeout-sec");
        invalid(remove_options(&opts(&[("persist", Value::from("yes"))])).unwrap_err(), "persist");
    }

    #[test]
    fn names_are_checked_and_quoted_shortly() {
        for bad in ["", "../etc/passwd", "a b", &"x".repeat(65)] {
            invalid(policy_name(bad).unwrap_err(), "name");
        }
        policy_name("web.v2").expect("valid");
        for bad in ["", "a/b", "a:b", "sixteen-bytes-xx", ".", "a\tb"] {
            invalid(link_name(bad).unwrap_err(), "name");
        }
        link_name("bond0.1000").expect("valid");
        let e = policy_name(&"é".repeat(100_000)).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
