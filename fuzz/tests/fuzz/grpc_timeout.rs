//! `grpc-timeout` parsing (`forward/grpc.rs`): up to 8 digits and a unit.
//!
//! - any header value: no panic, and no value that is not 1-8 digits and a
//!   known unit is accepted;
//! - every value in the grammar means exactly its duration (no overflow:
//!   99999999H fits).

use http::HeaderValue;
use proptest::prelude::*;
use sidelb_fuzz::{config, corpus, mutated};
use sidelb_proxy::forward::grpc::parse_timeout;
use std::time::Duration;

const TARGET: &str = "grpc_timeout";

fn grammatical(v: &[u8]) -> bool {
    let Some((unit, digits)) = v.split_last() else {
        return false;
    };
    (1..=8).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && b"HMSmun".contains(unit)
}

fn check(bytes: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let parsed = parse_timeout(&value);
    assert_eq!(
        parsed.is_some(),
        grammatical(bytes),
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn corpus_replays() {
    for (_, bytes) in corpus(TARGET) {
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        check(trimmed);
    }
}

proptest! {
    #![proptest_config(config(TARGET, 2000))]

    #[test]
    fn any_value(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        check(&bytes);
    }

    #[test]
    fn near_the_grammar(text in "[0-9]{0,10}[HMSmunxh ]?") {
        check(text.as_bytes());
    }

    #[test]
    fn mutated_corpus(bytes in mutated(TARGET, 4)) {
        check(&bytes);
    }

    #[test]
    fn each_unit_means_its_duration(n in 0u64..100_000_000, unit in 0usize..6) {
        let (suffix, expected) = [
            ("H", Duration::from_secs(n * 3600)),
            ("M", Duration::from_secs(n * 60)),
            ("S", Duration::from_secs(n)),
            ("m", Duration::from_millis(n)),
            ("u", Duration::from_micros(n)),
            ("n", Duration::from_nanos(n)),
        ][unit];
        let value = HeaderValue::from_str(&format!("{n}{suffix}")).expect("header value");
        prop_assert_eq!(parse_timeout(&value), Some(expected));
    }
}
