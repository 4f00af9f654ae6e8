//! The `sidelb-injector` binary run as the chart runs it: configured by
//! environment variables, found where it says it listens.

use super::pki::{Ca, TempDir};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_sidelb-injector");
const START_BOUND: Duration = Duration::from_secs(30);

pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub ca: Ca,
    _dir: TempDir,
}

impl Process {
    /// Starts the binary on 127.0.0.1:0 with a fresh certificate and `env`.
    pub async fn start(env: &[(&str, &str)]) -> Process {
        let dir = TempDir::new("binary");
        let ca = Ca::new("binary CA");
        let (cert, key) = ca.leaf("binary").write(dir.path());
        let mut command = Command::new(BIN);
        command
            .env("SIDELB_INJECTOR_ADDR", "127.0.0.1:0")
            .env("SIDELB_TLS_CERT", &cert)
            .env("SIDELB_TLS_KEY", &key)
            .env("SIDELB_LOG", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the binary");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = tokio::time::timeout(START_BOUND, async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                if let Some(rest) = line.split("listening on https://").nth(1) {
                    return rest
                        .split_whitespace()
                        .next()
                        .expect("an address")
                        .parse()
                        .expect("ip:port");
                }
            }
            panic!("the binary exited without listening");
        })
        .await
        .expect("the binary says where it listens");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process {
            child,
            addr,
            ca,
            _dir: dir,
        }
    }

    /// A field of `/proc/PID/status` in KiB (`VmHWM`: the peak resident set).
    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("the injector runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }
}
