//! The upstreams list (`config/src/upstreams.rs`): `svc[.ns]:port=localport,…`,
//! from `SIDELB_UPSTREAMS` and the `sidelb.io/upstreams` annotation.
//!
//! - any text: no panic; an accepted list has valid names, ports above zero
//!   and no local port twice; a refusal names the entry;
//! - lists written from valid entries (with spaces and empty entries around)
//!   read back as those entries.

use proptest::prelude::*;
use sidelb_config::PortRef;
use sidelb_config::service::is_dns_label;
use sidelb_config::upstreams::parse;
use sidelb_fuzz::{config, corpus, mutated_text};
use std::collections::HashSet;

const TARGET: &str = "upstreams";

fn check(text: &str) {
    match parse(text, "default") {
        Ok(list) => {
            let mut ports = HashSet::new();
            for u in &list {
                assert!(is_dns_label(&u.service.name) && is_dns_label(&u.service.namespace));
                assert!(u.listen.port() > 0);
                assert!(ports.insert(u.listen), "{text:?}: {} twice", u.listen);
                if let PortRef::Number(n) = u.service.port {
                    assert!(n > 0);
                }
            }
        }
        Err(e) => assert!(e.to_string().contains("entry `"), "{text:?}: {e}"),
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in corpus(TARGET) {
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end_matches('\n');
        let outcome = parse(text, "default");
        if name.starts_with("refuse-") {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        } else if name.starts_with("accept-") {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
        check(text);
    }
}

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
}

proptest! {
    #![proptest_config(config(TARGET, 2000))]

    #[test]
    fn any_text(text in ".{0,80}") {
        check(&text);
    }

    #[test]
    fn near_the_grammar(text in "([a-z.]{0,8}(:[a-z0-9]{0,6})?(=[0-9:.]{0,8})?[, ]{0,2}){0,4}") {
        check(&text);
    }

    #[test]
    fn mutated_corpus(text in mutated_text(TARGET, 5)) {
        check(&text);
    }

    #[test]
    fn written_lists_read_back(
        entries in proptest::collection::vec(
            (label(), proptest::option::of(label()), prop_oneof![(1u16..).prop_map(|n| n.to_string()), label()]),
            1..5,
        ),
    ) {
        let mut text = String::from(" ,");
        let mut wanted = Vec::new();
        for (i, (name, ns, port)) in entries.iter().enumerate() {
            let local = 20000 + i as u16;
            let target = match ns {
                Some(ns) => format!("{name}.{ns}:{port}"),
                None => format!("{name}:{port}"),
            };
            text.push_str(&format!(" {target}={local} ,"));
            wanted.push((name.clone(), ns.clone().unwrap_or_else(|| "shop".into()), port.clone(), local));
        }
        let list = parse(&text, "shop").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(list.len(), wanted.len());
        for (u, (name, ns, port, local)) in list.iter().zip(&wanted) {
            prop_assert_eq!(&u.service.name, name);
            prop_assert_eq!(&u.service.namespace, ns);
            prop_assert_eq!(u.service.port.to_string(), port.clone());
            prop_assert_eq!(u.listen.port(), *local);
        }
    }
}
