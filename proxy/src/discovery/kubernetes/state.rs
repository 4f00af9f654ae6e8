//! What the proxy knows about one Service, as its two watches report it, and
//! what that means for each port asked for.
//!
//! The Service object (for its ports) and its EndpointSlices come from two
//! independent watches; an answer needs both. Each watch's snapshot is
//! replaced only when a (re)list is complete (`InitDone`): after a `410 Gone`
//! or a reconnect the watcher lists again, and taking the partial list as the
//! truth would drop endpoints for a moment. Errors never touch what is
//! known — the last endpoints stay in use while the API server is away —
//! except that a watch that has *never* synced because of an error only a
//! fix can clear (RBAC) makes the Service unresolvable with that message.

use super::endpoints;
use super::failure::Watched;
use super::ports;
use crate::discovery::EndpointMeta;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use sidelb_config::PortRef;
use std::collections::BTreeMap;

/// The label the EndpointSlice controller puts on a Service's slices.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What to tell a port's subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not known yet: say nothing.
    Unknown,
    Endpoints(Vec<EndpointMeta>),
    /// The port cannot be resolved; why, and what to do.
    Unresolvable(String),
}

/// One watch's view: the last complete snapshot, and a list in progress.
#[derive(Debug)]
struct Snapshot<T> {
    synced: Option<T>,
    listing: Option<T>,
    /// A failure that needs a fix, while it lasts.
    blocked: Option<String>,
}

impl<T: Default> Snapshot<T> {
    fn new() -> Self {
        Snapshot {
            synced: None,
            listing: None,
            blocked: None,
        }
    }

    /// The map an event changes: the list in progress, else the snapshot
    /// (none before the first list started, when no event can come).
    fn target(&mut self) -> Option<&mut T> {
        self.listing.as_mut().or(self.synced.as_mut())
    }

    fn init(&mut self) {
        self.listing = Some(T::default());
    }

    fn init_done(&mut self) {
        self.synced = Some(self.listing.take().unwrap_or_default());
        self.blocked = None;
    }
}

/// One Service's object and slices.
#[derive(Debug)]
pub(crate) struct ServiceState {
    name: String,
    namespace: String,
    /// The Service, if it exists (a map of at most one entry, so a relist
    /// that no longer finds it says so).
    service: Snapshot<BTreeMap<String, Service>>,
    slices: Snapshot<BTreeMap<String, EndpointSlice>>,
}

impl ServiceState {
    pub(crate) fn new(name: &str, namespace: &str) -> Self {
        ServiceState {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            service: Snapshot::new(),
            slices: Snapshot::new(),
        }
    }

    /// `greeter.default`, for messages.
    pub(crate) fn display_name(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// Applies a Service watch event; returns whether the answer may have changed.
    pub(crate) fn apply_service(&mut self, event: Event<Service>) -> bool {
        let name = self.name.clone();
        apply(&mut self.service, event, |s| {
            (s.name_any() == name).then(|| {
                // What is never read is not kept.
                s.managed_fields_mut().clear();
                s.annotations_mut().clear();
                s.status = None;
            })
        })
    }

    /// Applies an EndpointSlice watch event; returns whether the answer may have changed.
    pub(crate) fn apply_slice(&mut self, event: Event<EndpointSlice>) -> bool {
        let name = self.name.clone();
        apply(&mut self.slices, event, |s| {
            (s.labels().get(SERVICE_NAME_LABEL) == Some(&name)).then(|| {
                s.managed_fields_mut().clear();
                s.annotations_mut().clear();
            })
        })
    }

    /// Records a failure that needs a fix. Returns whether it is news (not
    /// the failure already recorded), for logging once.
    pub(crate) fn block(&mut self, watched: Watched, why: String) -> bool {
        let snapshot = match watched {
            Watched::Services => &mut self.service.blocked,
            Watched::EndpointSlices => &mut self.slices.blocked,
        };
        let news = snapshot.as_deref() != Some(why.as_str());
        *snapshot = Some(why);
        news
    }

    /// Whether both watches have a complete snapshot.
    pub(crate) fn synced(&self) -> bool {
        self.service.synced.is_some() && self.slices.synced.is_some()
    }

    /// What subscribers of `port` should hear now.
    pub(crate) fn outcome(&self, port: &PortRef) -> Outcome {
        for snapshot_blocked in [
            (self.service.synced.is_none(), &self.service.blocked),
            (self.slices.synced.is_none(), &self.slices.blocked),
        ] {
            if let (true, Some(why)) = snapshot_blocked {
                return Outcome::Unresolvable(why.clone());
            }
        }
        let Some(services) = &self.service.synced else {
            return Outcome::Unknown;
        };
        let display = self.display_name();
        let Some(service) = services.get(&self.name) else {
            return Outcome::Unresolvable(format!(
                "service {display} does not exist: there is no Service `{}` in namespace `{}`; \
                 create it, or fix the name in SIDELB_UPSTREAMS or in the address the app dials",
                self.name, self.namespace
            ));
        };
        if let Some(spec) = &service.spec
            && spec.type_.as_deref() == Some("ExternalName")
        {
            return Outcome::Unresolvable(format!(
                "service {display} is of type ExternalName ({}): it has no pods to balance over; \
                 have the app dial that name directly",
                spec.external_name.as_deref().unwrap_or("no name")
            ));
        }
        if ports::headless_without_ports(service) {
            let PortRef::Number(number) = port else {
                return Outcome::Unresolvable(format!(
                    "service {display} is headless and lists no ports, so the port name in \
                     the address cannot be looked up; dial the pods' port by number"
                ));
            };
            return match &self.slices.synced {
                Some(slices) => {
                    Outcome::Endpoints(endpoints::select_on_port(slices.values(), *number))
                }
                None => Outcome::Unknown,
            };
        }
        let service_port = match ports::service_port(service, &display, port) {
            Ok(p) => p,
            Err(why) => return Outcome::Unresolvable(why),
        };
        match &self.slices.synced {
            Some(slices) => Outcome::Endpoints(endpoints::select(slices.values(), service_port)),
            None => Outcome::Unknown,
        }
    }

    /// How many slices the last snapshot has, for logs.
    pub(crate) fn slice_count(&self) -> usize {
        self.slices.synced.as_ref().map_or(0, BTreeMap::len)
    }
}

/// Applies a watch event to a snapshot keyed by object name. `keep` slims an
/// object and says whether it belongs (the selectors should already ensure
/// it; a server that ignores them must not mix Services up).
fn apply<K: ResourceExt>(
    snapshot: &mut Snapshot<BTreeMap<String, K>>,
    event: Event<K>,
    keep: impl Fn(&mut K) -> Option<()>,
) -> bool {
    match event {
        Event::Init => {
            snapshot.init();
            false
        }
        Event::InitApply(mut object) => {
            if keep(&mut object).is_some()
                && let Some(listing) = &mut snapshot.listing
            {
                listing.insert(object.name_any(), object);
            }
            false
        }
        Event::InitDone => {
            snapshot.init_done();
            true
        }
        Event::Apply(mut object) => {
            if keep(&mut object).is_none() {
                return false;
            }
            snapshot
                .target()
                .map(|objects| objects.insert(object.name_any(), object))
                .is_some()
        }
        Event::Delete(object) => snapshot
            .target()
            .and_then(|objects| objects.remove(&object.name_any()))
            .is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn service(name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("grpc".into()),
                    port: 50051,
                    target_port: Some(IntOrString::Int(8080)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    addresses: vec![(*ip).into()],
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("grpc".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        }
    }

    fn listed<K>(
        state: &mut ServiceState,
        apply: fn(&mut ServiceState, Event<K>) -> bool,
        objects: Vec<K>,
    ) {
        apply(state, Event::Init);
        for o in objects {
            apply(state, Event::InitApply(o));
        }
        apply(state, Event::InitDone);
    }

    fn addrs(outcome: Outcome) -> Vec<String> {
        match outcome {
            Outcome::Endpoints(eps) => eps.iter().map(|e| e.addr.to_string()).collect(),
            other => panic!("expected endpoints, got {other:?}"),
        }
    }

    const GRPC: PortRef = PortRef::Number(50051);

    #[test]
    fn unknown_until_both_watches_synced() {
        let mut state = ServiceState::new("greeter", "default");
        assert_eq!(state.outcome(&GRPC), Outcome::Unknown);
        listed(
            &mut state,
            ServiceState::apply_slice,
            vec![slice("s1", "greeter", &["10.0.0.1"])],
        );
        assert_eq!(state.outcome(&GRPC), Outcome::Unknown);
        listed(
            &mut state,
            ServiceState::apply_service,
            vec![service("greeter")],
        );
        assert!(state.synced());
        assert_eq!(addrs(state.outcome(&GRPC)), ["10.0.0.1:8080"]);
    }

    #[test]
    fn a_missing_service_is_unresolvable_until_created() {
        let mut state = ServiceState::new("greeter", "default");
        listed(&mut state, ServiceState::apply_service, vec![]);
        let Outcome::Unresolvable(why) = state.outcome(&GRPC) else {
            panic!("expected unresolvable");
        };
        assert!(
            why.contains("service greeter.default does not exist"),
            "{why}"
        );
        assert!(
            why.contains("namespace `default`") && why.contains("SIDELB_UPSTREAMS"),
            "{why}"
        );
        listed(&mut state, ServiceState::apply_slice, vec![]);
        assert!(state.apply_service(Event::Apply(service("greeter"))));
        assert_eq!(addrs(state.outcome(&GRPC)), Vec::<String>::new());
        assert!(state.apply_service(Event::Delete(service("greeter"))));
        assert!(matches!(state.outcome(&GRPC), Outcome::Unresolvable(_)));
    }

    #[test]
    fn slices_are_merged_and_follow_events() {
        let mut state = ServiceState::new("greeter", "default");
        listed(
            &mut state,
            ServiceState::apply_service,
            vec![service("greeter")],
        );
        listed(
            &mut state,
            ServiceState::apply_slice,
            vec![
                slice("s1", "greeter", &["10.0.0.1"]),
                slice("s2", "greeter", &["10.0.0.2"]),
            ],
        );
        assert_eq!(
            addrs(state.outcome(&GRPC)),
            ["10.0.0.1:8080", "10.0.0.2:8080"]
        );
        state.apply_slice(Event::Apply(slice(
            "s1",
            "greeter",
            &["10.0.0.1", "10.0.0.3"],
        )));
        state.apply_slice(Event::Delete(slice("s2", "greeter", &[])));
        assert_eq!(
            addrs(state.outcome(&GRPC)),
            ["10.0.0.1:8080", "10.0.0.3:8080"]
        );
        // Another Service's slice, from a server that ignored the selector.
        assert!(!state.apply_slice(Event::Apply(slice("x", "other", &["10.9.9.9"]))));
        assert_eq!(state.slice_count(), 1);
    }

    #[test]
    fn a_relist_replaces_the_snapshot_only_when_complete() {
        let mut state = ServiceState::new("greeter", "default");
        listed(
            &mut state,
            ServiceState::apply_service,
            vec![service("greeter")],
        );
        listed(
            &mut state,
            ServiceState::apply_slice,
            vec![
                slice("s1", "greeter", &["10.0.0.1"]),
                slice("s2", "greeter", &["10.0.0.2"]),
            ],
        );
        // A relist (after 410 Gone) in progress: nothing changes yet.
        state.apply_slice(Event::Init);
        state.apply_slice(Event::InitApply(slice("s2", "greeter", &["10.0.0.2"])));
        assert_eq!(
            addrs(state.outcome(&GRPC)),
            ["10.0.0.1:8080", "10.0.0.2:8080"]
        );
        // Complete: s1 was deleted while the watch was down.
        state.apply_slice(Event::InitDone);
        assert_eq!(addrs(state.outcome(&GRPC)), ["10.0.0.2:8080"]);
    }

    #[test]
    fn a_failure_needing_a_fix_blocks_only_an_unsynced_watch() {
        let mut state = ServiceState::new("greeter", "default");
        listed(
            &mut state,
            ServiceState::apply_service,
            vec![service("greeter")],
        );
        assert!(state.block(Watched::EndpointSlices, "forbidden".into()));
        assert!(!state.block(Watched::EndpointSlices, "forbidden".into()));
        assert_eq!(
            state.outcome(&GRPC),
            Outcome::Unresolvable("forbidden".into())
        );
        // Fixed: the next list succeeds.
        listed(
            &mut state,
            ServiceState::apply_slice,
            vec![slice("s1", "greeter", &["10.0.0.1"])],
        );
        assert_eq!(addrs(state.outcome(&GRPC)), ["10.0.0.1:8080"]);
        // Revoked later: the last known endpoints stay.
        state.block(Watched::EndpointSlices, "forbidden".into());
        assert_eq!(addrs(state.outcome(&GRPC)), ["10.0.0.1:8080"]);
    }

    #[test]
    fn unknown_ports_and_external_names_are_unresolvable() {
        let mut state = ServiceState::new("greeter", "default");
        listed(
            &mut state,
            ServiceState::apply_service,
            vec![service("greeter")],
        );
        listed(&mut state, ServiceState::apply_slice, vec![]);
        let Outcome::Unresolvable(why) = state.outcome(&PortRef::Name("http".into())) else {
            panic!("expected unresolvable");
        };
        assert!(
            why.contains("no port named `http`") && why.contains("50051 (grpc → 8080)"),
            "{why}"
        );
        let mut external = service("greeter");
        if let Some(spec) = external.spec.as_mut() {
            spec.type_ = Some("ExternalName".into());
            spec.external_name = Some("greeter.example.com".into());
        }
        state.apply_service(Event::Apply(external));
        let Outcome::Unresolvable(why) = state.outcome(&GRPC) else {
            panic!("expected unresolvable");
        };
        assert!(why.contains("ExternalName (greeter.example.com)"), "{why}");
    }
}
