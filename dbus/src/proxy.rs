//! Client proxies for `org.hostfwd.Firewall1.Manager` and `.Link`.
