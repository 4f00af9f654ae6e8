//! One pod's life on the node, as the kubelet runs it: sandbox (network
//! namespace and address), volumes, regular init containers to completion in
//! order, native sidecars (init containers with `restartPolicy: Always`)
//! started, and past their startup probe, before the next container, then the
//! app containers; probes and restarts per container; the status written
//! through the status subresource whenever it changes.
//!
//! Deletion (a `deletionTimestamp`) stops the app containers first (SIGTERM),
//! then the sidecars in reverse order, all within the pod's grace period,
//! after which whatever still runs gets SIGKILL; then the sandbox goes and
//! the pod is deleted with grace 0, as the kubelet confirms a deletion.

use super::Host;
use super::container::{self, Identity, Launch};
use super::env::{container_env, expand_all};
use super::probe::{self, Target, Timing};
use super::state::{Container, Ended, Kind, Phase, PodState, timestamp_now};
use super::volumes::{RESYNC_PERIOD, Volumes};
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{self as core, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// First restart at once, then 10 s doubling up to 5 min, as the kubelet's CrashLoopBackOff.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Grace when the pod gives none.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What the pod's containers are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Run,
    /// SIGTERM now, SIGKILL at the deadline.
    Term(Instant),
}

/// A running pod worker; dropping it does not stop the pod (see [`PodHandle::update`]).
pub struct PodHandle {
    updates: watch::Sender<Pod>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    pub fn start(node: Arc<Host>, pod: Pod) -> PodHandle {
        let (updates, rx) = watch::channel(pod);
        let task = tokio::spawn(async move {
            let name = pod_name(&rx.borrow());
            if let Err(err) = run(node, rx).await {
                tracing::warn!(pod = %name, "pod worker ended: {err:#}");
            }
        });
        PodHandle { updates, task }
    }

    /// The API's newest copy of the pod (a deletion shows here).
    pub fn update(&self, pod: Pod) {
        self.updates.send_replace(pod);
    }

    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the pod now (it was deleted from the API, or the agent stops):
    /// SIGTERM, at most `grace`, then SIGKILL.
    pub async fn stop(self, grace: Duration) {
        self.updates.send_modify(|pod| {
            pod.metadata
                .deletion_timestamp
                .get_or_insert(Time(timestamp_now()));
            pod.metadata.deletion_grace_period_seconds =
                Some(grace.as_secs().try_into().unwrap_or(0));
            pod.metadata
                .annotations
                .get_or_insert_default()
                .insert(GONE.to_owned(), "true".to_owned());
        });
        let _ = self.task.await;
    }
}

/// Marks a pod the API no longer has: nothing to delete at the end.
const GONE: &str = "sidelb.io/node-agent-gone";

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Everything a container needs that is the same for all of the pod's containers.
struct PodEnv {
    node: Arc<Host>,
    pod: Pod,
    netns: String,
    ip: std::net::Ipv4Addr,
    volumes: Arc<Volumes>,
    state: watch::Sender<PodState>,
    logs: std::path::PathBuf,
}

async fn run(node: Arc<Host>, mut updates: watch::Receiver<Pod>) -> Result<()> {
    let pod = updates.borrow_and_update().clone();
    let name = pod_name(&pod);
    let uid = pod.metadata.uid.clone().context("pod without uid")?;
    let spec = pod.spec.clone().context("pod without spec")?;
    let dir = node.state_dir.join("pods").join(&uid);
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;

    let mut initial = PodState {
        host_ip: Some(node.network.host_ip()),
        start_time: Some(Time(timestamp_now())),
        ..Default::default()
    };
    for c in spec.init_containers.iter().flatten() {
        let kind = if c.restart_policy.as_deref() == Some("Always") {
            Kind::Sidecar
        } else {
            Kind::Init
        };
        initial.containers.insert(
            c.name.clone(),
            Container::new(
                kind,
                c.image.as_deref().unwrap_or_default(),
                "PodInitializing",
            ),
        );
        initial.order.push(c.name.clone());
    }
    for c in &spec.containers {
        initial.containers.insert(
            c.name.clone(),
            Container::new(
                Kind::Main,
                c.image.as_deref().unwrap_or_default(),
                "PodInitializing",
            ),
        );
        initial.order.push(c.name.clone());
    }
    let (state, state_rx) = watch::channel(initial);
    let writer = tokio::spawn(write_status(node.clone(), pod.clone(), state_rx));

    let sandbox = node
        .network
        .sandbox()
        .await
        .with_context(|| format!("pod {name}: creating its network"))?;
    state.send_modify(|s| {
        s.ip = Some(sandbox.ip);
        s.sandbox_ready = true;
    });
    let mut pod_with_ip = pod.clone();
    pod_with_ip.status.get_or_insert_default().pod_ip = Some(sandbox.ip.to_string());
    pod_with_ip.status.get_or_insert_default().pod_ips = Some(vec![core::PodIP {
        ip: sandbox.ip.to_string(),
    }]);
    pod_with_ip.status.get_or_insert_default().host_ip = Some(node.network.host_ip().to_string());
    let env = Arc::new(PodEnv {
        node: node.clone(),
        pod: pod_with_ip,
        netns: sandbox.netns.clone(),
        ip: sandbox.ip,
        volumes: Arc::new(Volumes::new(&dir)),
        state,
        logs: dir.join("logs"),
    });

    // Two stops: the app containers are told first, the init ones (sidecars) after.
    let (main_stop, main_stop_rx) = watch::channel(Stop::Run);
    let (init_stop, init_stop_rx) = watch::channel(Stop::Run);
    let mut containers: Vec<(Kind, tokio::task::JoinHandle<()>)> = Vec::new();
    let deleting = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    {
        let startup = start_containers(&env, [&init_stop_rx, &main_stop_rx], &mut containers);
        tokio::pin!(startup);
        let mut watch_updates = updates.clone();
        tokio::select! {
            _ = &mut startup => {}
            _ = watch_updates.wait_for(deleting) => {}
        }
    }
    let resync = tokio::spawn(resync_volumes(env.clone()));
    let _ = updates.wait_for(deleting).await;
    resync.abort();

    // Termination: app containers first, then sidecars last-started first.
    let latest = updates.borrow().clone();
    let grace = latest
        .metadata
        .deletion_grace_period_seconds
        .or(spec.termination_grace_period_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_GRACE);
    let deadline = Instant::now() + grace;
    main_stop.send_replace(Stop::Term(deadline));
    let (mains, mut others): (Vec<_>, Vec<_>) =
        containers.into_iter().partition(|(k, _)| *k == Kind::Main);
    futures_util::future::join_all(mains.into_iter().map(|(_, task)| task)).await;
    init_stop.send_replace(Stop::Term(deadline));
    others.reverse();
    for (_, task) in others {
        let _ = task.await;
    }
    env.state
        .send_modify(|s| s.containers.values_mut().for_each(|c| c.ready = false));
    node.network.remove(sandbox).await;
    writer.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let gone = latest
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(GONE));
    if !gone {
        let api: Api<Pod> = Api::namespaced(
            node.client.clone(),
            latest.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(err) = api
            .delete(latest.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            tracing::debug!(pod = %name, "confirming the deletion: {err}");
        }
    }
    Ok(())
}

/// Volumes, then init containers in order, then the app containers.
async fn start_containers(
    env: &Arc<PodEnv>,
    [init_stop, main_stop]: [&watch::Receiver<Stop>; 2],
    containers: &mut Vec<(Kind, tokio::task::JoinHandle<()>)>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match env.volumes.sync(&env.pod, &env.node.objects).await {
            Ok(()) => break,
            Err(err) => {
                let message = format!("{err:#}");
                env.state.send_modify(|s| {
                    for c in s.containers.values_mut() {
                        c.phase = Phase::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(message.clone()),
                        };
                    }
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let spec = env.pod.spec.clone().unwrap_or_default();
    for c in spec.init_containers.iter().flatten() {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let kind = if sidecar { Kind::Sidecar } else { Kind::Init };
        containers.push((
            kind,
            tokio::spawn(supervise(env.clone(), c.clone(), kind, init_stop.clone())),
        ));
        let mut state = env.state.subscribe();
        let name = c.name.clone();
        let passed = state
            .wait_for(|s| {
                s.failed.is_some()
                    || s.containers.get(&name).is_some_and(|c| {
                        if sidecar {
                            c.started
                        } else {
                            c.done && c.exit_code() == Some(0)
                        }
                    })
            })
            .await
            .map(|s| s.failed.is_none())
            .unwrap_or(false);
        if !passed {
            return;
        }
    }
    env.state.send_modify(|s| s.initialized = true);
    for c in &spec.containers {
        containers.push((
            Kind::Main,
            tokio::spawn(supervise(
                env.clone(),
                c.clone(),
                Kind::Main,
                main_stop.clone(),
            )),
        ));
    }
}

async fn resync_volumes(env: Arc<PodEnv>) {
    loop {
        tokio::time::sleep(RESYNC_PERIOD).await;
        if let Err(err) = env.volumes.sync(&env.pod, &env.node.objects).await {
            tracing::warn!(pod = %pod_name(&env.pod), "re-syncing volumes: {err:#}");
        }
    }
}

/// Runs one container, restarting it per its (or the pod's) restart policy,
/// until the pod stops it.
async fn supervise(
    env: Arc<PodEnv>,
    spec: core::Container,
    kind: Kind,
    mut stop: watch::Receiver<Stop>,
) {
    let pod_policy = env
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let policy = match kind {
        Kind::Sidecar => "Always".to_owned(),
        Kind::Init if pod_policy == "Always" => "OnFailure".to_owned(),
        _ => pod_policy,
    };
    let name = spec.name.clone();
    let mut restarts = 0u32;
    loop {
        if *stop.borrow() != Stop::Run {
            return;
        }
        let started = Instant::now();
        let (ended, stopping) = match run_once(&env, &spec, &mut stop).await {
            Ok(ended) => ended,
            Err(err) => {
                // Never started (no binary for the image, a missing key):
                // waiting, retried with back-off, not a restart.
                let message = format!("{err:#}");
                tracing::warn!(pod = %pod_name(&env.pod), container = %name, "{message}");
                let reason = if message.contains("no local binary") {
                    "ErrImagePull"
                } else {
                    "CreateContainerConfigError"
                };
                env.state.send_modify(|s| {
                    if let Some(c) = s.container_mut(&name) {
                        c.phase = Phase::Waiting {
                            reason: reason.into(),
                            message: Some(message),
                        };
                    }
                });
                let wait = (BACKOFF_START * 2u32.saturating_pow(restarts)).min(BACKOFF_MAX);
                restarts += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.wait_for(|s| *s != Stop::Run) => return,
                }
            }
        };
        if stopping {
            return;
        }
        let failed = ended.exit_code != 0;
        let restart = match policy.as_str() {
            "Always" => true,
            "OnFailure" => failed,
            _ => false,
        };
        if !restart {
            env.state.send_modify(|s| {
                if let Some(c) = s.container_mut(&name) {
                    c.done = true;
                }
                if kind == Kind::Init && failed {
                    s.failed = Some(format!("init container {name} failed"));
                }
            });
            return;
        }
        if started.elapsed() > BACKOFF_RESET {
            restarts = 0;
        }
        let wait = match restarts {
            0 => Duration::ZERO,
            n => (BACKOFF_START * 2u32.saturating_pow(n - 1)).min(BACKOFF_MAX),
        };
        restarts += 1;
        if !wait.is_zero() {
            env.state.send_modify(|s| {
                if let Some(c) = s.container_mut(&name) {
                    c.phase = Phase::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {wait:?} restarting failed container {name}"
                        )),
                    };
                }
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s != Stop::Run) => return,
            }
        }
        env.state.send_modify(|s| {
            if let Some(c) = s.container_mut(&name) {
                c.restart_count += 1;
            }
        });
    }
}

/// One run of a container: start, probe, wait for its exit or the pod's
/// stop. Returns how it ended and whether the pod is stopping.
async fn run_once(
    env: &Arc<PodEnv>,
    spec: &core::Container,
    stop: &mut watch::Receiver<Stop>,
) -> Result<(Ended, bool)> {
    let name = spec.name.clone();
    let vars = container_env(&env.pod, spec, &env.node.api_service, &env.node.objects).await?;
    let (program, words) = env.node.images.program(spec)?;
    let args = expand_all(&words, &vars);
    let identity = Identity::of(&env.pod, spec);
    let launch = Launch {
        program,
        args,
        env: vars.clone(),
        netns: env.netns.clone(),
        hostname: env.pod.metadata.name.clone().unwrap_or_default(),
        mounts: env.volumes.mounts(spec)?,
        identity,
        working_dir: spec.working_dir.clone().map(Into::into),
        log: env.logs.join(format!("{name}.log")),
    };
    let mut child = container::spawn(&launch)?;
    let pid = child.id();
    let since = Time(timestamp_now());
    let has_startup = spec.startup_probe.is_some();
    let has_readiness = spec.readiness_probe.is_some();
    env.state.send_modify(|s| {
        if let Some(c) = s.container_mut(&name) {
            if let Phase::Terminated(ended) = &c.phase {
                c.last = Some(ended.clone());
            }
            c.phase = Phase::Running {
                since: since.clone(),
            };
            c.pid = pid;
            c.started = !has_startup;
            c.ready = !has_startup && !has_readiness;
        }
    });
    let target = Target {
        ip: env.ip.into(),
        ports: spec.ports.clone().unwrap_or_default(),
        pid,
        env: vars,
        identity,
    };
    let (unhealthy_tx, mut unhealthy) = watch::channel(None::<String>);
    let probes = tokio::spawn(probe_container(
        env.clone(),
        spec.clone(),
        target,
        unhealthy_tx,
    ));

    let mut term_deadline = None;
    let mut reason_override = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            changed = stop.changed(), if term_deadline.is_none() => {
                let now = *stop.borrow();
                match (changed, now) {
                    (_, Stop::Term(deadline)) => {
                        signal(pid, libc::SIGTERM);
                        term_deadline = Some(deadline);
                    }
                    (Err(_), Stop::Run) => {
                        signal(pid, libc::SIGKILL);
                        term_deadline = Some(Instant::now());
                    }
                    (Ok(()), Stop::Run) => {}
                }
            }
            _ = unhealthy.changed(), if reason_override.is_none() => {
                let why = unhealthy.borrow().clone();
                if let Some(why) = why {
                    tracing::info!(pod = %pod_name(&env.pod), container = %name, "{why}: killing it to restart");
                    reason_override = Some(why);
                    signal(pid, libc::SIGTERM);
                    let grace = spec.liveness_probe.as_ref().and_then(|p| p.termination_grace_period_seconds)
                        .or(env.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                        .and_then(|s| u64::try_from(s).ok()).map(Duration::from_secs).unwrap_or(DEFAULT_GRACE);
                    let at = Instant::now() + grace;
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        signal(pid, libc::SIGKILL);
                    });
                }
            }
            _ = sleep_until_opt(term_deadline) => {
                signal(pid, libc::SIGKILL);
                term_deadline = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
    };
    probes.abort();
    let stopping = *stop.borrow() != Stop::Run;
    use std::os::unix::process::ExitStatusExt;
    let signal_number = status.signal();
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + signal_number.unwrap_or(0));
    let reason = if exit_code == 0 {
        "Completed".to_owned()
    } else if signal_number == Some(libc::SIGKILL) && !stopping {
        "OOMKilled or killed".to_owned()
    } else {
        "Error".to_owned()
    };
    let ended = Ended {
        exit_code,
        signal: signal_number,
        reason,
        started_at: since,
        finished_at: Time(timestamp_now()),
    };
    env.state.send_modify(|s| {
        if let Some(c) = s.container_mut(&name) {
            c.phase = Phase::Terminated(ended.clone());
            c.pid = None;
            c.ready = false;
            c.started = false;
            if c.kind == Kind::Init && exit_code == 0 {
                c.done = true;
            }
        }
    });
    Ok((ended, stopping))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn signal(pid: Option<u32>, signal: libc::c_int) {
    if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Startup probe until it passes (then `started`), then readiness and
/// liveness side by side. A failed startup or liveness probe reports the
/// container unhealthy: it is killed and restarted.
async fn probe_container(
    env: Arc<PodEnv>,
    spec: core::Container,
    target: Target,
    unhealthy: watch::Sender<Option<String>>,
) {
    let name = spec.name.clone();
    let set = |f: &dyn Fn(&mut Container)| {
        env.state.send_modify(|s| {
            if let Some(c) = s.container_mut(&name) {
                f(c);
            }
        })
    };
    if let Some(startup) = &spec.startup_probe {
        match run_probe(startup, &target, true).await {
            Ok(()) => set(&|c| {
                c.started = true;
                if spec.readiness_probe.is_none() {
                    c.ready = true;
                }
            }),
            Err(why) => {
                unhealthy.send_replace(Some(format!("startup probe failed: {why}")));
                return;
            }
        }
    }
    let readiness = async {
        let Some(probe) = &spec.readiness_probe else {
            return std::future::pending::<()>().await;
        };
        let timing = Timing::of(probe);
        tokio::time::sleep(timing.initial_delay).await;
        let (mut ok, mut bad) = (0u32, 0u32);
        loop {
            match probe::check(probe, &target).await {
                Ok(()) => {
                    ok += 1;
                    bad = 0;
                    if ok >= timing.success_threshold {
                        set(&|c| c.ready = true);
                    }
                }
                Err(why) => {
                    bad += 1;
                    ok = 0;
                    if bad >= timing.failure_threshold {
                        tracing::debug!(container = %name, "readiness probe failed: {why:#}");
                        set(&|c| c.ready = false);
                    }
                }
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    let liveness = async {
        let Some(probe) = &spec.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        if let Err(why) = run_probe(probe, &target, false).await {
            unhealthy.send_replace(Some(format!("liveness probe failed: {why}")));
        }
    };
    tokio::join!(readiness, liveness);
}

/// Probes until `failureThreshold` failures in a row (`Err`), or, with
/// `until_success`, until `successThreshold` successes (`Ok`).
async fn run_probe(
    probe: &core::Probe,
    target: &Target,
    until_success: bool,
) -> Result<(), String> {
    let timing = Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let mut failures = 0;
    loop {
        match probe::check(probe, target).await {
            Ok(()) => {
                failures = 0;
                if until_success {
                    return Ok(());
                }
            }
            Err(why) => {
                failures += 1;
                if failures >= timing.failure_threshold {
                    return Err(format!("{why:#}"));
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

/// Writes the pod's status whenever the state changes (coalesced).
async fn write_status(node: Arc<Host>, pod: Pod, mut state: watch::Receiver<PodState>) {
    let api: Api<Pod> = Api::namespaced(
        node.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut last_written = None;
    let mut current = pod;
    loop {
        let status = state.borrow_and_update().status(&current);
        if last_written.as_ref() != Some(&status) {
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    current = updated;
                    last_written = Some(status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(err) => {
                    tracing::debug!(pod = %name, "writing the status: {err}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}
