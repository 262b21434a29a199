//! Azure OpenAI: deployment in the path, `api-version`, `api-key`; fail-over in
//! both directions with the other dialects, streaming included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_deployments_in_both_directions() {
    let paths = Paths::discover();
    let dir = Scratch::new("azure");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let az = Mock::start(&paths, &dir.0, "az", Dialect::AzureOpenai, &["--models", "gpt4o-prod"]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&az)
        .provider(&an)
        .route("chat", &["oa/gpt-4o", "az/gpt4o-prod"])
        .route("azure-first", &["az/gpt4o-prod", "an/claude"])
        .route("retired", &["az/gpt4-old", "an/claude"])
        .start(&paths, &dir)
        .await;

    // OpenAI fails -> Azure answers, streamed.
    let mut body = chat_body("chat");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = gw.chat(&body, &[("x-mock", "oa:status=500")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "az");
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let req = &az.requests().await[0];
    assert_eq!(
        req["path"],
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        recorded_header(req, "api-key").first().cloned().as_deref(),
        Some("key-az")
    );
    assert_eq!(
        recorded_header(req, "authorization").first().cloned(),
        None,
        "the OpenAI attempt's bearer key must not follow"
    );

    // Azure fails -> Anthropic answers; a retired deployment (DeploymentNotFound) too.
    let r = gw.chat(&chat_body("azure-first"), &[("x-mock", "az:status=503")]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "an");
    let r = gw.chat(&chat_body("retired"), &[]).await;
    assert_eq!(r.headers()["x-switchyard-provider"], "an");
    assert_eq!(r.headers()["x-switchyard-attempts"], "2");
    let v: Value = gw.chat(&chat_body("az/gpt4-old"), &[]).await.json().await.unwrap();
    assert_eq!(v["error"]["attempts"][0]["failure"], "model_unavailable", "{v}");
}
