//! `make compare`'s program (`sidelb-compare --quick`) on a private control
//! plane with CoreDNS, for two of its systems: the same Go client (one
//! grpc-go ClientConn, round_robin) dialling a headless Service through
//! CoreDNS, and dialling its injected sidecar. After the scale-up from 3 to 5
//! pods, round_robin sends the new pods nothing (nothing made it re-resolve),
//! while through sidelb they answer calls in the first window; no call
//! through sidelb fails in the rolling restart.

use serde_json::Value;
use sidelb_tests::harness::{ControlPlane, binary_path};
use std::time::Duration;

/// Bound on the run (about 100 s warm on a 2-core machine).
const RUN: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_misses_new_pods_that_sidelb_balances_at_once() {
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = ControlPlane::private()?;
        cluster.script(&["dns"])?;
        anyhow::Ok(cluster)
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("make cluster-dns: {e:#}"));
    let compare = binary_path("sidelb-compare").expect("cargo build --workspace --bins");
    let figures = cluster.dir().join("compare.json");
    let run = tokio::process::Command::new(compare)
        .arg("--cluster-dir")
        .arg(cluster.dir())
        .args(["--quick", "--systems", "round-robin,sidelb", "--json"])
        .arg(&figures)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN, run)
        .await
        .expect("the comparison ends within its bound")
        .expect("the comparison runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&figures).expect("the figures file");
    let rows: Vec<Value> = serde_json::from_str(&text).expect("JSON figures");
    let row = |system: &str| {
        rows.iter()
            .find(|r| r["system"] == system)
            .unwrap_or_else(|| panic!("no {system} row in {text}"))
    };
    let share = |system: &str, mark: &str| row(system)["new_pods_share_percent"][mark].as_u64();

    assert_eq!(share("round-robin", "1s"), Some(0), "{stdout}");
    assert_eq!(share("round-robin", "10s"), Some(0), "{stdout}");
    // Two pods of five: 40 % is their fair share; any call at all shows it.
    assert!(share("sidelb", "1s").is_some_and(|s| s > 0), "{stdout}");
    assert!(share("sidelb", "10s").is_some_and(|s| s > 0), "{stdout}");
    assert_eq!(row("sidelb")["roll_failed"], 0, "{stdout}");
    assert!(row("sidelb")["roll_calls"].as_u64() > Some(0), "{stdout}");
    assert!(
        stdout.contains("| sidelb | none (dial localhost) |"),
        "{stdout}"
    );
}
