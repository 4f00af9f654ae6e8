//! The proxy's Kubernetes discovery end to end: the real `sidelb-proxy`
//! binary with `KUBECONFIG` pointing at the fake API server (TLS, bearer
//! token), real gRPC backends as pods, and EndpointSlices written the way the
//! EndpointSlice controller writes them.
//!
//! Tests assert behaviour — which pods got calls, which statuses and messages
//! came back, what `/endpoints` lists — and wait on conditions with a bound,
//! never on time. Binaries come from `cargo build --workspace --bins`.

mod cluster;
mod faults;
mod garbage;
mod missing;
mod ports;
mod readiness;
mod rollout;
mod scaling;
mod sharing;
