//! Google Vertex AI: Gemini's dialect under a project path, with an OAuth access
//! token that the control plane obtains from a command and refreshes; filters get
//! the new token without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header, served};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_command_is_refreshed() {
    let paths = Paths::discover();
    let dir = Scratch::new("vertex");
    let token = dir.0.join("token");
    std::fs::write(&token, "tok-1\n").unwrap();
    let vx = Mock::start(&paths, &dir.0, "vx", Dialect::Vertex, &["--api-key", "tok-1,tok-2"]);
    let gw = Gateway::builder()
        .provider(&vx)
        .credentials(
            "vx",
            &format!(
                "api_key: {{ command: [cat, \"{}\"] }}, credentials_refresh_s: 1",
                token.display()
            ),
        )
        .start(&paths, &dir)
        .await;

    let r = gw.chat(&chat_body("vx/gemini-2.0-flash-001"), &[]).await;
    assert_eq!(served(&r).0, "vx");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from vx (gemini-2.0-flash-001)."
    );
    let req = vx.requests().await.pop().unwrap();
    assert_eq!(
        req["path"],
        "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent"
    );
    assert_eq!(recorded_header(&req, "authorization"), vec!["Bearer tok-1".to_string()]);

    // The token rotates: within the refresh interval (plus a push) requests carry
    // the new one.
    std::fs::write(&token, "tok-2\n").unwrap();
    let t = Instant::now();
    loop {
        let r = gw.chat(&chat_body("vx/gemini-2.0-flash-001"), &[]).await;
        assert_eq!(r.status(), 200);
        let req = vx.requests().await.pop().unwrap();
        if recorded_header(&req, "authorization") == vec!["Bearer tok-2".to_string()] {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the token was not refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A token the provider does not accept is an auth failure, reported as such.
    std::fs::write(&token, "tok-revoked\n").unwrap();
    let t = Instant::now();
    loop {
        let r = gw.chat(&chat_body("vx/gemini-2.0-flash-001"), &[]).await;
        if r.status() == 401 {
            let v: Value = r.json().await.unwrap();
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("auth") && msg.contains("UNAUTHENTICATED"), "{msg}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the revoked token was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
