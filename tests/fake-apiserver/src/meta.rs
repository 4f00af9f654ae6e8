//! `ObjectMeta` reading and the system fields the server owns: uid,
//! creationTimestamp, resourceVersion, generation and names made from `generateName`.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

pub fn name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn namespace(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
}

pub fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
}

pub fn uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

/// `metadata` as a mutable map, created (or replaced, if it is not an object) as needed.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let Some(root) = object.as_object_mut() else {
        unreachable!("made an object above")
    };
    let metadata = root.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    match metadata {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

pub fn set_resource_version(object: &mut Value, resource_version: u64) {
    metadata_mut(object).insert(
        "resourceVersion".into(),
        json!(resource_version.to_string()),
    );
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// How long ago an RFC 3339 timestamp was, for the AGE column.
pub fn age(timestamp: Option<&str>) -> String {
    let Some(then) = timestamp.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else {
        return "<unknown>".into();
    };
    let elapsed = SystemTime::now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO);
    human_duration(elapsed)
}

/// kubectl's short duration format: `45s`, `3m12s`, `5h`, `2d3h`, `400d`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (m, h, day) = (60, 3600, 86400);
    match secs {
        s if s < 2 * m => format!("{s}s"),
        s if s < 10 * m => {
            if s % m == 0 {
                format!("{}m", s / m)
            } else {
                format!("{}m{}s", s / m, s % m)
            }
        }
        s if s < 3 * h => format!("{}m", s / m),
        s if s < 8 * h => {
            if (s % h) / m == 0 {
                format!("{}h", s / h)
            } else {
                format!("{}h{}m", s / h, (s % h) / m)
            }
        }
        s if s < 2 * day => format!("{}h", s / h),
        s if s < 8 * day => {
            if (s % day) / h == 0 {
                format!("{}d", s / day)
            } else {
                format!("{}d{}h", s / day, (s % day) / h)
            }
        }
        s => format!("{}d", s / day),
    }
}

pub fn new_uid() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The five characters kube-apiserver appends to a `generateName` prefix.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// A copy without `kind` and `apiVersion`, as items of a list are sent.
pub fn without_type_meta(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(190)), "3m10s");
        assert_eq!(human_duration(Duration::from_secs(7200)), "120m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86400 + 7200)),
            "3d2h"
        );
    }

    #[test]
    fn uids_look_like_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
    }
}
