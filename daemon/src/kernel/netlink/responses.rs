//! The response stream of one netlink request, read to its end even when
//! its reader goes away first.

use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};

/// The response stream of one request, read to its end even when its
/// reader goes away first. A dump future dropped half-way (a cancelled
/// [`super::Monitor::next`] in the daemon's `select!`, which re-reads routes on
/// every route change) drops the channel netlink-proto forwards the
/// responses into, while the kernel still sends the rest of the dump:
/// netlink-proto then logs "failed to forward response back to the handle"
/// for every one of them. Dropped unfinished, this hands the stream to a
/// task that reads it to its end (the last message closes it, and so does
/// the connection stopping).
pub(super) struct Responses {
    stream: Option<std::pin::Pin<Box<dyn futures::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Send>>>,
}

impl Responses {
    pub(super) fn new(stream: impl futures::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Send + 'static) -> Self {
        Responses { stream: Some(Box::pin(stream)) }
    }

    pub(super) async fn next(&mut self) -> Option<NetlinkMessage<RouteNetlinkMessage>> {
        let stream = self.stream.as_mut()?;
        let msg = stream.next().await;
        if msg.as_ref().map_or(true, Self::ends) {
            self.stream = None;
        }
        msg
    }

    /// Whether the message ends the response (netlink-proto closes the
    /// stream after it): NLMSG_DONE or an error/ack.
    fn ends(msg: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        matches!(msg.payload, NetlinkPayload::Done(_) | NetlinkPayload::Error(_))
    }
}

impl Drop for Responses {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else { return };
        // Without a runtime the connection task is gone too: nothing can
        // be forwarded any more.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { while stream.next().await.is_some() {} });
        }
    }
}
