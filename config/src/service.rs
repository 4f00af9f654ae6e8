//! What the proxy balances over: a port of a Kubernetes Service.

use std::fmt;

/// A Service port, by number or by name (`50051`, `grpc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl PortRef {
    /// Parses a port the way a Service spells it: a number 1-65535, or a
    /// DNS-1123 label of at most 15 characters.
    pub fn parse(s: &str) -> Result<PortRef, PortError> {
        if s.is_empty() {
            return Err(PortError::Empty);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(PortError::OutOfRange(s.to_owned())),
                Ok(n) => Ok(PortRef::Number(n)),
            };
        }
        if s.len() > 15 {
            return Err(PortError::NameTooLong(s.to_owned()));
        }
        if !is_dns_label(s) {
            return Err(PortError::BadName(s.to_owned()));
        }
        Ok(PortRef::Name(s.to_owned()))
    }
}

/// A port that is neither a number 1-65535 nor a valid port name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("the port is empty")]
    Empty,
    #[error("port `{0}` is not in 1-65535")]
    OutOfRange(String),
    #[error("port name `{0}` is longer than 15 characters")]
    NameTooLong(String),
    #[error(
        "port name `{0}` must be lower-case letters, digits and '-', starting and ending with a letter or digit"
    )]
    BadName(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// One port of one Service in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub name: String,
    pub namespace: String,
    pub port: PortRef,
}

impl ServiceKey {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, port: PortRef) -> Self {
        ServiceKey {
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.name, self.namespace, self.port)
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a Service or namespace name.
/// `service` or `service.namespace` as settings name a Service; what is
/// wrong with one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    #[error("`{0}` has more than two parts; name the service as `service` or `service.namespace`")]
    TooManyParts(String),
    #[error("`{0}` is not a valid service name")]
    ServiceName(String),
    #[error("`{0}` is not a valid namespace")]
    Namespace(String),
}

/// The name and namespace of `host` (`service` or `service.namespace`), the
/// namespace being `default_namespace` when not given.
pub fn service_and_namespace<'a>(
    host: &'a str,
    default_namespace: &'a str,
) -> Result<(&'a str, &'a str), ServiceNameError> {
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default();
    let namespace = parts.next().unwrap_or(default_namespace);
    if parts.next().is_some() {
        return Err(ServiceNameError::TooManyParts(host.to_owned()));
    }
    if !is_dns_label(name) {
        return Err(ServiceNameError::ServiceName(name.to_owned()));
    }
    if !is_dns_label(namespace) {
        return Err(ServiceNameError::Namespace(namespace.to_owned()));
    }
    Ok((name, namespace))
}

pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_by_number_and_name() {
        assert_eq!(PortRef::parse("50051"), Ok(PortRef::Number(50051)));
        assert_eq!(PortRef::parse("grpc"), Ok(PortRef::Name("grpc".into())));
        assert!(PortRef::parse("0").is_err());
        assert!(PortRef::parse("70000").is_err());
        assert!(PortRef::parse("Grpc").is_err());
        assert!(PortRef::parse("a-very-long-port-name").is_err());
        assert!(PortRef::parse("").is_err());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("greeter"));
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a_b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
