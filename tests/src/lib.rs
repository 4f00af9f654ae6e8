//! sidelb-tests.
//!
//! - [`echo`]: the gRPC test backend (`sidelb-test-backend`).
//! - [`harness`]: processes, backends, the proxy, clients and tallies for
//!   end-to-end tests and the demo.
//! - [`node_agent`]: the kubelet's part of a cluster without containers
//!   (`sidelb-node-agent`), against the real control plane.
//!
//! The end-to-end tests are one test binary, `tests/e2e/`; the fake Kubernetes
//! API server is its own crate, `sidelb-fake-apiserver` (`fake-apiserver/`).

pub mod echo;
pub mod harness;
pub mod node_agent;
