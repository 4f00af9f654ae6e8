//! The Helm chart: its generated copies of the proxy's settings, and an
//! install and upgrade on the real control plane.

mod contract;
mod install;
