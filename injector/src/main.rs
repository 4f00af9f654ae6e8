//! The `sidelb-injector` binary: flags and environment, logging, signals.

use anyhow::Context;
use sidelb_config::LogFormat;
use sidelb_injector::Injector;
use sidelb_injector::config::InjectorConfig;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let config = match InjectorConfig::parse_from(std::env::args_os()) {
        Ok(config) => config,
        Err(sidelb_injector::config::ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("sidelb-injector: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("sidelb-injector: invalid configuration: {e:#}");
        return ExitCode::from(2);
    }
    let ran = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(run(config)));
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // Said once, in the log's format, unless the log filter hides errors.
            if !tracing::enabled!(tracing::Level::ERROR) {
                eprintln!("sidelb-injector: {e:#}");
            }
            ExitCode::from(1)
        }
    }
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
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // A pod's stderr is a log file, not a terminal: no colour codes in
        // `kubectl logs` (as the proxy).
        LogFormat::Plain => builder.with_ansi(false).init(),
    }
    Ok(())
}
