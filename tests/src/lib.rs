//! sidelb-tests: the fake Kubernetes API server, test backends and end-to-end scenarios.

pub mod kube_api;
