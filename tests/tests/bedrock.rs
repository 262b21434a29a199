//! AWS Bedrock (Converse / ConverseStream) through the gateway: SigV4 signed in the
//! filter and verified by the mock, Bedrock API keys, error types, and fail-over
//! across dialects in both directions while streaming.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, recorded_header, served, sse_data};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

fn streamed_content(text: &str) -> String {
    let data = sse_data(text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_and_cross_dialect_failover() {
    let paths = Paths::discover();
    let dir = Scratch::new("bedrock");
    let br = Mock::start(&paths, &dir.0, "br", Dialect::Bedrock, &[]);
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&br)
        .provider(&oa)
        .route("b2o", &[&format!("br/{MODEL}"), "oa/gpt-4o-mini"])
        .route("o2b", &["oa/gpt-4o-mini", &format!("br/{MODEL}")])
        .start(&paths, &dir)
        .await;

    // A signed Converse call: the mock recomputed the signature from what arrived.
    let r = gw
        .chat(&chat_body("b2o"), &[("authorization", "Bearer client-key")])
        .await;
    assert_eq!(served(&r), ("br".into(), "1".into()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("Hello from br ({MODEL}).")
    );
    let req = br.requests().await.pop().unwrap();
    assert_eq!(req["path"], "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
    let auth = recorded_header(&req, "authorization");
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert!(
        auth[0].starts_with("AWS4-HMAC-SHA256 Credential=AKIDMOCKBR/")
            && auth[0].contains("/us-east-1/bedrock/aws4_request"),
        "{auth:?}"
    );
    assert_eq!(recorded_header(&req, "x-amz-date").len(), 1);

    // Both directions, streaming: the client sees one OpenAI stream either way.
    let mut body = chat_body("o2b");
    body["stream"] = json!(true);
    let r = gw.chat(&body, &[("x-mock", "oa:status=503")]).await;
    assert_eq!(served(&r), ("br".into(), "2".into()));
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(
        streamed_content(&r.text().await.unwrap()),
        format!("Hello from br ({MODEL}).")
    );
    let mut body = chat_body("b2o");
    body["stream"] = json!(true);
    let r = gw.chat(&body, &[("x-mock", "br:status=429")]).await;
    assert_eq!(served(&r), ("oa".into(), "2".into()));
    assert_eq!(
        streamed_content(&r.text().await.unwrap()),
        "Hello from oa (gpt-4o-mini)."
    );
    // The Bedrock attempt's SigV4 headers did not follow the request to OpenAI.
    let req = oa.requests().await.pop().unwrap();
    assert!(recorded_header(&req, "x-amz-date").is_empty(), "{req}");
    assert_eq!(
        recorded_header(&req, "authorization"),
        vec!["Bearer key-oa".to_string()]
    );

    // Bedrock takes images only as bytes: with an image URL the planner leaves it out
    // of the plan and the next target serves.
    let image = json!({"model": "b2o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let r = gw.chat(&image, &[]).await;
    assert_eq!(served(&r), ("oa".into(), "1".into()));
    // What the planner does not look for fails in the adapter, whose local reply
    // Envoy does not retry even with a retriable status and a target left: the
    // request ends with that attempt (docs/architecture.md, Envoy behaviours).
    let legacy = json!({"model": "b2o", "messages": [{"role": "user", "content": "hi"},
        {"role": "function", "name": "f", "content": "{}"}]});
    let r = gw.chat(&legacy, &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_unavailable", "{v}");
    assert_eq!(v["error"]["attempts"].as_array().unwrap().len(), 1, "{v}");

    // A streamed answer the provider cuts short ends with an error event, not silence.
    let r = gw.chat(&body, &[("x-mock", "br:end_after=3")]).await;
    let text = r.text().await.unwrap();
    assert!(text.contains("stream_truncated"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    // Bedrock's error types become failure classes: a throttled request reports it.
    let r = gw
        .chat(&chat_body(&format!("br/{MODEL}")), &[("x-mock", "br:status=429")])
        .await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rate_limited") && msg.contains("ThrottlingException"),
        "{msg}"
    );
    let r = gw
        .chat(&chat_body(&format!("br/{MODEL}")), &[("x-mock", "br:error=model_gone")])
        .await;
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("model_unavailable"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_the_signature_and_api_keys_work() {
    let paths = Paths::discover();
    let dir = Scratch::new("bedrock-auth");
    let br = Mock::start(
        &paths,
        &dir.0,
        "br",
        Dialect::Bedrock,
        &["--api-key", "AKIDMOCKBR/secret-br,brkey-1"],
    );
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let br2 = Mock::start(&paths, &dir.0, "bk", Dialect::Bedrock, &["--api-key", "brkey-2"]);
    let gw = Gateway::builder()
        .provider(&br)
        .provider(&oa)
        .provider(&br2)
        .keys("br", &["AKIDMOCKBR/not-the-secret"])
        .keys("bk", &["brkey-2"])
        .route("chat", &[&format!("br/{MODEL}"), "oa/gpt-4o-mini"])
        .start(&paths, &dir)
        .await;

    // The mock recomputes the signature with the real secret: it does not match,
    // the attempt is an auth failure, and the request falls over.
    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(served(&r), ("oa".into(), "2".into()));
    let r = gw.chat(&chat_body(&format!("br/{MODEL}")), &[]).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("auth") && msg.contains("InvalidSignatureException"),
        "{msg}"
    );

    // A Bedrock API key travels as a bearer token, unsigned.
    let r = gw.chat(&chat_body(&format!("bk/{MODEL}")), &[]).await;
    assert_eq!(r.status(), 200);
    let req = br2.requests().await.pop().unwrap();
    assert_eq!(
        recorded_header(&req, "authorization"),
        vec!["Bearer brkey-2".to_string()]
    );
    assert!(recorded_header(&req, "x-amz-date").is_empty());
}
