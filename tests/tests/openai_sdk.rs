//! The official OpenAI Python SDK (from PyPI, installed by `make setup`) as the
//! client of every adapter: plain, streamed with usage, and a tool-call round trip
//! (streamed and not), each adapter answering after an other-dialect primary
//! failed; embeddings failing over from OpenAI to Gemini; and the error the SDK
//! raises when every provider fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_against_every_adapter() {
    let paths = Paths::discover();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "run `make setup` first");
    let dir = Scratch::new("openai-sdk");
    let adapters = [
        (Dialect::Openai, "oa", "gpt-4o-mini"),
        (Dialect::AzureOpenai, "az", "gpt-4o-deployment"),
        (Dialect::Anthropic, "an", "claude-haiku"),
        (Dialect::Gemini, "ge", "gemini-2.0-flash"),
        (Dialect::Vertex, "vx", "gemini-2.0-flash-001"),
        (Dialect::Bedrock, "br", "anthropic.claude-3-haiku-20240307-v1:0"),
    ];
    let mocks: Vec<Mock> = adapters
        .iter()
        .map(|(d, name, _)| Mock::start(&paths, &dir.0, name, *d, &[]))
        .collect();
    let mut builder = Gateway::builder();
    for m in &mocks {
        builder = builder.provider(m);
    }
    // Each adapter serves as the fallback of a failing primary of another dialect.
    let mut cases = Vec::new();
    for (_, name, model) in &adapters {
        let primary = if *name == "an" {
            "oa/gpt-4o-mini"
        } else {
            "an/claude-haiku"
        };
        let alias = format!("via-{name}");
        builder = builder.route(&alias, &[primary, &format!("{name}/{model}")]);
        let failing = primary.split('/').next().unwrap();
        cases.push(json!({"model": alias, "mock": format!("{failing}:status=503"), "name": name, "served": model}));
    }
    let builder = builder.route("emb", &["oa/text-embedding-3-small", "ge/text-embedding-004"]);
    let gw = builder.start(&paths, &dir).await;

    let url = gw.at("/v1");
    let arg = serde_json::to_string(&cases).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(root.join("tests/sdk/openai_client.py"))
            .args([url.as_str(), arg.as_str()])
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
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let hello = format!("Hello from {name} ({}).", case["served"].as_str().unwrap());
        let r = &v[case["model"].as_str().unwrap()];
        assert_eq!(r["plain"]["content"], hello, "{name}: {r}");
        assert_eq!(r["plain"]["finish_reason"], "stop", "{name}");
        assert_eq!(r["plain"]["provider"], name);
        assert!(r["plain"]["total_tokens"].as_u64().unwrap() > 0, "{name}");
        assert_eq!(r["stream"]["content"], hello, "{name}: {r}");
        assert!(r["stream"]["total_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        let tools = &r["tools"];
        assert_eq!(tools["finish_reason"], "tool_calls", "{name}: {r}");
        assert_eq!(tools["name"], "get_weather", "{name}");
        assert_eq!(tools["arguments"], json!({"location": "Paris"}), "{name}");
        assert_eq!(tools["streamed"]["name"], "get_weather", "{name}: {r}");
        assert_eq!(
            tools["streamed"]["arguments"],
            json!({"location": "Paris"}),
            "{name}: {r}"
        );
        assert!(tools["streamed"]["id"].is_string(), "{name}: {r}");
        assert_eq!(
            tools["answer"],
            format!("{hello} [tool result: 18 C and sunny]"),
            "{name}"
        );
    }
    assert_eq!(
        v["embeddings"],
        json!([switchyard_tests::mock::mock_embedding("hello world", 8)]),
        "{v}"
    );
    assert_eq!(v["all_failed"]["status"], 503, "{v}");
    assert_eq!(v["all_failed"]["code"], "all_attempts_failed");
    assert_eq!(v["all_failed"]["attempts"], 2);
    assert!(v["all_failed"]["request_id"].is_string());
}
