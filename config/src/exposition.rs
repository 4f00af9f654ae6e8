//! How `/metrics` answers: Prometheus text unless the scraper asks for OpenMetrics.
//!
//! The metrics library writes OpenMetrics 1.0. Prometheus itself asks for it
//! in its `Accept` header and gets it as written. Everyone else (curl, an
//! older scraper, a text-format parser) gets the Prometheus text format
//! 0.0.4, the de facto default of a `/metrics` endpoint: the same samples,
//! with counter families named by their `_total` samples, `info` families as
//! gauges, and no `# UNIT` or `# EOF` lines. Both the proxy's and the
//! injector's admin servers answer this way.

/// Content type of an OpenMetrics answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of a Prometheus text answer.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The body and content type for a scraper that sent `accept`.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (String, &'static str) {
    if wants_openmetrics(accept) {
        (openmetrics, OPENMETRICS)
    } else {
        (to_prometheus_text(&openmetrics), PROMETHEUS_TEXT)
    }
}

/// OpenMetrics text, as the metrics library writes it, in the Prometheus
/// text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut renamed: Vec<(&str, &str, &str)> = Vec::new();
    for line in openmetrics.lines() {
        if let Some((name, kind)) = metadata(line, "# TYPE ") {
            match kind {
                "counter" => renamed.push((name, "_total", "counter")),
                "info" => renamed.push((name, "_info", "gauge")),
                "unknown" => renamed.push((name, "", "untyped")),
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, rest) = metadata(line, prefix)?;
            let (_, suffix, kind) = renamed.iter().find(|(n, _, _)| *n == name)?;
            Some(if *prefix == "# TYPE " {
                format!("{prefix}{name}{suffix} {kind}")
            } else {
                format!("{prefix}{name}{suffix} {rest}")
            })
        });
        match rewritten {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `(name, rest)` of a `# HELP name rest` or `# TYPE name kind` line.
fn metadata<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?;
    Some(rest.split_once(' ').unwrap_or((rest, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_BODY: &str = "\
# HELP sidelb_requests Requests answered.
# TYPE sidelb_requests counter
sidelb_requests_total{service=\"a\"} 3
# HELP sidelb_in_flight Requests in flight.
# TYPE sidelb_in_flight gauge
sidelb_in_flight 1
# HELP build Build facts.
# TYPE build info
build_info{version=\"1\"} 1
# HELP sidelb_request_duration_seconds Duration.
# TYPE sidelb_request_duration_seconds histogram
# UNIT sidelb_request_duration_seconds seconds
sidelb_request_duration_seconds_sum 0.5
sidelb_request_duration_seconds_count 2
sidelb_request_duration_seconds_bucket{le=\"+Inf\"} 2
# EOF
";

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let text = to_prometheus_text(OPENMETRICS_BODY);
        assert_eq!(
            text,
            "\
# HELP sidelb_requests_total Requests answered.
# TYPE sidelb_requests_total counter
sidelb_requests_total{service=\"a\"} 3
# HELP sidelb_in_flight Requests in flight.
# TYPE sidelb_in_flight gauge
sidelb_in_flight 1
# HELP build_info Build facts.
# TYPE build_info gauge
build_info{version=\"1\"} 1
# HELP sidelb_request_duration_seconds Duration.
# TYPE sidelb_request_duration_seconds histogram
sidelb_request_duration_seconds_sum 0.5
sidelb_request_duration_seconds_count 2
sidelb_request_duration_seconds_bucket{le=\"+Inf\"} 2
"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        let (body, kind) = negotiate(OPENMETRICS_BODY.to_owned(), Some("*/*"));
        assert_eq!(kind, PROMETHEUS_TEXT);
        assert!(!body.contains("# EOF"));
        let (body, kind) = negotiate(OPENMETRICS_BODY.to_owned(), Some(prometheus));
        assert_eq!(kind, OPENMETRICS);
        assert_eq!(body, OPENMETRICS_BODY);
    }
}
