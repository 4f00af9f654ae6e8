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

use super::MAX_MESSAGE_BYTES;
use super::deadline::DeadlineLayer;
use super::health::{self, HealthConfig};
use super::metadata::EchoMetadataLayer;
use super::pb::echo_server::EchoServer;
use super::service::{Behaviour, EchoService};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
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
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = Server::builder()
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
        .add_optional_service(health::service(&config.health))
        .serve_with_incoming_shutdown(incoming, stopped(stopping.clone()));
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
