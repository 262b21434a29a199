//! Budgets are fleet-wide: three Envoys, 32 concurrent clients each, one key
//! with a daily budget. Every request is charged what it really used; the spend
//! past the budget is measured and bounded by one request's cost per Envoy —
//! with estimates that cover what requests use, and with estimates that fall
//! short (the filters learn by how much, and pay what requests use beyond
//! their estimates out of credit).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch};

/// Price per million tokens, input and output alike.
const PRICE: f64 = 100.0;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    spent_micros: AtomicU64,
    max_request_micros: AtomicU64,
    budget_exceeded: AtomicU64,
    refilling: AtomicU64,
    other: AtomicU64,
}

/// Runs 3 Envoys × 32 clients of one key with `budget_usd` until every client
/// is refused with `budget_exceeded` (or 20 s pass); returns (budget, spent, one
/// request's cost) in micro-USD.
async fn overshoot(tag: &str, extra_yaml: &str, budget_usd: f64, body: Value) -> (u64, u64, u64) {
    let paths = Paths::discover();
    let dir = Scratch::new(tag);
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .yaml(&format!(
            "prices:\n  a/gpt: {{ input: {PRICE}, output: {PRICE} }}\n{extra_yaml}"
        ))
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    gw.add_envoy(&paths).await;
    // A key to turn authentication on and wait with, then the budgeted one.
    let (_, probe) = gw.create_key(&json!({"name": "probe"})).await;
    gw.wait_for_key(&probe, "chat").await;
    let (id, key) = gw
        .create_key(&json!({"name": "budgeted", "limits": {"budget_day_usd": budget_usd}}))
        .await;
    // The table with the new key reaches every Envoy within a second.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let tally = Arc::new(Tally::default());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for envoy in 0..3 {
        for _ in 0..32 {
            let (url, key, tally, body) = (gw.urls[envoy].clone(), key.clone(), tally.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while t0.elapsed() < Duration::from_secs(20) {
                    let Ok(r) = client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    match (status, v["error"]["code"].as_str()) {
                        (200, _) => {
                            let u = &v["usage"];
                            let tokens =
                                u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0);
                            let micros = (tokens as f64 * PRICE).round() as u64;
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            tally.spent_micros.fetch_add(micros, Ordering::Relaxed);
                            tally.max_request_micros.fetch_max(micros, Ordering::Relaxed);
                        }
                        (429, Some("budget_exceeded")) => {
                            tally.budget_exceeded.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        (429, Some("rate_limit_exceeded")) => {
                            // This Envoy's share is on its way: the client waits
                            // as Retry-After says (shortened to keep the test fast).
                            tally.refilling.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => {
                            tally.other.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let budget = (budget_usd * 1e6) as u64;
    let spent = tally.spent_micros.load(Ordering::Relaxed);
    let one = tally.max_request_micros.load(Ordering::Relaxed).max(1);
    let over = spent as i64 - budget as i64;
    println!(
        "{tag}: budget {budget} µUSD, spent {spent} µUSD over {} requests in {:.1} s: overshoot {over} µUSD ({:+.2} requests of {one} µUSD; bound: 3, one per Envoy); \
         refused: {} budget_exceeded, {} while allowance was on its way, {} other",
        tally.ok.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        over as f64 / one as f64,
        tally.budget_exceeded.load(Ordering::Relaxed),
        tally.refilling.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    let (_, v) = gw.admin_call("GET", &format!("/admin/v1/keys/{id}"), None).await;
    println!("{tag}: control plane's meter: {}", v["meters"]);
    assert_eq!(tally.other.load(Ordering::Relaxed), 0, "unexpected answers");
    assert_eq!(
        tally.budget_exceeded.load(Ordering::Relaxed),
        96,
        "every client ended on budget_exceeded"
    );
    (budget, spent, one)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_overshoot_with_three_envoys_and_96_clients() {
    // `max_tokens` bounds the answer: the estimate covers what a request uses.
    let body = json!({
        "model": "chat", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello to the budget"}]
    });
    let (budget, spent, one) = overshoot("budget-bounded", "", 0.2, body).await;
    assert!(
        spent <= budget + 3 * one,
        "spent {spent} past the budget {budget} by more than one request per Envoy ({one})"
    );
    // Estimates hold back at most a few requests' worth.
    assert!(spent * 10 >= budget * 9, "only {spent} of {budget} could be spent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_overshoot_when_estimates_fall_short() {
    // No max_tokens and no completion estimate: each request is pre-charged its
    // prompt only, but the answer repeats the (long) system prompt. Filters
    // learn the ratio of real use to estimate per key and pre-charge that.
    let system = "Repeat this sentence about budgets and limits, word for word, many times over. ".repeat(6);
    let body = json!({
        "model": "chat",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Go"}]
    });
    let (budget, spent, one) = overshoot(
        "budget-underestimated",
        "governance: { completion_estimate: 0 }\n",
        2.0,
        body,
    )
    .await;
    // What requests use beyond their estimates comes out of each Envoy's
    // credit (spent one request at a time near its end) or is not lent again:
    // past the budget by at most one request's under-estimate per Envoy.
    assert!(
        spent <= budget + 3 * one,
        "spent {spent} past the budget {budget} by more than one request per Envoy ({one})"
    );
    assert!(spent + 3 * one >= budget, "only {spent} of {budget} could be spent");
}
