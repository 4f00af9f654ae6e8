//! The `sidelb-injector` binary: flags and environment, logging, signals.

use anyhow::Context;
use sidelb_config::LogFormat;
use sidelb_injector::Injector;
use sidelb_injector::config::InjectorConfig;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> anyhow::Result<()> {
    let config = match InjectorConfig::parse_from(std::env::args_os()) {
        Ok(config) => config,
        Err(sidelb_injector::config::ConfigError::Args(e)) => e.exit(),
        Err(e) => anyhow::bail!("invalid configuration: {e}"),
    };
    init_logging(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?
        .block_on(run(config))
}

async fn run(config: InjectorConfig) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let injector = Injector::start(config).await?;
    tracing::info!(
        version = sidelb_injector::webhook::VERSION,
        "sidelb-injector listening on https://{}",
        injector.local_addr()
    );
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    injector.stop().await;
    Ok(())
}

fn init_logging(config: &InjectorConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter `{}`", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        // A pod's stderr is a log file, not a terminal: no colour codes in
        // `kubectl logs` (as the proxy).
        LogFormat::Plain => builder.with_ansi(false).init(),
    }
    Ok(())
}
