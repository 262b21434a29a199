//! Load amplification under a 100 % failure storm: every provider fails every
//! request. Plans never repeat a target, so no provider ever sees more than the
//! client's own request rate; an optional Envoy retry budget also caps the total.

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
        .route("chat", &["a/m", "b/m", "c/m"])
        .yaml("retry: { budget_percent: 20, min_retry_concurrency: 1 }\n")
        .start(&paths, &dir2)
        .await;
    let (sent, per_provider) = storm(&gw, &[&a2, &b2, &c2]).await;
    let total: usize = per_provider.iter().sum();
    let factor = total as f64 / sent as f64;
    println!("budget 20%: {sent} client requests -> {per_provider:?} upstream (x{factor:.2})");
    assert_eq!(per_provider[0], sent);
    assert!(factor < 2.0, "retry budget did not cap amplification: x{factor:.2}");
    let overflow = gw
        .stat("cluster.sy_provider_a.upstream_rq_retry_overflow")
        .await
        .unwrap_or(0);
    assert!(overflow > 0, "no retry was refused by the budget");
}
