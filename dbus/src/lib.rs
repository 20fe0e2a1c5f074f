//! The D-Bus contract of hostfwd (`org.hostfwd.Firewall1`): shared by the
//! daemon's objects and the clients.

pub mod proxy;
