//! The backend's `grpc.health.v1.Health` service, whose status a test flips.
//!
//! With `--health-file PATH` the status is the file's content (`SERVING`,
//! `NOT_SERVING` or `SERVICE_UNKNOWN`; missing or anything else:
//! `NOT_SERVING`), read every [`FILE_POLL`]; without it the backend is always
//! `SERVING`. `Watch` sends the status at once and then each change.
//! `--health check-only` answers `Watch` with UNIMPLEMENTED (a server from
//! before `Watch`), `--health none` serves no Health service at all.
//!
//! The status is the whole server's: it answers for `""` and for
//! `sidelb.test.Echo`; other names are NOT_FOUND to `Check` and
//! SERVICE_UNKNOWN to `Watch`, as the protocol says.

use super::health_pb::health_check_response::ServingStatus;
use super::health_pb::health_server::{Health, HealthServer};
use super::health_pb::{HealthCheckRequest, HealthCheckResponse};
use futures_util::Stream;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// How often `--health-file` is read.
pub const FILE_POLL: Duration = Duration::from_millis(20);

/// Which part of the Health service the backend serves (`--health`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthMode {
    /// `Watch` and `Check`.
    #[default]
    Watch,
    /// `Check` only; `Watch` is UNIMPLEMENTED.
    CheckOnly,
    /// No Health service: both are UNIMPLEMENTED.
    None,
}

/// What the backend's Health service answers, from its flags.
#[derive(Clone, Debug, Default)]
pub struct HealthConfig {
    pub mode: HealthMode,
    /// The status is read from here; `None`: always SERVING.
    pub file: Option<PathBuf>,
}

/// The Health service of `config`, or `None` with `--health none`.
pub fn service(config: &HealthConfig) -> Option<HealthServer<HealthService>> {
    if config.mode == HealthMode::None {
        return None;
    }
    let (tx, status) = watch::channel(read(config.file.as_ref()));
    match config.file.clone() {
        Some(file) => {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FILE_POLL).await;
                    let now = read(Some(&file));
                    tx.send_if_modified(|s| std::mem::replace(s, now) != now);
                }
            });
        }
        // Kept for good: the status never changes.
        None => std::mem::forget(tx),
    }
    Some(HealthServer::new(HealthService {
        status,
        watch: config.mode == HealthMode::Watch,
    }))
}

fn read(file: Option<&PathBuf>) -> ServingStatus {
    let Some(file) = file else {
        return ServingStatus::Serving;
    };
    match std::fs::read_to_string(file).as_deref().map(str::trim) {
        Ok("SERVING") => ServingStatus::Serving,
        Ok("SERVICE_UNKNOWN") => ServingStatus::ServiceUnknown,
        _ => ServingStatus::NotServing,
    }
}

fn known(service: &str) -> bool {
    service.is_empty() || service == "sidelb.test.Echo"
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[derive(Debug)]
pub struct HealthService {
    status: watch::Receiver<ServingStatus>,
    watch: bool,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !known(&request.get_ref().service) {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(reply(*self.status.borrow())))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        if !self.watch {
            return Err(Status::unimplemented("this backend has no Health/Watch"));
        }
        if !known(&request.get_ref().service) {
            let once =
                futures_util::stream::once(async { Ok(reply(ServingStatus::ServiceUnknown)) });
            let stream = futures_util::StreamExt::chain(once, futures_util::stream::pending());
            return Ok(Response::new(Box::pin(stream)));
        }
        let mut status = self.status.clone();
        status.mark_changed();
        let stream = futures_util::stream::unfold(status, |mut status| async move {
            if status.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let now = *status.borrow_and_update();
            Some((Ok(reply(now)), status))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
