//! How the proxy holds up when things go wrong, end to end: the real
//! `sidelb-proxy` binary between real gRPC backends and clients, every
//! scenario asserted with counts (calls, retries, ejections, bytes of
//! memory), every wait a condition with a bound.
//!
//! - [`crash`]: a dead endpoint is skipped and reconnected with backoff, not
//!   in a loop;
//! - [`retry_budget`]: retries of refused requests stay within the budget,
//!   and the calls beyond it fail with a clear UNAVAILABLE;
//! - [`outliers`]: ejection after consecutive failures, return, longer
//!   ejection on repeat, and the cap on how many are out at once;
//! - [`slow_start`]: a new endpoint's share ramps up;
//! - [`stuck`]: a backend that stopped answering gets few calls;
//! - [`soak`]: memory stops growing under rounds of slow, stuck, cancelled
//!   and refused calls;
//! - [`bad_input`]: malformed HTTP/2 and gRPC framing from the app.
//!
//! The rolling restart and the API server's troubles are in the
//! `discovery` tests; the killed backend's in-flight calls in
//! `proxy::endpoints`; HTTP/1.1 smuggling in `proxy::http1`.

mod bad_input;
mod crash;
mod outliers;
mod retry_budget;
mod slow_start;
mod soak;
mod stuck;
mod support;
