//! The endpoints file of `SIDELB_DISCOVERY=file:PATH`, written by tests.
//!
//! ```yaml
//! services:
//!   - name: greeter
//!     namespace: default
//!     port: 50051
//!     endpoints: ["127.0.0.1:50061", "127.0.0.1:50062"]
//! ```
//!
//! Every write replaces the whole file atomically (write a sibling file, then
//! rename it over the old one), as a config-map update or `mv` does: the proxy
//! never reads a half-written file, and it sees a new inode each time.

use super::backend::Backend;
use super::scratch::ScratchDir;
use anyhow::{Context, Result};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One Service of the file.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub name: String,
    pub namespace: String,
    /// The Service port clients name (`svc.ns:port`).
    pub port: u16,
    /// `IP:PORT` of each ready endpoint.
    pub endpoints: Vec<String>,
}

impl ServiceEndpoints {
    pub fn new(name: &str, namespace: &str, port: u16, endpoints: &[SocketAddr]) -> Self {
        ServiceEndpoints {
            name: name.to_string(),
            namespace: namespace.to_string(),
            port,
            endpoints: endpoints.iter().map(SocketAddr::to_string).collect(),
        }
    }

    /// Service `name.namespace:port` served by `backends`.
    pub fn of<'a>(
        name: &str,
        namespace: &str,
        port: u16,
        backends: impl IntoIterator<Item = &'a Backend>,
    ) -> Self {
        let addrs: Vec<SocketAddr> = backends.into_iter().map(Backend::addr).collect();
        ServiceEndpoints::new(name, namespace, port, &addrs)
    }

    /// `name.namespace:port`, as in `SIDELB_UPSTREAMS` and `:authority`.
    pub fn authority(&self) -> String {
        format!("{}.{}:{}", self.name, self.namespace, self.port)
    }
}

#[derive(Serialize)]
struct Document<'a> {
    services: &'a [ServiceEndpoints],
}

/// An endpoints file in its own scratch directory.
#[derive(Debug)]
pub struct EndpointsFile {
    dir: ScratchDir,
    path: PathBuf,
    writes: AtomicU64,
}

impl EndpointsFile {
    /// Creates the file with `services`.
    pub fn create(services: &[ServiceEndpoints]) -> Result<EndpointsFile> {
        let dir = ScratchDir::new("endpoints")?;
        let path = dir.path().join("endpoints.yaml");
        let file = EndpointsFile {
            dir,
            path,
            writes: AtomicU64::new(0),
        };
        file.write(services)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `SIDELB_DISCOVERY` that reads this file.
    pub fn discovery(&self) -> String {
        format!("file:{}", self.path.display())
    }

    /// Replaces the file's content with `services`, atomically.
    pub fn write(&self, services: &[ServiceEndpoints]) -> Result<()> {
        self.write_raw(&serde_saphyr::to_string(&Document { services })?)
    }

    /// Replaces the file's content with `text` as it is (e.g. a malformed
    /// file), atomically.
    pub fn write_raw(&self, text: &str) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let temporary = self.dir.path().join(format!(".endpoints.yaml.{n}"));
        std::fs::write(&temporary, text)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &self.path)
            .with_context(|| format!("renaming over {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_replace_the_whole_file() {
        let a: SocketAddr = "127.0.0.1:50061".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:50062".parse().expect("addr");
        let mut echo = ServiceEndpoints::new("echo", "default", 50051, &[a]);
        let file = EndpointsFile::create(&[echo.clone()]).expect("created");
        assert_eq!(echo.authority(), "echo.default:50051");
        assert_eq!(file.discovery(), format!("file:{}", file.path().display()));

        echo.endpoints.push(b.to_string());
        file.write(&[echo]).expect("rewritten");
        let text = std::fs::read_to_string(file.path()).expect("readable");
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        let service = &doc["services"][0];
        assert_eq!(service["name"].as_str(), Some("echo"));
        assert_eq!(service["namespace"].as_str(), Some("default"));
        assert_eq!(service["port"].as_u64(), Some(50051));
        let endpoints: Vec<&str> = service["endpoints"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        assert_eq!(endpoints, ["127.0.0.1:50061", "127.0.0.1:50062"]);
        let leftovers = std::fs::read_dir(file.path().parent().expect("dir"))
            .expect("listable")
            .count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
