//! What an endpoint says about its own load: ORCA per-call reports.
//!
//! A gRPC server using ORCA attaches an `xds.data.orca.v3.OrcaLoadReport` to
//! its answers, binary in the `endpoint-load-metrics-bin` trailer (base64,
//! as every `-bin` metadata). Like gRPC's `weighted_round_robin`, an
//! endpoint's weight is its request rate over its utilisation, penalised by
//! its error rate: `qps / (utilization + eps / qps)`, where utilisation is
//! `application_utilization` when set and `cpu_utilization` otherwise. Two
//! pods serving the same rate, one at 90 % and one at 10 %, weigh 1 : 9.
//!
//! The balancer uses weights only between endpoints that both report (see
//! `balancer::pick`): a weight means nothing on its own, only beside
//! another. A report older than [`EXPIRY_US`] is forgotten, and the endpoint
//! is weighed by latency again, as one that never reported.
//!
//! The message is read by hand: five scalar fields of a small proto, every
//! other field skipped by its wire type, nothing trusted (a malformed report
//! is ignored, never an error for the call).

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The trailer (or trailers-only header) carrying the report.
pub(crate) const TRAILER: &str = "endpoint-load-metrics-bin";
/// How long a weight stands without a newer report.
pub(crate) const EXPIRY_US: u64 = 30_000_000;

/// `-bin` metadata is base64 with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The fields of a report the weight is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LoadReport {
    pub(crate) cpu_utilization: f64,
    pub(crate) application_utilization: f64,
    pub(crate) rps_fractional: f64,
    pub(crate) eps: f64,
}

impl LoadReport {
    /// The report in `headers`, if there is a well-formed one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<LoadReport> {
        let value = headers.get(TRAILER)?.as_bytes();
        let bytes = BASE64.decode(value).ok()?;
        decode(&bytes)
    }

    /// The utilisation the weight divides by.
    pub(crate) fn utilization(&self) -> f64 {
        if self.application_utilization > 0.0 {
            self.application_utilization
        } else {
            self.cpu_utilization
        }
    }

    /// `qps / (utilization + eps / qps)`; `None` when the report gives no
    /// rate or no utilisation to weigh by.
    pub(crate) fn weight(&self) -> Option<f64> {
        let (qps, utilization) = (self.rps_fractional, self.utilization());
        let valid = |x: f64| x.is_finite() && x > 0.0;
        if !valid(qps) || !valid(utilization) {
            return None;
        }
        let errors = if self.eps.is_finite() && self.eps > 0.0 {
            self.eps / qps
        } else {
            0.0
        };
        let weight = qps / (utilization + errors);
        valid(weight).then_some(weight)
    }
}

/// The last weight an endpoint reported and when; lock-free, as the latency estimate.
#[derive(Debug, Default)]
pub(crate) struct LoadWeight {
    weight: AtomicU64,
    stamp_us: AtomicU64,
}

impl LoadWeight {
    /// A report's weight arrived at `now_us` (a report without one changes nothing).
    pub(crate) fn record(&self, report: &LoadReport, now_us: u64) {
        if let Some(weight) = report.weight() {
            self.weight.store(weight.to_bits(), Relaxed);
            self.stamp_us.store(now_us.max(1), Relaxed);
        }
    }

    /// The weight at `now_us`, if one was reported less than [`EXPIRY_US`] ago.
    pub(crate) fn at(&self, now_us: u64) -> Option<f64> {
        let stamp = self.stamp_us.load(Relaxed);
        (stamp != 0 && now_us.saturating_sub(stamp) < EXPIRY_US)
            .then(|| f64::from_bits(self.weight.load(Relaxed)))
    }
}

/// The report's scalar fields; `None` for bytes that are not a message.
fn decode(mut bytes: &[u8]) -> Option<LoadReport> {
    let mut report = LoadReport::default();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                varint(&mut bytes)?;
            }
            1 => {
                let (value, rest) = bytes.split_first_chunk::<8>()?;
                bytes = rest;
                let value = f64::from_le_bytes(*value);
                match field {
                    1 => report.cpu_utilization = value,
                    6 => report.rps_fractional = value,
                    7 => report.eps = value,
                    9 => report.application_utilization = value,
                    _ => {}
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                bytes = bytes.get(len..)?;
            }
            5 => bytes = bytes.get(4..)?,
            _ => return None,
        }
    }
    Some(report)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
#[path = "load_report_tests.rs"]
mod tests;
