//! sidelb end to end: the real binaries (`sidelb-proxy`, `sidelb-injector`,
//! the test backends) started by the harness on 127.0.0.1, one test binary
//! with a module per concern (one link for all of them):
//!
//! - [`backend`]: the test backends and the Python client, before anything
//!   is put between them;
//! - [`proxy`]: the proxy with file discovery, one theme per module;
//! - [`resilience`]: what goes wrong, asserted with counts;
//! - [`discovery`]: the proxy's Kubernetes discovery on the real control plane
//!   (and the fake API server for faults);
//! - [`injector`]: the injector as kubectl users meet it, called by the real
//!   kube-apiserver for the chart's webhooks;
//! - [`chart`]: the Helm chart, its copies of the settings, its install and
//!   upgrade on the real control plane;
//! - [`control_plane`]: `make cluster`'s control plane and script, shown to be the real ones;
//! - [`node_agent`]: pods run by the node agent against that control plane;
//! - [`rbac`]: the chart's RBAC and the injector's grants, judged by that API server;
//! - [`demo_cluster`]: `make demo-cluster`, the whole product path on it;
//! - [`compare`]: `make compare`, a seed workaround beside sidelb on it.
//!
//! Run one concern or one test with a filter:
//! `cargo test -p sidelb-tests --test e2e -- proxy::balance`.

mod backend;
mod chart;
mod compare;
mod control_plane;
mod demo_cluster;
mod discovery;
mod injector;
mod node_agent;
mod proxy;
mod rbac;
mod resilience;
