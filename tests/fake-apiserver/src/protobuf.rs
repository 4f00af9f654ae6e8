//! Just enough of Kubernetes' protobuf encoding to read what kubectl's typed clients
//! send: `kubectl create namespace|configmap|secret|serviceaccount` post protobuf, not
//! JSON. The envelope (`k8s\0` + `runtime.Unknown`) is decoded in full; inside it the
//! few simple kinds above are turned into their JSON form. Anything else is answered
//! 415, so a client would have to send JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::status::ApiError;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: its number and its value.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
    Fixed,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed() -> ApiError {
    ApiError::bad_request("the protobuf request body is malformed")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first().ok_or_else(malformed)?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        if n > self.bytes.len() {
            return Err(malformed());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<Field<'a>>, ApiError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| malformed())?;
        let field = match key & 7 {
            0 => Field::Varint(number, self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
                Field::Bytes(number, self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return Err(malformed()),
        };
        Ok(Some(field))
    }
}

fn fields(bytes: &[u8]) -> Result<Vec<Field<'_>>, ApiError> {
    let mut reader = Reader { bytes };
    let mut out = Vec::new();
    while let Some(field) = reader.next()? {
        out.push(field);
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed())
}

/// A `map<string, string>` (or `map<string, bytes>`, base64 as in JSON) entry.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), ApiError> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for field in fields(bytes)? {
        match field {
            Field::Bytes(1, k) => key = text(k)?,
            Field::Bytes(2, v) if binary => value = json!(STANDARD.encode(v)),
            Field::Bytes(2, v) => value = json!(text(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(object: &mut Map<String, Value>, name: &str, (key, value): (String, Value)) {
    let map = object.entry(name).or_insert_with(|| json!({}));
    if let Some(map) = map.as_object_mut() {
        map.insert(key, value);
    }
}

fn push(object: &mut Map<String, Value>, name: &str, value: Value) {
    let list = object.entry(name).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(value);
    }
}

fn object_meta(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut meta = Map::new();
    for field in fields(bytes)? {
        match field {
            Field::Bytes(1, v) => _ = meta.insert("name".into(), json!(text(v)?)),
            Field::Bytes(2, v) => _ = meta.insert("generateName".into(), json!(text(v)?)),
            Field::Bytes(3, v) => _ = meta.insert("namespace".into(), json!(text(v)?)),
            Field::Bytes(6, v) => _ = meta.insert("resourceVersion".into(), json!(text(v)?)),
            Field::Bytes(11, v) => insert_entry(&mut meta, "labels", map_entry(v, false)?),
            Field::Bytes(12, v) => insert_entry(&mut meta, "annotations", map_entry(v, false)?),
            Field::Bytes(14, v) => push(&mut meta, "finalizers", json!(text(v)?)),
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

/// The JSON form of a protobuf-encoded object of `kind`, for the kinds kubectl's
/// `create` subcommands send.
fn object(kind: &str, raw: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut object = Map::new();
    for field in fields(raw)? {
        match (kind, field) {
            (_, Field::Bytes(1, v)) => _ = object.insert("metadata".into(), object_meta(v)?),
            ("Namespace", Field::Bytes(2, spec)) => {
                let mut finalizers = Vec::new();
                for f in fields(spec)? {
                    if let Field::Bytes(1, v) = f {
                        finalizers.push(json!(text(v)?));
                    }
                }
                object.insert("spec".into(), json!({ "finalizers": finalizers }));
            }
            ("ConfigMap", Field::Bytes(2, v)) => {
                insert_entry(&mut object, "data", map_entry(v, false)?)
            }
            ("ConfigMap", Field::Bytes(3, v)) => {
                insert_entry(&mut object, "binaryData", map_entry(v, true)?)
            }
            ("ConfigMap", Field::Varint(4, b)) | ("Secret", Field::Varint(5, b)) => {
                _ = object.insert("immutable".into(), json!(b != 0))
            }
            ("Secret", Field::Bytes(2, v)) => {
                insert_entry(&mut object, "data", map_entry(v, true)?)
            }
            ("Secret", Field::Bytes(3, v)) => _ = object.insert("type".into(), json!(text(v)?)),
            ("Secret", Field::Bytes(4, v)) => {
                insert_entry(&mut object, "stringData", map_entry(v, false)?)
            }
            ("ServiceAccount", Field::Varint(4, b)) => {
                _ = object.insert("automountServiceAccountToken".into(), json!(b != 0))
            }
            ("Namespace" | "ConfigMap" | "Secret" | "ServiceAccount", _) => {}
            _ => {
                return Err(ApiError::unsupported_media_type(
                    CONTENT_TYPE,
                    "application/json, application/yaml (protobuf only for Namespace, ConfigMap, Secret, ServiceAccount)",
                ));
            }
        }
    }
    Ok(object)
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` holding one of the simple kinds.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for field in fields(envelope)? {
        match field {
            Field::Bytes(1, type_meta) => {
                for f in fields(type_meta)? {
                    match f {
                        Field::Bytes(1, v) => api_version = text(v)?,
                        Field::Bytes(2, v) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, v) => raw = v,
            _ => {}
        }
    }
    let mut object = object(&kind, raw)?;
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_namespace_like_kubectl_create_sends_it() {
        let meta = [
            field(1, b"shop"),
            field(11, &[field(1, b"team"), field(2, b"a")].concat()),
        ]
        .concat();
        let raw = field(1, &meta);
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let object = decode(&body).unwrap();
        assert_eq!(
            object,
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop", "labels": { "team": "a" } } })
        );
    }

    #[test]
    fn refuses_kinds_it_cannot_read_and_garbage() {
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [
            MAGIC.to_vec(),
            field(1, &type_meta),
            field(2, &field(2, b"x")),
        ]
        .concat();
        assert_eq!(decode(&body).unwrap_err().code, 415);
        assert_eq!(decode(b"k8s\0\xff").unwrap_err().code, 400);
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
    }
}
