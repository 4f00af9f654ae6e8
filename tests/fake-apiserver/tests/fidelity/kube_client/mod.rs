//! The fake API server against the `kube` crate, the client sidelb's proxy uses:
//! list, watch, and kube-runtime's watcher through dropped watches, a compaction
//! (410 → relist) and a server restart on the same port.
//!
//! Each module is one theme; `fixtures` holds what they share (a client for a
//! server, the EndpointSlices they list and watch).

mod discovery;
mod faults;
mod fixtures;
mod requests;
mod tls;
mod watch;
mod watcher;
