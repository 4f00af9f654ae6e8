//! An endpoint's record of failures and ejections.
//!
//! The endpoint keeps the facts: how many exchanges failed in a row, whether
//! it is out of rotation and until when, how many times in a row it was
//! taken out. Deciding *when* to eject and for how long is the balancer's
//! outlier detection (`balancer::outlier`), because only the pool knows how
//! many of its endpoints are out already. Each change is one method here, so
//! an ejection is taken or ended exactly once however many requests race.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive_failures: AtomicU32,
    /// 0 while in rotation.
    ejected_until_us: AtomicU64,
    /// Length of the current (or last) ejection.
    ejection_us: AtomicU64,
    /// Ejections in a row, see [`Health::prior_ejections`].
    ejections: AtomicU32,
    last_return_us: AtomicU64,
}

/// Where an endpoint stands with respect to ejection, see [`Health::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rotation {
    In,
    Out,
    /// Its ejection was up: it is back in rotation from now on.
    Returned,
}

/// What `/endpoints` shows of an endpoint's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HealthView {
    pub(crate) consecutive_failures: u32,
    pub(crate) ejections: u32,
    /// Time left in the current ejection.
    pub(crate) ejected_for_us: Option<u64>,
    /// Length of the current ejection.
    pub(crate) ejection_us: Option<u64>,
}

impl Health {
    /// An exchange that was not a failure ends the run of failures.
    pub(crate) fn succeeded(&self) {
        // Most exchanges succeed: read first to keep the cache line shared.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Counts a failure; returns how many happened in a row.
    pub(crate) fn failed(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Relaxed) + 1
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until_us.load(Relaxed) != 0
    }

    /// How many ejections in a row precede one taken at `now`: 0 once the
    /// endpoint has been back in rotation for longer than `forgiven_after_us`.
    pub(crate) fn prior_ejections(&self, now: u64, forgiven_after_us: u64) -> u32 {
        let last_return = self.last_return_us.load(Relaxed);
        if last_return != 0 && now.saturating_sub(last_return) > forgiven_after_us {
            return 0;
        }
        self.ejections.load(Relaxed)
    }

    /// Takes the endpoint out of rotation for `length_us` from `now`, as its
    /// `in_a_row`-th ejection in a row; `false` if it is out already.
    pub(crate) fn eject(&self, now: u64, length_us: u64, in_a_row: u32) -> bool {
        let until = now.saturating_add(length_us.max(1));
        if self
            .ejected_until_us
            .compare_exchange(0, until, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.ejection_us.store(length_us, Relaxed);
        self.ejections.store(in_a_row, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        true
    }

    /// Whether the endpoint is out of rotation at `now`. The one call that
    /// finds its time up returns it and answers [`Rotation::Returned`].
    pub(crate) fn check(&self, now: u64) -> Rotation {
        let until = self.ejected_until_us.load(Relaxed);
        if until == 0 {
            return Rotation::In;
        }
        if now < until {
            return Rotation::Out;
        }
        match self
            .ejected_until_us
            .compare_exchange(until, 0, Relaxed, Relaxed)
        {
            Ok(_) => {
                self.last_return_us.store(now, Relaxed);
                Rotation::Returned
            }
            Err(_) => Rotation::In,
        }
    }

    /// Ends any ejection at once (the endpoint left its service); returns
    /// whether it was out.
    pub(crate) fn clear(&self) -> bool {
        self.ejected_until_us.swap(0, Relaxed) != 0
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    pub(crate) fn view(&self, now: u64) -> HealthView {
        let until = self.ejected_until_us.load(Relaxed);
        let out = until != 0;
        HealthView {
            consecutive_failures: self.consecutive_failures(),
            ejections: self.ejections.load(Relaxed),
            ejected_for_us: out.then(|| until.saturating_sub(now)),
            ejection_us: out.then(|| self.ejection_us.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_in_a_row_until_a_success() {
        let h = Health::default();
        assert_eq!(h.failed(), 1);
        assert_eq!(h.failed(), 2);
        h.succeeded();
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.failed(), 1);
    }

    #[test]
    fn an_ejection_is_taken_once_and_ends_once() {
        let h = Health::default();
        h.failed();
        assert!(h.eject(100, 50, 1));
        assert!(!h.eject(100, 50, 2), "already out");
        assert_eq!(h.consecutive_failures(), 0, "an ejection starts a new run");
        assert_eq!(h.check(149), Rotation::Out);
        assert_eq!(
            h.view(120),
            HealthView {
                consecutive_failures: 0,
                ejections: 1,
                ejected_for_us: Some(30),
                ejection_us: Some(50),
            }
        );
        assert_eq!(h.check(150), Rotation::Returned);
        assert_eq!(h.check(150), Rotation::In);
        assert!(!h.is_ejected());
        assert_eq!(h.view(150).ejected_for_us, None);
    }

    #[test]
    fn ejections_in_a_row_are_forgiven_after_a_quiet_time() {
        let h = Health::default();
        assert_eq!(h.prior_ejections(0, 1000), 0);
        h.eject(0, 10, 1);
        h.check(10);
        h.eject(20, 20, 2);
        h.check(40);
        assert_eq!(h.prior_ejections(1040, 1000), 2);
        assert_eq!(h.prior_ejections(1041, 1000), 0);
    }

    #[test]
    fn clearing_ends_an_ejection_and_says_so() {
        let h = Health::default();
        assert!(!h.clear());
        h.eject(0, 10, 1);
        assert!(h.clear());
        assert_eq!(h.check(1), Rotation::In);
    }

    #[test]
    fn a_zero_length_ejection_still_ejects() {
        let h = Health::default();
        assert!(h.eject(5, 0, 1));
        assert!(h.is_ejected());
        assert_eq!(h.check(5), Rotation::Out);
        assert_eq!(h.check(6), Rotation::Returned);
    }
}
