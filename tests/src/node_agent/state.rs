//! What the agent knows of one pod's containers, and the pod status the
//! kubelet would write from it: phase, conditions, container statuses.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Which part of the pod a container is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular init container: runs to completion before the next.
    Init,
    /// An init container with `restartPolicy: Always`: a native sidecar.
    Sidecar,
    Main,
}

/// How one container's last run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at: Time,
    pub finished_at: Time,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: Time,
    },
    Terminated(Ended),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub kind: Kind,
    pub image: String,
    pub phase: Phase,
    pub last: Option<Ended>,
    pub restart_count: i32,
    pub started: bool,
    pub ready: bool,
    pub pid: Option<u32>,
    /// Set once a regular init container exited 0, or a container will not
    /// be restarted.
    pub done: bool,
}

impl Container {
    pub fn new(kind: Kind, image: &str, reason: &str) -> Container {
        Container {
            kind,
            image: image.to_owned(),
            phase: Phase::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            last: None,
            restart_count: 0,
            started: false,
            ready: false,
            pid: None,
            done: false,
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match &self.phase {
            Phase::Terminated(ended) => Some(ended.exit_code),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodState {
    pub ip: Option<Ipv4Addr>,
    pub host_ip: Option<Ipv4Addr>,
    pub start_time: Option<Time>,
    pub sandbox_ready: bool,
    pub initialized: bool,
    /// Why the pod failed for good (an init container failed under `Never`).
    pub failed: Option<String>,
    /// By name, in the pod spec's order within each kind.
    pub containers: BTreeMap<String, Container>,
    pub order: Vec<String>,
}

impl PodState {
    pub fn container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.get_mut(name)
    }

    fn of_kind<'a>(
        &'a self,
        pred: impl Fn(Kind) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a String, &'a Container)> + 'a {
        self.order
            .iter()
            .filter_map(|name| self.containers.get(name).map(|c| (name, c)))
            .filter(move |(_, c)| pred(c.kind))
    }

    /// The pod's status as the kubelet writes it.
    pub fn status(&self, pod: &Pod) -> PodStatus {
        let now = Time(timestamp_now());
        let old = pod.status.as_ref();
        let condition = |type_: &str, holds: bool| {
            let status = if holds { "True" } else { "False" };
            let previous = old
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == type_));
            let since = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            PodCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                last_transition_time: since,
                ..Default::default()
            }
        };
        let mains: Vec<_> = self.of_kind(|k| k == Kind::Main).collect();
        let sidecars_ready = self.of_kind(|k| k == Kind::Sidecar).all(|(_, c)| c.ready);
        let containers_ready =
            self.initialized && sidecars_ready && mains.iter().all(|(_, c)| c.ready);
        let all_ended = !mains.is_empty() && mains.iter().all(|(_, c)| c.done);
        let phase = if self.failed.is_some() {
            "Failed"
        } else if all_ended {
            if mains.iter().all(|(_, c)| c.exit_code() == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if self.initialized
            && mains
                .iter()
                .any(|(_, c)| !matches!(c.phase, Phase::Waiting { .. }))
        {
            "Running"
        } else {
            "Pending"
        };
        let terminal = matches!(phase, "Failed" | "Succeeded");
        let statuses = |pred: fn(Kind) -> bool| -> Vec<ContainerStatus> {
            self.of_kind(pred)
                .map(|(name, c)| container_status(name, c))
                .collect()
        };
        let ready = containers_ready && !terminal;
        PodStatus {
            phase: Some(phase.to_owned()),
            message: self.failed.clone(),
            conditions: Some(vec![
                condition("PodReadyToStartContainers", self.sandbox_ready),
                condition("Initialized", self.initialized),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", true),
            ]),
            host_ip: self.host_ip.map(|ip| ip.to_string()),
            host_ips: self.host_ip.map(|ip| vec![HostIP { ip: ip.to_string() }]),
            pod_ip: self.ip.map(|ip| ip.to_string()),
            pod_ips: self.ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
            start_time: self.start_time.clone(),
            init_container_statuses: Some(statuses(|k| k != Kind::Main)),
            container_statuses: Some(statuses(|k| k == Kind::Main)),
            qos_class: old.and_then(|s| s.qos_class.clone()),
            ..Default::default()
        }
    }
}

fn container_status(name: &str, c: &Container) -> ContainerStatus {
    let state = |phase: &Phase| match phase {
        Phase::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        Phase::Running { since } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(since.clone()),
            }),
            ..Default::default()
        },
        Phase::Terminated(ended) => ContainerState {
            terminated: Some(terminated(ended)),
            ..Default::default()
        },
    };
    let running = matches!(c.phase, Phase::Running { .. });
    ContainerStatus {
        name: name.to_owned(),
        image: c.image.clone(),
        image_id: format!("sidelb-node-agent://{}", c.image),
        container_id: c.pid.map(|pid| format!("sidelb-node-agent://{pid}")),
        ready: c.ready && running,
        started: Some(c.started && running),
        restart_count: c.restart_count,
        state: Some(state(&c.phase)),
        last_state: c.last.as_ref().map(|ended| ContainerState {
            terminated: Some(terminated(ended)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated(ended: &Ended) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: ended.exit_code,
        signal: ended.signal,
        reason: Some(ended.reason.clone()),
        started_at: Some(ended.started_at.clone()),
        finished_at: Some(ended.finished_at.clone()),
        ..Default::default()
    }
}

pub fn timestamp_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(kinds: &[(&str, Kind, bool)]) -> PodState {
        let mut state = PodState {
            initialized: true,
            ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            ..Default::default()
        };
        for (name, kind, ready) in kinds {
            let mut c = Container::new(*kind, "img", "");
            c.phase = Phase::Running {
                since: Time(timestamp_now()),
            };
            c.started = true;
            c.ready = *ready;
            state.containers.insert((*name).to_owned(), c);
            state.order.push((*name).to_owned());
        }
        state
    }

    fn condition(status: &PodStatus, type_: &str) -> String {
        let conditions = status.conditions.as_ref().expect("conditions");
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect(type_)
            .status
            .clone()
    }

    #[test]
    fn a_pod_is_ready_when_its_app_and_its_sidecar_are() {
        let pod = Pod::default();
        let ready =
            state(&[("proxy", Kind::Sidecar, true), ("app", Kind::Main, true)]).status(&pod);
        assert_eq!(ready.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&ready, "Ready"), "True");
        assert_eq!(
            ready.init_container_statuses.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(ready.pod_ip.as_deref(), Some("10.244.1.2"));
        let sidecar_not_ready =
            state(&[("proxy", Kind::Sidecar, false), ("app", Kind::Main, true)]).status(&pod);
        assert_eq!(condition(&sidecar_not_ready, "Ready"), "False");
    }

    #[test]
    fn finished_containers_end_the_pod_by_their_exit_codes() {
        let pod = Pod::default();
        let mut s = state(&[("app", Kind::Main, false)]);
        let ended = |code| Ended {
            exit_code: code,
            signal: None,
            reason: "Completed".into(),
            started_at: Time(timestamp_now()),
            finished_at: Time(timestamp_now()),
        };
        if let Some(c) = s.container_mut("app") {
            c.phase = Phase::Terminated(ended(0));
            c.done = true;
        }
        assert_eq!(s.status(&pod).phase.as_deref(), Some("Succeeded"));
        if let Some(c) = s.container_mut("app") {
            c.phase = Phase::Terminated(ended(2));
        }
        assert_eq!(s.status(&pod).phase.as_deref(), Some("Failed"));
    }
}
