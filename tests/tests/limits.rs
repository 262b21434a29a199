//! Requests and tokens per minute, fleet-wide: three Envoys hammered by
//! concurrent clients of one key. What each minute admitted is counted from the
//! answers (tokens from their `usage`, as the gateway charges them) and compared
//! with the limit; the overshoot is printed and bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch};

fn minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 / 60_000
}

/// Per minute window: (requests admitted, tokens used, 429s with the gateway mark).
type Windows = BTreeMap<u64, (u64, u64, u64)>;

async fn hammer(gw: &Gateway, key: &str, clients_per_envoy: usize, for_: Duration, max_tokens: u64) -> Windows {
    let windows = Arc::new(Mutex::new(Windows::new()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for url in &gw.urls {
        for _ in 0..clients_per_envoy {
            let (url, key, windows) = (url.clone(), key.to_string(), windows.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let body = json!({
                    "model": "chat", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": "Count the tokens"}]
                });
                while t0.elapsed() < for_ {
                    let r = client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let w = minute();
                    let status = r.status().as_u16();
                    let gateway = r.headers().get("x-switchyard-limit").is_some();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    {
                        let mut m = windows.lock().unwrap();
                        let e = m.entry(w).or_default();
                        match status {
                            200 => {
                                e.0 += 1;
                                e.1 += v["usage"]["total_tokens"].as_u64().unwrap_or(0);
                            }
                            429 => {
                                assert!(gateway, "a 429 without the gateway's mark: {v}");
                                e.2 += 1;
                            }
                            s => panic!("unexpected {s}: {v}"),
                        }
                    }
                    if status == 429 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(windows).unwrap().into_inner().unwrap()
}

async fn three_envoys(dir: &Scratch, paths: &Paths, a: &Mock) -> Gateway {
    let mut gw = Gateway::builder()
        .provider(a)
        .route("chat", &["a/gpt"])
        // Prices make the adapter read answers' usage (what tokens are charged).
        .yaml("prices:\n  a/gpt: { input: 0.01, output: 0.01 }\n")
        .start(paths, dir)
        .await;
    gw.add_envoy(paths).await;
    gw.add_envoy(paths).await;
    let (_, probe) = gw.create_key(&json!({"name": "probe"})).await;
    gw.wait_for_key(&probe, "chat").await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_hold_across_three_envoys() {
    let paths = Paths::discover();
    let dir = Scratch::new("limits-rpm");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = three_envoys(&dir, &paths, &a).await;
    const RPM: u64 = 60;
    let (_, key) = gw.create_key(&json!({"name": "rpm", "limits": {"rpm": RPM}})).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let windows = hammer(&gw, &key, 8, Duration::from_secs(6), 8).await;
    for (w, (ok, _, refused)) in &windows {
        println!("minute {w}: {ok} requests admitted (limit {RPM}), {refused} refused with 429");
        assert!(*ok <= RPM, "RPM overshoot: {ok} > {RPM}");
        assert!(*refused > 0, "the limit was never reached");
    }
    let admitted: u64 = windows.values().map(|w| w.0).sum();
    assert!(admitted >= RPM * 8 / 10, "only {admitted} admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_count_the_tokens_really_used() {
    let paths = Paths::discover();
    let dir = Scratch::new("limits-tpm");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let gw = three_envoys(&dir, &paths, &a).await;
    const TPM: u64 = 600;
    let (_, key) = gw.create_key(&json!({"name": "tpm", "limits": {"tpm": TPM}})).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // max_tokens 8: the estimate at admission is the prompt (bytes / 4) plus 8.
    let windows = hammer(&gw, &key, 8, Duration::from_secs(6), 8).await;
    for (w, (ok, tokens, refused)) in &windows {
        println!("minute {w}: {tokens} tokens in {ok} requests (limit {TPM} tokens), {refused} refused with 429");
        // Estimates cover what these requests use: no overshoot expected; one
        // request per Envoy is the documented bound.
        let per_request = tokens / (*ok).max(1);
        assert!(*tokens <= TPM + 3 * per_request, "TPM overshoot: {tokens} > {TPM}");
        assert!(*refused > 0, "the limit was never reached");
    }
}
