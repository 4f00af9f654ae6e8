//! What clients asked of the server, and waiting for something to become true.
//!
//! Tests assert on behaviour, never on time: rather than sleeping, they wait with a
//! bound until a condition holds (a watch is open again, a list was made), and check
//! the request counts to tell a relist from a resumed watch.

use std::time::{Duration, Instant};

use super::FakeApiServer;

impl FakeApiServer {
    /// Requests seen for `resource` (plural, e.g. `endpointslices`) with `verb`
    /// (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`).
    pub fn requests(&self, resource: &str, verb: &str) -> u64 {
        self.shared.stats.requests(resource, verb)
    }

    /// Every API request received (discovery, lists, watches, writes),
    /// including those answered with an injected fault or held by `Hang`:
    /// what a client's retry loop costs the server.
    pub fn api_requests(&self) -> u64 {
        self.shared.stats.api_requests()
    }

    /// Watches on `resource` open right now.
    pub fn open_watches(&self, resource: &str) -> usize {
        self.shared.stats.open_watches(resource)
    }

    /// Polls `condition` until it holds or `timeout` passes; returns whether it held.
    /// Blocks the calling thread: from async code use [`wait_until_async`](Self::wait_until_async).
    pub fn wait_until(&self, timeout: Duration, condition: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        condition: impl Fn(&Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
