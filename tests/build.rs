//! Generates the Rust code of `proto/echo.proto` (client and server).
//!
//! The proto is parsed by `protox`, a protobuf compiler written in Rust, and
//! not by `protoc`: building the tests then needs nothing outside crates.io
//! (no `protobuf-compiler` package on the machine or in CI).

use std::io;

const PROTO: &str = "proto/echo.proto";

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"]).map_err(io::Error::other)?;
    tonic_prost_build::configure()
        // `bytes::Bytes` payloads: a 4 MiB echo is not copied on the way through.
        .bytes(".")
        .compile_fds(descriptors)
}
