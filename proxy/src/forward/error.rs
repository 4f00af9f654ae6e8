//! Errors the proxy answers itself, and how each is told to the app.

use crate::balancer::{NoEndpoint, Overloaded, TooManyServices};
use http::StatusCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("{0}")]
    UnknownAuthority(String),
    #[error(transparent)]
    NoEndpoint(#[from] NoEndpoint),
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    #[error(transparent)]
    TooManyServices(#[from] TooManyServices),
    #[error("deadline of {timeout:?} exceeded before service {service} answered")]
    DeadlineExceeded { service: String, timeout: Duration },
    #[error("endpoint {endpoint} of service {service} failed: {why}")]
    Upstream {
        service: String,
        endpoint: String,
        why: String,
    },
    #[error(
        "endpoint {endpoint} of service {service} did not take the request ({why}) and it was not sent to another endpoint: the retry budget (SIDELB_RETRY_BUDGET_PERCENT of recent requests plus SIDELB_RETRY_BUDGET_MIN_PER_SECOND) is spent; retry later"
    )]
    RetryBudget {
        service: String,
        endpoint: String,
        why: String,
    },
    #[error(
        "the request's headers take {size} bytes, over the proxy's limit of {limit} (names, values and 32 bytes per field, as HTTP/2 counts them); send less metadata"
    )]
    HeadersTooLarge { size: usize, limit: usize },
    #[error(
        "sidelb-proxy is shutting down and its drain deadline (SIDELB_DRAIN_TIMEOUT, {timeout:?}) passed with this call still open; the call was stopped (the service may have acted on it)"
    )]
    DrainDeadline { timeout: Duration },
    #[error(
        "service {service} serves TLS (SIDELB_BACKEND_TLS) and the proxy speaks only gRPC (HTTP/2) over TLS to it; send this request over HTTP/2"
    )]
    Http1ToTls { service: String },
    /// The app's own request body broke off or was malformed (HTTP/1.1).
    #[error("the request body could not be read: {0}; the request was abandoned")]
    RequestBody(String),
}

impl ProxyError {
    pub(crate) fn grpc_status(&self) -> u16 {
        match self {
            ProxyError::DeadlineExceeded { .. } => super::grpc::DEADLINE_EXCEEDED,
            _ => super::grpc::UNAVAILABLE,
        }
    }

    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            ProxyError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } | ProxyError::Http1ToTls { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
