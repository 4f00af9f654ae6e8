//! `make demo-cluster`'s program (`sidelb-demo-cluster`) on a private control
//! plane: the chart applied with kubectl, the injector run by the node agent
//! and called by kube-apiserver, injected backends and client, scale 3 → 5.
//! It exits 0 only when every pod was injected, no call failed and every pod
//! served in the last window; here its summary is checked as well.

use sidelb_tests::harness::{ControlPlane, binary_path};
use std::time::Duration;

/// Bound on the whole demo (about 25 s warm on a 2-core machine).
const RUN: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_injected_pods_old_and_new_sharing_one_connection() {
    let cluster = tokio::task::spawn_blocking(ControlPlane::private)
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("make cluster: {e:#}"));
    let demo = binary_path("sidelb-demo-cluster").expect("cargo build --workspace --bins");
    let run = tokio::process::Command::new(demo)
        .arg("--cluster-dir")
        .arg(cluster.dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN, run)
        .await
        .expect("the demo ends within its bound")
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Five backends and the client, each injected by the webhook.
    assert_eq!(
        stdout.matches("injected (native sidecar)").count(),
        6,
        "{stdout}"
    );
    assert!(
        stdout.contains("binds system:serviceaccounts:demo (added by the injector)"),
        "{stdout}"
    );
    assert!(stdout.contains("sidecar, 0 failed."), "{stdout}");
    let last = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("last window:"))
        .unwrap_or_else(|| panic!("no last window in {stdout}"));
    assert_eq!(last.matches("pod-").count(), 5, "{last}");
    assert!(!last.contains(" 0%"), "{last}");
}
