//! sidelb-injector over real TLS, with AdmissionReviews as kube-apiserver
//! sends them. One test binary: the modules share the fixtures and helpers.

mod admission;
mod binary;
mod contract;
mod http;
mod load;
mod network;
mod refusals;
mod schema;
mod support;
mod tls_reload;
