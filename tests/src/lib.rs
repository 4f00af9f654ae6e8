//! sidelb-tests.
//!
//! - [`echo`]: the gRPC test backend (`sidelb-test-backend`).
//! - [`harness`]: processes, backends, the proxy, clients and tallies for
//!   end-to-end tests and the demo.

pub mod echo;
pub mod harness;
