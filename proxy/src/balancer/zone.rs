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

/// Whether a request should stay with `local` rather than spill to `all`.
pub(crate) fn keep_local(
    local: &[Arc<Endpoint>],
    all: &[Arc<Endpoint>],
    cx: &PickContext<'_>,
) -> bool {
    let usable_local: Vec<&Arc<Endpoint>> =
        local.iter().filter(|ep| usable(cx, ep, false)).collect();
    if usable_local.is_empty() || usable_local.len() * 2 < local.len() {
        return false;
    }
    let remote: Vec<&Arc<Endpoint>> = all
        .iter()
        .filter(|ep| !local.iter().any(|l| Arc::ptr_eq(l, ep)) && usable(cx, ep, false))
        .collect();
    if remote.is_empty() {
        return true;
    }
    let mean = |eps: &[&Arc<Endpoint>]| {
        eps.iter().map(|ep| ep.in_flight() as f64).sum::<f64>() / eps.len() as f64
    };
    mean(&usable_local) < SPILL_FACTOR * mean(&remote) + SPILL_MARGIN
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
