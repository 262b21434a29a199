//! After a control-plane restart every Envoy resyncs fast, however long the
//! control plane was away: the bootstrap caps Envoy's ADS reconnect back-off at
//! 1 s (Envoy's default grows to 30 s, which made a resync take 1 s one time and
//! 10 s the next).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

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

/// Time until every Envoy serves `chat` from `provider` (at most 15 s).
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resync_after_a_control_plane_restart_is_fast() {
    let paths = Paths::discover();
    let dir = Scratch::new("resync");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    // One Envoy on delta xDS, one on state of the world.
    let mut gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .delta()
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    converge(&gw, "a").await;
    let config = std::fs::read_to_string(&gw.config).unwrap();
    let swapped = config.replace("[a/m-a, b/m-b]", "[b/m-b, a/m-a]");

    // The longer the control plane is away, the longer Envoy's default back-off
    // would make it wait once it is back.
    let mut resyncs = Vec::new();
    for (i, away_ms) in [300u64, 2000, 5000, 9000].into_iter().enumerate() {
        gw.stop_control_plane();
        let (next, provider) = if i % 2 == 0 { (&swapped, "b") } else { (&config, "a") };
        std::fs::write(&gw.config, next).unwrap();
        tokio::time::sleep(Duration::from_millis(away_ms)).await;
        gw.restart_control_plane(&paths);
        let took = converge(&gw, provider).await;
        println!("away {away_ms} ms: both Envoys resynced {took:?} after the restart");
        resyncs.push(took);
    }
    assert!(
        resyncs.iter().all(|t| *t < Duration::from_secs(2)),
        "slow resync: {resyncs:?}"
    );
}
