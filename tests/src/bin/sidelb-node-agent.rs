//! `sidelb-node-agent`: plays the kubelet for pods bound to its Node objects,
//! running local binaries instead of images. See `sidelb_tests::node_agent`.

use clap::Parser;
use sidelb_tests::node_agent::{self, AgentConfig, container::Images, node::NodeSpec};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// Kubeconfig with the credentials the agent uses (admin).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// A Node to register and run pods for: NAME or NAME:ZONE (repeat for more).
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// IMAGE=PATH: the local binary that is IMAGE's entrypoint; an image without a tag maps every tag (repeat).
    #[arg(long = "image")]
    images: Vec<String>,
    /// Where pods' volumes and logs are kept.
    #[arg(long, default_value = "/tmp/sidelb-node-agent")]
    state_dir: PathBuf,
    /// Also bind pods that have no node to these nodes (there is no kube-scheduler).
    #[arg(long)]
    schedule: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIDELB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let flags = Flags::parse();
    let config = (|| -> anyhow::Result<AgentConfig> {
        Ok(AgentConfig {
            kubeconfig: flags.kubeconfig,
            nodes: flags
                .nodes
                .iter()
                .map(|n| NodeSpec::parse(n))
                .collect::<anyhow::Result<_>>()?,
            images: Images::parse(&flags.images)?,
            state_dir: flags.state_dir,
            schedule: flags.schedule,
        })
    })();
    let outcome = config.and_then(|config| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(node_agent::run(config, stop_signal()))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidelb-node-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
