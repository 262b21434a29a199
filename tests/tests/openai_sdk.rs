//! The official OpenAI Python SDK (from PyPI, installed by `make setup`) as the
//! client: plain, streamed with usage, and the error when every provider fails,
//! with an OpenAI-dialect primary failing over to an Anthropic-dialect fallback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

use serde_json::Value;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_through_fail_over() {
    let paths = Paths::discover();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "run `make setup` first");
    let dir = Scratch::new("openai-sdk");
    let a = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["oa/gpt-4o-mini", "an/claude-haiku"])
        .start(&paths, &dir)
        .await;

    let url = gw.at("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(root.join("tests/sdk/openai_client.py"))
            .args([url.as_str(), "chat", "oa:status=503"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plain"]["content"], "Hello from an (claude-haiku).", "{v}");
    assert_eq!(v["plain"]["finish_reason"], "stop");
    assert_eq!(v["plain"]["provider"], "an");
    assert!(v["plain"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["stream"]["content"], "Hello from an (claude-haiku).", "{v}");
    assert!(v["stream"]["total_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["all_failed"]["status"], 503, "{v}");
    assert_eq!(v["all_failed"]["code"], "all_attempts_failed");
    assert_eq!(v["all_failed"]["attempts"], 2);
    assert!(v["all_failed"]["request_id"].is_string());
}
