//! Control planes sharing one database lend each meter's allowance between
//! them: two `switchyard serve` on one database file (each with its own data
//! directory and ports), the first with two Envoys, the second with one, and
//! concurrent clients on all three: 16 per Envoy of one key with a small daily
//! budget, 4 per Envoy of one key with requests per minute. What the fleet
//! admits stays within each limit (the budget: plus what requests in flight use
//! beyond their estimates, 0 here: `max_tokens` bounds the answers), and the
//! Envoys of both control planes are served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch};

/// Price per million tokens, input and output alike.
const PRICE: f64 = 100.0;
/// The budgeted key's daily budget (USD).
const BUDGET_USD: f64 = 0.3;
/// The other key's requests per minute.
const RPM: u64 = 40;
/// Clients per Envoy: of the budgeted key, of the other.
const BUDGET_CLIENTS: usize = 16;
const RPM_CLIENTS: usize = 4;

#[derive(Default)]
struct Tally {
    /// Admitted, per Envoy.
    ok: [AtomicU64; 3],
    spent_micros: AtomicU64,
    max_request_micros: AtomicU64,
    budget_exceeded: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

fn minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 / 60_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_database_lend_the_limits_between_them() {
    let paths = Paths::discover();
    let dir = Scratch::new("replicas");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let database = dir.0.join("shared.db");
    let mut gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .yaml(&format!(
            "prices:\n  a/gpt: {{ input: {PRICE}, output: {PRICE} }}\ngovernance: {{ database: \"{}\" }}\n",
            database.display()
        ))
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    let other = gw.start_replica(&paths).await;
    let urls = [gw.urls[0].clone(), gw.urls[1].clone(), other.urls[0].clone()];

    // Keys are made on the first control plane; the second reads them from
    // the database (once a second).
    let (_, probe) = gw.create_key(&json!({"name": "probe"})).await;
    gw.wait_for_key(&probe, "chat").await;
    other.wait_for_key(&probe, "chat").await;
    let (budget_id, budget_key) = gw
        .create_key(&json!({"name": "budgeted", "limits": {"budget_day_usd": BUDGET_USD}}))
        .await;
    let (rpm_id, rpm_key) = gw
        .create_key(&json!({"name": "per-minute", "limits": {"rpm": RPM}}))
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;

    let budget = Arc::new(Tally::default());
    let rpm = Arc::new(Tally::default());
    // Requests of the per-minute key admitted per minute window, per Envoy.
    let minutes: Arc<Mutex<BTreeMap<u64, [u64; 3]>>> = Arc::default();
    let t0 = Instant::now();
    let body = json!({
        "model": "chat", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello to the budget"}]
    });
    let mut budget_tasks = Vec::new();
    let mut rpm_tasks = Vec::new();
    for (envoy, url) in urls.iter().enumerate() {
        for i in 0..BUDGET_CLIENTS + RPM_CLIENTS {
            let per_minute = i >= BUDGET_CLIENTS;
            let (url, body, minutes) = (url.clone(), body.clone(), minutes.clone());
            let (key, tally) = if per_minute {
                (rpm_key.clone(), rpm.clone())
            } else {
                (budget_key.clone(), budget.clone())
            };
            let task = tokio::spawn(async move {
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
                    let w = minute();
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    match (status, v["error"]["code"].as_str()) {
                        (200, _) => {
                            let u = &v["usage"];
                            let tokens =
                                u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0);
                            let micros = (tokens as f64 * PRICE).round() as u64;
                            tally.ok[envoy].fetch_add(1, Ordering::Relaxed);
                            tally.spent_micros.fetch_add(micros, Ordering::Relaxed);
                            tally.max_request_micros.fetch_max(micros, Ordering::Relaxed);
                            if per_minute {
                                minutes.lock().unwrap().entry(w).or_default()[envoy] += 1;
                            }
                        }
                        (429, Some("budget_exceeded")) if !per_minute => {
                            tally.budget_exceeded.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        (429, Some("rate_limit_exceeded")) => {
                            // Allowance on its way, or the minute is spent: wait
                            // as Retry-After says (shortened to keep the test fast).
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => {
                            tally.other.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            });
            if per_minute {
                rpm_tasks.push(task);
            } else {
                budget_tasks.push(task);
            }
        }
    }
    for t in budget_tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    // The per-minute clients run as long as the budgeted ones did.
    for t in &rpm_tasks {
        t.abort();
    }
    for t in rpm_tasks {
        let _ = t.await;
    }

    let load = |t: &AtomicU64| t.load(Ordering::Relaxed);
    let ok = |t: &Tally| [load(&t.ok[0]), load(&t.ok[1]), load(&t.ok[2])];
    let limit = (BUDGET_USD * 1e6) as u64;
    let spent = load(&budget.spent_micros);
    let one = load(&budget.max_request_micros).max(1);
    let over = spent as i64 - limit as i64;
    println!(
        "budget: {limit} µUSD, spent {spent} µUSD in {:.1} s: {over:+} µUSD ({:+.2} requests of {one} µUSD); \
         admitted per Envoy (control plane 1: 2 Envoys, control plane 2: 1) {:?}; \
         refused: {} budget_exceeded, {} while allowance was on its way, {} other",
        elapsed.as_secs_f64(),
        over as f64 / one as f64,
        ok(&budget),
        load(&budget.budget_exceeded),
        load(&budget.refused),
        load(&budget.other),
    );
    let minutes = minutes.lock().unwrap().clone();
    println!(
        "requests per minute: limit {RPM}, admitted per minute window and Envoy {minutes:?}; {} refused, {} other",
        load(&rpm.refused),
        load(&rpm.other),
    );
    for (g, name) in [(&gw, "control plane 1"), (&other, "control plane 2")] {
        for id in [&budget_id, &rpm_id] {
            let (_, v) = g.admin_call("GET", &format!("/admin/v1/keys/{id}"), None).await;
            println!("{name}: {id}: {}", v["meters"]);
        }
    }

    assert_eq!(load(&budget.other) + load(&rpm.other), 0, "unexpected answers");
    assert_eq!(
        load(&budget.budget_exceeded),
        (3 * BUDGET_CLIENTS) as u64,
        "every budgeted client ended on budget_exceeded"
    );
    // What the fleet admits never exceeds the budget; requests in flight may
    // use more than their estimates, which cover these answers.
    assert!(
        spent <= limit + 3 * one,
        "spent {spent} past the budget {limit} by more than one request per Envoy ({one})"
    );
    assert!(spent * 10 >= limit * 9, "only {spent} of {limit} could be spent");
    let admitted = ok(&budget);
    assert!(
        admitted[0] + admitted[1] > 0 && admitted[2] > 0,
        "the Envoys of both control planes are served: {admitted:?}"
    );
    // Requests are known exactly at admission: never one past the limit.
    for (w, per_envoy) in &minutes {
        let n: u64 = per_envoy.iter().sum();
        assert!(
            n <= RPM,
            "minute {w}: {n} requests admitted, limit {RPM}: {per_envoy:?}"
        );
    }
    let per_minute = ok(&rpm);
    assert!(
        per_minute[0] + per_minute[1] > 0 && per_minute[2] > 0,
        "the Envoys of both control planes are served: {per_minute:?}"
    );
}
