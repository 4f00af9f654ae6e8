//! Choosing an endpoint for one request.
//!
//! - `p2c-ewma`: sample two endpoints and weigh them by EWMA latency ×
//!   (in-flight + 1): each is taken with probability inversely proportional
//!   to its cost. Two random choices give nearly the balance of comparing
//!   all endpoints at constant cost; the latency term steers away from slow
//!   endpoints (a tenfold slower one gets about a tenth of its share), and
//!   weighing instead of always taking the cheaper keeps equal endpoints
//!   evenly loaded when their latencies jitter. An endpoint that has left
//!   requests unanswered for longer than its estimate is weighed by that
//!   time instead ([`Endpoint::stalled_us`]): a stuck endpoint answers
//!   nothing, so its estimate would only decay and make it look fastest.
//! - `least-request`: the same two choices, compared on in-flight alone.
//! - `round-robin`: the next usable endpoint in turn.
//!
//! Sampling stays O(1) however many endpoints there are; only when the
//! samples keep hitting unusable endpoints does it fall back to a scan.

use super::outlier::Outlier;
use crate::endpoint::{ConnState, Endpoint};
use sidelb_config::Balancer;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SAMPLE_TRIES: usize = 3;

pub struct PickContext<'a> {
    pub kind: Balancer,
    pub now_us: u64,
    pub exclude: Option<&'a Endpoint>,
    pub outlier: &'a Outlier,
    /// Slow-start window; endpoints added less than this ago weigh less.
    pub slow_start_us: Option<u64>,
    pub next: &'a AtomicUsize,
    /// Use ejected endpoints (when nothing else is left).
    pub allow_ejected: bool,
    /// The request goes over the endpoint's HTTP/2 connection, which must be
    /// up. An HTTP/1.1 request opens its own connection: it only avoids
    /// endpoints that refuse connections (the endpoint may speak no HTTP/2).
    pub http2: bool,
}

impl PickContext<'_> {
    fn usable(&self, ep: &Endpoint) -> bool {
        let reachable = if self.http2 {
            ep.is_ready()
        } else {
            ep.state() != ConnState::Down
        };
        reachable
            && !self.exclude.is_some_and(|x| std::ptr::eq(x, ep))
            && (self.allow_ejected || !self.outlier.is_out(ep, self.now_us))
    }

    /// 0 < weight ≤ 1: how much of a full share the endpoint may take now.
    fn weight(&self, ep: &Endpoint) -> f64 {
        match (self.slow_start_us, ep.slow_start_from_us()) {
            (Some(window), from) if from != 0 => {
                let age = self.now_us.saturating_sub(from) as f64;
                (age / window as f64).clamp(0.05, 1.0)
            }
            _ => 1.0,
        }
    }

    /// One of two usable endpoints, by cost.
    fn choose<'e>(&self, a: &'e Arc<Endpoint>, b: &'e Arc<Endpoint>) -> &'e Arc<Endpoint> {
        let (ca, cb) = (self.cost(a), self.cost(b));
        let take_a = match self.kind {
            Balancer::P2cEwma => fastrand::f64() * (ca + cb) < cb,
            _ if ca == cb => fastrand::bool(),
            _ => ca < cb,
        };
        if take_a { a } else { b }
    }

    fn cost(&self, ep: &Endpoint) -> f64 {
        let load = (ep.in_flight() + 1) as f64;
        let cost = match self.kind {
            Balancer::P2cEwma => {
                // An endpoint that has left requests unanswered for longer
                // than its estimate is at least that slow now.
                let stalled = ep.stalled_us(self.now_us) as f64;
                ep.ewma.estimate(self.now_us).max(stalled).max(1.0) * load
            }
            _ => load,
        };
        cost / self.weight(ep)
    }
}

pub fn pick(endpoints: &[Arc<Endpoint>], cx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
    match endpoints.len() {
        0 => None,
        1 => cx.usable(&endpoints[0]).then(|| endpoints[0].clone()),
        _ => match cx.kind {
            Balancer::RoundRobin => round_robin(endpoints, cx),
            Balancer::P2cEwma | Balancer::LeastRequest => two_choices(endpoints, cx),
        },
    }
}

fn two_choices(eps: &[Arc<Endpoint>], cx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
    let n = eps.len();
    for _ in 0..SAMPLE_TRIES {
        let i = fastrand::usize(..n);
        let mut j = fastrand::usize(..n - 1);
        if j >= i {
            j += 1;
        }
        let (a, b) = (&eps[i], &eps[j]);
        let chosen = match (cx.usable(a), cx.usable(b)) {
            (true, true) => cx.choose(a, b),
            (true, false) => a,
            (false, true) => b,
            (false, false) => continue,
        };
        return Some(chosen.clone());
    }
    eps.iter()
        .filter(|ep| cx.usable(ep))
        .min_by(|a, b| cx.cost(a).total_cmp(&cx.cost(b)))
        .cloned()
}

fn round_robin(eps: &[Arc<Endpoint>], cx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
    let n = eps.len();
    let start = cx.next.fetch_add(1, Relaxed);
    let mut fallback = None;
    for k in 0..n {
        let ep = &eps[(start + k) % n];
        if !cx.usable(ep) {
            continue;
        }
        let weight = cx.weight(ep);
        if weight >= 1.0 || fastrand::f64() < weight {
            return Some(ep.clone());
        }
        fallback.get_or_insert(ep);
    }
    fallback.cloned()
}
