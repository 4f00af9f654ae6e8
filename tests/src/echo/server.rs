//! Serving the `Echo` service on one address, and stopping like a pod does.
//!
//! The process speaks to whoever started it through stdout, one line per
//! event, so tests can wait on them instead of sleeping:
//! - `listening 127.0.0.1:PORT`: first line, once the socket is bound (the
//!   real port when `--addr` asked for port 0);
//! - `draining`: SIGTERM (or SIGINT) arrived; the listening socket is being
//!   closed, `GOAWAY` is sent on every connection, in-flight calls go on;
//! - `stopped`: every connection is finished; the process exits with 0.
//!
//! If calls are still running after the drain timeout, the process says so on
//! stderr and exits with 1. SIGKILL is the crash case and needs no code.
//!
//! With a certificate and key it serves gRPC over TLS (ALPN `h2` only), as a
//! pod of a service in `SIDELB_BACKEND_TLS` does: the handshakes are
//! tokio-rustls's, run one task per connection so that a client that never
//! finishes one holds up no other, and tonic serves the sessions.

use super::MAX_MESSAGE_BYTES;
use super::deadline::DeadlineLayer;
use super::health::{self, HealthConfig};
use super::metadata::EchoMetadataLayer;
use super::pb::echo_server::EchoServer;
use super::service::{Behaviour, EchoService};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Everything one backend process needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub behaviour: Behaviour,
    /// The `SETTINGS_MAX_CONCURRENT_STREAMS` announced to clients.
    pub max_concurrent_streams: Option<u32>,
    /// Longest wait for in-flight calls after SIGTERM.
    pub drain_timeout: Duration,
    /// What its `grpc.health.v1.Health` service answers.
    pub health: HealthConfig,
    /// The CPU utilisation an ORCA load report on every answer says (none when unset).
    pub orca_utilization: Option<f64>,
    /// Serve TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
}

/// The PEM files of a TLS backend.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished after the stop signal.
    Drained,
    /// Calls were still in flight when the drain timeout ran out.
    DrainTimedOut,
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Binds, announces the address, serves until SIGTERM/SIGINT, then drains.
pub async fn run(config: ServerConfig) -> Result<Stopped, Error> {
    let tls = config.tls.as_ref().map(acceptor).transpose()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    announce(&format!("listening {}", listener.local_addr()?));

    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        announce("draining");
        let _ = stop.send(true);
    });

    let service = EchoServer::new(EchoService::new(config.behaviour.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .layer(
            // Outermost first: deadline responses get the echo and the name too.
            tower::ServiceBuilder::new()
                .layer(
                    EchoMetadataLayer::new(&config.behaviour.name)
                        .reporting_load(config.orca_utilization),
                )
                .layer(DeadlineLayer)
                .into_inner(),
        )
        .add_service(service)
        .add_optional_service(health::service(&config.health));
    let serve = match tls {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            Box::pin(router.serve_with_incoming_shutdown(incoming, stopped(stopping.clone())))
                as Pin<Box<dyn Future<Output = _> + Send>>
        }
        Some(acceptor) => Box::pin(router.serve_with_incoming_shutdown(
            tls_incoming(listener, acceptor),
            stopped(stopping.clone()),
        )),
    };
    let drain_deadline = async {
        stopped(stopping).await;
        tokio::time::sleep(config.drain_timeout).await;
    };

    tokio::select! {
        served = serve => {
            served?;
            announce("stopped");
            Ok(Stopped::Drained)
        }
        () = drain_deadline => Ok(Stopped::DrainTimedOut),
    }
}

fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("--tls-key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The TLS sessions of `listener`'s connections, as they finish their
/// handshakes; a failed handshake is reported on stderr and dropped.
fn tls_incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> impl futures_util::Stream<Item = std::io::Result<TlsConn>> {
    let (sessions, received) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sessions = sessions.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = sessions.send(Ok(TlsConn(Box::new(tls)))).await;
                    }
                    Err(e) => eprintln!("TLS handshake with {peer} failed: {e}"),
                }
            });
        }
    });
    futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|session| (session, received))
    })
}

/// A client's TLS session, as tonic serves it.
pub struct TlsConn(Box<tokio_rustls::server::TlsStream<TcpStream>>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

/// Resolves once the stop signal has been received.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    // An error means the sender is gone without a stop: never resolve then.
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers; SIGTERM will kill without draining");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// One line for whoever started the process, flushed at once (stdout is a
/// pipe in tests, so it would otherwise be block-buffered).
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
