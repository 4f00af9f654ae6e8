//! Reading the proxy's `/metrics` (Prometheus / OpenMetrics text) into
//! samples a test can query by name and labels.

use std::collections::BTreeMap;

/// One line of the exposition: `name{label="value",…} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text`; comments and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values without escaped quotes, which is all the proxy emits).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let (value, after) = after.split_once('"')?;
        labels.insert(name.trim_start_matches(',').to_string(), value.to_string());
        rest = after.trim_start_matches(',');
    }
    Some(labels)
}

/// The sum of the samples named `name` whose labels include `labels`;
/// `None` if there is no such sample.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# TYPE sidelb_requests counter\n\
                    sidelb_requests_total{service=\"echo.default:50051\",endpoint=\"\",grpc_status=\"14\"} 3\n\
                    sidelb_requests_total{service=\"echo.default:50051\",endpoint=\"127.0.0.1:1\",grpc_status=\"0\"} 4\n\
                    sidelb_bucket{le=\"+Inf\",service=\"a\"} 7\n\
                    up 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["endpoint"], "");
        assert_eq!(
            sum(
                &samples,
                "sidelb_requests_total",
                &[("service", "echo.default:50051")]
            ),
            Some(7.0)
        );
        assert_eq!(
            sum(&samples, "sidelb_requests_total", &[("grpc_status", "14")]),
            Some(3.0)
        );
        assert_eq!(sum(&samples, "sidelb_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(sum(&samples, "up", &[]), Some(1.0));
        assert_eq!(sum(&samples, "down", &[]), None);
    }
}
