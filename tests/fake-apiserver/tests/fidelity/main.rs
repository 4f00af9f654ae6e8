//! The fake API server is only worth its faults if the real clients cannot
//! tell it from kube-apiserver: these tests drive it with the `kube` crate,
//! the real `kubectl` and real HTTPS webhooks, and run its binary. One test
//! binary, a module per client or feature.

mod admission;
mod binary;
mod kube_client;
mod kubectl;
