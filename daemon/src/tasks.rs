//! The daemon's background tasks beside its main loop: the drop-event
//! reader, the D-Bus API server and the watchdog interval.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Bus;
use crate::datapath::EventReader;
use crate::manager::Handle;

/// Reads drop events from the ring buffer (its own thread: the reader
/// polls), logs them and hands them to the API's monitors.
pub(crate) fn spawn_event_reader(paths: crate::datapath::Paths, events: tokio::sync::broadcast::Sender<Arc<crate::datapath::Event>>) {
    std::thread::spawn(move || {
        let reader = match EventReader::open(&paths) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "event reader");
                return;
            }
        };
        loop {
            match reader.poll(Duration::from_millis(500)) {
                Ok(batch) => {
                    for e in batch {
                        tracing::info!(target: "hostfwd::event", event = %serde_json::to_string(&e).unwrap_or_default(), "drop");
                        // Nobody listening is fine.
                        let _ = events.send(Arc::new(e));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "event reader");
                    return;
                }
            }
        }
    });
}

/// Serves the API, retrying while the bus is not there yet (hostfwd starts
/// before dbus at boot: programs are attached without waiting for it).
pub(crate) fn spawn_api(handle: Handle, bus: Bus, paths: crate::datapath::Paths) {
    if bus == Bus::None {
        return;
    }
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        loop {
            match crate::api::serve(handle.clone(), bus.clone(), paths.clone()).await {
                Ok(Some(conn)) => {
                    tracing::info!(bus = ?bus, "D-Bus API served");
                    delay = Duration::from_millis(250);
                    // The stream ends when the bus goes away (dbus
                    // restarted): serve again on a new connection.
                    let mut stream = zbus::MessageStream::from(&conn);
                    while futures::StreamExt::next(&mut stream).await.is_some() {}
                    tracing::warn!(bus = ?bus, "D-Bus connection lost; connecting again");
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(bus = ?bus, error = %e, retry_s = delay.as_secs_f64(), "D-Bus API not served yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), halved.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
