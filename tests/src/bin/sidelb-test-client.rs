//! `sidelb-test-client`: the app of a client pod. It dials one address (the
//! sidecar's upstream listener, `localhost:15001`, as a user's app would) on
//! ONE HTTP/2 connection and keeps unary `Echo` calls going, bounded in
//! number and time, printing one line per window on stdout:
//! `window {JSON tally}` (which pod served how many calls, and how the others
//! ended; see `sidelb_tests::harness::Tally`). SIGTERM stops it after a last
//! line `total {JSON tally}`.
//!
//! Until the connection opens it tries again every 200 ms, printing
//! `connect-failed: REASON` each time, for at most `--connect-timeout-s`.

use clap::Parser;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::{Load, LoadLimits, Tally, client};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Where to dial.
    #[arg(long, default_value = "127.0.0.1:15001")]
    target: SocketAddr,
    /// `:authority` of the calls (default: the target).
    #[arg(long)]
    authority: Option<String>,
    /// Calls in flight at once, all on the one connection.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Length of one window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 600)]
    duration_s: u64,
    /// Stop after this many calls.
    #[arg(long, default_value_t = 10_000_000)]
    max_calls: u64,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 30)]
    connect_timeout_s: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let authority = flags
        .authority
        .clone()
        .unwrap_or_else(|| flags.target.to_string());
    let give_up = Instant::now() + Duration::from_secs(flags.connect_timeout_s);
    let echo = loop {
        match client::connect_with_authority(flags.target, &authority).await {
            Ok(echo) => break echo,
            Err(err) if Instant::now() < give_up => {
                println!("connect-failed: {err:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => {
                println!("connect-failed: {err:#}");
                eprintln!(
                    "sidelb-test-client: no connection to {} within {}s",
                    flags.target, flags.connect_timeout_s
                );
                return ExitCode::FAILURE;
            }
        }
    };
    println!("connected {}", flags.target);
    let limits = LoadLimits {
        concurrency: flags.concurrency,
        max_calls: flags.max_calls,
        max_duration: Duration::from_secs(flags.duration_s),
    };
    let load = Load::start(
        &echo,
        EchoRequest {
            payload: "hello".into(),
            ..Default::default()
        },
        limits,
    );
    let window = Duration::from_millis(flags.window_ms.max(10));
    let mut ticks = tokio::time::interval_at(Instant::now() + window, window);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        eprintln!("sidelb-test-client: cannot handle SIGTERM");
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                print_line("window", &load.take_window());
                if load.is_finished() {
                    break;
                }
            }
            _ = term.recv() => break,
        }
    }
    print_line("total", &load.stop().await);
    ExitCode::SUCCESS
}

fn print_line(label: &str, tally: &Tally) {
    match serde_json::to_string(tally) {
        Ok(json) => println!("{label} {json}"),
        Err(err) => eprintln!("sidelb-test-client: {err}"),
    }
}
