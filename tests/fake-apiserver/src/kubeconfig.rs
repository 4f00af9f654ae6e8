//! The kubeconfig a client uses to reach the fake server: one cluster, one user
//! (bearer token when the server requires one), one context with namespace `default`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

pub fn render(server_url: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    let mut cluster = json!({ "server": server_url });
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] = json!(STANDARD.encode(pem));
    }
    let user = match token {
        Some(token) => json!({ "token": token }),
        None => json!({}),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [ { "name": "sidelb-fake", "cluster": cluster } ],
        "users": [ { "name": "sidelb-fake", "user": user } ],
        "contexts": [ { "name": "sidelb-fake", "context": { "cluster": "sidelb-fake", "user": "sidelb-fake", "namespace": "default" } } ],
        "current-context": "sidelb-fake",
        "preferences": {}
    });
    serde_saphyr::to_string(&config).unwrap_or_default()
}

pub fn write(
    path: &Path,
    server_url: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(server_url, ca_pem, token))
}
