//! The proxy's Kubernetes discovery end to end: the real `sidelb-proxy`
//! binary with `KUBECONFIG`, real gRPC backends as pods.
//!
//! The scenarios run on the real control plane ([`real`]): kube-apiserver
//! checking the proxy's service-account token and RBAC, pods run by the node
//! agent, EndpointSlices written by the real EndpointSlice controller from
//! real readiness and deletion. The fake API server ([`cluster`]) is kept
//! only for what the real one cannot be made to do on demand: faults (500s,
//! hangs, dropped watches, compacted history, refused credentials), garbage
//! in stored objects, slice shapes and condition combinations its
//! controller writes only in passing, and request counts.
//!
//! Tests assert behaviour — which pods got calls, which statuses and messages
//! came back, what `/endpoints` lists — and wait on conditions with a bound,
//! never on time. Binaries come from `cargo build --workspace --bins`.
mod cluster;
mod conditions;
mod faults;
mod forbidden;
mod garbage;
mod headless;
mod limits;
mod missing;
mod ports;
mod readiness;
mod real;
mod restart;
mod rollout;
mod scaling;
mod shapes;
mod sharing;
mod view;
mod zones;
