//! sidelb-tests.
//!
//! - [`echo`]: the gRPC test backend (`sidelb-test-backend`).
//! - [`harness`]: processes, backends, the proxy, clients and tallies for
//!   end-to-end tests and the demo.
//! - [`kube_api`]: the fake Kubernetes API server (`fake-apiserver`).
//! - [`node_agent`]: the kubelet's part of a cluster without containers
//!   (`sidelb-node-agent`), against the real control plane.

pub mod echo;
pub mod harness;
pub mod kube_api;
pub mod node_agent;
