//! `sidelb-demo` (`make demo`): the problem sidelb solves and the fix, on one
//! machine with no cluster, in a few seconds, with real processes and real
//! calls.
//!
//! 1. Three backends (`sidelb-test-backend`, "pods") behind a connection-level
//!    balancer, as a ClusterIP Service is: a gRPC client on one connection
//!    sends every request to one pod.
//! 2. The same client on one connection to `sidelb-proxy` (file discovery):
//!    every pod gets its share, window after window.
//! 3. Two more pods are added to the endpoints file while the client keeps
//!    going: they take their share at once, with no reconnect.
//!
//! Every figure is counted from the replies, which name the pod that served
//! them. The exit code is 0 only if the fix showed: no failed request, and
//! every pod served requests in the last window.

mod chart;
mod l4;

use anyhow::{Context, Result};
use clap::Parser;
use sidelb_config::settings;
use sidelb_tests::echo::pb::EchoRequest;
use sidelb_tests::harness::binary::PROXY_BIN;
use sidelb_tests::harness::{
    Backend, BackendOptions, EndpointsFile, Load, LoadLimits, Proxy, ProxyOptions,
    ServiceEndpoints, Tally, binary_path, client, unary_calls_concurrently,
};
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// Shows one gRPC connection balanced per request by sidelb-proxy.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Length of one row of the table, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Rows before the two new pods are added.
    #[arg(long, default_value_t = 3)]
    windows_before: u32,
    /// Rows after they are added.
    #[arg(long, default_value_t = 5)]
    windows_after: u32,
    /// Requests in flight at once, all on the one connection.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The proxy's balancer (`SIDELB_BALANCER`); default: the proxy's own.
    #[arg(long)]
    balancer: Option<String>,
    /// Skip the first part (without sidelb).
    #[arg(long)]
    skip_direct: bool,
}

const SERVICE: &str = "echo";
const NAMESPACE: &str = "demo";
const PORT: u16 = 50051;
const FIRST_PODS: usize = 3;
const ALL_PODS: usize = 5;
/// Requests sent without sidelb.
const DIRECT_CALLS: u64 = 300;

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    match run(flags).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sidelb-demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(flags: Flags) -> Result<bool> {
    // Fail before starting anything if the proxy was not built.
    binary_path(PROXY_BIN)?;
    let pods: Vec<String> = (1..=ALL_PODS).map(|n| format!("pod-{n}")).collect();
    let request = EchoRequest {
        payload: "hello".into(),
        ..Default::default()
    };

    println!("sidelb demo: per-request gRPC load balancing on one connection\n");
    let mut backends = Vec::new();
    for pod in &pods[..FIRST_PODS] {
        backends.push(Backend::spawn(pod, BackendOptions::default()).await?);
    }
    let addrs: Vec<_> = backends.iter().map(Backend::addr).collect();
    println!(
        "Started {} gRPC backends (pods): {}\n",
        backends.len(),
        describe(&backends)
    );

    let direct = if flags.skip_direct {
        None
    } else {
        Some(without_sidelb(&flags, &pods[..FIRST_PODS], addrs.clone(), &request).await?)
    };

    // With sidelb.
    let mut service = ServiceEndpoints::new(SERVICE, NAMESPACE, PORT, &addrs);
    let file = EndpointsFile::create(std::slice::from_ref(&service))?;
    let mut options = ProxyOptions::file_discovery(&file).upstream(&service.authority());
    if let Some(balancer) = &flags.balancer {
        options = options.env(settings::BALANCER, balancer.clone());
    }
    let mut proxy = Proxy::spawn(options).await?;
    let listener = proxy.upstream_addr(&service.authority())?;
    println!(
        "2) With sidelb: the app dials localhost:{} (sidelb-proxy, upstream {}),\n   \
         endpoints from {}. Still ONE connection:\n",
        listener.port(),
        service.authority(),
        file.path().display()
    );
    let client = proxy.connect(&service.authority()).await?;
    let window = Duration::from_millis(flags.window_ms.max(100));
    let windows = flags.windows_before + flags.windows_after;
    let limits = LoadLimits {
        concurrency: flags.concurrency,
        max_calls: 5_000_000,
        max_duration: window * (windows + 5),
    };
    let started = Instant::now();
    let load = Load::start(&client, request, limits);
    let mut ticks = tokio::time::interval_at(started + window, window);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);

    chart::print_header(&pods);
    let mut before = Tally::default();
    for _ in 0..flags.windows_before {
        ticks.tick().await;
        let tally = load.take_window();
        chart::print_row(&elapsed(started), &tally, &pods);
        before.merge(&tally);
    }

    // 3) Scale up while the client keeps going.
    for pod in &pods[FIRST_PODS..] {
        let backend = Backend::spawn(pod, BackendOptions::default()).await?;
        service.endpoints.push(backend.addr().to_string());
        backends.push(backend);
    }
    file.write(std::slice::from_ref(&service))?;
    println!(
        "  ---- 3) scale-up at {}: {} added to the endpoints file; same connection ----",
        elapsed(started),
        pods[FIRST_PODS..].join(" and ")
    );
    let mut last = Tally::default();
    for _ in 0..flags.windows_after {
        ticks.tick().await;
        last = load.take_window();
        chart::print_row(&elapsed(started), &last, &pods);
    }
    let total = load.stop().await;

    println!("\nLast window, with sidelb, on one connection:");
    chart::print_bars(&last, &pods);
    let shown = summarize(direct.as_ref(), &before, &last, &total, &pods);

    // Stop the proxy gracefully, within a short bound; the guards kill the rest.
    if proxy.terminate().is_ok() {
        let _ = proxy.process().wait(Duration::from_secs(5)).await;
    }
    Ok(shown)
}

/// Part 1: the same kind of client through a connection-level balancer.
async fn without_sidelb(
    flags: &Flags,
    pods: &[String],
    addrs: Vec<std::net::SocketAddr>,
    request: &EchoRequest,
) -> Result<Tally> {
    let service = l4::ConnectionBalancer::start(addrs)
        .await
        .context("starting the connection-level balancer")?;
    println!(
        "1) Without sidelb: the app dials the Service address {} (a ClusterIP\n   \
         stand-in that, like kube-proxy, balances connections, not requests).\n   \
         ONE gRPC connection, {DIRECT_CALLS} requests:\n",
        service.addr()
    );
    let client = client::connect(service.addr()).await?;
    let tally = unary_calls_concurrently(&client, DIRECT_CALLS, flags.concurrency, request).await;
    chart::print_bars(&tally, pods);
    println!("   Every request went to the pod that the connection was pinned to.\n");
    Ok(tally)
}

/// Prints the summary; true if the fix showed.
fn summarize(
    direct: Option<&Tally>,
    before: &Tally,
    last: &Tally,
    total: &Tally,
    pods: &[String],
) -> bool {
    println!("\nSummary");
    if let Some(direct) = direct {
        let (top, most) = direct
            .backends()
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(("none", 0), |(pod, n)| (pod.as_str(), *n));
        println!(
            "  without sidelb: {most} of {} requests on {top}, the other pods idle.",
            direct.total()
        );
    }
    let shares = |tally: &Tally, pods: &[String]| -> String {
        pods.iter()
            .map(|pod| format!("{pod} {}%", chart::share(tally, pod)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  with sidelb:    {} requests on one connection, {} failed.",
        total.total(),
        chart::failed(total)
    );
    println!(
        "    before scale-up: {}",
        shares(before, &pods[..FIRST_PODS])
    );
    println!("    last window:     {}", shares(last, pods));
    let idle: Vec<&str> = pods
        .iter()
        .filter(|pod| last.served_by(pod) == 0)
        .map(String::as_str)
        .collect();
    let failed = chart::failed(total);
    if idle.is_empty() && failed == 0 {
        println!("  Every pod, old and new, served its share of one connection's requests.");
        true
    } else {
        if !idle.is_empty() {
            println!(
                "  NOT SHOWN: {} got no requests in the last window.",
                idle.join(", ")
            );
        }
        if failed > 0 {
            println!("  NOT SHOWN: {failed} requests failed.");
        }
        false
    }
}

fn describe(backends: &[Backend]) -> String {
    backends
        .iter()
        .map(|b| format!("{} at {}", b.name(), b.addr()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn elapsed(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}
