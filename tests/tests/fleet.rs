//! Several Envoys on one control plane: a config change reaches all of them; with
//! the control plane gone they keep serving their last config; when it is back
//! they reconnect and follow changes again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_at, chat_body, served};

async fn provider_of(url: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .timeout(Duration::from_secs(5))
        .json(&chat_body("chat"))
        .send()
        .await
        .ok()?;
    r.headers()
        .get("x-switchyard-provider")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Waits until every Envoy serves `chat` from `provider`; returns how long it took.
async fn converge(gw: &Gateway, provider: &str) -> Duration {
    let t = Instant::now();
    loop {
        let mut all = true;
        for url in &gw.urls {
            all &= provider_of(url).await.as_deref() == Some(provider);
        }
        if all {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "Envoys did not converge on {provider}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_envoys_follow_the_control_plane_and_survive_its_absence() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    gw.add_envoy(&paths).await;
    assert_eq!(gw.urls.len(), 3);
    converge(&gw, "a").await;

    let config = std::fs::read_to_string(&gw.config).unwrap();
    let swapped = config.replace("[a/m-a, b/m-b]", "[b/m-b, a/m-a]");
    std::fs::write(&gw.config, &swapped).unwrap();
    let took = converge(&gw, "b").await;
    println!("config change reached 3 Envoys in {took:?} (250 ms file poll included)");

    // Control plane gone: every Envoy keeps serving its last config.
    gw.stop_control_plane();
    for _ in 0..3 {
        for url in &gw.urls {
            assert_eq!(provider_of(url).await.as_deref(), Some("b"));
        }
    }

    // Back (with the file changed meanwhile): Envoys reconnect and resync.
    std::fs::write(&gw.config, &config).unwrap();
    gw.restart_control_plane(&paths);
    let took = converge(&gw, "a").await;
    println!("after the restart, 3 Envoys resynced in {took:?}");
    let out = std::process::Command::new(&paths.switchyard)
        .args(["status", "--json", "--status-addr", &gw.status.to_string()])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let connected = s["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["connected"] == true)
        .count();
    assert_eq!(connected, 3, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_reload_does_not_cut_streams_in_flight() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet-reload");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;

    // A stream of 8 chunks 300 ms apart, started before the change.
    let mut body = chat_body("chat");
    body["stream"] = serde_json::json!(true);
    let url = gw.at("/v1/chat/completions");
    let stream = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .header("x-mock", "a:chunk_delay_ms=300")
            .json(&body)
            .send()
            .await
            .unwrap();
        let provider = r.headers()["x-switchyard-provider"].to_str().unwrap().to_string();
        (provider, r.text().await)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, config.replace("[a/m-a, b/m-b]", "[b/m-b, a/m-a]")).unwrap();
    converge(&gw, "b").await;

    let (provider, text) = stream.await.unwrap();
    assert_eq!(provider, "a");
    let text = text.expect("the stream in flight was cut by the reload");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_behind_one_envoy_is_skipped_by_the_others_within_a_second() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet-state");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("circuit_breaker: { consecutive_failures: 3, base_open_ms: 10000, max_open_ms: 60000 }\n")
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    gw.add_envoy(&paths).await;
    // Every request asks `a` to fail.
    let chat =
        |url: String| async move { served(&chat_at(&url, &chat_body("chat"), &[("x-mock", "a:status=503")]).await) };
    // Envoy 0 alone sees a fail three times.
    for _ in 0..3 {
        assert_eq!(chat(gw.urls[0].clone()).await, ("b".to_string(), "2".to_string()));
    }
    let failed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Envoys 1 and 2 never saw a fail, yet leave it out: their first requests go
    // straight to b.
    for url in &gw.urls[1..] {
        assert_eq!(
            chat(url.clone()).await,
            ("b".to_string(), "1".to_string()),
            "{url} still tried a"
        );
    }
    assert_eq!(a.requests().await.len(), 3, "only Envoy 0's three attempts reached a");
    println!("fleet state reached the other Envoys within {:?}", failed_at.elapsed());

    let out = std::process::Command::new(&paths.switchyard)
        .args(["status", "--status-addr", &gw.status.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("a/m-a") && table.contains("open ("), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_nothing() {
    let paths = Paths::discover();
    let dir = Scratch::new("fleet-reload-load");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .start(&paths, &dir)
        .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (url, stop) = (gw.at("/v1/chat/completions"), stop.clone());
        loops.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut bad) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.post(&url).json(&chat_body("chat")).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(_) => ok += 1,
                        Err(e) => bad.push(e.to_string()),
                    },
                    Ok(r) => bad.push(format!("status {}", r.status())),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            (ok, bad)
        }));
    }
    // Five filter-config changes (the chain order flips), each a new listener.
    let config = std::fs::read_to_string(&gw.config).unwrap();
    let t = Instant::now();
    for i in 0..5 {
        let next = if i % 2 == 0 {
            config.replace("[a/m-a, b/m-b]", "[b/m-b, a/m-a]")
        } else {
            config.clone()
        };
        std::fs::write(&gw.config, next).unwrap();
        converge(&gw, if i % 2 == 0 { "b" } else { "a" }).await;
    }
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut bad) = (0, Vec::new());
    for l in loops {
        let (o, b) = l.await.unwrap();
        ok += o;
        bad.extend(b);
    }
    println!(
        "5 reloads in {took:?} under load: {ok} requests answered, {} failed",
        bad.len()
    );
    assert!(bad.is_empty(), "requests failed during reloads: {bad:?}");
    assert!(ok > 50);
}
