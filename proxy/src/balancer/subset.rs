//! Subsetting (`SIDELB_SUBSET_SIZE`): a proxy connects to at most `k`
//! endpoints of a service.
//!
//! Without it every client pod holds a connection to every pod of every
//! service it calls, so a service of 1,000 pods costs each client 1,000
//! connections and each of its pods one from every client. With it a client
//! holds `k`, and a backend about clients × k / backends.
//!
//! The choice is **rendezvous (highest-random-weight) hashing**: each
//! endpoint scores a fixed hash of this proxy's identity (`namespace/pod`)
//! and the endpoint's address, and the subset is the `k` best. So:
//! - it needs nothing but the endpoint list: no control plane, no count of
//!   the clients;
//! - a pod chooses the same subset after a restart, in whatever order
//!   discovery lists the endpoints;
//! - it changes only where its members changed: an endpoint that goes is
//!   replaced by the next best one, one that comes takes a place only where
//!   it outranks the `k`-th member, in about k/n of the client pods, so a
//!   scale-up reaches the new pods at once and in proportion; a service of
//!   fewer than `k` endpoints is used whole;
//! - across client pods each endpoint is chosen with chance k/n, nearly
//!   independently, so clients per backend follow a binomial law (the unit
//!   tests measure it). A balanced variant (the "deterministic subsetting"
//!   of Google's SRE book) needs each client's index among all clients,
//!   which a pod does not know.
//!
//! A member that is ejected, down or slow stays a member, as in Envoy and
//! gRPC: the balancer avoids it within the subset, and a failure does not
//! move connections across the fleet. Only discovery changes the subset: an
//! endpoint it removes (not ready, terminating) is replaced by the next one.
//!
//! The subset turns discovery's updates of the whole service into updates
//! of its members, of the same [`Update`] type, so the pool keeps the
//! connection and statistics of every member that stays. An update of `m`
//! endpoints costs O(m log n) here plus O(k) to hand the members over; a
//! reset O(n log n).

use super::hash::hash;
use crate::discovery::{EndpointMeta, Update};
use sidelb_config::ProxyConfig;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Best first: the highest score, ties (never seen) broken by address.
type Rank = (Reverse<u64>, SocketAddr);

/// Every endpoint of one service, ranked for one client.
pub struct Subset {
    size: usize,
    client: u64,
    ranked: BTreeMap<Rank, EndpointMeta>,
}

impl Subset {
    /// The `size` best endpoints (`size` > 0) for the client [`client`] hashed.
    pub fn new(size: usize, client: u64) -> Self {
        Subset {
            size,
            client,
            ranked: BTreeMap::new(),
        }
    }

    /// Takes an update of the whole service and answers the update of the
    /// members: a reset to them, or the same `NoService`.
    pub fn apply(&mut self, update: Update) -> Update {
        match update {
            Update::Reset(list) => {
                self.ranked = list.into_iter().map(|m| (self.rank(m.addr), m)).collect();
            }
            Update::Add(list) => {
                for m in list {
                    self.ranked.insert(self.rank(m.addr), m);
                }
            }
            Update::Remove(addrs) => {
                for addr in addrs {
                    self.ranked.remove(&self.rank(addr));
                }
            }
            Update::NoService(why) => {
                self.ranked.clear();
                return Update::NoService(why);
            }
        }
        Update::Reset(self.members().collect())
    }

    /// The members, best first.
    pub(crate) fn members(&self) -> impl Iterator<Item = EndpointMeta> + '_ {
        self.ranked.values().take(self.size).cloned()
    }

    /// Every other endpoint discovery reports, best first.
    pub(crate) fn outside(&self) -> impl Iterator<Item = EndpointMeta> + '_ {
        self.ranked.values().skip(self.size).cloned()
    }

    /// How many endpoints are outside.
    pub(crate) fn outside_len(&self) -> usize {
        self.ranked.len().saturating_sub(self.size)
    }

    fn rank(&self, addr: SocketAddr) -> Rank {
        (Reverse(score(self.client, addr)), addr)
    }
}

/// The endpoint's weight for the client: a fixed hash of both (see
/// [`hash`]), so every build of the proxy chooses alike.
pub(crate) fn score(client: u64, addr: SocketAddr) -> u64 {
    let mut bytes = [0u8; 8 + 16 + 2];
    bytes[..8].copy_from_slice(&client.to_le_bytes());
    let end = match addr.ip() {
        IpAddr::V4(ip) => {
            bytes[8..12].copy_from_slice(&ip.octets());
            12
        }
        IpAddr::V6(ip) => {
            bytes[8..24].copy_from_slice(&ip.octets());
            24
        }
    };
    bytes[end..end + 2].copy_from_slice(&addr.port().to_be_bytes());
    hash(&bytes[..end + 2])
}

/// The client's part of every score.
pub fn client(identity: &str) -> u64 {
    hash(identity.as_bytes())
}

/// Who this proxy is: `namespace/pod`, the pod's name from `POD_NAME` (the
/// downward API) or else the hostname, which in a pod is its name.
pub(crate) fn identity(config: &ProxyConfig) -> String {
    let name = if config.pod_name.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    } else {
        config.pod_name.clone()
    };
    format!("{}/{name}", config.pod_namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 8080))
    }

    fn metas(ids: impl IntoIterator<Item = u32>) -> Vec<EndpointMeta> {
        ids.into_iter()
            .map(|i| EndpointMeta::new(addr(i)))
            .collect()
    }

    fn members(subset: &Subset) -> BTreeSet<SocketAddr> {
        subset.members().map(|m| m.addr).collect()
    }

    fn chosen(client_name: &str, size: usize, ids: impl IntoIterator<Item = u32>) -> Subset {
        let mut s = Subset::new(size, client(client_name));
        s.apply(Update::Reset(metas(ids)));
        s
    }

    #[test]
    fn scores_are_fixed_across_builds() {
        // A change here re-deals every subset of a fleet during an upgrade.
        assert_eq!(score(client("ns/pod"), addr(7)), 0xc8dd_60f0_1230_f389);
    }

    #[test]
    fn the_identity_is_the_pod_or_else_the_host() {
        let mut config = ProxyConfig::defaults();
        config.pod_namespace = "shop".into();
        config.pod_name = "cart-7d9f-x2k".into();
        assert_eq!(identity(&config), "shop/cart-7d9f-x2k");
        config.pod_name.clear();
        let id = identity(&config);
        assert!(id.starts_with("shop/") && id.len() > "shop/".len(), "{id}");
    }

    #[test]
    fn a_service_smaller_than_the_subset_is_used_whole() {
        let mut s = chosen("ns/a", 64, 0..3);
        assert_eq!(members(&s).len(), 3);
        s.apply(Update::Add(metas(3..5)));
        assert_eq!(members(&s), metas(0..5).iter().map(|m| m.addr).collect());
        assert_eq!((s.outside().count(), s.outside_len()), (0, 0));
    }

    #[test]
    fn no_service_empties_it() {
        let mut s = chosen("ns/a", 2, 0..5);
        assert_eq!(
            s.apply(Update::NoService("gone".into())),
            Update::NoService("gone".into())
        );
        assert_eq!(s.members().count() + s.outside().count(), 0);
    }

    /// Clients per backend across 1,000 client pods, 300 backends, k = 64:
    /// binomial(1000, 64/300) has mean 213 and standard deviation 13, so the
    /// extremes of 300 backends lie near ±3 deviations, a max/min near 1.4.
    #[test]
    fn client_pods_spread_evenly_over_backends() {
        let (clients, backends, k) = (1000, 300u32, 64);
        let mut per_backend = vec![0u32; backends as usize];
        for c in 0..clients {
            let s = chosen(&format!("default/client-{c}"), k, 0..backends);
            for m in s.members() {
                let i = (0..backends).position(|b| addr(b) == m.addr).unwrap();
                per_backend[i] += 1;
            }
        }
        let (min, max) = (
            *per_backend.iter().min().unwrap(),
            *per_backend.iter().max().unwrap(),
        );
        let mean = (clients * k) as f64 / f64::from(backends);
        println!("clients per backend: min {min}, max {max}, mean {mean:.1}");
        assert!(min > 0, "every backend is used");
        assert!(
            f64::from(min) > 0.7 * mean && f64::from(max) < 1.3 * mean,
            "min {min}, max {max}, mean {mean:.1}"
        );
    }

    /// A backend added to 300 enters about k/n of 1,000 subsets (212), and
    /// in each it displaces exactly one member.
    #[test]
    fn a_new_backend_enters_subsets_in_proportion() {
        let (clients, k) = (1000, 64);
        let new = addr(300);
        let mut entered = 0;
        for c in 0..clients {
            let mut s = chosen(&format!("default/client-{c}"), k, 0..300);
            let before = members(&s);
            s.apply(Update::Add(metas([300])));
            let after = members(&s);
            if after.contains(&new) {
                entered += 1;
                assert_eq!(before.difference(&after).count(), 1);
            } else {
                assert_eq!(before, after);
            }
        }
        println!("a new backend entered {entered} of {clients} subsets");
        assert!((140..=290).contains(&entered), "{entered}");
    }

    fn update() -> impl Strategy<Value = Update> {
        let ids = || proptest::collection::vec(0u32..60, 0..20);
        prop_oneof![
            ids().prop_map(|i| Update::Reset(metas(i))),
            ids().prop_map(|i| Update::Add(metas(i))),
            ids().prop_map(|i| Update::Remove(i.into_iter().map(addr).collect())),
            Just(Update::NoService("gone".into())),
        ]
    }

    proptest! {
        /// The subset has min(k, n) members, whatever the order of the list.
        #[test]
        fn size_and_order_independence(
            ids in proptest::collection::btree_set(0u32..500, 0..150),
            k in 1usize..80,
            seed in any::<u64>(),
        ) {
            let s = chosen("ns/a", k, ids.iter().copied());
            let mut shuffled: Vec<u32> = ids.iter().copied().collect();
            fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
            prop_assert_eq!(members(&s).len(), k.min(ids.len()));
            prop_assert_eq!(members(&s), members(&chosen("ns/a", k, shuffled)));
            prop_assert_eq!(s.outside().count(), ids.len() - k.min(ids.len()));
            prop_assert_eq!(s.outside_len(), s.outside().count());
        }

        /// Removing one endpoint changes at most one member (it, for the
        /// next best); adding one changes at most one (for it).
        #[test]
        fn one_endpoint_changes_at_most_one_member(
            ids in proptest::collection::btree_set(0u32..500, 1..150),
            k in 1usize..80,
            pick in any::<prop::sample::Index>(),
            client_id in any::<u32>(),
        ) {
            let name = format!("ns/{client_id}");
            let gone = *pick.get(&ids.iter().copied().collect::<Vec<_>>());
            let mut s = chosen(&name, k, ids.iter().copied());
            let before = members(&s);
            s.apply(Update::Remove(vec![addr(gone)]));
            let after = members(&s);
            prop_assert!(!after.contains(&addr(gone)));
            prop_assert!(after.difference(&before).count() <= 1);
            let kept: BTreeSet<_> = before.iter().filter(|a| **a != addr(gone)).copied().collect();
            prop_assert!(kept.is_subset(&after));

            s.apply(Update::Add(metas([gone])));
            prop_assert_eq!(&members(&s), &before, "adding it back restores the subset");
            let added = 600 + client_id % 100;
            s.apply(Update::Add(metas([added])));
            let grown = members(&s);
            prop_assert!(before.difference(&grown).count() <= 1);
            prop_assert!(grown.difference(&before).all(|a| *a == addr(added)));
        }

        /// Whatever the updates, the subset is the one a reset to the same
        /// endpoints gives: updates and a fresh start agree.
        #[test]
        fn updates_agree_with_a_fresh_start(
            updates in proptest::collection::vec(update(), 1..25),
            k in 1usize..12,
        ) {
            let mut s = Subset::new(k, client("ns/a"));
            let mut model = BTreeSet::new();
            for update in updates {
                match &update {
                    Update::Reset(list) => model = list.iter().map(|m| m.addr).collect(),
                    Update::Add(list) => model.extend(list.iter().map(|m| m.addr)),
                    Update::Remove(gone) => gone.iter().for_each(|a| { model.remove(a); }),
                    Update::NoService(_) => model.clear(),
                }
                s.apply(update);
                let mut fresh = Subset::new(k, client("ns/a"));
                fresh.apply(Update::Reset(model.iter().map(|a| EndpointMeta::new(*a)).collect()));
                prop_assert_eq!(members(&s), members(&fresh));
            }
        }
    }
}
