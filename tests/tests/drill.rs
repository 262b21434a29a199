//! `switchyard drill`: the control plane tells every filter, through the fleet
//! exchange, to fail a share of one target's attempts for a bounded time; the
//! drill reports how fail-over coped (requests affected, share the fallbacks
//! served, added latency, the circuit opening and closing) and passes or fails
//! against its thresholds; it aborts when more requests than its error budget
//! fail for clients, and shows in `switchyard status` while it runs. And
//! `switchyard status` shows fleet-wide rates over the last minute.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served};

fn cli(paths: &Paths, gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(&paths.switchyard)
        .args(args)
        .arg("--status-addr")
        .arg(gw.status.to_string())
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .expect("switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(paths: &Paths, gw: &Gateway) -> Value {
    let out = std::process::Command::new(&paths.switchyard)
        .args(["status", "--json", "--status-addr"])
        .arg(gw.status.to_string())
        .output()
        .expect("switchyard status");
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

async fn gateway(paths: &Paths, dir: &Scratch) -> (Gateway, Mock, Mock) {
    let a = Mock::start(paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/gpt", "b/claude"])
        .route("solo", &["a/gpt"])
        .yaml("circuit_breaker: { consecutive_failures: 3, base_open_ms: 1000, max_open_ms: 1000 }\n")
        .start(paths, dir)
        .await;
    (gw, a, b)
}

/// Requests to `model` every 20 ms until stopped; counts answers by status class.
fn load(gw: &Gateway, model: &'static str) -> (Arc<AtomicBool>, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let (url, s, f) = (gw.at("/v1/chat/completions"), stop.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !s.load(Ordering::Relaxed) {
            let r = client.post(&url).json(&chat_body(model)).send().await;
            if !r.is_ok_and(|r| r.status().is_success()) {
                f.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (stop, failed, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_need_the_admin_token_and_a_configured_target() {
    let paths = Paths::discover();
    let dir = Scratch::new("drill-refused");
    let (gw, _a, _b) = gateway(&paths, &dir).await;
    let url = format!("http://{}/drill/v1", gw.status);
    let spec = serde_json::json!({"target": "a/gpt", "duration_s": 5});
    let client = reqwest::Client::new();
    let r = client.post(&url).json(&spec).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token, no drill");
    let r = client
        .post(&url)
        .bearer_auth("wrong-token-wrong-token")
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (code, _, err) = cli(&paths, &gw, &["drill", "--target", "nobody/none", "--duration", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a target of a configured route"), "{err}");
    let (code, _, err) = cli(&paths, &gw, &["drill", "--target", "a/gpt", "--duration", "601"]);
    assert_eq!(code, 1);
    assert!(err.contains("duration_s: expected 1 to 600"), "{err}");
    let (code, _, err) = cli(&paths, &gw, &["drill", "abort"]);
    assert_eq!(code, 1);
    assert!(err.contains("no drill is running"), "{err}");
    // Nothing was injected: the primary still serves.
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("a".into(), "1".into())
    );
}

/// Needs the filter side: fault injection and drill counts in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fails_the_target_over_and_passes() {
    let paths = Paths::discover();
    let dir = Scratch::new("drill");
    let (gw, _a, _b) = gateway(&paths, &dir).await;
    // The target's latency before the drill.
    for _ in 0..10 {
        assert_eq!(
            served(&gw.chat(&chat_body("chat"), &[]).await),
            ("a".into(), "1".into())
        );
    }
    // ...reaches the control plane with the next exchanges (every 250 ms).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (stop, failed, task) = load(&gw, "chat");

    let (paths2, status_addr, data_dir) = (paths.clone(), gw.status, gw.data_dir.clone());
    let drill = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&paths2.switchyard)
            .args([
                "drill",
                "--target",
                "a/gpt",
                "--share",
                "100",
                "--duration",
                "3",
                "--settle",
                "15",
            ])
            .args(["--max-added-ms", "1000", "--json", "--status-addr"])
            .arg(status_addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .output()
            .expect("switchyard drill");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    // While it runs, `status` shows it, and the fault is in force.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status(&paths, &gw);
    assert_eq!(s["drill"]["phase"], "injecting", "{s}");
    assert_eq!(s["drill"]["spec"]["target"], "a/gpt");
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r).0, "b", "the drill fails every attempt to a");
    // ...and the metrics show the drill's failures apart from real ones.
    let drilled = gw
        .filter_stat("switchyard_drill_failures_total.provider.a.model.gpt")
        .await
        .unwrap_or(0);
    assert!(drilled > 0, "no drill failures counted");

    let (code, out, err) = drill.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(v["phase"], "passed", "{v}");
    assert!(v["affected"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["rescued_percent"], 100.0, "{v}");
    assert!(v["added_ms"].as_f64().is_some(), "{v}");
    assert_eq!(v["circuit_opened"], true, "{v}");
    assert_eq!(v["circuit_closed"], true, "{v}");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no client saw an error");
    // After the drill the primary serves again.
    assert_eq!(
        served(&gw.chat(&chat_body("chat"), &[]).await),
        ("a".into(), "1".into())
    );
}

/// Needs the filter side: with no fallback, the drill's failures reach
/// clients and it aborts on its error budget, long before its duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_aborts_when_its_error_budget_is_spent() {
    let paths = Paths::discover();
    let dir = Scratch::new("drill-abort");
    let (gw, _a, _b) = gateway(&paths, &dir).await;
    let (stop, _failed, task) = load(&gw, "solo");
    let t = std::time::Instant::now();
    let (paths2, status_addr, data_dir) = (paths.clone(), gw.status, gw.data_dir.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&paths2.switchyard)
            .args([
                "drill",
                "--target",
                "a/gpt",
                "--share",
                "50",
                "--duration",
                "20",
                "--error-budget",
                "3",
                "--json",
            ])
            .arg("--status-addr")
            .arg(status_addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .output()
            .expect("switchyard drill");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(code, Some(1));
    assert_eq!(v["phase"], "aborted", "{v}");
    assert!(v["lost"].as_u64().unwrap() > 3, "{v}");
    assert!(t.elapsed() < Duration::from_secs(15), "aborted after {:?}", t.elapsed());
    // The fault is lifted: requests to the primary succeed again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..5 {
        assert_eq!(
            served(&gw.chat(&chat_body("solo"), &[]).await),
            ("a".into(), "1".into())
        );
    }
}

/// Needs the filter side: per-route counts and latency buckets in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_fleet_wide_rates_over_the_last_minute() {
    let paths = Paths::discover();
    let dir = Scratch::new("status-rates");
    let (gw, _a, _b) = gateway(&paths, &dir).await;
    for _ in 0..6 {
        assert_eq!(
            served(&gw.chat(&chat_body("chat"), &[]).await),
            ("a".into(), "1".into())
        );
    }
    for _ in 0..2 {
        let r = gw
            .chat(&chat_body("chat"), &[("x-mock", "a:status=503;b:delay_ms=300")])
            .await;
        assert_eq!(served(&r), ("b".into(), "2".into()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = status(&paths, &gw);
        if s["rates"]["routes"]["chat"]["requests"] == 8 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rates for route chat: {}",
            s["rates"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let chat = &s["rates"]["routes"]["chat"];
    assert_eq!(chat["failover_by_class"]["server_error"], 0.25, "{chat}");
    assert_eq!(chat["served_by_position"]["1"], 0.75, "{chat}");
    assert_eq!(chat["served_by_position"]["2"], 0.25, "{chat}");
    let b = &s["rates"]["targets"]["b/claude"];
    assert_eq!(b["count"], 2, "{s}");
    assert!(b["p50_ms"].as_f64().unwrap() >= 250.0, "{b}");
    assert!(
        s["rates"]["targets"]["a/gpt"]["p99_ms"].as_f64().unwrap() < 250.0,
        "{s}"
    );
    // And for people.
    let out = std::process::Command::new(&paths.switchyard)
        .args(["status", "--status-addr"])
        .arg(gw.status.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("server_error 25.0%") && text.contains("#2 25.0%"),
        "{text}"
    );
}
