//! Forwarding requests to endpoints: HTTP/2 streams as HTTP/2, HTTP/1.1
//! requests as HTTP/1.1, and the errors the proxy answers itself.

pub(crate) mod body;
pub(crate) mod error;
pub mod grpc;
pub(crate) mod h1;
pub(crate) mod h2;
