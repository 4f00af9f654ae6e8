use super::*;
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

fn filter(text: &str) -> (reload::Layer<EnvFilter, Registry>, LogFilter) {
    let parsed = parse(text).expect("a valid filter");
    LogFilter::new(parsed, text.to_owned())
}

#[test]
fn a_new_filter_applies_at_once() {
    let (layer, log) = filter("info");
    let subscriber = Registry::default().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        assert!(tracing::enabled!(Level::INFO));
        assert!(!tracing::enabled!(Level::DEBUG));
        log.set(" debug\n").expect("accepted");
        assert!(tracing::enabled!(Level::DEBUG));
        assert_eq!(log.current(), "debug");
        log.set("warn").expect("accepted");
        assert!(!tracing::enabled!(Level::INFO));
    });
}

#[test]
fn a_bad_filter_says_why_and_the_old_one_stays() {
    let (layer, log) = filter("sidelb_proxy=debug,info");
    let subscriber = Registry::default().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for bad in ["sidelb_proxy=loud", "[{", "   "] {
            let e = log.set(bad).expect_err(bad).to_string();
            let given = bad.trim();
            assert!(
                e.starts_with(&format!("invalid log filter `{given}`: ")),
                "{e}"
            );
            assert!(
                e.ends_with("; the filter stays `sidelb_proxy=debug,info`"),
                "{e}"
            );
            assert!(e.len() > 70, "says why: {e}");
        }
        assert_eq!(log.current(), "sidelb_proxy=debug,info");
        assert!(tracing::enabled!(target: "sidelb_proxy::balancer", Level::DEBUG));
        assert!(!tracing::enabled!(target: "h2::codec", Level::DEBUG));
    });
}

#[test]
fn kube_stays_quiet_unless_the_filter_names_it() {
    let (layer, log) = filter("debug");
    let subscriber = Registry::default().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        assert!(!tracing::enabled!(target: "kube_runtime::watcher", Level::WARN));
        assert!(tracing::enabled!(target: "kube_client::client::tls", Level::WARN));
        log.set("debug,kube_runtime=debug").expect("accepted");
        assert!(tracing::enabled!(target: "kube_runtime::watcher", Level::DEBUG));
    });
}
