//! `sidelb-proxy` with file discovery, one theme per module, each saying what
//! it proves at its top.

mod admin;
mod admin_access;
mod affinity;
mod apps;
mod backend_tls;
mod balance;
mod config;
mod connections;
mod deadlines;
mod endpoints;
mod errors;
mod h2_abuse;
mod health_check;
mod http1;
mod ipv6;
mod lifecycle;
mod live_page;
mod load_reports;
mod log_level;
mod rate_limits;
mod shutdown_grace;
mod smoke;
mod streaming;
mod subset;
