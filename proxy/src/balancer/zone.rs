//! Keeping calls in the pod's own zone while its endpoints can take them.
//!
//! Cross-zone traffic costs latency and, in most clouds, money; Kubernetes'
//! own answer (EndpointSlice hints, `trafficDistribution: PreferSameZone`)
//! is static, so a zone with few pods and many clients is overrun. Here the
//! choice is made per request from what the proxy sees:
//!
//! - A Service opts in as it does for Kubernetes itself, with
//!   `trafficDistribution: PreferSameZone` (or `PreferClose`, or the
//!   `service.kubernetes.io/topology-mode: Auto` annotation): its
//!   EndpointSlice controller then gives every endpoint zone hints
//!   (`hints.forZones`). Without hints on every endpoint, calls go to every
//!   zone alike, as before. The *local* endpoints are those hinted for this
//!   pod's zone; none: no preference. With `PreferSameNode` the controller
//!   also hints each endpoint for its node (`hints.forNodes`), and the
//!   endpoints hinted for this pod's node come first, those of its zone when
//!   the node has none.
//! - A request stays local while at least half the local endpoints are
//!   usable (connected, not ejected, serving) and they are not overloaded:
//!   their mean in-flight count is under [`SPILL_FACTOR`] × the other
//!   zones' mean plus [`SPILL_MARGIN`]. In-flight counts carry latency too
//!   (a slower pod holds its calls longer), so a zone whose pods slow down
//!   or fill up spills its excess, and takes it back as they recover.
//! - A spilled request is balanced over every endpoint, local ones included,
//!   by the service's balancer, which then favours the less loaded.

use crate::balancer::pick::{PickContext, usable};
use crate::discovery::EndpointMeta;
use crate::endpoint::Endpoint;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// How much busier than the other zones local endpoints may be...
pub(crate) const SPILL_FACTOR: f64 = 2.0;
/// ...plus this many calls in flight each, before requests spill.
pub(crate) const SPILL_MARGIN: f64 = 4.0;

/// Where each endpoint of a service is, as discovery said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) zone: Option<String>,
    pub(crate) for_zones: Vec<String>,
    pub(crate) for_nodes: Vec<String>,
}

impl Placement {
    pub(crate) fn of(meta: &EndpointMeta) -> Self {
        Placement {
            zone: meta.zone.clone(),
            for_zones: meta.for_zones.clone(),
            for_nodes: meta.for_nodes.clone(),
        }
    }
}

/// The addresses local to this pod among `placements`: hinted for its
/// `node` when every endpoint has node hints and some are for it, else
/// hinted for its `zone` when every endpoint has zone hints; else none.
pub(crate) fn local_addrs(
    zone: Option<&str>,
    node: Option<&str>,
    placements: &HashMap<SocketAddr, Placement>,
) -> Vec<SocketAddr> {
    let hinted = |hints: fn(&Placement) -> &Vec<String>, wanted: Option<&str>| {
        let wanted = wanted?;
        if placements.values().any(|p| hints(p).is_empty()) {
            return None;
        }
        let mut local: Vec<SocketAddr> = placements
            .iter()
            .filter(|(_, p)| hints(p).iter().any(|h| h == wanted))
            .map(|(addr, _)| *addr)
            .collect();
        local.sort();
        (!local.is_empty()).then_some(local)
    };
    hinted(|p| &p.for_nodes, node)
        .or_else(|| hinted(|p| &p.for_zones, zone))
        .unwrap_or_default()
}

/// Endpoints looked at per side for one decision: every one of a small
/// zone, a random sample of a large one, so a decision costs the same at
/// any size, as a pick does.
const SAMPLE: usize = 16;

/// The endpoints of one pool split by locality, made with each update.
#[derive(Default)]
pub(crate) struct Locality {
    pub(crate) local: Vec<Arc<Endpoint>>,
    pub(crate) remote: Vec<Arc<Endpoint>>,
}

/// Whether a request should stay with `local` rather than spill to every zone.
pub(crate) fn keep_local(
    local: &[Arc<Endpoint>],
    remote: &[Arc<Endpoint>],
    cx: &PickContext<'_>,
    rng: &mut fastrand::Rng,
) -> bool {
    let (local_usable, local_seen, local_load) = survey(local, cx, rng);
    if local_usable == 0 || local_usable * 2 < local_seen {
        return false;
    }
    let (remote_usable, _, remote_load) = survey(remote, cx, rng);
    if remote_usable == 0 {
        return true;
    }
    let mean = |load: usize, n: usize| load as f64 / n as f64;
    mean(local_load, local_usable) < SPILL_FACTOR * mean(remote_load, remote_usable) + SPILL_MARGIN
}

/// Of `eps` (all, or [`SAMPLE`] at random): how many usable, how many
/// looked at, and the usable ones' calls in flight.
fn survey(
    eps: &[Arc<Endpoint>],
    cx: &PickContext<'_>,
    rng: &mut fastrand::Rng,
) -> (usize, usize, usize) {
    let mut tally = (0, 0, 0);
    let mut count = |ep: &Endpoint| {
        tally.1 += 1;
        if usable(cx, ep, false) {
            tally.0 += 1;
            tally.2 += ep.in_flight();
        }
    };
    if eps.len() <= SAMPLE {
        eps.iter().for_each(|ep| count(ep));
    } else {
        (0..SAMPLE).for_each(|_| count(&eps[rng.usize(..eps.len())]));
    }
    tally
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
