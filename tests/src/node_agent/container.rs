//! Running one container's process without a container runtime.
//!
//! The host's root file system stands in for the image's, and the image is
//! mapped to a local binary ([`Images`]). The process is started inside its
//! pod's network namespace, in a mount namespace of its own where each volume
//! is bind-mounted at its `mountPath` (so in-cluster paths such as
//! `/var/run/secrets/kubernetes.io/serviceaccount` work for any binary), in a
//! UTS namespace with the pod's name as host name, as the container's user and
//! groups (`runAsUser`, `runAsGroup`, `fsGroup`). A mount point missing on the
//! host is created as an empty directory, as a runtime creates one in an
//! image's root file system.

use super::volumes::Mount;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// Image → the local binary that is its entrypoint.
#[derive(Clone, Debug, Default)]
pub struct Images {
    entrypoints: BTreeMap<String, PathBuf>,
}

impl Images {
    /// From `IMAGE=PATH` pairs; an image without a tag maps every tag.
    pub fn parse(pairs: &[String]) -> Result<Images> {
        let mut entrypoints = BTreeMap::new();
        for pair in pairs {
            let Some((image, path)) = pair.split_once('=') else {
                bail!("image mapping {pair:?} is not IMAGE=PATH");
            };
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("image mapping {pair:?}: {} is not a file", path.display());
            }
            entrypoints.insert(image.to_owned(), path);
        }
        Ok(Images { entrypoints })
    }

    /// The binary of `image`: mapped exactly, or by its repository (without tag or digest).
    pub fn entrypoint(&self, image: &str) -> Option<&Path> {
        if let Some(path) = self.entrypoints.get(image) {
            return Some(path);
        }
        self.entrypoints
            .get(repository(image))
            .map(PathBuf::as_path)
    }

    /// The program and arguments `container` runs: its `command` (whose first
    /// word, if it names the image's binary, is that binary) or the image's
    /// entrypoint, then its `args`.
    pub fn program(&self, container: &Container) -> Result<(PathBuf, Vec<String>)> {
        let image = container.image.as_deref().unwrap_or_default();
        let entrypoint = self.entrypoint(image);
        let args = container.args.clone().unwrap_or_default();
        match container.command.as_deref() {
            Some([first, rest @ ..]) => {
                let program = match entrypoint {
                    Some(binary) if Path::new(first).file_name() == binary.file_name() => {
                        binary.to_path_buf()
                    }
                    _ => PathBuf::from(first),
                };
                Ok((program, rest.iter().cloned().chain(args).collect()))
            }
            _ => {
                let binary = entrypoint.with_context(|| {
                    format!(
                        "no local binary for image {image:?}: start the agent with \
                         --image {}=PATH",
                        repository(image)
                    )
                })?;
                Ok((binary.to_path_buf(), args))
            }
        }
    }
}

/// `image` without its `:tag` or `@digest`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// The user and groups a container runs as.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub fs_group: Option<u32>,
}

impl Identity {
    pub fn of(pod: &Pod, container: &Container) -> Identity {
        let pod_ctx = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let ctx = container.security_context.as_ref();
        let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Identity {
            uid: id(ctx
                .and_then(|c| c.run_as_user)
                .or(pod_ctx.and_then(|c| c.run_as_user))),
            gid: id(ctx
                .and_then(|c| c.run_as_group)
                .or(pod_ctx.and_then(|c| c.run_as_group))),
            fs_group: id(pod_ctx.and_then(|c| c.fs_group)),
        }
    }
}

/// Everything needed to start one container's process.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub netns: String,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub identity: Identity,
    pub working_dir: Option<PathBuf>,
    pub log: PathBuf,
}

/// Starts the container's process.
pub fn spawn(launch: &Launch) -> Result<Child> {
    for mount in &launch.mounts {
        if mount.source.is_dir() {
            std::fs::create_dir_all(&mount.target)
        } else if !mount.target.exists() {
            if let Some(parent) = mount.target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            File::create(&mount.target).map(drop)
        } else {
            Ok(())
        }
        .with_context(|| format!("creating mount point {}", mount.target.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("opening {}", launch.log.display()))?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let setup = Namespaces::new(launch)?;
    // SAFETY: the closure only makes system calls on memory prepared before
    // the fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || setup.enter());
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", launch.program.display()))
}

/// Runs `words` inside the namespaces of the running process `pid`, as
/// `identity`, with `env`: the kubelet's exec probe. Returns its exit code.
pub async fn exec_in(
    pid: u32,
    words: &[String],
    env: &[(String, String)],
    identity: Identity,
) -> Result<(i32, String)> {
    let Some((program, args)) = words.split_first() else {
        bail!("exec with an empty command");
    };
    let net = File::open(format!("/proc/{pid}/ns/net")).context("the container is not running")?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt")).context("the container is not running")?;
    let ids = Ids::new(identity);
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: system calls only, on fds and values prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            check(libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
            ids.enter()
        });
    }
    let output = command
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.code().unwrap_or(-1), text))
}

/// What the child does between fork and exec.
struct Namespaces {
    netns: File,
    hostname: CString,
    mounts: Vec<(CString, CString, bool)>,
    working_dir: CString,
    ids: Ids,
}

impl Namespaces {
    fn new(launch: &Launch) -> Result<Namespaces> {
        let path = format!("/run/netns/{}", launch.netns);
        let netns = File::open(&path).with_context(|| format!("opening {path}"))?;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).context("a path with a NUL byte");
        let mounts = launch
            .mounts
            .iter()
            .map(|m| Ok((c(&m.source)?, c(&m.target)?, m.read_only)))
            .collect::<Result<_>>()?;
        Ok(Namespaces {
            netns,
            hostname: CString::new(launch.hostname.as_bytes()).context("host name")?,
            mounts,
            working_dir: c(launch.working_dir.as_deref().unwrap_or(Path::new("/")))?,
            ids: Ids::new(launch.identity),
        })
    }

    fn enter(&self) -> std::io::Result<()> {
        // SAFETY (all calls): plain system calls on pointers to live CStrings.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            check(libc::setns(self.netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            let root = c"/";
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::sethostname(
                self.hostname.as_ptr(),
                self.hostname.as_bytes().len(),
            ))?;
            for (source, target, read_only) in &self.mounts {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::chdir(self.working_dir.as_ptr()))?;
        }
        self.ids.enter()
    }
}

/// The user and groups to switch to, prepared before the fork.
#[derive(Clone, Copy)]
struct Ids {
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
    groups: [libc::gid_t; 1],
    group_count: usize,
}

impl Ids {
    fn new(identity: Identity) -> Ids {
        Ids {
            uid: identity.uid,
            gid: identity.gid.or(identity.uid),
            groups: [identity.fs_group.unwrap_or(0)],
            group_count: usize::from(identity.fs_group.is_some()),
        }
    }

    fn enter(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls; `groups` outlives the call.
        unsafe {
            if self.uid.is_some() || self.gid.is_some() {
                check(libc::setgroups(self.group_count, self.groups.as_ptr()))?;
            }
            if let Some(gid) = self.gid {
                check(libc::setgid(gid))?;
            }
            if let Some(uid) = self.uid {
                check(libc::setuid(uid))?;
            }
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_by_repository_whatever_the_tag() {
        assert_eq!(repository("sidelb/proxy:0.1.0"), "sidelb/proxy");
        assert_eq!(
            repository("registry:5000/sidelb/proxy"),
            "registry:5000/sidelb/proxy"
        );
        assert_eq!(
            repository("registry:5000/sidelb/proxy:1@sha256:ab"),
            "registry:5000/sidelb/proxy"
        );
    }

    #[test]
    fn a_command_naming_the_image_binary_runs_the_mapped_one() {
        let images = Images {
            entrypoints: [(
                "app".to_owned(),
                PathBuf::from("/build/sidelb-test-backend"),
            )]
            .into(),
        };
        let container = Container {
            image: Some("app:1".into()),
            command: Some(vec![
                "/usr/local/bin/sidelb-test-backend".into(),
                "--name=a".into(),
            ]),
            args: Some(vec!["--port=1".into()]),
            ..Default::default()
        };
        let (program, args) = images.program(&container).expect("maps");
        assert_eq!(program, PathBuf::from("/build/sidelb-test-backend"));
        assert_eq!(args, ["--name=a", "--port=1"]);
        let unmapped = Container {
            image: Some("other".into()),
            ..Default::default()
        };
        let err = images.program(&unmapped).expect_err("no binary");
        assert!(err.to_string().contains("--image other=PATH"), "{err}");
    }
}
