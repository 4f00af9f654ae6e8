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
    pub fn parse(s: &str) -> Result<PortRef, String> {
        if s.is_empty() {
            return Err("the port is empty".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("port `{s}` is not in 1-65535")),
                Ok(n) => Ok(PortRef::Number(n)),
            };
        }
        if s.len() > 15 {
            return Err(format!("port name `{s}` is longer than 15 characters"));
        }
        if !is_dns_label(s) {
            return Err(format!(
                "port name `{s}` must be lower-case letters, digits and '-', starting and ending with a letter or digit"
            ));
        }
        Ok(PortRef::Name(s.to_owned()))
    }
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
