use super::*;
use proptest::prelude::*;

#[test]
fn buckets_are_exact_below_four_then_four_per_doubling() {
    let cases = [
        (0, 0),
        (3, 3),
        (4, 4),
        (5, 5),
        (7, 7),
        (8, 8),
        (9, 8),
        (10, 9),
        (16, 12),
        (1000, 4 * 8 + 3),
    ];
    for (us, index) in cases {
        assert_eq!(bucket(us), index, "{us} µs");
    }
    assert_eq!(bucket(u64::MAX), BUCKETS - 1);
}

#[test]
fn a_reading_lists_the_buckets_that_have_answers() {
    let sketch = LatencySketch::default();
    for us in [900, 950, 1000, 1000, 50_000] {
        sketch.record(us);
    }
    let buckets = sketch.buckets();
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    assert_eq!(total, 5);
    assert_eq!(
        buckets[0],
        BucketCount {
            low_us: 896,
            high_us: 1024,
            count: 4
        }
    );
    assert!(buckets[1].low_us <= 50_000 && buckets[1].high_us > 50_000);
}

proptest! {
    #[test]
    fn every_latency_lies_within_its_bucket(us in 0u64..(1 << 27)) {
        let i = bucket(us);
        prop_assert!(lower_bound(i) <= us);
        prop_assert!(us < lower_bound(i + 1));
    }

    #[test]
    fn a_bucket_spans_at_most_a_quarter_of_its_lower_bound(i in PER_DOUBLING..BUCKETS - 1) {
        let (low, high) = (lower_bound(i), lower_bound(i + 1));
        prop_assert!(high > low);
        prop_assert!((high - low) * 4 <= low);
    }
}
