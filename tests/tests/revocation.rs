//! Key changes reach the whole fleet within a second: with three Envoys, a key
//! created, restricted, limited and revoked through the admin API is in force on every one
//! of them within 1 s (the table travels with the fleet exchange, every 250 ms).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body};

/// Polls every Envoy until `key` gets `status` on each; returns the slowest
/// Envoy's time since `t0`.
async fn in_force(gw: &Gateway, key: &str, model: &str, status: u16, t0: Instant) -> Duration {
    let mut slowest = Duration::ZERO;
    let tasks: Vec<_> = gw
        .urls
        .iter()
        .map(|url| {
            let (url, key, model) = (url.clone(), key.to_string(), model.to_string());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let r = client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&chat_body(&model))
                        .send()
                        .await
                        .unwrap();
                    if r.status().as_u16() == status {
                        return t0.elapsed();
                    }
                    assert!(t0.elapsed() < Duration::from_secs(5), "{url}: still {}", r.status());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_are_in_force_on_every_envoy_within_a_second() {
    let paths = Paths::discover();
    let dir = Scratch::new("revocation");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .route("chat", &["a/gpt"])
        .route("other", &["a/gpt-2"])
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    gw.add_envoy(&paths).await;
    // The first key turns authentication on (a listener update on every Envoy).
    let (_, first) = gw.create_key(&json!({"name": "first"})).await;
    gw.wait_for_key(&first, "chat").await;

    let t0 = Instant::now();
    let (id, key) = gw.create_key(&json!({"name": "second"})).await;
    let created = in_force(&gw, &key, "chat", 200, t0).await;

    let t0 = Instant::now();
    let (s, _) = gw
        .admin_call(
            "PATCH",
            &format!("/admin/v1/keys/{id}"),
            Some(&json!({"routes": ["other"]})),
        )
        .await;
    assert_eq!(s, 200);
    let restricted = in_force(&gw, &key, "chat", 403, t0).await;

    // A limit change: one request a minute, fleet-wide (the first may pass).
    let t0 = Instant::now();
    let (s, body) = gw
        .admin_call(
            "PATCH",
            &format!("/admin/v1/keys/{id}"),
            Some(&json!({"limits": {"rpm": 1}})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let limited = in_force(&gw, &key, "other", 429, t0).await;

    let t0 = Instant::now();
    let (s, _) = gw
        .admin_call("POST", &format!("/admin/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(s, 200);
    let revoked = in_force(&gw, &key, "other", 401, t0).await;

    println!(
        "in force on all 3 Envoys after: create {} ms, permission change {} ms, limit change {} ms, revoke {} ms",
        created.as_millis(),
        restricted.as_millis(),
        limited.as_millis(),
        revoked.as_millis()
    );
    for (what, d) in [
        ("create", created),
        ("change", restricted),
        ("limit", limited),
        ("revoke", revoked),
    ] {
        assert!(d < Duration::from_secs(1), "{what} took {d:?}");
    }
    // The other key was never disturbed.
    let r = gw
        .chat(&chat_body("chat"), &[("authorization", &format!("Bearer {first}"))])
        .await;
    assert_eq!(r.status(), 200);
}
