//! Whether the API server has answered once: before that the proxy is not ready.
//!
//! A pod with no upstream listener asks for no Service at start, so its
//! watches cannot tell `/ready` whether discovery works. One `GET /version`
//! stands in for them: it checks the address, the CA and the token the
//! watches will use. It is retried with the watches' backoff until it
//! answers (a refusal is an answer: the requests that need the API report
//! it, with what to fix; a 5xx is not) and never asked again, because once
//! the proxy runs, an API server outage only delays changes: the last
//! endpoints stay in use.

use super::retry;
use kube::Client;
use std::sync::{Arc, Mutex};

/// `Ok` once the API server answered; until then why it has not.
#[derive(Clone)]
pub(crate) struct Reach {
    state: Arc<Mutex<Result<(), String>>>,
}

impl Reach {
    /// Starts asking `client`'s API server (at `url`, for messages).
    pub(crate) fn probe(client: Client, url: &str) -> Self {
        let reach = Reach {
            state: Arc::new(Mutex::new(Err(format!(
                "the Kubernetes API server at {url} has not answered yet"
            )))),
        };
        let state = reach.state.clone();
        let url = url.to_owned();
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                let outcome = match client.apiserver_version().await {
                    Ok(version) => {
                        tracing::info!(api_server = %url, version = %version.git_version, "API server reached");
                        Ok(())
                    }
                    // It answered: credentials it refuses are reported by the
                    // requests that need them, with what to fix.
                    Err(kube::Error::Api(status)) if status.code < 500 => {
                        tracing::warn!(api_server = %url, code = status.code, "API server reached; it refused /version: {}", status.message);
                        Ok(())
                    }
                    Err(e) => {
                        failures += 1;
                        let tries = if failures == 1 { "try" } else { "tries" };
                        let why = format!(
                            "the Kubernetes API server at {url} has not answered yet ({failures} {tries}): {e}"
                        );
                        if failures == 1 {
                            tracing::warn!("{why}; retrying");
                        }
                        Err(why)
                    }
                };
                let reached = outcome.is_ok();
                *state.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
                if reached {
                    return;
                }
                tokio::time::sleep(retry::delay(failures, fastrand::f64())).await;
            }
        });
        reach
    }

    pub(crate) fn ready(&self) -> Result<(), String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
