//! `sidelb-test-backend`: the gRPC backend of sidelb's tests, demo and
//! benchmarks. See `sidelb_tests::echo` for what it does and
//! `sidelb_tests::echo::server` for the lines it prints.

use clap::Parser;
use sidelb_tests::echo::health::{HealthConfig, HealthMode};
use sidelb_tests::echo::server::{self, ServerConfig, Stopped, TlsFiles};
use sidelb_tests::echo::service::Behaviour;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A gRPC `sidelb.test.Echo` server whose every reply names it.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Name of this instance, returned in every reply and in the
    /// `x-sidelb-backend` header.
    #[arg(long, default_value = "backend")]
    name: String,
    /// Address to listen on; port 0 picks a free port. The bound address is
    /// printed first on stdout: `listening 127.0.0.1:PORT`.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Milliseconds added to the start of every call: a slow backend.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// HTTP/2 `MAX_CONCURRENT_STREAMS` announced to clients (default: no limit).
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Every Nth call fails at once with `--fail-code` (0: never).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// gRPC status code of `--fail-every` failures (14: UNAVAILABLE).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(i32).range(1..=16))]
    fail_code: i32,
    /// After SIGTERM, longest wait in milliseconds for in-flight calls.
    #[arg(long, default_value_t = 30_000)]
    drain_timeout_ms: u64,
    /// Threads that serve calls.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Which part of `grpc.health.v1.Health` to serve.
    #[arg(long, value_enum, default_value_t = HealthMode::Watch)]
    health: HealthMode,
    /// The health status is this file's content (`SERVING`, `NOT_SERVING`,
    /// `SERVICE_UNKNOWN`; missing or other: `NOT_SERVING`), read every 20 ms;
    /// without it: always `SERVING`.
    #[arg(long)]
    health_file: Option<PathBuf>,
    /// Attach an ORCA load report (`endpoint-load-metrics-bin`) to every
    /// answer saying this CPU utilisation (0-1) at 100 requests a second.
    #[arg(long)]
    orca_utilization: Option<f64>,
    /// Serve gRPC over TLS (ALPN `h2`) with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = ServerConfig {
        addr: flags.addr,
        behaviour: Behaviour {
            name: flags.name,
            delay: Duration::from_millis(flags.delay_ms),
            fail_every: flags.fail_every,
            fail_code: tonic::Code::from_i32(flags.fail_code),
        },
        max_concurrent_streams: flags.max_concurrent_streams,
        drain_timeout: Duration::from_millis(flags.drain_timeout_ms),
        health: HealthConfig {
            mode: flags.health,
            file: flags.health_file,
        },
        orca_utilization: flags.orca_utilization,
        tls: flags
            .tls_cert
            .zip(flags.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(flags.workers.into())
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(server::run(config)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(Stopped::Drained) => ExitCode::SUCCESS,
        Ok(Stopped::DrainTimedOut) => {
            eprintln!("sidelb-test-backend: calls still in flight after the drain timeout");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sidelb-test-backend: {e}");
            ExitCode::FAILURE
        }
    }
}
