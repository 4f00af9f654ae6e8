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
//! An endpoint whose gRPC health check says NOT_SERVING is never chosen
//! (see [`crate::endpoint::grpc_health`]), not even as a last resort.
//!
//! Every kind divides an endpoint's share by its rate-limit penalty (see
//! [`crate::endpoint::penalty`]) and, in slow start, by its age. When both
//! sampled endpoints send ORCA load reports (see
//! [`crate::endpoint::load_report`]), their reports stand in for latency:
//! each costs its in-flight load over its reported weight relative to the
//! other's. Weights only compare between endpoints that report, so the pair
//! is where they meet; against one that does not report, both are weighed
//! by latency as always.
//!
//! Sampling stays O(1) however many endpoints there are; only when the
//! samples keep hitting unusable endpoints does it fall back to a scan.

use super::outlier::Outlier;
use crate::endpoint::{ConnState, Endpoint};
use fastrand::Rng;
use sidelb_config::Balancer;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SAMPLE_TRIES: usize = 3;

/// How the request will reach the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Over the endpoint's HTTP/2 connection, which must be up.
    Http2,
    /// On a connection of its own: it only avoids endpoints that refuse
    /// connections (the endpoint may speak no HTTP/2).
    Http1,
}

/// Everything a choice depends on besides the endpoints.
pub struct PickContext<'a> {
    pub kind: Balancer,
    pub now_us: u64,
    pub protocol: Protocol,
    /// An endpoint this request must not go to (it refused it already).
    pub exclude: Option<&'a Endpoint>,
    pub outlier: &'a Outlier,
    /// Slow-start window; endpoints added less than this ago weigh less.
    pub slow_start_us: Option<u64>,
    /// The round-robin position.
    pub next: &'a AtomicUsize,
}

/// A usable endpoint for one request, or `None` when there is none.
/// Ejected endpoints are chosen only when no other is usable.
pub fn pick(
    endpoints: &[Arc<Endpoint>],
    cx: &PickContext<'_>,
    rng: &mut Rng,
) -> Option<Arc<Endpoint>> {
    Choice {
        cx,
        allow_ejected: false,
    }
    .pick(endpoints, rng)
    .or_else(|| {
        Choice {
            cx,
            allow_ejected: true,
        }
        .pick(endpoints, rng)
    })
}

/// One pass over the endpoints: with or without the ejected ones.
struct Choice<'c, 'a> {
    cx: &'c PickContext<'a>,
    allow_ejected: bool,
}

impl Choice<'_, '_> {
    fn usable(&self, ep: &Endpoint) -> bool {
        usable(self.cx, ep, self.allow_ejected)
    }

    /// One of two usable endpoints, by cost.
    fn choose<'e>(
        &self,
        a: &'e Arc<Endpoint>,
        b: &'e Arc<Endpoint>,
        rng: &mut Rng,
    ) -> &'e Arc<Endpoint> {
        let now = self.cx.now_us;
        let (ca, cb) = match (a.load_weight(now), b.load_weight(now)) {
            (Some(wa), Some(wb)) => {
                let mean = (wa + wb) / 2.0;
                (
                    reported_cost(self.cx, a, wa / mean),
                    reported_cost(self.cx, b, wb / mean),
                )
            }
            _ => (cost(self.cx, a), cost(self.cx, b)),
        };
        let take_a = match self.cx.kind {
            Balancer::P2cEwma => rng.f64() * (ca + cb) < cb,
            _ if ca == cb => rng.bool(),
            _ => ca < cb,
        };
        if take_a { a } else { b }
    }

    fn pick(&self, endpoints: &[Arc<Endpoint>], rng: &mut Rng) -> Option<Arc<Endpoint>> {
        match endpoints.len() {
            0 => None,
            1 => self.usable(&endpoints[0]).then(|| endpoints[0].clone()),
            _ => match self.cx.kind {
                Balancer::RoundRobin => self.round_robin(endpoints, rng),
                Balancer::P2cEwma | Balancer::LeastRequest => self.two_choices(endpoints, rng),
            },
        }
    }

    fn two_choices(&self, eps: &[Arc<Endpoint>], rng: &mut Rng) -> Option<Arc<Endpoint>> {
        let n = eps.len();
        for _ in 0..SAMPLE_TRIES {
            let i = rng.usize(..n);
            let mut j = rng.usize(..n - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (&eps[i], &eps[j]);
            let chosen = match (self.usable(a), self.usable(b)) {
                (true, true) => self.choose(a, b, rng),
                (true, false) => a,
                (false, true) => b,
                (false, false) => continue,
            };
            return Some(chosen.clone());
        }
        eps.iter()
            .filter(|ep| self.usable(ep))
            .min_by(|a, b| cost(self.cx, a).total_cmp(&cost(self.cx, b)))
            .cloned()
    }

    fn round_robin(&self, eps: &[Arc<Endpoint>], rng: &mut Rng) -> Option<Arc<Endpoint>> {
        let n = eps.len();
        let start = self.cx.next.fetch_add(1, Relaxed);
        let mut fallback = None;
        for k in 0..n {
            let ep = &eps[(start + k) % n];
            if !self.usable(ep) {
                continue;
            }
            if self.takes_turn(ep, rng) {
                return Some(ep.clone());
            }
            fallback.get_or_insert(ep);
            // The turn it passes goes to a random endpoint rather than
            // always to the next in line, so what it gives up is spread.
            let other = &eps[rng.usize(..n)];
            if !Arc::ptr_eq(other, ep) && self.usable(other) && self.takes_turn(other, rng) {
                return Some(other.clone());
            }
        }
        fallback.cloned()
    }

    /// Whether a usable endpoint takes its turn, by its weight.
    fn takes_turn(&self, ep: &Endpoint, rng: &mut Rng) -> bool {
        let weight = weight(self.cx, ep);
        weight >= 1.0 || rng.f64() < weight
    }
}

/// Whether `ep` can take the request: reachable by its protocol, not
/// excluded, not saying NOT_SERVING to health checks, and in rotation
/// unless `allow_ejected`.
pub(super) fn usable(cx: &PickContext<'_>, ep: &Endpoint, allow_ejected: bool) -> bool {
    let reachable = match cx.protocol {
        Protocol::Http2 => ep.is_ready(),
        Protocol::Http1 => ep.state() != ConnState::Down,
    };
    reachable
        && !ep.is_not_serving()
        && !cx.exclude.is_some_and(|x| std::ptr::eq(x, ep))
        && (allow_ejected || !cx.outlier.is_out(ep, cx.now_us))
}

/// 0 < weight ≤ 1: how much of a full share `ep` may take now.
fn weight(cx: &PickContext<'_>, ep: &Endpoint) -> f64 {
    let slow_start = match (cx.slow_start_us, ep.slow_start_from_us()) {
        (Some(window), from) if from != 0 => {
            let age = cx.now_us.saturating_sub(from) as f64;
            (age / window as f64).clamp(0.05, 1.0)
        }
        _ => 1.0,
    };
    slow_start * ep.rate_limit_share(cx.now_us)
}

/// What sending one more request to `ep` costs by its own ORCA report,
/// `relative_weight` being its reported weight over the other choice's:
/// its in-flight load over that weight, in place of its latency.
fn reported_cost(cx: &PickContext<'_>, ep: &Endpoint, relative_weight: f64) -> f64 {
    let load = (ep.in_flight() + 1) as f64;
    load / relative_weight / weight(cx, ep)
}

/// What sending one more request to `ep` costs; lower is better.
fn cost(cx: &PickContext<'_>, ep: &Endpoint) -> f64 {
    let load = (ep.in_flight() + 1) as f64;
    let cost = match cx.kind {
        Balancer::P2cEwma => {
            // An endpoint that has left requests unanswered for longer
            // than its estimate is at least that slow now.
            let stalled = ep.stalled_us(cx.now_us) as f64;
            ep.latency_estimate(cx.now_us).max(stalled).max(1.0) * load
        }
        _ => load,
    };
    cost / weight(cx, ep)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::endpoint::{InFlight, ServiceContext};
    use crate::metrics::Metrics;
    use fastrand::Rng;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use sidelb_config::ProxyConfig;
    use std::time::Duration;

    pub(in crate::balancer) const NOW: u64 = 10_000_000;
    const KINDS: [Balancer; 3] = [
        Balancer::P2cEwma,
        Balancer::LeastRequest,
        Balancer::RoundRobin,
    ];

    /// Endpoints of one service and the outlier detection they share.
    pub(in crate::balancer) struct Fixture {
        service: Arc<ServiceContext>,
        outlier: Outlier,
        next: AtomicUsize,
    }

    impl Fixture {
        pub(in crate::balancer) fn new() -> Self {
            let mut config = ProxyConfig::defaults();
            config.ejection_failures = 1;
            config.ejection_max_percent = 100;
            config.ejection_base_time = Duration::from_secs(60);
            let metrics = Arc::new(Metrics::new());
            let outlier = Outlier::new(&config, metrics.clone(), Default::default());
            outlier.set_size(100);
            Fixture {
                service: Arc::new(ServiceContext {
                    name: "svc.ns:80".into(),
                    metrics: metrics.clone(),
                    changed: Default::default(),
                }),
                outlier,
                next: AtomicUsize::new(0),
            }
        }

        /// A ready endpoint whose latency estimate is `rtt_us` at [`NOW`].
        pub(in crate::balancer) fn endpoint(&self, i: usize, rtt_us: f64) -> Arc<Endpoint> {
            self.endpoint_added(i, rtt_us, None)
        }

        /// As [`Self::endpoint`], in slow start since `from` when given.
        fn endpoint_added(&self, i: usize, rtt_us: f64, from: Option<u64>) -> Arc<Endpoint> {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
            let ep = Endpoint::new(
                addr,
                None,
                rtt_us,
                self.service.clone(),
                from.is_some(),
                from.unwrap_or(NOW),
            );
            if from.is_some() {
                // The estimate, made at `from`, is restated at NOW.
                ep.observe_latency(rtt_us, NOW);
            }
            ep.set_state(ConnState::Ready, None);
            ep
        }

        pub(in crate::balancer) fn eject(&self, ep: &Endpoint) {
            self.outlier.on_failure(ep, NOW);
            assert!(ep.is_ejected());
        }

        pub(in crate::balancer) fn cx(&self, kind: Balancer) -> PickContext<'_> {
            PickContext {
                kind,
                now_us: NOW,
                protocol: Protocol::Http2,
                exclude: None,
                outlier: &self.outlier,
                slow_start_us: Some(1_000_000),
                next: &self.next,
            }
        }
    }

    pub(in crate::balancer) fn load(ep: &Arc<Endpoint>, n: usize) -> Vec<InFlight> {
        (0..n).map(|_| ep.start_request()).collect()
    }

    /// How often each endpoint is picked in `draws` picks.
    fn shares(eps: &[Arc<Endpoint>], cx: &PickContext<'_>, seed: u64, draws: usize) -> Vec<f64> {
        let mut rng = Rng::with_seed(seed);
        let mut counts = vec![0usize; eps.len()];
        for _ in 0..draws {
            let ep = pick(eps, cx, &mut rng).expect("an endpoint");
            let i = eps.iter().position(|e| Arc::ptr_eq(e, &ep)).unwrap();
            counts[i] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn report(utilization: f64) -> crate::endpoint::load_report::LoadReport {
        crate::endpoint::load_report::LoadReport {
            cpu_utilization: utilization,
            rps_fractional: 100.0,
            ..Default::default()
        }
    }

    #[test]
    fn reported_load_weighs_between_endpoints_that_both_report() {
        let f = Fixture::new();
        let eps: Vec<_> = (0..3).map(|i| f.endpoint(i, 1000.0)).collect();
        eps[0].record_load_report(&report(0.9), NOW);
        eps[1].record_load_report(&report(0.1), NOW);
        let cx = f.cx(Balancer::P2cEwma);
        let shares = shares(&eps, &cx, 11, 30_000);
        // Against the idle one the busy one's cost is nine times higher;
        // against the one that does not report, latency decides.
        assert!(shares[0] < 0.28, "the busy endpoint took {:.3}", shares[0]);
        assert!(shares[1] > 0.39, "the idle endpoint took {:.3}", shares[1]);
        assert!(
            (0.28..0.39).contains(&shares[2]),
            "the silent endpoint took {:.3}",
            shares[2]
        );
        // Reports expire: latency alone again.
        let later = PickContext {
            now_us: NOW + crate::endpoint::load_report::EXPIRY_US,
            ..f.cx(Balancer::P2cEwma)
        };
        let even = super::tests::shares(&eps, &later, 11, 30_000);
        assert!(even.iter().all(|s| (0.28..0.39).contains(s)), "{even:?}");
    }

    #[test]
    fn a_rate_limited_endpoint_gets_a_smaller_share_under_every_kind() {
        let f = Fixture::new();
        let eps: Vec<_> = (0..3).map(|i| f.endpoint(i, 1000.0)).collect();
        // Three refusals: a penalty of 3, a quarter of the share.
        for _ in 0..3 {
            eps[2].record_rate_limited(NOW);
        }
        for kind in KINDS {
            let share = shares(&eps, &f.cx(kind), 7, 30_000)[2];
            // least-request compares instead of weighing: with nothing in
            // flight anywhere, the cheaper one always wins.
            let keeps_some = kind != Balancer::LeastRequest;
            assert!(
                share < 1.0 / 6.0 && (share > 0.0 || !keeps_some),
                "{kind:?}: the rate-limited endpoint took {share:.3}"
            );
        }
        // Loaded enough, even least-request sends it some.
        let _busy: Vec<_> = eps[..2].iter().flat_map(|ep| load(ep, 4)).collect();
        let share = shares(&eps, &f.cx(Balancer::LeastRequest), 7, 30_000)[2];
        assert!(share > 0.0, "{share}");
    }

    /// Properties are explored from a fixed seed: every run checks the same cases.
    fn config() -> Config {
        Config {
            cases: 128,
            rng_seed: RngSeed::Fixed(0x5eed),
            failure_persistence: None,
            ..Config::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// p2c-ewma takes each of two endpoints with probability inversely
        /// proportional to its cost, latency × (in-flight + 1).
        #[test]
        fn p2c_ewma_shares_are_inverse_to_cost(
            rtt_a in 100.0..100_000.0f64,
            rtt_b in 100.0..100_000.0f64,
            load_a in 0usize..4,
            load_b in 0usize..4,
            seed: u64,
        ) {
            let f = Fixture::new();
            let eps = [f.endpoint(0, rtt_a), f.endpoint(1, rtt_b)];
            let _held = (load(&eps[0], load_a), load(&eps[1], load_b));
            let (ca, cb) = (rtt_a * (load_a + 1) as f64, rtt_b * (load_b + 1) as f64);
            let share_a = shares(&eps, &f.cx(Balancer::P2cEwma), seed, 4000)[0];
            let expected = cb / (ca + cb);
            prop_assert!((share_a - expected).abs() < 0.04, "{share_a} vs {expected}");
        }

        /// Whatever is down, ejected or excluded: a pick is usable, never
        /// ejected while a usable endpoint is not, and `None` only when
        /// nothing is usable at all.
        #[test]
        fn ejected_endpoints_only_when_nothing_else_is_left(
            states in prop::collection::vec((any::<bool>(), any::<bool>()), 1..8),
            exclude in any::<prop::sample::Index>(),
            kind in prop::sample::select(KINDS.to_vec()),
            protocol in prop::sample::select(vec![Protocol::Http1, Protocol::Http2]),
            seed: u64,
        ) {
            let f = Fixture::new();
            let eps: Vec<_> = states
                .iter()
                .enumerate()
                .map(|(i, &(down, ejected))| {
                    let ep = f.endpoint(i, 1000.0);
                    if down {
                        ep.set_state(ConnState::Down, None);
                    }
                    if ejected {
                        f.eject(&ep);
                    }
                    ep
                })
                .collect();
            let excluded = &eps[exclude.index(eps.len())];
            let mut cx = f.cx(kind);
            cx.protocol = protocol;
            cx.exclude = Some(excluded);
            let reachable = |ep: &&Arc<Endpoint>| {
                ep.state() != ConnState::Down && !Arc::ptr_eq(ep, excluded)
            };
            let any_reachable = eps.iter().any(|ep| reachable(&ep));
            let any_in_rotation = eps.iter().filter(reachable).any(|ep| !ep.is_ejected());
            let mut rng = Rng::with_seed(seed);
            for _ in 0..20 {
                match pick(&eps, &cx, &mut rng) {
                    None => prop_assert!(!any_reachable),
                    Some(ep) => {
                        prop_assert!(reachable(&&ep));
                        prop_assert!(!any_in_rotation || !ep.is_ejected());
                    }
                }
            }
        }
    }

    #[test]
    fn not_serving_endpoints_are_never_chosen_even_as_a_last_resort() {
        use crate::endpoint::grpc_health::Verdict;
        let f = Fixture::new();
        let eps: Vec<_> = (0..4).map(|i| f.endpoint(i, 1000.0)).collect();
        eps[1].set_grpc_health(Verdict::NotServing);
        f.eject(&eps[2]);
        eps[3].set_grpc_health(Verdict::Unimplemented);
        for kind in KINDS {
            let share = shares(&eps, &f.cx(kind), 3, 3_000);
            assert_eq!(share[1], 0.0, "{kind:?}: {share:?}");
            assert!(share[0] > 0.0 && share[3] > 0.0, "{kind:?}: {share:?}");
        }
        eps[0].set_grpc_health(Verdict::NotServing);
        eps[3].set_grpc_health(Verdict::NotServing);
        let mut rng = Rng::with_seed(1);
        for kind in KINDS {
            let only = pick(&eps, &f.cx(kind), &mut rng).expect("the ejected one");
            assert!(Arc::ptr_eq(&only, &eps[2]), "{kind:?}");
        }
        eps[2].set_grpc_health(Verdict::NotServing);
        for kind in KINDS {
            assert!(pick(&eps, &f.cx(kind), &mut rng).is_none(), "{kind:?}");
        }
        eps[1].set_grpc_health(Verdict::Serving);
        let back = pick(&eps, &f.cx(Balancer::RoundRobin), &mut rng).expect("serving again");
        assert!(Arc::ptr_eq(&back, &eps[1]));
    }

    #[test]
    fn least_request_takes_the_less_loaded_of_two() {
        let f = Fixture::new();
        let eps = [f.endpoint(0, 1000.0), f.endpoint(1, 1_000_000.0)];
        let _held = load(&eps[0], 2);
        let share = shares(&eps, &f.cx(Balancer::LeastRequest), 7, 200);
        assert_eq!(share, [0.0, 1.0], "latency does not count, in-flight does");
        let _more = load(&eps[1], 2);
        let share = shares(&eps, &f.cx(Balancer::LeastRequest), 7, 2000);
        assert!((share[0] - 0.5).abs() < 0.05, "ties are split: {share:?}");
    }

    #[test]
    fn round_robin_takes_usable_endpoints_in_turn() {
        let f = Fixture::new();
        let eps: Vec<_> = (0..4).map(|i| f.endpoint(i, 1000.0)).collect();
        eps[2].set_state(ConnState::Connecting, None);
        let cx = f.cx(Balancer::RoundRobin);
        let mut rng = Rng::with_seed(1);
        let order: Vec<u16> = (0..6)
            .map(|_| pick(&eps, &cx, &mut rng).unwrap().addr.port() - 1000)
            .collect();
        assert_eq!(order, [0, 1, 3, 3, 0, 1]);
    }

    #[test]
    fn http1_requests_use_endpoints_without_http2_but_not_down_ones() {
        let f = Fixture::new();
        let no_http2 = f.endpoint(0, 1000.0);
        no_http2.set_state(ConnState::NoHttp2, None);
        let down = f.endpoint(1, 1000.0);
        down.set_state(ConnState::Down, None);
        let eps = [no_http2.clone(), down];
        let mut cx = f.cx(Balancer::P2cEwma);
        let mut rng = Rng::with_seed(3);
        assert!(
            pick(&eps, &cx, &mut rng).is_none(),
            "HTTP/2 needs a ready connection"
        );
        cx.protocol = Protocol::Http1;
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&pick(&eps, &cx, &mut rng).unwrap(), &no_http2));
        }
    }

    #[test]
    fn slow_start_weight_grows_with_age_to_a_full_share() {
        let f = Fixture::new();
        let cx = f.cx(Balancer::P2cEwma);
        let window = cx.slow_start_us.unwrap();
        let weight_at = |age: u64| weight(&cx, &f.endpoint_added(0, 1000.0, Some(NOW - age)));
        assert_eq!(weight_at(0), 0.05, "a new endpoint takes a little at once");
        assert_eq!(weight_at(window / 4), 0.25);
        assert_eq!(weight_at(window / 2), 0.5);
        assert_eq!(weight_at(window), 1.0);
        assert_eq!(weight_at(window * 3), 1.0);
        assert_eq!(weight(&cx, &f.endpoint(0, 1000.0)), 1.0, "no slow start");
        let off = PickContext {
            slow_start_us: None,
            ..f.cx(Balancer::P2cEwma)
        };
        assert_eq!(weight(&off, &f.endpoint_added(0, 1000.0, Some(NOW))), 1.0);
    }

    #[test]
    fn an_endpoint_in_slow_start_takes_its_weighted_share() {
        let f = Fixture::new();
        let window = f.cx(Balancer::P2cEwma).slow_start_us.unwrap();
        let eps = [
            f.endpoint(0, 1000.0),
            f.endpoint_added(1, 1000.0, Some(NOW - window / 4)),
        ];
        // p2c-ewma: the new one costs four times as much, so 1/5 of requests.
        let share = shares(&eps, &f.cx(Balancer::P2cEwma), 11, 10_000);
        assert!((share[1] - 0.2).abs() < 0.02, "{share:?}");
        // round-robin: its turn is taken with probability 1/4.
        let share = shares(&eps, &f.cx(Balancer::RoundRobin), 11, 10_000);
        assert!((share[1] - 0.5 * 0.25).abs() < 0.02, "{share:?}");
    }

    #[test]
    fn a_stalled_endpoint_costs_the_time_it_has_not_answered() {
        let f = Fixture::new();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000));
        let stuck = Endpoint::new(addr, None, 1000.0, f.service.clone(), false, 0);
        stuck.set_state(ConnState::Ready, None);
        let _waiting = stuck.await_answer();
        let cx = PickContext {
            now_us: crate::time::now_us() + 1_000_000,
            ..f.cx(Balancer::P2cEwma)
        };
        assert!(cost(&cx, &stuck) >= 1_000_000.0, "{}", cost(&cx, &stuck));
    }
}
