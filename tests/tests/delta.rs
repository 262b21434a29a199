//! Incremental (delta) xDS with real Envoy: the gateway works, a config change
//! reaches it, a provider removed from the config is removed from Envoy, and
//! NACKs are reported. (That only changed resources are sent is unit-tested in
//! `control-plane/src/xds/delta.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn clusters(admin: &str) -> String {
    reqwest::get(format!("{admin}/clusters"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_xds_serves_updates_and_removals() {
    let paths = Paths::discover();
    let dir = Scratch::new("delta");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let c = Mock::start(&paths, &dir.0, "c", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .provider(&c)
        .route("chat", &["a/m-a", "b/m-b"])
        .delta()
        .start(&paths, &dir)
        .await;
    let bootstrap = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".bootstrap.yaml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(bootstrap.contains("api_type: DELTA_GRPC"));

    let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    assert!(clusters(&gw.admin).await.contains("sy_provider_c::"));

    // Drop provider c and swap the chain: the listener changes, b's and a's
    // clusters do not, c's is removed.
    let config = std::fs::read_to_string(&gw.config).unwrap();
    let without_c: String = config
        .lines()
        .filter(|l| !l.contains("name: c,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&gw.config, without_c.replace("[a/m-a, b/m-b]", "[b/m-b, a/m-a]")).unwrap();
    let url = gw.at("/v1/chat/completions");
    wait_until("the new route", || {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&chat_body("chat"))
                .send()
                .await
                .unwrap();
            r.headers().get("x-switchyard-provider").is_some_and(|p| p == "b")
        }
    })
    .await;
    let admin = gw.admin.clone();
    wait_until("cluster c removed", || {
        let admin = admin.clone();
        async move { !clusters(&admin).await.contains("sy_provider_c::") }
    })
    .await;
    // Removed through the delta response's `removed_resources`; a and b untouched.
    assert_eq!(gw.stat("cluster_manager.cluster_removed").await, Some(1));
    assert_eq!(gw.stat("cluster_manager.cluster_modified").await.unwrap_or(0), 0);

    // A NACK is reported over delta too.
    std::fs::write(&gw.config, config.replace(&gw.filter_file, "missing_filter")).unwrap();
    wait_until("a NACK", || async { gw.cp.output().contains("NACK") }).await;
}
