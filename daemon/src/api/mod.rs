//! The D-Bus API (`org.hostfwd.Firewall1`) over a [`Handle`].

use crate::config::Bus;
use crate::manager::Handle;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Serves the API on `bus` until the returned connection is dropped.
pub async fn serve(_handle: Handle, bus: Bus) -> Result<Option<zbus::Connection>, Error> {
    match bus {
        Bus::None => Ok(None),
        _ => Err("the D-Bus API is not built yet".into()),
    }
}
