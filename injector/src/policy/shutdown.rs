//! How long the sidecar keeps serving and then drains after SIGTERM, fitted
//! into the pod's own grace period.
//!
//! The kubelet kills whatever still runs once `terminationGracePeriodSeconds`
//! (30 s when unset) is over, and a proxy killed mid-drain cuts its open
//! streams without a word. So the grace, the drain and a margin must fit in
//! the period:
//! - a classic sidecar gets SIGTERM together with the app. It keeps serving
//!   for a third of the period, at most [`CLASSIC_GRACE_MAX`], so the app's
//!   own shutdown can still call through it, then drains for the rest less
//!   the margin;
//! - a native sidecar is stopped after the app containers, within the same
//!   period. It gets no grace and drains for the period less the margin, at
//!   most the proxy's default drain timeout (the app that made the calls has
//!   already exited).
//!
//! The margin is [`MARGIN_MAX`], or a third of a period shorter than 6 s so a
//! short period still fits. It covers the proxy's last step, answering the
//! streams still open at the drain deadline, and its exit. A period of 0
//! gets the smallest valid drain (1 ms): the proxy answers what is open with
//! its reason and exits at once.
//!
//! A value set by annotation or by the injector's default wins; the other is
//! fitted into what is left. When the two exceed the period, the pod is still
//! admitted, with a warning naming both values and the period.

use sidelb_config::ProxyConfig;
use sidelb_config::value::DURATION_MAX;
use std::time::Duration;

/// The longest grace a classic sidecar is given.
pub(crate) const CLASSIC_GRACE_MAX: Duration = Duration::from_secs(10);

/// What is kept free before the kubelet's kill.
pub(crate) const MARGIN_MAX: Duration = Duration::from_secs(2);

/// The period Kubernetes applies when a pod does not set one.
pub(crate) const DEFAULT_PERIOD: Duration = Duration::from_secs(30);

/// The shortest drain the proxy accepts (`0s` is not a valid drain timeout).
const DRAIN_MIN: Duration = Duration::from_millis(1);

/// Longer than any derived value: keeps the arithmetic in range.
const PERIOD_MAX: i64 = 2 * 24 * 3600;

/// The values the sidecar is given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fitted {
    /// `None`: none is set (the proxy's default, no grace).
    pub(crate) grace: Option<Duration>,
    pub(crate) drain: Duration,
}

/// The pod's grace period, from `spec.terminationGracePeriodSeconds`.
pub(crate) fn period(seconds: Option<i64>) -> Duration {
    match seconds {
        None => DEFAULT_PERIOD,
        Some(s) => Duration::from_secs(s.clamp(0, PERIOD_MAX) as u64),
    }
}

/// Grace and drain for a sidecar in a pod of this `period`, keeping
/// `grace` and `drain` where they are given.
pub(crate) fn fit(
    period: Duration,
    native: bool,
    grace: Option<Duration>,
    drain: Option<Duration>,
) -> Fitted {
    let margin = MARGIN_MAX.min(period / 3);
    let budget = period.saturating_sub(margin);
    let grace = match grace {
        Some(grace) => Some(grace),
        None if native => None,
        None => {
            let left = budget.saturating_sub(drain.unwrap_or_default());
            Some(millis(CLASSIC_GRACE_MAX.min(period / 3).min(left))).filter(|g| !g.is_zero())
        }
    };
    let drain = drain.unwrap_or_else(|| {
        let mut drain = budget.saturating_sub(grace.unwrap_or_default());
        if native {
            drain = drain.min(ProxyConfig::defaults().drain_timeout);
        }
        millis(drain).clamp(DRAIN_MIN, DURATION_MAX)
    });
    Fitted { grace, drain }
}

/// Whole milliseconds: the finest unit written, rounded down so it still fits.
fn millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A duration as the proxy reads it: `10s`, or `1666ms` when not whole seconds.
pub(crate) fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The warning for values that, together, outlast the pod's period.
pub(crate) fn overrun(period: Duration, grace: (&str, &str), drain: (&str, &str)) -> String {
    format!(
        "sidelb-injector: {} `{}` plus {} `{}` is longer than this pod's \
         terminationGracePeriodSeconds of {}: the kubelet kills the proxy before its drain \
         ends and the calls still open are cut; shorten them, raise \
         terminationGracePeriodSeconds, or leave them unset so the injector fits them in",
        grace.0,
        grace.1,
        drain.0,
        drain.1,
        format(period)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn derived(period_s: Option<i64>, native: bool) -> Fitted {
        fit(period(period_s), native, None, None)
    }

    #[test]
    fn the_default_period_gives_a_classic_sidecar_10s_and_18s() {
        let fitted = derived(None, false);
        assert_eq!(fitted, derived(Some(30), false));
        assert_eq!(
            fitted,
            Fitted {
                grace: Some(S(10)),
                drain: S(18)
            }
        );
        assert_eq!(
            derived(None, true),
            Fitted {
                grace: None,
                drain: S(28)
            }
        );
    }

    #[test]
    fn long_short_and_zero_periods() {
        let cases = [
            // period, native, grace, drain
            (60, false, Some(S(10)), S(48)),
            (60, true, None, S(30)),
            (5, false, Some(MS(1666)), MS(1667)),
            (5, true, None, MS(3333)),
            (3, false, Some(S(1)), S(1)),
            (1, false, Some(MS(333)), MS(333)),
            (0, false, None, MS(1)),
            (0, true, None, MS(1)),
            (-5, false, None, MS(1)),
        ];
        for (period_s, native, grace, drain) in cases {
            assert_eq!(
                derived(Some(period_s), native),
                Fitted { grace, drain },
                "period {period_s}s, native {native}"
            );
        }
        let huge = derived(Some(i64::MAX), false);
        assert_eq!(huge.drain, DURATION_MAX, "capped to what the proxy accepts");
    }

    #[test]
    fn a_given_value_wins_and_the_other_takes_what_is_left() {
        let p = DEFAULT_PERIOD;
        assert_eq!(
            fit(p, false, Some(S(25)), None),
            Fitted {
                grace: Some(S(25)),
                drain: S(3)
            }
        );
        assert_eq!(
            fit(p, false, None, Some(S(25))),
            Fitted {
                grace: Some(S(3)),
                drain: S(25)
            }
        );
        assert_eq!(
            fit(p, false, None, Some(S(30))),
            Fitted {
                grace: None,
                drain: S(30)
            },
            "no time left for a grace"
        );
        assert_eq!(
            fit(p, false, Some(S(40)), None).drain,
            DRAIN_MIN,
            "no time left for a drain: the smallest valid one"
        );
        assert_eq!(
            fit(p, true, Some(S(5)), None),
            Fitted {
                grace: Some(S(5)),
                drain: S(23)
            }
        );
        assert_eq!(
            fit(p, false, Some(S(40)), Some(S(40))),
            Fitted {
                grace: Some(S(40)),
                drain: S(40)
            }
        );
    }

    #[test]
    fn formats_as_the_proxy_reads() {
        for d in [S(10), MS(1666), MS(1), S(0), S(86400)] {
            let text = format(d);
            assert_eq!(sidelb_config::value::duration(&text, true), Ok(d), "{text}");
        }
        assert_eq!(format(S(18)), "18s");
        assert_eq!(format(MS(1667)), "1667ms");
    }

    proptest! {
        /// Derived values always fit with the margin before the kill, are
        /// valid for the proxy, and a classic sidecar's grace is never above
        /// its cap.
        #[test]
        fn derived_values_fit_the_period(period_s in 1i64..4000, native: bool) {
            let p = period(Some(period_s));
            let fitted = derived(Some(period_s), native);
            let grace = fitted.grace.unwrap_or_default();
            prop_assert!(grace + fitted.drain + MARGIN_MAX.min(p / 3) <= p);
            prop_assert!(grace <= CLASSIC_GRACE_MAX);
            prop_assert!(fitted.drain >= DRAIN_MIN && fitted.drain <= DURATION_MAX);
            prop_assert_eq!(fitted.grace.is_some(), !native);
            let text = format(fitted.drain);
            prop_assert_eq!(sidelb_config::value::duration(&text, false), Ok(fitted.drain));
        }
    }
}
