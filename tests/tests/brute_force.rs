//! A burst of requests with wrong keys does not slow legitimate traffic: each is
//! one SHA-256 and one lookup, answered 401 by the planner; nothing goes upstream
//! and no per-request state is kept. Measured: p50 of a legitimate client's
//! requests alone, then during the burst.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

async fn p50(gw: &Gateway, key: &str, n: usize) -> Duration {
    let client = reqwest::Client::new();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .post(gw.at("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_in_bulk_do_not_slow_legitimate_requests() {
    let paths = Paths::discover();
    let dir = Scratch::new("brute-force");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .workers(2)
        .start(&paths, &dir)
        .await;
    let (_, key) = gw.create_key(&json!({"name": "legit"})).await;
    gw.wait_for_key(&key, "chat").await;
    let _ = p50(&gw, &key, 50).await; // warm-up
    let before = p50(&gw, &key, 300).await;
    let upstream_before = a.requests().await.len();

    let (during, wrong_rate) = during_burst(&gw, &key, Burst::WrongKeys).await;
    let upstream_after_burst = a.requests().await.len();
    // The control: the same burst of requests answered locally for another
    // reason (the legitimate key, an unknown endpoint: 404).
    let (control, control_rate) = during_burst(&gw, &key, Burst::UnknownPath).await;
    let after = p50(&gw, &key, 300).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "legitimate p50: {:.2} ms alone; {:.2} ms during {:.0} wrong keys/s (4 clients); {:.2} ms during {:.0} unknown-path requests/s (the same burst, valid key, answered 404); {:.2} ms after",
        ms(before),
        ms(during),
        wrong_rate,
        ms(control),
        control_rate,
        ms(after)
    );
    // Nothing of the burst went upstream.
    assert_eq!(upstream_after_burst, upstream_before + 300);
    // The burst shares two cores with everything else here, so legitimate
    // requests wait for CPU either way; what authentication must not add is a
    // slow path of its own (a lock, per-key state, a log line per refusal).
    assert!(
        during <= control * 2 + Duration::from_millis(1),
        "p50 {during:?} during wrong keys vs {control:?} during the same burst answered 404"
    );
    assert!(
        after <= before * 2 + Duration::from_millis(1),
        "slower after the burst: {after:?}"
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Burst {
    WrongKeys,
    UnknownPath,
}

/// p50 of 300 legitimate requests while 4 clients send a burst; and the burst's rate.
async fn during_burst(gw: &Gateway, key: &str, kind: Burst) -> (Duration, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for i in 0..4 {
        let url = match kind {
            Burst::WrongKeys => gw.at("/v1/chat/completions"),
            Burst::UnknownPath => gw.at("/v1/nothing-here"),
        };
        let (stop, sent, key) = (stop.clone(), sent.clone(), key.to_string());
        attackers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (auth, expected) = match kind {
                    Burst::WrongKeys => (format!("sk-sy-guess-{i}-{n:012}"), 401),
                    Burst::UnknownPath => (key.clone(), 404),
                };
                let r = client
                    .post(&url)
                    .bearer_auth(auth)
                    .json(&chat_body("chat"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), expected);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let during = p50(gw, key, 300).await;
    let rate = sent.load(Ordering::Relaxed) as f64 / (t.elapsed().as_secs_f64() + 0.3);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.await.unwrap();
    }
    (during, rate)
}
