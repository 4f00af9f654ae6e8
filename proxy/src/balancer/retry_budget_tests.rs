use super::*;
use std::sync::Arc;

/// Retries granted after `requests` deposits, with no floor.
fn granted(percent: u32, requests: u32) -> u32 {
    let budget = RetryBudget::new(percent, 0);
    for _ in 0..requests {
        budget.deposit();
    }
    let mut n = 0;
    while budget.withdraw() {
        n += 1;
        assert!(n <= requests * 11, "unbounded budget at {percent} %");
    }
    n
}

#[test]
fn twenty_percent_allows_one_retry_per_five_requests() {
    assert_eq!(granted(20, 1000), 200);
}

#[test]
fn no_percentage_allows_more_than_it_says() {
    for percent in 1..=100 {
        let allowed = granted(percent, 1000);
        assert!(
            allowed * 100 <= percent * 1000,
            "{percent} % allowed {allowed} retries of 1000"
        );
        let n = 100u32.div_ceil(percent);
        assert_eq!(allowed, 1000 / n, "{percent} %: one retry per {n} requests");
    }
}

#[test]
fn zero_percent_leaves_only_the_floor() {
    assert_eq!(granted(0, 1000), 0);
    let budget = RetryBudget::new(0, 10);
    let mut n = 0;
    while budget.withdraw() && n < 1000 {
        n += 1;
    }
    assert_eq!(n, 100, "10 a second over the 10 s window");
}

#[test]
fn concurrent_retries_never_overdraw() {
    let budget = Arc::new(RetryBudget::new(20, 10));
    for _ in 0..1000 {
        budget.deposit();
    }
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let budget = budget.clone();
            std::thread::spawn(move || (0..1000).filter(|_| budget.withdraw()).count())
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    assert_eq!(granted, 200 + 100, "a fifth of 1000 and the 10 s floor");
}

#[test]
fn over_a_hundred_percent_allows_more_retries_than_requests() {
    let allowed = granted(200, 100);
    assert!((199..=200).contains(&allowed), "{allowed}");
}
