//! The endpoints file (`discovery/file.rs`), which a bad rewrite must never
//! turn into a crash or half-applied endpoints.
//!
//! - any text (random, or the seed files mutated): no panic; an accepted
//!   file has valid service names and namespaces and no address twice per
//!   service; a refusal says what is wrong;
//! - files written from valid services, in either YAML style, read back as
//!   those services.

use proptest::prelude::*;
use sidelb_config::service::is_dns_label;
use sidelb_config::{PortRef, ServiceKey};
use sidelb_fuzz::{config, corpus, mutated_text};
use sidelb_proxy::discovery::file::parse;
use std::collections::HashSet;
use std::net::SocketAddr;

const TARGET: &str = "endpoints_file";

fn check(text: &str) {
    match parse(text, "default") {
        Ok(services) => {
            for (key, endpoints) in &services {
                assert!(
                    is_dns_label(&key.name) && is_dns_label(&key.namespace),
                    "{key}"
                );
                let unique: HashSet<_> = endpoints.iter().map(|e| e.addr).collect();
                assert_eq!(unique.len(), endpoints.len(), "{key}: an address twice");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in corpus(TARGET) {
        let text = String::from_utf8_lossy(&bytes);
        let outcome = parse(&text, "default");
        if name.starts_with("refuse-") {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        } else if name.starts_with("accept-") {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
        check(&text);
    }
}

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 8]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

proptest! {
    #![proptest_config(config(TARGET, 1000))]

    #[test]
    fn any_text(text in ".{0,200}") {
        check(&text);
    }

    #[test]
    fn yaml_like_text(text in "(services:\n)?(- (name|namespace|port|endpoints): [a-z0-9\\[\\]\"., :-]{0,20}\n){0,6}") {
        check(&text);
    }

    #[test]
    fn mutated_corpus(text in mutated_text(TARGET, 8)) {
        check(&text);
    }

    #[test]
    fn written_files_read_back(
        services in proptest::collection::btree_map(
            (label(), label(), prop_oneof![(1u16..).prop_map(PortRef::Number), label().prop_map(PortRef::Name)]),
            proptest::collection::btree_set(addr(), 0..4),
            0..4,
        ),
        flow in any::<bool>(),
    ) {
        let mut text = String::from("services:\n");
        for ((name, ns, port), addrs) in &services {
            // Quoted, so that a name like `null` or `true` stays a string.
            let port = match port {
                PortRef::Number(n) => n.to_string(),
                PortRef::Name(n) => format!("\"{n}\""),
            };
            let listed: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            if flow {
                text.push_str(&format!(
                    "  - {{name: \"{name}\", namespace: \"{ns}\", port: {port}, endpoints: [{}]}}\n",
                    listed.join(", ")
                ));
            } else {
                text.push_str(&format!(
                    "  - name: \"{name}\"\n    namespace: \"{ns}\"\n    port: {port}\n    endpoints:\n"
                ));
                for a in &listed {
                    text.push_str(&format!("      - {a}\n"));
                }
                if listed.is_empty() {
                    text.push_str("      []\n");
                }
            }
        }
        let parsed = parse(&text, "default").map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(parsed.len(), services.len(), "{}", text);
        for ((name, ns, port), addrs) in &services {
            let key = ServiceKey::new(name.clone(), ns.clone(), port.clone());
            let got: HashSet<SocketAddr> = parsed[&key].iter().map(|e| e.addr).collect();
            let wanted: HashSet<SocketAddr> = addrs.iter().copied().collect();
            prop_assert_eq!(got, wanted);
        }
    }
}
