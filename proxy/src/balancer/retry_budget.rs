//! The retry budget: retries of never-sent requests allowed as a share of
//! recent requests (`SIDELB_RETRY_BUDGET_PERCENT`) plus a floor per second
//! (`SIDELB_RETRY_BUDGET_MIN_PER_SECOND`), over a 10 s window.
//!
//! tower's `TpsBudget` keeps the account, with two corrections:
//! - It prices a retry at a whole number of deposits, `floor(1 / fraction)`,
//!   which for a percentage that is not `1/n` allows more than asked (30 %
//!   would cost 3 deposits: 33 %). Here the fraction handed to it is the
//!   largest `1/n` not above the setting, nudged down so that the division
//!   lands on `n`: 20 % is one retry per five requests, 30 % one per four.
//! - Its withdrawal reads the balance and then subtracts, so calls retried at
//!   the same moment on different threads can all pass on the last token (a
//!   storm of refusals overdrew it by an eighth). Withdrawals here take turns;
//!   they only happen for retries, which are rare, and deposits never wait.

use std::sync::Mutex;
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};

/// How long a request counts toward the budget.
const WINDOW: Duration = Duration::from_secs(10);

pub(crate) struct RetryBudget {
    account: TpsBudget,
    withdrawing: Mutex<()>,
}

impl RetryBudget {
    /// The budget for `percent` % of requests and `min_per_second` retries a second.
    pub(crate) fn new(percent: u32, min_per_second: u32) -> Self {
        RetryBudget {
            account: TpsBudget::new(WINDOW, min_per_second, fraction(percent)),
            withdrawing: Mutex::new(()),
        }
    }

    /// Counts one request.
    pub(crate) fn deposit(&self) {
        self.account.deposit();
    }

    /// Spends one retry, if the budget has one.
    pub(crate) fn withdraw(&self) -> bool {
        let _turn = self
            .withdrawing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.account.withdraw()
    }
}

/// The fraction `TpsBudget` is given for `percent`.
fn fraction(percent: u32) -> f32 {
    match percent {
        0 => 0.0,
        // At most one retry per n requests: n = ceil(100 / percent).
        1..=100 => {
            let n = 100u32.div_ceil(percent);
            (1.0 / n as f32) * (1.0 - 1e-4)
        }
        // More retries than requests: TpsBudget counts those in thousandths.
        _ => percent as f32 / 100.0,
    }
}

#[cfg(test)]
#[path = "retry_budget_tests.rs"]
mod tests;
