//! Fleet reports: what one report may do to the fleet's state. The exchange is
//! unauthenticated (mTLS is another issue), so every report is bounded before it
//! counts: a node the control plane serves, configured targets only, clamped
//! counts, a bounded body; huge counts are applied at once, so no report stalls
//! the control plane. And each report names the Envoy that sent it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_core::fleet::{MAX_ATTEMPTS_PER_REPORT, MAX_OUTCOMES, MAX_REPORT_BYTES};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

const BREAKER: &str = "circuit_breaker: { consecutive_failures: 3, base_open_ms: 10000, max_open_ms: 60000 }\n";

/// `switchyard status --json`.
fn status(paths: &Paths, gw: &Gateway) -> Value {
    let out = std::process::Command::new(&paths.switchyard)
        .args(["status", "--json", "--status-addr", &gw.status.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// POSTs a report body to the control plane's exchange: (status, answer, time taken).
async fn exchange(gw: &Gateway, body: Vec<u8>) -> (u16, String, Duration) {
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("http://{}/fleet/v1/exchange", gw.status))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body)
        .send()
        .await
        .expect("the exchange answers");
    let code = r.status().as_u16();
    (code, r.text().await.unwrap_or_default(), t.elapsed())
}

fn report(node: &str, outcomes: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"node": node, "outcomes": outcomes})).unwrap()
}

async fn chat_model(url: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(model))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_oversized_reports_are_bounded() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet-reports");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml(BREAKER)
        .start(&paths, &dir)
        .await;
    let node = status(&paths, &gw)["nodes"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();

    // A node that has no xDS stream to this control plane: refused.
    let (code, answer, _) = exchange(
        &gw,
        report("intruder", json!([{"target": "a/m-a", "ok": 0, "failed": 99}])),
    )
    .await;
    assert_eq!(code, 403, "{answer}");
    // Too large, too many outcomes, not a report, a target twice: refused.
    let (code, _, _) = exchange(&gw, vec![b' '; MAX_REPORT_BYTES + 1]).await;
    assert_eq!(code, 413);
    let many: Vec<Value> = (0..=MAX_OUTCOMES)
        .map(|i| json!({"target": format!("a/m{i}"), "ok": 1, "failed": 0}))
        .collect();
    let (code, answer, _) = exchange(&gw, report(&node, json!(many))).await;
    assert_eq!((code, answer.contains("outcomes")), (400, true), "{answer}");
    let (code, _, _) = exchange(&gw, report(&node, json!([{"target": "a/m-a", "ok": -1, "failed": 0}]))).await;
    assert_eq!(code, 400);
    let twice = json!([{"target": "b/m-b", "ok": 1, "failed": 0}, {"target": "b/m-b", "ok": 0, "failed": 9}]);
    let (code, _, _) = exchange(&gw, report(&node, twice)).await;
    assert_eq!(code, 400);
    // A target no route names: accepted, and ignored.
    let (code, _, _) = exchange(
        &gw,
        report(
            &node,
            json!([{"target": "evil/made-up", "ok": 0, "failed": 600_000_000u64}]),
        ),
    )
    .await;
    assert_eq!(code, 200);
    assert!(status(&paths, &gw)["targets"].get("evil/made-up").is_none());

    // Huge counts on a configured target (the fallback b): answered at once,
    // totals clamped. 6e8 failures took ~15 s before; u64::MAX never returned.
    let mut took = Vec::new();
    for failed in [600_000_000u64, u64::MAX] {
        let (code, answer, t) = exchange(
            &gw,
            report(
                &node,
                json!([{"target": "b/m-b", "ok": u64::MAX, "failed": failed, "latency_ms_sum": u64::MAX}]),
            ),
        )
        .await;
        assert_eq!(code, 200, "{answer}");
        took.push(t);
    }
    // Fifty at once, while the status endpoint and a config push must still answer.
    let flood: Vec<_> = (0..50)
        .map(|_| {
            let (status_addr, node) = (gw.status, node.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("http://{status_addr}/fleet/v1/exchange"))
                    .body(report(&node, json!([{"target": "b/m-b", "ok": 0, "failed": u64::MAX}])))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let t = Instant::now();
    let s = status(&paths, &gw);
    let status_took = t.elapsed();
    for f in flood {
        assert_eq!(f.await.unwrap().unwrap(), 200);
    }
    let b_view = &s["targets"]["b/m-b"];
    assert!(
        b_view["failed"].as_u64().unwrap() <= 52 * MAX_ATTEMPTS_PER_REPORT,
        "{b_view}"
    );
    assert!(
        b_view["ok"].as_u64().unwrap() <= 2 * MAX_ATTEMPTS_PER_REPORT,
        "{b_view}"
    );
    println!(
        "huge reports answered in {:?} (6e8 failures) and {:?} (u64::MAX); status during a flood of 50 in {status_took:?}",
        took[0], took[1]
    );
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "{took:?}");
    assert!(status_took < Duration::from_secs(2), "{status_took:?}");

    // Config pushes still flow: a new alias serves within a few seconds.
    assert_ne!(chat_model(&gw.url, "chat2").await, 200);
    let config = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        config.replace("routes:\n", "routes:\n  - { model: chat2, chain: [a/m-a] }\n"),
    )
    .unwrap();
    let t = Instant::now();
    while chat_model(&gw.url, "chat2").await != 200 {
        assert!(t.elapsed() < Duration::from_secs(5), "the config push did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And requests are served (the forged failures set b aside; a answers).
    assert_eq!(chat_model(&gw.url, "chat").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_name_the_envoy_that_sent_them() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet-reporters");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/m-a"])
        .yaml(BREAKER)
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    for url in &gw.urls {
        assert_eq!(chat_model(url, "chat").await, 200);
    }
    let t = Instant::now();
    loop {
        let s = status(&paths, &gw);
        let nodes: BTreeSet<String> = s["nodes"].as_object().unwrap().keys().cloned().collect();
        let reporters: BTreeSet<String> = s["targets"]["a/m-a"]["reporters"]
            .as_array()
            .map(|r| r.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if reporters.len() == 2 {
            assert_eq!(reporters, nodes, "{s}");
            println!("reporters named within {:?}: {reporters:?}", t.elapsed());
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "reporters not named: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
