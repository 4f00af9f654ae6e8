//! Strict validation against the official Kubernetes 1.33 schemas, through
//! the Python package kubernetes-validate (`tests/validate_pods.py`).

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// Fails the test with every schema problem of every `(name, object)`.
pub fn assert_valid(objects: &[(String, Value)]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/validate_pods.py");
    let python = sidelb_test_env::python().unwrap_or_else(|e| panic!("{e}"));
    let input: Vec<Value> = objects
        .iter()
        .map(|(name, object)| json!({"name": name, "object": object}))
        .collect();
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(Value::Array(input).to_string().as_bytes())
        .expect("write objects");
    drop(stdin);
    let out = child.wait_with_output().expect("the validator finishes");
    assert!(
        out.status.success(),
        "{script} failed under {} (it needs kubernetes-validate: `make deps-python`): {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<String> =
        serde_json::from_slice(&out.stdout).expect("a JSON list of problems");
    assert!(
        problems.is_empty(),
        "not valid for Kubernetes 1.33:\n{}",
        problems.join("\n")
    );
}
