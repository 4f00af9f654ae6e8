//! A pod's volumes, materialised as directories under the pod's own dir and
//! bind-mounted at each container's `mountPath` (see [`super::container`]).
//!
//! Secret, ConfigMap, downward-API and projected volumes are written file by
//! file (each written beside and renamed into place, so a reader never sees
//! half a file) and re-synced periodically, as the kubelet does, so a
//! rotated certificate or a changed ConfigMap reaches the container. A
//! projected service-account token is requested through the TokenRequest API,
//! bound to the pod, with the projection's audience and expiry, and refreshed
//! once 80 % of its lifetime has passed or it is older than 24 hours.
//! emptyDir is an empty directory that lives as long as the pod.

use super::env::field_value;
use super::objects::{Data, Objects};
use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::PostParams;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How often Secret, ConfigMap and token contents are re-checked.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);
/// Files' mode when a volume gives none (the API's default).
const DEFAULT_MODE: i32 = 0o644;
/// The kubelet refreshes a token once this share of its lifetime has passed...
const TOKEN_REFRESH_SHARE: f64 = 0.8;
/// ...or once it is this old.
const TOKEN_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One bind mount of a container: `source` (in the pod dir) at `target`.
#[derive(Clone, Debug)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// The volumes of one pod.
pub struct Volumes {
    dir: PathBuf,
    /// When each token file must be requested again.
    token_refresh: Mutex<HashMap<PathBuf, SystemTime>>,
}

impl Volumes {
    pub fn new(pod_dir: &Path) -> Volumes {
        Volumes {
            dir: pod_dir.join("volumes"),
            token_refresh: Mutex::new(HashMap::new()),
        }
    }

    /// Writes every volume of `pod` (the first time) or brings it up to date.
    pub async fn sync(&self, pod: &Pod, objects: &Objects) -> Result<()> {
        let spec = pod.spec.as_ref().context("pod has no spec")?;
        let fs_group = spec
            .security_context
            .as_ref()
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        for volume in spec.volumes.iter().flatten() {
            let dir = self.dir.join(&volume.name);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating volume dir {}", dir.display()))?;
            let writer = Writer { dir, fs_group };
            self.sync_volume(pod, volume, &writer, objects)
                .await
                .with_context(|| format!("volume {:?}", volume.name))?;
        }
        Ok(())
    }

    async fn sync_volume(
        &self,
        pod: &Pod,
        volume: &Volume,
        writer: &Writer,
        objects: &Objects,
    ) -> Result<()> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        if volume.empty_dir.is_some() {
            return Ok(());
        }
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let mode = secret.default_mode.unwrap_or(DEFAULT_MODE);
            let data = objects.secret(namespace, name).await?;
            let optional = secret.optional.unwrap_or(false);
            return write_keys(
                writer,
                "Secret",
                namespace,
                name,
                data,
                secret.items.as_deref(),
                mode,
                optional,
            );
        }
        if let Some(cm) = &volume.config_map {
            let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
            let data = objects.config_map(namespace, &cm.name).await?;
            let optional = cm.optional.unwrap_or(false);
            return write_keys(
                writer,
                "ConfigMap",
                namespace,
                &cm.name,
                data,
                cm.items.as_deref(),
                mode,
                optional,
            );
        }
        if let Some(downward) = &volume.downward_api {
            let mode = downward.default_mode.unwrap_or(DEFAULT_MODE);
            return write_fields(
                writer,
                pod,
                downward.items.as_deref().unwrap_or_default(),
                mode,
            );
        }
        if let Some(projected) = &volume.projected {
            let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    self.sync_token(
                        pod,
                        writer,
                        &token.path,
                        token.audience.as_deref(),
                        token.expiration_seconds,
                        mode,
                        objects,
                    )
                    .await?;
                }
                if let Some(cm) = &source.config_map {
                    let data = objects.config_map(namespace, &cm.name).await?;
                    let optional = cm.optional.unwrap_or(false);
                    write_keys(
                        writer,
                        "ConfigMap",
                        namespace,
                        &cm.name,
                        data,
                        cm.items.as_deref(),
                        mode,
                        optional,
                    )?;
                }
                if let Some(secret) = &source.secret {
                    let data = objects.secret(namespace, &secret.name).await?;
                    let optional = secret.optional.unwrap_or(false);
                    write_keys(
                        writer,
                        "Secret",
                        namespace,
                        &secret.name,
                        data,
                        secret.items.as_deref(),
                        mode,
                        optional,
                    )?;
                }
                if let Some(downward) = &source.downward_api {
                    write_fields(
                        writer,
                        pod,
                        downward.items.as_deref().unwrap_or_default(),
                        mode,
                    )?;
                }
                if source.cluster_trust_bundle.is_some() {
                    bail!("clusterTrustBundle projections are not supported by the node agent");
                }
            }
            return Ok(());
        }
        bail!(
            "only emptyDir, secret, configMap, downwardAPI and projected volumes are supported by \
             the node agent"
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_token(
        &self,
        pod: &Pod,
        writer: &Writer,
        path: &str,
        audience: Option<&str>,
        expiration_seconds: Option<i64>,
        mode: i32,
        objects: &Objects,
    ) -> Result<()> {
        let file = writer.path(path)?;
        let now = SystemTime::now();
        let due = self
            .token_refresh
            .lock()
            .ok()
            .and_then(|m| m.get(&file).copied());
        if due.is_some_and(|due| now < due) {
            return Ok(());
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.as_ref().context("pod has no spec")?;
        let account = spec.service_account_name.as_deref().unwrap_or("default");
        let api: Api<ServiceAccount> = Api::namespaced(objects.client().clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds.unwrap_or(3600)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let issued = api
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!("requesting a token for service account {namespace}/{account}")
            })?;
        let status = issued
            .status
            .context("TokenRequest answered without a status")?;
        let expires: SystemTime = status.expiration_timestamp.0.into();
        let lifetime = expires.duration_since(now).unwrap_or_default();
        let refresh_in = lifetime.mul_f64(TOKEN_REFRESH_SHARE).min(TOKEN_MAX_AGE);
        writer.write(path, status.token.as_bytes(), mode)?;
        if let Ok(mut m) = self.token_refresh.lock() {
            m.insert(file, now + refresh_in);
        }
        Ok(())
    }

    /// The bind mounts of `container`.
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>> {
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let mut source = self.dir.join(&mount.name);
            if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(relative(sub)?);
            }
            if !source.exists() {
                bail!(
                    "container {}: volumeMount {:?} names no volume of the pod",
                    container.name,
                    mount.name
                );
            }
            mounts.push(Mount {
                source,
                target: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only.unwrap_or(false),
            });
        }
        Ok(mounts)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_keys(
    writer: &Writer,
    kind: &str,
    namespace: &str,
    name: &str,
    data: Option<Data>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    optional: bool,
) -> Result<()> {
    let Some(data) = data else {
        if optional {
            return Ok(());
        }
        bail!("{kind} {namespace}/{name} not found (the pod waits until it exists)");
    };
    match items {
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    bail!("{kind} {namespace}/{name} has no key {:?}", item.key);
                };
                writer.write(&item.path, value, item.mode.unwrap_or(mode))?;
            }
        }
        None => {
            for (key, value) in &data {
                writer.write(key, value, mode)?;
            }
        }
    }
    Ok(())
}

fn write_fields(
    writer: &Writer,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
) -> Result<()> {
    for item in items {
        let Some(field) = &item.field_ref else {
            bail!(
                "downwardAPI item {:?}: only fieldRef is supported by the node agent",
                item.path
            );
        };
        let value = field_value(pod, field)?;
        writer.write(&item.path, value.as_bytes(), item.mode.unwrap_or(mode))?;
    }
    Ok(())
}

/// Writes files of one volume.
struct Writer {
    dir: PathBuf,
    fs_group: Option<u32>,
}

impl Writer {
    fn path(&self, relative_path: &str) -> Result<PathBuf> {
        Ok(self.dir.join(relative(relative_path)?))
    }

    /// Writes `contents` at `relative_path` unless it already holds them.
    fn write(&self, relative_path: &str, contents: &[u8], mode: i32) -> Result<()> {
        let path = self.path(relative_path)?;
        if std::fs::read(&path).is_ok_and(|old| old == contents) {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent)?;
        let file_name = path.file_name().context("volume file has no name")?;
        let staging = parent.join(format!(".{}.new", file_name.to_string_lossy()));
        std::fs::write(&staging, contents)
            .with_context(|| format!("writing {}", staging.display()))?;
        let mode = u32::try_from(mode).unwrap_or(0o644) & 0o777;
        // As the kubelet does with an fsGroup: files belong to it, group-readable.
        let mode = if self.fs_group.is_some() {
            mode | 0o040
        } else {
            mode
        };
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))?;
        if let Some(group) = self.fs_group {
            std::os::unix::fs::chown(&staging, None, Some(group))?;
        }
        std::fs::rename(&staging, &path)
            .with_context(|| format!("renaming into {}", path.display()))?;
        Ok(())
    }
}

/// `path` if it is relative and stays inside the volume.
fn relative(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("volume path {path:?} must be relative, without `..`");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_leaving_the_volume_are_refused() {
        assert!(relative("token").is_ok());
        assert!(relative("a/b").is_ok());
        assert!(relative("../etc/passwd").is_err());
        assert!(relative("/etc/passwd").is_err());
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = crate::harness::ScratchDir::new("volume-writer").expect("dir");
        let writer = Writer {
            dir: dir.path().to_path_buf(),
            fs_group: None,
        };
        writer.write("tls/tls.crt", b"one", 0o440).expect("writes");
        writer
            .write("tls/tls.crt", b"two", 0o440)
            .expect("rewrites");
        let path = dir.path().join("tls/tls.crt");
        assert_eq!(std::fs::read(&path).expect("reads"), b"two");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o440);
        assert!(!dir.path().join("tls/.tls.crt.new").exists());
    }
}
