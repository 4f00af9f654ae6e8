//! Every proxy setting's parser (`config/src/settings.rs`, `value.rs`,
//! `proxy.rs`), shared by the proxy (variables) and the injector
//! (annotations).
//!
//! - any value of any setting: `Setting::check` never panics, and a refusal
//!   names where the value came from and says what is wrong;
//! - any set of variables: `ProxyConfig::from_lookup` never panics; it
//!   accepts only when every value passes its setting's check, and when it
//!   refuses, the message names a variable it was given (or the addresses
//!   that collide).

use proptest::prelude::*;
use sidelb_config::{ProxyConfig, SETTINGS};
use sidelb_fuzz::{config, corpus};
use std::collections::HashMap;

const TARGET: &str = "settings";

fn check_config(vars: &HashMap<String, String>) {
    let outcome = ProxyConfig::from_lookup(|k| vars.get(k).cloned());
    let all_pass = vars.iter().all(|(env, value)| {
        SETTINGS
            .iter()
            .find(|s| s.env == env)
            .is_none_or(|s| s.check(env, value.trim()).is_ok())
    });
    match outcome {
        Ok(_) => assert!(all_pass, "accepted a value its setting refuses: {vars:?}"),
        Err(e) => {
            let e = e.to_string();
            let named = vars.keys().any(|k| e.contains(k.as_str()));
            assert!(named, "{e} names none of {vars:?}");
        }
    }
}

/// Corpus lines are `VARIABLE=value`; each file is one environment.
#[test]
fn corpus_replays() {
    for (name, bytes) in corpus(TARGET) {
        let text = String::from_utf8_lossy(&bytes);
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let outcome = ProxyConfig::from_lookup(|k| vars.get(k).cloned());
        if name.starts_with("refuse-") {
            assert!(outcome.is_err(), "{name}");
        } else if name.starts_with("accept-") {
            assert!(outcome.is_ok(), "{name}: {:?}", outcome.err());
        }
        check_config(&vars);
    }
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[0-9]{0,12}(ns|us|ms|s|m|h|d|x)?",
        "[0-9]{1,3}(\\.[0-9]{1,3}){3}:[0-9]{1,6}",
        "(file:)?[a-z/]{0,10}",
        "[a-z_=,:-]{0,20}",
        Just("0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
    ]
}

proptest! {
    #![proptest_config(config(TARGET, 1000))]

    #[test]
    fn every_setting_checks_any_value(index in 0..SETTINGS.len(), value in value()) {
        let setting = &SETTINGS[index];
        if let Err(e) = setting.check("sidelb.io/x", &value) {
            prop_assert_eq!(e.origin.as_str(), "sidelb.io/x");
            let e = e.to_string();
            // Names where the value came from, then says what is wrong.
            prop_assert!(e.starts_with("sidelb.io/x: "), "{}", e);
            prop_assert!(e.len() > "sidelb.io/x: ".len() + 10, "{}", e);
        }
    }

    #[test]
    fn any_environment(vars in proptest::collection::hash_map(
        proptest::sample::select(SETTINGS.iter().map(|s| s.env.to_owned()).collect::<Vec<_>>()),
        value(),
        0..6,
    )) {
        check_config(&vars);
    }
}
