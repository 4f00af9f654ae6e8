//! The `sidelb-proxy` binary: settings from flags or environment (one table,
//! `sidelb_config::SETTINGS`, defines both), logging, the runtime, and exit
//! codes: 0 after a clean shutdown, 2 for bad configuration, 1 when it cannot
//! start.

use clap::{Arg, Command};
use sidelb_config::{ProxyConfig, SETTINGS};
use sidelb_proxy::logging::LogFilter;
use std::process::ExitCode;

/// jemalloc, with one arena: every request allocates and frees a few small
/// objects (a task, header maps, frames), which jemalloc's thread caches
/// serve about 10 % cheaper in total CPU than glibc's malloc (measured with
/// `make bench`), while one arena and a one-second decay keep the resident
/// size as small as glibc's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"narenas:1,tcache_max:4096,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn command() -> Command {
    let mut cmd = Command::new("sidelb-proxy")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Per-request HTTP/2 (gRPC) load balancing on localhost. Every flag can also be set by its environment variable.");
    for setting in SETTINGS {
        let flag: &'static str = Box::leak(setting.flag().into_boxed_str());
        cmd = cmd.arg(
            Arg::new(setting.env)
                .long(flag)
                .env(setting.env)
                .value_name("VALUE")
                .help(format!(
                    "{} [default: {}]",
                    setting.help,
                    display_default(setting.default)
                )),
        );
    }
    cmd
}

fn display_default(default: &str) -> &str {
    if default.is_empty() { "none" } else { default }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let config = match ProxyConfig::from_lookup(|env| matches.get_one::<String>(env).cloned()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sidelb-proxy: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let log = LogFilter::init(&config);
    let runtime = if config.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidelb-proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match sidelb_proxy::app::start(config, log).await {
            Ok(running) => {
                running.run_until_signal().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("cannot start: {e}");
                // Said once, in the log's format, unless the log filter hides errors.
                if !tracing::enabled!(tracing::Level::ERROR) {
                    eprintln!("sidelb-proxy: cannot start: {e}");
                }
                ExitCode::from(1)
            }
        }
    })
}
