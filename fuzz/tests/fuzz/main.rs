//! The fuzz targets, one module each; see the crate docs (`fuzz/src/lib.rs`)
//! for the corpus, the regression files and how long they run.

mod admission;
mod authority;
mod endpoint_slices;
mod endpoints_file;
mod grpc_timeout;
mod h1_chunked;
mod h1_head;
mod settings;
mod upstreams;
