//! A bidi call held open by the test: in flight on one backend for as long
//! as the test likes, so a scenario can say "a stream is on the pod being
//! stopped" and then check that it still ends cleanly.

use super::client::{Echo, request_channel};
use crate::echo::pb::{EchoReply, EchoRequest};
use anyhow::{Context, Result, bail};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tonic::Streaming;

/// Bound on each step of an open call (a reply, the end).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A bidi call kept open, and the backend that answered its first message.
pub struct OpenCall {
    send: Sender<EchoRequest>,
    replies: Streaming<EchoReply>,
    backend: String,
}

impl OpenCall {
    /// Opens a bidi call and exchanges one message, so it is in flight on a
    /// known backend.
    pub async fn open(client: &Echo) -> Result<OpenCall> {
        let (send, requests) = request_channel(1);
        let replies = client
            .clone()
            .bidi(requests)
            .await
            .context("bidi starts")?
            .into_inner();
        let mut call = OpenCall {
            send,
            replies,
            backend: String::new(),
        };
        call.backend = call.exchange().await?.backend;
        Ok(call)
    }

    /// Opens calls until one is on `backend` (at most `tries`); the others
    /// are finished cleanly.
    pub async fn open_on(client: &Echo, backend: &str, tries: usize) -> Result<OpenCall> {
        for _ in 0..tries {
            let call = OpenCall::open(client).await?;
            if call.backend == backend {
                return Ok(call);
            }
            call.finish().await?;
        }
        bail!("no call of {tries} landed on {backend}")
    }

    /// The backend the call is on.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// One message and its reply.
    pub async fn exchange(&mut self) -> Result<EchoReply> {
        self.send
            .send(EchoRequest::default())
            .await
            .context("the call takes no more messages")?;
        tokio::time::timeout(STEP_TIMEOUT, self.replies.message())
            .await
            .context("no reply in time")?
            .context("the call failed")?
            .context("the call ended instead of replying")
    }

    /// Half-closes; the call must end with OK.
    pub async fn finish(self) -> Result<()> {
        let OpenCall {
            send, mut replies, ..
        } = self;
        drop(send);
        match tokio::time::timeout(STEP_TIMEOUT, replies.message()).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(reply))) => bail!("an unexpected reply instead of the end: {reply:?}"),
            Ok(Err(status)) => bail!("the call ended with {status:?}"),
            Err(_) => bail!("the call did not end within {STEP_TIMEOUT:?}"),
        }
    }
}
