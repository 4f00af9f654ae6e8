//! Waiting on a condition, with a bound: the harness's only way to wait.
//!
//! Tests never sleep for a fixed time hoping something happened; they probe
//! the condition with a growing backoff (a few ms up to 100 ms) until it holds
//! or the bound runs out, and then fail with what they were waiting for.

use anyhow::{Result, bail};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Calls `probe` until it returns `Some`, for at most `within`.
/// `what` describes the condition for the error message.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut probes = 0;
        let value = wait_until("the third probe", Duration::from_secs(10), || {
            probes += 1;
            std::future::ready((probes == 3).then_some(probes))
        })
        .await
        .expect("holds");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn fails_naming_the_condition_when_the_bound_runs_out() {
        let err = wait_until("never", Duration::from_millis(50), || {
            std::future::ready(None::<()>)
        })
        .await
        .expect_err("bound");
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }
}
