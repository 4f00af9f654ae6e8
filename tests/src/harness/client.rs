//! gRPC clients of the `Echo` service, each on exactly one HTTP/2 connection.
//!
//! One connection is the point: it is what an app's gRPC channel uses, and it
//! is what a ClusterIP Service pins to one pod. A tonic `Channel` built from a
//! single endpoint is one connection (reconnected if it breaks), and clones
//! of the client share it.

use crate::echo::MAX_MESSAGE_BYTES;
use crate::echo::pb::EchoRequest;
use crate::echo::pb::echo_client::EchoClient;
use anyhow::{Context, Result};
use http::Uri;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A client of the `Echo` service over one connection.
pub type Echo = EchoClient<Channel>;

/// Bound on opening the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `addr`, with `:authority` `addr` (a backend, or a proxy's
/// upstream listener).
pub async fn connect(addr: SocketAddr) -> Result<Echo> {
    connect_with_authority(addr, &addr.to_string()).await
}

/// Connects to `addr` but names `authority` in every request, e.g.
/// `echo.default:50051` for the proxy's authority-routed listener.
pub async fn connect_with_authority(addr: SocketAddr, authority: &str) -> Result<Echo> {
    let origin: Uri = format!("http://{authority}")
        .parse()
        .with_context(|| format!("authority {authority:?}"))?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .origin(origin)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(EchoClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// A request stream fed from a channel, for streaming calls whose next
/// message depends on the replies so far (interactive bidi). The stream ends
/// when the sender is dropped: that is the client's half-close.
pub fn request_channel(
    buffer: usize,
) -> (
    tokio::sync::mpsc::Sender<EchoRequest>,
    impl futures_util::Stream<Item = EchoRequest> + Send + 'static,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(buffer.max(1));
    let requests = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|request| (request, receiver))
    });
    (sender, requests)
}
