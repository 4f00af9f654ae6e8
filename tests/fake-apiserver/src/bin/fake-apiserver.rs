//! Runs sidelb's fake Kubernetes API server until SIGTERM or SIGINT, for demos and
//! for poking at with kubectl: `fake-apiserver --kubeconfig /tmp/kc` then
//! `kubectl --kubeconfig /tmp/kc get ns`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sidelb_fake_apiserver::FakeApiServer;

#[derive(Parser, Debug)]
#[command(about = "A fake Kubernetes API server (in memory) for sidelb tests and demos")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for this server.
    #[arg(long, default_value = "fake-apiserver.kubeconfig")]
    kubeconfig: PathBuf,
    /// Serve HTTPS with a generated CA (written into the kubeconfig).
    #[arg(long)]
    tls: bool,
    /// Require this bearer token (written into the kubeconfig).
    #[arg(long)]
    token: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax); each request is logged at `info`.
    #[arg(long, env = "SIDELB_LOG", default_value = "info")]
    log: String,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut builder = FakeApiServer::builder()
        .listen(args.listen)
        .tls(args.tls)
        .kubeconfig_path(&args.kubeconfig)
        .bookmark_interval(Duration::from_secs(args.bookmark_seconds.max(1)));
    if let Some(token) = args.token {
        builder = builder.token(token);
    }
    let server = builder.start()?;
    println!("{}", server.kubeconfig_path().display());
    eprintln!("fake-apiserver listening on {}", server.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(())
}
