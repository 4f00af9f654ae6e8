//! The test backend: a gRPC `Echo` service (`proto/echo.proto`) that can play
//! any app behind sidelb.
//!
//! Scenarios drive it through the request itself (delay, number of replies,
//! reply size, status to fail with) or through the process's flags (a slow
//! backend, a backend that fails every Nth call, a small
//! `MAX_CONCURRENT_STREAMS`), so one binary covers them all and stays lean
//! enough to be the backend in benchmarks. Every response names the instance
//! that served it, in the reply and in the `x-sidelb-backend` header, so a
//! test can count where each call landed even when the call failed.
//!
//! - [`pb`]: the generated messages, client and server.
//! - [`service`]: what each call does, and the counters behind `Stats`.
//! - [`metadata`]: the layer that echoes `x-echo-*` metadata and names the backend.
//! - [`deadline`]: `grpc-timeout` ending calls with `DEADLINE_EXCEEDED`, as real servers do.
//! - [`health`]: `grpc.health.v1.Health` (`proto/health.proto`), its status flipped by a file.
//! - [`server`]: binding, serving, and draining on SIGTERM.

pub mod deadline;
pub mod health;
pub mod metadata;
pub mod server;
pub mod service;

/// Generated from `proto/echo.proto` by `build.rs`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("sidelb.test");
}

/// Generated from `proto/health.proto` by `build.rs`.
pub mod health_pb {
    #![allow(clippy::all)]
    tonic::include_proto!("grpc.health.v1");
}

/// Response header (and, for trailers-only responses, trailer) that names the
/// backend instance: present on every response the backend produced.
pub const BACKEND_HEADER: &str = "x-sidelb-backend";

/// Request metadata whose key starts with this comes back as response headers
/// and as trailers.
pub const ECHO_PREFIX: &str = "x-echo-";

/// Largest message the backend (and the harness's client) sends or accepts:
/// well above gRPC's usual 4 MiB, so large-message scenarios are not limited
/// by the ends but only by what is in between.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
