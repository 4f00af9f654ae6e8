//! Affinity by header (`SIDELB_HASH_HEADER`): consistent hashing with
//! bounded loads.
//!
//! A request carrying the header goes to the pod a hash of the header's
//! value lands on, so the calls of one user (one cart, one shard) meet the
//! same pod's caches. The choice is a **ring hash**: every endpoint puts
//! [`POINTS_PER_ENDPOINT`] points on a ring of `u64`, and a key goes to the
//! owner of the first point at or after its hash. Maglev would look up in
//! O(1) instead of O(log n), but bounded load needs a "next choice" that
//! is the same for everyone and moves little when the pool changes; on a
//! ring that is simply the next point, which is what the bounded-load
//! algorithm (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
//! Bounded Loads", 2017) is defined on. A key's pod stays while the pod
//! stays, and adding or removing one of n pods moves about 1/n of keys:
//! only those whose first point changed owner.
//!
//! **Bounded load**: a pod already carrying more than
//! [`BALANCE_FACTOR`] × the mean in-flight (rounded up, counting this
//! request) passes the key to the next pod on the ring that does not, so
//! one hot key spills over to its neighbours instead of overloading its
//! pod; once the load falls, the key is home again. Pods that cannot take
//! the request (connection down, ejected, excluded after a refusal) are
//! passed over the same way.
//!
//! Points are placed by hashing each endpoint's address (the pod's IP and
//! port: what stays while the pod does), with a hash fixed here (FNV-1a
//! with a 64-bit finaliser), not Rust's `DefaultHasher` whose algorithm
//! may change between releases: every proxy of every client pod places
//! the same points and so sends a key to the same pod.
//!
//! The ring is built when the pool changes (O(n log n) for n endpoints)
//! and only read by requests: a lookup is a binary search plus a short walk.

use crate::endpoint::Endpoint;
use crate::metrics::{Metrics, ServiceLabels};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

/// Points per endpoint: with 100 the share of keys each of 10 endpoints
/// gets stays within about ±25 % of a tenth.
pub(crate) const POINTS_PER_ENDPOINT: usize = 100;

/// How far over the mean in-flight a pod may go before it passes keys on
/// (the paper's `c`): 1.25 keeps loads within a quarter of even while
/// moving few keys off their pod.
pub(crate) const BALANCE_FACTOR: f64 = 1.25;

/// A service's affinity: the header, the ring of its current endpoints,
/// and what the choices by it counted.
pub(crate) struct Affinity {
    header: http::HeaderName,
    ring: ArcSwap<Ring>,
    hashed: Counter,
    passed: Counter,
}

impl Affinity {
    /// Affinity by `header` (a valid lower-case name, as the configuration
    /// checked), `None` when the name is not one.
    pub(crate) fn new(header: &str, metrics: &Metrics, service: &str) -> Option<Self> {
        let labels = ServiceLabels {
            service: service.to_owned(),
        };
        Some(Affinity {
            header: http::HeaderName::from_bytes(header.as_bytes()).ok()?,
            ring: ArcSwap::from_pointee(Ring::new(&[])),
            hashed: metrics.hashed_requests.get_or_create(&labels).clone(),
            passed: metrics.hash_passed.get_or_create(&labels).clone(),
        })
    }

    pub(crate) fn header(&self) -> &str {
        self.header.as_str()
    }

    /// The request's key: its first value of the header, if it has one.
    pub(crate) fn key<'h>(&self, headers: &'h http::HeaderMap) -> Option<&'h [u8]> {
        headers.get(&self.header).map(|v| v.as_bytes())
    }

    /// Rebuilds the ring for a new endpoint list.
    pub(crate) fn rebuild(&self, endpoints: &[Arc<Endpoint>]) {
        self.ring.store(Arc::new(Ring::new(endpoints)));
    }

    /// See [`Ring::place`]; counts the choice.
    pub(crate) fn place(
        &self,
        key: &[u8],
        in_flight: usize,
        usable: impl Fn(&Endpoint) -> bool,
    ) -> Option<Arc<Endpoint>> {
        let placed = self.ring.load().place(key, in_flight, usable)?;
        self.hashed.inc();
        if placed.passed {
            self.passed.inc();
        }
        Some(placed.endpoint)
    }
}

/// The points of every endpoint, sorted by position.
pub(crate) struct Ring {
    /// (position, index into `endpoints`).
    points: Vec<(u64, u32)>,
    endpoints: Vec<Arc<Endpoint>>,
}

/// Where a key went.
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) endpoint: Arc<Endpoint>,
    /// Whether it went past its own pod (over the bound, or unusable).
    pub(crate) passed: bool,
}

impl Ring {
    pub(crate) fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut points = Vec::with_capacity(endpoints.len() * POINTS_PER_ENDPOINT);
        for (i, ep) in endpoints.iter().enumerate() {
            let base = hash(ep.addr.to_string().as_bytes());
            for k in 0..POINTS_PER_ENDPOINT {
                points.push((mix(base ^ mix(k as u64 + 1)), i as u32));
            }
        }
        points.sort_unstable();
        Ring {
            points,
            endpoints: endpoints.to_vec(),
        }
    }

    /// The endpoint for `key`: the first on the ring from the key's hash
    /// that `usable` accepts and that carries fewer than its bound (see
    /// [`capacity`], `in_flight` being the service's, this request counted).
    /// When every usable endpoint is at its bound, the first usable one;
    /// `None` when none is.
    pub(crate) fn place(
        &self,
        key: &[u8],
        in_flight: usize,
        usable: impl Fn(&Endpoint) -> bool,
    ) -> Option<Placed> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let bound = capacity(in_flight, n);
        let start = self.points.partition_point(|&(p, _)| p < hash(key));
        let mut seen = vec![0u64; n.div_ceil(64)];
        let mut left = n;
        let mut first_usable = None;
        let mut home = None;
        for step in 0..self.points.len() {
            let (_, i) = self.points[(start + step) % self.points.len()];
            let i = i as usize;
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if seen[word] & bit != 0 {
                continue;
            }
            seen[word] |= bit;
            let ep = &self.endpoints[i];
            let own = *home.get_or_insert(i) == i;
            if usable(ep) {
                if ep.in_flight() < bound {
                    return Some(Placed {
                        endpoint: ep.clone(),
                        passed: !own,
                    });
                }
                first_usable.get_or_insert(ep);
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
        first_usable.map(|ep| Placed {
            endpoint: ep.clone(),
            passed: !Arc::ptr_eq(ep, &self.endpoints[home.unwrap_or(0)]),
        })
    }
}

/// Most requests one of `n` endpoints may already carry and still take one
/// more, with `in_flight` in the service counting the new one:
/// ⌈c × in_flight / n⌉ (at least 1).
pub(crate) fn capacity(in_flight: usize, n: usize) -> usize {
    let mean = in_flight.max(1) as f64 / n.max(1) as f64;
    ((BALANCE_FACTOR * mean).ceil() as usize).max(1)
}

/// FNV-1a over the bytes, then a finaliser so that close inputs land far
/// apart on the ring.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// MurmurHash3's 64-bit finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{ConnState, InFlight, ServiceContext};
    use crate::metrics::Metrics;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use std::collections::HashMap;
    use std::net::SocketAddr;

    fn service() -> Arc<ServiceContext> {
        Arc::new(ServiceContext {
            name: "svc.ns:80".into(),
            metrics: Arc::new(Metrics::new()),
            changed: Default::default(),
        })
    }

    /// Ready endpoints at 10.0.0.`i`:8080 for each `i` of `ids`.
    fn endpoints(service: &Arc<ServiceContext>, ids: &[u8]) -> Vec<Arc<Endpoint>> {
        ids.iter()
            .map(|&i| {
                let addr = SocketAddr::from(([10, 0, 0, i], 8080));
                let ep = Endpoint::new(addr, None, 1000.0, service.clone(), false, 0);
                ep.set_state(ConnState::Ready, None);
                ep
            })
            .collect()
    }

    fn key(k: u32) -> Vec<u8> {
        format!("user-{k}").into_bytes()
    }

    /// Where each of `keys` goes with nothing in flight: the last octet.
    fn homes(ring: &Ring, keys: u32) -> Vec<u8> {
        (0..keys)
            .map(|k| {
                let placed = ring.place(&key(k), 1, |_| true).expect("a place");
                assert!(!placed.passed);
                match placed.endpoint.addr.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets()[3],
                    std::net::IpAddr::V6(_) => unreachable!(),
                }
            })
            .collect()
    }

    fn config() -> Config {
        Config {
            cases: 48,
            rng_seed: RngSeed::Fixed(0xaff1),
            failure_persistence: None,
            ..Config::default()
        }
    }

    const KEYS: u32 = 4000;

    #[test]
    fn the_hash_is_fixed() {
        // Every proxy, whatever it was built with, places keys alike: these
        // are FNV-1a's and Murmur3's published constants at work.
        assert_eq!(hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash(b"user-1"), 0x41a2_fca5_c684_01c5);
    }

    #[test]
    fn keys_spread_over_every_endpoint() {
        let s = service();
        let ring = Ring::new(&endpoints(&s, &(1..=10).collect::<Vec<_>>()));
        let mut counts: HashMap<u8, u32> = HashMap::new();
        for home in homes(&ring, 20_000) {
            *counts.entry(home).or_default() += 1;
        }
        assert_eq!(counts.len(), 10);
        for (ep, n) in counts {
            let share = n as f64 / 20_000.0;
            assert!((0.06..0.14).contains(&share), "10.0.0.{ep} took {share:.3}");
        }
    }

    #[test]
    fn unusable_endpoints_pass_their_keys_to_the_next() {
        let s = service();
        let eps = endpoints(&s, &[1, 2, 3]);
        let ring = Ring::new(&eps);
        let before = homes(&ring, 500);
        let down = &eps[1];
        for k in 0..500 {
            let placed = ring
                .place(&key(k), 1, |ep| !std::ptr::eq(ep, &**down))
                .unwrap();
            assert!(!Arc::ptr_eq(&placed.endpoint, down));
            let was_home = before[k as usize] == 2;
            assert_eq!(placed.passed, was_home, "only its keys move");
        }
        assert!(ring.place(b"k", 1, |_| false).is_none());
        assert!(Ring::new(&[]).place(b"k", 1, |_| true).is_none());
    }

    #[test]
    fn capacity_is_the_factor_over_the_mean_rounded_up() {
        assert_eq!(capacity(1, 3), 1);
        assert_eq!(capacity(0, 3), 1);
        assert_eq!(capacity(12, 3), 5);
        assert_eq!(capacity(100, 10), 13);
        assert_eq!(capacity(5, 0), 7);
    }

    proptest! {
        #![proptest_config(config())]

        /// A key's pod does not depend on the order endpoints are listed
        /// in, nor on which proxy built the ring.
        #[test]
        fn placement_is_stable(mut ids in prop::sample::subsequence((1u8..=60).collect::<Vec<_>>(), 1..30), seed: u64) {
            let s = service();
            let ring = Ring::new(&endpoints(&s, &ids));
            let first = homes(&ring, 300);
            fastrand::Rng::with_seed(seed).shuffle(&mut ids);
            let again = Ring::new(&endpoints(&service(), &ids));
            prop_assert_eq!(first, homes(&again, 300));
        }

        /// Adding one endpoint to n moves about 1/(n+1) of keys, every one
        /// of them to the new endpoint; removing it moves them back and no
        /// other.
        #[test]
        fn one_more_endpoint_moves_about_its_share(
            ids in prop::sample::subsequence((1u8..=60).collect::<Vec<_>>(), 2..20),
            new in 61u8..=250,
        ) {
            let s = service();
            let before = homes(&Ring::new(&endpoints(&s, &ids)), KEYS);
            let mut grown = ids.clone();
            grown.push(new);
            let after = homes(&Ring::new(&endpoints(&s, &grown)), KEYS);
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    prop_assert_eq!(*a, new, "a key moved between old endpoints");
                    moved += 1;
                }
            }
            let share = moved as f64 / KEYS as f64;
            let expected = 1.0 / grown.len() as f64;
            prop_assert!(share > expected * 0.4 && share < expected * 1.8,
                "{moved} of {KEYS} keys moved, expected about {expected:.3}");
            let shrunk = homes(&Ring::new(&endpoints(&s, &ids)), KEYS);
            prop_assert_eq!(before, shrunk);
        }

        /// However skewed the keys (one hot key, a few warm ones), no
        /// endpoint ever carries more than ⌈1.25 × mean⌉ of the requests in
        /// flight, and keys stay home while their pod has room.
        #[test]
        fn load_stays_within_the_bound(
            n in 2usize..12,
            requests in 1usize..300,
            hot_percent in 0u32..=100,
            seed: u64,
        ) {
            let s = service();
            let ids: Vec<u8> = (1..=n as u8).collect();
            let eps = endpoints(&s, &ids);
            let ring = Ring::new(&eps);
            // The same addresses with nothing in flight: each key's home.
            let homes = homes(&Ring::new(&endpoints(&service(), &ids)), 50);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut held: Vec<InFlight> = Vec::new();
            for t in 1..=requests {
                let k = if rng.u32(..100) < hot_percent { 0 } else { rng.u32(..50) };
                let placed = ring.place(&key(k), t, |_| true).unwrap();
                let home = &eps[usize::from(homes[k as usize]) - 1];
                prop_assert_eq!(
                    placed.passed,
                    !Arc::ptr_eq(&placed.endpoint, home),
                    "passed on exactly when it left home"
                );
                if home.in_flight() < capacity(t, n) {
                    prop_assert!(!placed.passed, "a key leaves home only when home is full");
                }
                held.push(placed.endpoint.start_request());
                let max = eps.iter().map(|ep| ep.in_flight()).max().unwrap();
                prop_assert!(max <= capacity(t, n), "{max} in flight on one of {n} with {t} in all");
            }
        }
    }
}
