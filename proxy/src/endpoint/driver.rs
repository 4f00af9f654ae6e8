//! Keeps an endpoint connected.
//!
//! The driver opens the HTTP/2 connection as soon as the endpoint appears,
//! so the first request finds it ready; pings it so a dead peer is noticed
//! without waiting for a request; reconnects with exponential backoff and
//! jitter, so a crashed pod is skipped at once and many proxies do not
//! reconnect in lockstep; and opens extra connections when the peer's
//! stream limit is reached. With `SIDELB_HEALTH_CHECK=grpc` each connection
//! also carries the endpoint's health checks ([`super::grpc_health`]).

use super::backoff::backoff;
use super::conns::MAX_CONNECTIONS;
use super::tls::{Connector, Stream, TlsFailure};
use super::{ConnState, Endpoint, grpc_health};
use bytes::Bytes;
use sidelb_config::{HealthCheck, ProxyConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// HTTP/2 flow-control windows towards endpoints: large enough for 4 MiB
/// messages to stream at speed, small enough that memory stays bounded.
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Where the backoff of an endpoint that speaks no HTTP/2 starts: at its cap.
const NO_HTTP2_ATTEMPTS: u32 = 16;
/// A connection that lived at least this long resets the backoff.
const HEALTHY_LIFETIME: Duration = Duration::from_secs(1);

/// Why a connection could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        addr: std::net::SocketAddr,
        timeout: Duration,
    },
    #[error("connect to {addr}: {source}")]
    Io {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with {addr}: {source}; does it speak HTTP/2 (h2c)?")]
    Handshake {
        addr: std::net::SocketAddr,
        source: h2::Error,
    },
    #[error("{addr}: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        source: TlsFailure,
    },
    #[error("{addr} accepted the connection but did not answer TLS within {timeout:?}")]
    TlsTimeout {
        addr: std::net::SocketAddr,
        timeout: Duration,
    },
    #[error("{addr} closed the connection during the HTTP/2 handshake")]
    Closed { addr: std::net::SocketAddr },
    #[error("{addr} accepted the connection but did not answer HTTP/2 within {timeout:?}")]
    NoAnswer {
        addr: std::net::SocketAddr,
        timeout: Duration,
    },
}

impl ConnectError {
    /// Whether the endpoint could not be reached at all, or not over a
    /// trusted TLS session (as opposed to reached but not speaking HTTP/2).
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ConnectError::Timeout { .. }
                | ConnectError::Io { .. }
                | ConnectError::Tls { .. }
                | ConnectError::TlsTimeout { .. }
        )
    }
}

/// Starts the driver of a new endpoint, connecting with its pool's
/// `connector`; `on_failure` hears of each connection that could not be
/// opened (the balancer's outlier detection).
pub(crate) fn spawn<F>(
    endpoint: Arc<Endpoint>,
    config: Arc<ProxyConfig>,
    connector: Connector,
    on_failure: F,
) where
    F: Fn(&Endpoint) + Send + 'static,
{
    let handle = tokio::spawn(drive(endpoint.clone(), config, connector, on_failure));
    endpoint.set_driver(handle.abort_handle());
}

async fn drive<F: Fn(&Endpoint)>(
    endpoint: Arc<Endpoint>,
    config: Arc<ProxyConfig>,
    connector: Connector,
    on_failure: F,
) {
    let mut attempt: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        match open(&endpoint, &config, &connector).await {
            Ok(Opened {
                send,
                connection,
                pings,
            }) => {
                let conn = endpoint.conns.add(send);
                endpoint.set_state(ConnState::Ready, None);
                tracing::debug!(endpoint = %endpoint.addr, service = %endpoint.service(), "connected");
                let mut running = Box::pin(run(connection, pings, config.clone()));
                let checked = config.health_check == HealthCheck::Grpc;
                let closed = tokio::select! {
                    r = &mut running => r,
                    () = grpc_health::run(&endpoint, &conn), if checked => Ok(()),
                    () = extra_connections(&endpoint, &config, &connector) => Ok(()),
                    () = conn.closing.notified() => {
                        // GOAWAY: let its streams finish on their own, connect anew now.
                        tokio::spawn(running);
                        Ok(())
                    }
                };
                let remaining = endpoint.conns.remove(&conn);
                if remaining == 0 {
                    endpoint.set_state(ConnState::Connecting, None);
                }
                match closed {
                    Ok(()) => tracing::debug!(endpoint = %endpoint.addr, "connection closed"),
                    Err(e) => {
                        tracing::info!(endpoint = %endpoint.addr, service = %endpoint.service(), "connection lost: {e}");
                        endpoint.set_state(endpoint.state(), Some(e));
                    }
                }
                if started.elapsed() >= HEALTHY_LIFETIME {
                    attempt = 0;
                    continue;
                }
            }
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.addr, service = %endpoint.service(), "{e}");
                if e.is_unreachable() {
                    endpoint.count_connect_failure();
                    on_failure(&endpoint);
                    endpoint.set_state(ConnState::Down, Some(e.to_string()));
                } else {
                    // Reachable, so HTTP/1.1 requests may still use it;
                    // HTTP/2 is retried rarely.
                    endpoint.set_state(ConnState::NoHttp2, Some(e.to_string()));
                    attempt = attempt.max(NO_HTTP2_ATTEMPTS);
                }
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(backoff(attempt)).await;
    }
}

type Connection = h2::client::Connection<Stream, Bytes>;

/// An open connection whose peer has answered: its SETTINGS (stream limit,
/// windows) are known before the first request is sent on it.
struct Opened {
    send: h2::client::SendRequest<Bytes>,
    connection: Connection,
    pings: Option<h2::PingPong>,
}

async fn open(
    endpoint: &Endpoint,
    config: &ProxyConfig,
    connector: &Connector,
) -> Result<Opened, ConnectError> {
    let addr = endpoint.addr;
    let timeout = config.connect_timeout;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout { addr, timeout })?
        .map_err(|source| ConnectError::Io { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio::time::timeout(timeout, connector.connect(tcp))
        .await
        .map_err(|_| ConnectError::TlsTimeout { addr, timeout })?
        .map_err(|source| ConnectError::Tls { addr, source })?;
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(config.max_header_bytes.saturating_mul(4))
        .enable_push(false)
        .handshake(stream)
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    let mut pings = connection.ping_pong();
    if let Some(pings) = pings.as_mut() {
        // A server sends its SETTINGS before anything else, so once our
        // PING is answered they have been applied.
        pings
            .send_ping(h2::Ping::opaque())
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        let answered = async {
            tokio::select! {
                r = &mut connection => Err(match r {
                    Ok(()) => ConnectError::Closed { addr },
                    Err(source) => ConnectError::Handshake { addr, source },
                }),
                r = std::future::poll_fn(|cx| pings.poll_pong(cx)) => {
                    r.map(drop).map_err(|source| ConnectError::Handshake { addr, source })
                }
            }
        };
        tokio::time::timeout(timeout, answered)
            .await
            .map_err(|_| ConnectError::NoAnswer { addr, timeout })??;
    }
    Ok(Opened {
        send,
        connection,
        pings,
    })
}

/// Drives a connection until it closes, pinging it when keepalive is on.
async fn run(
    mut connection: Connection,
    pings: Option<h2::PingPong>,
    config: Arc<ProxyConfig>,
) -> Result<(), String> {
    let (Some(interval), Some(mut pings)) = (config.keepalive_interval, pings) else {
        return connection.await.map_err(|e| e.to_string());
    };
    let timeout = config.keepalive_timeout;
    let keepalive = async move {
        loop {
            tokio::time::sleep(interval).await;
            if pings.send_ping(h2::Ping::opaque()).is_err() {
                return "keepalive ping could not be sent".to_string();
            }
            match tokio::time::timeout(timeout, std::future::poll_fn(|cx| pings.poll_pong(cx)))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("keepalive ping failed: {e}"),
                Err(_) => return format!("keepalive ping not answered within {timeout:?}"),
            }
        }
    };
    tokio::select! {
        r = &mut connection => r.map_err(|e| e.to_string()),
        why = keepalive => Err(why),
    }
}

/// Opens further connections while every connection is at its stream limit.
/// Never returns; extra connections end on their own when closed.
async fn extra_connections(
    endpoint: &Arc<Endpoint>,
    config: &Arc<ProxyConfig>,
    connector: &Connector,
) {
    loop {
        endpoint.conns.want_more.notified().await;
        if endpoint.conns.len() >= MAX_CONNECTIONS || endpoint.is_removed() {
            continue;
        }
        let Ok(Opened {
            send,
            connection,
            pings,
        }) = open(endpoint, config, connector).await
        else {
            continue;
        };
        let conn = endpoint.conns.add(send);
        tracing::debug!(endpoint = %endpoint.addr, connections = endpoint.conns.len(), "opened an extra connection: stream limit reached");
        let endpoint = endpoint.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let _ = run(connection, pings, config).await;
            endpoint.conns.remove(&conn);
        });
    }
}
