//! Generates the Rust code of `proto/echo.proto` and `proto/health.proto`
//! (clients and servers).
//!
//! The proto is parsed by `protox`, a protobuf compiler written in Rust, and
//! not by `protoc`: building the tests then needs nothing outside crates.io
//! (no `protobuf-compiler` package on the machine or in CI).

use std::io;

const PROTOS: [&str; 2] = ["proto/echo.proto", "proto/health.proto"];

fn main() -> io::Result<()> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"]).map_err(io::Error::other)?;
    tonic_prost_build::configure()
        // `bytes::Bytes` payloads: a 4 MiB echo is not copied on the way through.
        .bytes(".")
        .compile_fds(descriptors)
}
