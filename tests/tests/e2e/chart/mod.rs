//! The Helm chart: its generated copies of the proxy's settings, and an
//! install through the fake API server with the real injector.

mod contract;
mod install;
