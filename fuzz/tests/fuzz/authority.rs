//! The authority parser (`router.rs`): from `:authority` or `Host` to a
//! Service port.
//!
//! - any text: no panic; what it accepts names a valid service, namespace
//!   and a port above zero;
//! - every DNS form of a service (`svc`, `svc.ns`, `svc.ns.svc`,
//!   `svc.ns.svc.<domain>`, any case, a trailing dot) parses to the same key.

use proptest::prelude::*;
use sidelb_config::PortRef;
use sidelb_config::service::is_dns_label;
use sidelb_fuzz::{config, corpus, mutated_text};
use sidelb_proxy::router::parse_authority;

const TARGET: &str = "authority";

fn check(authority: &str) {
    if let Ok(key) = parse_authority(authority, "default", "cluster.local") {
        assert!(is_dns_label(&key.name), "{authority:?}: {key}");
        assert!(is_dns_label(&key.namespace), "{authority:?}: {key}");
        assert!(
            matches!(key.port, PortRef::Number(n) if n > 0),
            "{authority:?}"
        );
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in corpus(TARGET) {
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end_matches('\n');
        let outcome = parse_authority(text, "default", "cluster.local");
        if name.starts_with("refuse-") {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        } else if name.starts_with("accept-") {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
        check(text);
    }
}

proptest! {
    #![proptest_config(config(TARGET, 2000))]

    #[test]
    fn any_text(authority in ".{0,80}") {
        check(&authority);
    }

    #[test]
    fn mutated_corpus(authority in mutated_text(TARGET, 5)) {
        check(&authority);
    }

    #[test]
    fn every_dns_form_names_the_same_service(
        name in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?",
        namespace in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?",
        port in 1u16..,
        upper in any::<bool>(),
        dot in any::<bool>(),
    ) {
        let forms = [
            format!("{name}.{namespace}"),
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
        ];
        for host in forms {
            let host = if upper { host.to_ascii_uppercase() } else { host };
            let dot = if dot { "." } else { "" };
            let key = parse_authority(&format!("{host}{dot}:{port}"), "default", "cluster.local");
            let key = key.map_err(|e| TestCaseError::fail(format!("{host}: {e}")))?;
            prop_assert_eq!(&key.name, &name);
            prop_assert_eq!(&key.namespace, &namespace);
            prop_assert_eq!(key.port, PortRef::Number(port));
        }
        let short = parse_authority(&format!("{name}:{port}"), "other", "cluster.local").expect("short");
        prop_assert_eq!(short.namespace, "other");
    }
}
