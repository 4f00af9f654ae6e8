//! The binary under a burst of the largest reviews kube-apiserver sends:
//! every one is answered, 200 or 429 with Retry-After, and memory stays
//! bounded because only a few are read at once.

use crate::support::client::{self, Proto};
use crate::support::process::Process;
use crate::support::reviews::{bare, set};
use crate::support::{Admission, MUTATE};
use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Duration;

const REVIEWS: usize = 50;
/// Just under the injector's 3 MiB body limit.
const REVIEW_BYTES: usize = 3 * 1024 * 1024 - 64 * 1024;
/// Generous: a few reviews at once cost tens of MiB; 50 read at once cost
/// several hundred.
const PEAK_RSS_BOUND_KIB: u64 = 200 * 1024;
const BOUND: Duration = Duration::from_secs(120);

/// A pod whose container has enough environment variables to make the review
/// `REVIEW_BYTES` long: many small values, the costliest shape to parse.
fn large_review() -> Value {
    let mut review = bare();
    let base = review.to_string().len();
    let entry = |i: usize| json!({"name": format!("SETTING_{i:06}"), "value": format!("value-{i:06}-abcdefghijklmnop")});
    let per_entry = entry(0).to_string().len() + 1;
    let env: Vec<Value> = (0..(REVIEW_BYTES - base) / per_entry).map(entry).collect();
    set(
        &mut review,
        "/request/object/spec/containers/0/env",
        json!(env),
    );
    review
}

#[tokio::test]
async fn fifty_concurrent_large_reviews_are_all_answered_in_bounded_memory() {
    let injector = Process::start(&[]).await;
    let review = large_review();
    let body = Bytes::from(review.to_string());
    assert!(body.len() <= REVIEW_BYTES, "{}", body.len());
    let before = injector.status_kib("VmHWM");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REVIEWS {
        let proto = if i % 2 == 0 { Proto::H2 } else { Proto::H1 };
        let (addr, ca, body) = (injector.addr, injector.ca.pem(), body.clone());
        tasks.spawn(async move {
            let mut conn = client::connect(addr, &ca, proto).await?;
            conn.try_request(http::Method::POST, MUTATE, client::full(body))
                .await
        });
    }
    let (mut answered, mut busy) = (0, 0);
    let all = async {
        while let Some(done) = tasks.join_next().await {
            let reply = done
                .expect("the client task")
                .unwrap_or_else(|e| panic!("a review got no answer: {e}"));
            match reply.status.as_u16() {
                200 => {
                    let answer = Admission::parse(reply.json());
                    assert_eq!(answer.uid, review["request"]["uid"].as_str().unwrap());
                    assert!(answer.allowed && answer.patch.is_some(), "{answer:?}");
                    answered += 1;
                }
                429 => {
                    assert_eq!(reply.headers["retry-after"], "1");
                    let status = reply.json();
                    assert_eq!(status["kind"], "Status");
                    assert_eq!(status["reason"], "TooManyRequests");
                    assert!(
                        status["message"].as_str().unwrap().contains("busy"),
                        "{status}"
                    );
                    busy += 1;
                }
                other => panic!("answered {other}: {}", reply.text()),
            }
        }
    };
    tokio::time::timeout(BOUND, all)
        .await
        .expect("every review is answered in time");
    assert_eq!(answered + busy, REVIEWS);
    assert!(answered > 0, "none of {REVIEWS} was answered 200");

    let peak = injector.status_kib("VmHWM");
    eprintln!(
        "{REVIEWS} reviews of {} bytes: {answered} answered 200, {busy} 429; \
         injector peak RSS {before} KiB before, {peak} KiB after",
        body.len()
    );
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "peak RSS {peak} KiB, bound {PEAK_RSS_BOUND_KIB} KiB"
    );

    let mut conn = client::connect(injector.addr, &injector.ca.pem(), Proto::H2)
        .await
        .expect("connect");
    let metrics = conn.get("/metrics").await.text();
    let counted = metrics
        .lines()
        .find(|l| l.contains(r#"reason="busy""#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .unwrap_or(0);
    assert_eq!(counted, busy, "{metrics}");
    let reply = conn.post(MUTATE, body).await;
    assert_eq!(reply.status, 200, "after the burst: {}", reply.text());
}
