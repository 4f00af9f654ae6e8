use super::*;
use proptest::prelude::*;

/// A report as a server library would encode it, with extra fields of
/// every wire type mixed in.
fn encode(cpu: f64, app: f64, qps: f64, eps: f64) -> Vec<u8> {
    let mut out = Vec::new();
    let double = |out: &mut Vec<u8>, field: u8, v: f64| {
        out.push((field << 3) | 1);
        out.extend_from_slice(&v.to_le_bytes());
    };
    double(&mut out, 1, cpu);
    double(&mut out, 2, 0.5); // mem_utilization
    out.extend_from_slice(&[3 << 3, 0xac, 0x02]); // rps = 300, varint
    // utilization map entry {"db": 0.25}: length-delimited
    out.extend_from_slice(&[(5 << 3) | 2, 13, 0x0a, 2, b'd', b'b', 0x11]);
    out.extend_from_slice(&0.25f64.to_le_bytes());
    double(&mut out, 6, qps);
    double(&mut out, 7, eps);
    double(&mut out, 9, app);
    out.extend_from_slice(&[(10 << 3) | 5, 1, 2, 3, 4]); // a future fixed32
    out
}

fn headers(bytes: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    headers.insert(TRAILER, text.parse().unwrap_or_else(|_| unreachable!()));
    headers
}

#[test]
fn reads_the_fields_it_weighs_by_and_skips_the_others() {
    let report = LoadReport::from_headers(&headers(&encode(0.8, 0.0, 120.0, 3.0)));
    assert_eq!(
        report,
        Some(LoadReport {
            cpu_utilization: 0.8,
            application_utilization: 0.0,
            rps_fractional: 120.0,
            eps: 3.0,
        })
    );
}

#[test]
fn base64_with_or_without_padding() {
    let bytes = encode(0.8, 0.0, 120.0, 0.0);
    let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
    let mut unpadded = HeaderMap::new();
    unpadded.insert(TRAILER, text.parse().unwrap_or_else(|_| unreachable!()));
    assert_eq!(
        LoadReport::from_headers(&unpadded),
        LoadReport::from_headers(&headers(&bytes))
    );
}

#[test]
fn the_weight_is_rate_over_utilisation_penalised_by_errors() {
    let busy = LoadReport {
        cpu_utilization: 0.9,
        rps_fractional: 100.0,
        ..Default::default()
    };
    let idle = LoadReport {
        cpu_utilization: 0.1,
        ..busy
    };
    let (busy, idle) = (busy.weight().unwrap_or(0.0), idle.weight().unwrap_or(0.0));
    assert!((idle / busy - 9.0).abs() < 1e-9, "{idle} / {busy}");
    let failing = LoadReport {
        cpu_utilization: 0.1,
        rps_fractional: 100.0,
        eps: 50.0,
        ..Default::default()
    };
    assert_eq!(failing.weight(), Some(100.0 / (0.1 + 0.5)));
    let app = LoadReport {
        cpu_utilization: 0.9,
        application_utilization: 0.3,
        rps_fractional: 30.0,
        ..Default::default()
    };
    assert_eq!(app.weight(), Some(100.0), "application utilisation wins");
}

#[test]
fn no_rate_or_no_utilisation_gives_no_weight() {
    for report in [
        LoadReport {
            cpu_utilization: 0.5,
            ..Default::default()
        },
        LoadReport {
            rps_fractional: 10.0,
            ..Default::default()
        },
        LoadReport {
            cpu_utilization: f64::NAN,
            rps_fractional: 10.0,
            ..Default::default()
        },
    ] {
        assert_eq!(report.weight(), None, "{report:?}");
    }
}

#[test]
fn a_weight_stands_until_it_expires() {
    let weight = LoadWeight::default();
    assert_eq!(weight.at(1_000), None);
    let report = LoadReport {
        cpu_utilization: 0.5,
        rps_fractional: 10.0,
        ..Default::default()
    };
    weight.record(&report, 1_000);
    assert_eq!(weight.at(1_000 + EXPIRY_US - 1), Some(20.0));
    assert_eq!(weight.at(1_000 + EXPIRY_US), None);
    weight.record(&LoadReport::default(), 2_000);
    assert_eq!(
        weight.at(2_000),
        Some(20.0),
        "a report without a weight changes nothing"
    );
}

#[test]
fn malformed_reports_are_ignored() {
    for bytes in [
        &[0x09, 1, 2][..],       // a double cut short
        &[0x12, 10, 1][..],      // a length past the end
        &[0x0b][..],             // a group: not in this message
        &[0xff, 0xff, 0xff][..], // a varint that never ends
    ] {
        assert_eq!(LoadReport::from_headers(&headers(bytes)), None, "{bytes:?}");
    }
    let mut not_base64 = HeaderMap::new();
    not_base64.insert(TRAILER, "%%%".parse().unwrap_or_else(|_| unreachable!()));
    assert_eq!(LoadReport::from_headers(&not_base64), None);
}

proptest! {
    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = LoadReport::from_headers(&headers(&bytes));
    }

    #[test]
    fn any_encoded_report_reads_back(
        cpu in 0.0f64..1.0, app in 0.0f64..1.0, qps in 0.0f64..1e6, eps in 0.0f64..1e3,
    ) {
        let report = LoadReport::from_headers(&headers(&encode(cpu, app, qps, eps)));
        prop_assert_eq!(report, Some(LoadReport {
            cpu_utilization: cpu,
            application_utilization: app,
            rps_fractional: qps,
            eps,
        }));
    }
}
