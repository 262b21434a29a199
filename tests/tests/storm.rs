//! Load amplification under a 100 % failure storm: every provider fails every
//! request. Plans never repeat a target, so no provider ever sees more than the
//! client's own request rate; the retry budget bounds same-target retries and
//! never fail-over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 8;

/// Sends the storm; returns (client requests, upstream attempts per provider).
async fn storm(gw: &Gateway, mocks: &[&Mock]) -> (usize, Vec<usize>) {
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = gw.at("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..PER_CLIENT {
                let r = client
                    .post(&url)
                    .header("x-mock", "*:status=503,delay_ms=40")
                    .json(&chat_body("chat"))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_server_error());
                let v: Value = r.json().await.unwrap();
                assert!(v["error"]["attempts"].as_array().is_some_and(|a| !a.is_empty()), "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut per_provider = Vec::new();
    for m in mocks {
        per_provider.push(m.requests().await.len());
    }
    (CLIENTS * PER_CLIENT, per_provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_storm_amplification() {
    let paths = Paths::discover();
    let dir = Scratch::new("storm");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Openai, &[]);
    let c = Mock::start(&paths, &dir.0, "c", Dialect::Anthropic, &[]);

    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .provider(&c)
        .route("chat", &["a/m", "b/m", "c/m"])
        .start(&paths, &dir)
        .await;
    let (sent, per_provider) = storm(&gw, &[&a, &b, &c]).await;
    let total: usize = per_provider.iter().sum();
    println!(
        "no budget: {sent} client requests -> {per_provider:?} upstream (x{:.2})",
        total as f64 / sent as f64
    );
    for n in &per_provider {
        assert!(
            *n <= sent,
            "a provider saw more requests ({n}) than clients sent ({sent})"
        );
    }
    assert_eq!(total, 3 * sent, "every request walked its whole plan");
    drop(gw);

    // Same-target retries (3 attempts per target) under a 20 % retry budget: the
    // budget bounds the retries, and only them.
    let dir2 = Scratch::new("storm-budget");
    let (a2, b2, c2) = (
        Mock::start(&paths, &dir2.0, "a", Dialect::Openai, &[]),
        Mock::start(&paths, &dir2.0, "b", Dialect::Openai, &[]),
        Mock::start(&paths, &dir2.0, "c", Dialect::Anthropic, &[]),
    );
    let gw = Gateway::builder()
        .provider(&a2)
        .provider(&b2)
        .provider(&c2)
        .yaml("routes:\n  - { model: chat, chain: [a/m, b/m, c/m], policy: { attempts_per_target: 3 } }\n")
        .yaml("limits: { max_attempts: 9 }\n")
        .yaml("retry: { budget_percent: 20, min_retry_concurrency: 1 }\n")
        .start(&paths, &dir2)
        .await;
    let (sent, per_provider) = storm(&gw, &[&a2, &b2, &c2]).await;
    let total: usize = per_provider.iter().sum();
    let factor = total as f64 / sent as f64;
    println!("budget 20%, 3 attempts per target: {sent} client requests -> {per_provider:?} upstream (x{factor:.2})");
    for n in &per_provider {
        // Without the budget each provider would see 3x the client rate.
        assert!(
            (*n as f64) < 1.5 * sent as f64,
            "same-target retries beyond the budget: {per_provider:?} for {sent}"
        );
    }
    assert!(factor >= 3.0, "every request still walked every provider: x{factor:.2}");
    drop(gw);

    // The budget never blocks fail-over: a primary failing every request under a
    // 20 % budget, a healthy fallback, and every request answered.
    let dir3 = Scratch::new("storm-fallback");
    let (a3, b3) = (
        Mock::start(&paths, &dir3.0, "a", Dialect::Openai, &[]),
        Mock::start(&paths, &dir3.0, "b", Dialect::Anthropic, &[]),
    );
    let gw = Gateway::builder()
        .provider(&a3)
        .provider(&b3)
        .route("chat", &["a/m", "b/m"])
        .yaml("retry: { budget_percent: 20, min_retry_concurrency: 1 }\n")
        .start(&paths, &dir3)
        .await;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = gw.at("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut failed = 0;
            for _ in 0..PER_CLIENT {
                let r = client
                    .post(&url)
                    .header("x-mock", "a:status=503,delay_ms=20")
                    .json(&chat_body("chat"))
                    .send()
                    .await
                    .unwrap();
                failed += usize::from(!r.status().is_success());
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    println!(
        "budget 20%, primary down: {failed} of {} requests failed",
        CLIENTS * PER_CLIENT
    );
    assert_eq!(failed, 0, "the retry budget blocked fail-over to a healthy target");
    assert_eq!(b3.requests().await.len(), CLIENTS * PER_CLIENT);
}
