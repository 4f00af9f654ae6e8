//! sidelb-proxy: a localhost sidecar that balances every HTTP/2 request
//! (every gRPC call) across the ready pods of the Service it is for.
//!
//! The data path reads left to right:
//!
//! ```text
//! listener ──▶ router ──▶ balancer ──▶ endpoint connection
//! (h2c/HTTP/1.1   (authority or    (p2c over latency EWMA, (one HTTP/2 connection
//!  on loopback)    fixed upstream)  outlier ejection,      per pod, kept open,
//!                                   retry budget)          pinged, reconnected)
//! ```
//!
//! [`discovery`] feeds each service's [`balancer`] with reset/add/remove
//! updates; [`admin`] shows what the proxy knows (and changes the
//! [`logging`] filter); [`app`] wires it together
//! and runs the shutdown sequence.

pub(crate) mod admin;
pub mod app;
pub mod balancer;
pub mod discovery;
pub(crate) mod drain;
pub mod endpoint;
pub mod forward;
pub mod http1;
pub(crate) mod listener;
pub mod logging;
pub mod metrics;
pub mod router;
pub mod time;
