//! `POST /v1/embeddings`: planned and failed over like chat, for the providers
//! that have an embeddings API (OpenAI and OpenAI-compatible, Azure OpenAI,
//! Gemini); targets without one are left out of the plan.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, recorded_header, served};
use switchyard_tests::mock::mock_embedding;

async fn embed(gw: &Gateway, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(gw.at("/v1/embeddings")).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not an embeddings list: {v}"))
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_fail_over_across_dialects() {
    let paths = Paths::discover();
    let dir = Scratch::new("embeddings");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let az = Mock::start(&paths, &dir.0, "az", Dialect::AzureOpenai, &[]);
    let ge = Mock::start(&paths, &dir.0, "ge", Dialect::Gemini, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let vx = Mock::start(&paths, &dir.0, "vx", Dialect::Vertex, &[]);
    let br = Mock::start(&paths, &dir.0, "br", Dialect::Bedrock, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&az)
        .provider(&ge)
        .provider(&an)
        .provider(&vx)
        .provider(&br)
        .route(
            "embed-more",
            &[
                "vx/text-embedding-005",
                "br/cohere.embed-english-v3",
                "br/amazon.titan-embed-text-v2:0",
            ],
        )
        .route(
            "embed",
            &[
                "an/claude-haiku",
                "oa/text-embedding-3-small",
                "ge/text-embedding-004",
                "az/emb",
            ],
        )
        .route("chat-only", &["an/claude-haiku"])
        .start(&paths, &dir)
        .await;
    let inputs = ["hello world", "second text"];
    let expected: Vec<Vec<f64>> = inputs.iter().map(|t| mock_embedding(t, 8)).collect();

    // Anthropic has no embeddings API: the plan starts at the OpenAI target.
    let r = embed(&gw, json!({"model": "embed", "input": inputs}), &[]).await;
    assert_eq!(served(&r), ("oa".into(), "1".into()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(vectors(&v), expected);
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    let req = oa.requests().await.pop().unwrap();
    assert_eq!(req["path"], "/v1/embeddings");
    assert_eq!(req["body"]["model"], "text-embedding-3-small");

    // OpenAI fails: Gemini's batchEmbedContents answers, translated to the same list.
    let r = embed(
        &gw,
        json!({"model": "embed", "input": inputs}),
        &[("x-mock", "oa:status=503")],
    )
    .await;
    assert_eq!(served(&r), ("ge".into(), "2".into()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(vectors(&v), expected);
    let req = ge.requests().await.pop().unwrap();
    assert_eq!(req["path"], "/v1beta/models/text-embedding-004:batchEmbedContents");
    assert_eq!(req["body"]["requests"][1]["content"]["parts"][0]["text"], "second text");

    // base64 vectors (what the OpenAI SDKs ask for) from Gemini: little-endian f32s.
    let r = embed(
        &gw,
        json!({"model": "embed", "input": "hello world", "encoding_format": "base64", "dimensions": 4}),
        &[("x-mock", "oa:status=503")],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    let bytes: Vec<u8> = expected_base64_bytes(&mock_embedding("hello world", 4));
    assert_eq!(v["data"][0]["embedding"], switchyard_core::dialect::base64(&bytes));

    // Both fail: Azure's deployment path answers.
    let r = embed(
        &gw,
        json!({"model": "embed", "input": "hello world"}),
        &[("x-mock", "oa:status=503;ge:status=500")],
    )
    .await;
    assert_eq!(served(&r), ("az".into(), "3".into()));
    let req = az.requests().await.pop().unwrap();
    assert!(
        req["path"]
            .as_str()
            .unwrap()
            .starts_with("/openai/deployments/emb/embeddings?api-version="),
        "{req}"
    );
    assert!(an.requests().await.is_empty(), "anthropic got an embeddings call");

    // Vertex AI's `:predict`, then Bedrock's InvokeModel (signed): Cohere takes the
    // batch, Titan one text per request.
    let r = embed(&gw, json!({"model": "embed-more", "input": inputs}), &[]).await;
    assert_eq!(served(&r), ("vx".into(), "1".into()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(vectors(&v), expected);
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    let r = embed(
        &gw,
        json!({"model": "embed-more", "input": inputs}),
        &[("x-mock", "vx:status=503")],
    )
    .await;
    assert_eq!(served(&r), ("br".into(), "2".into()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(vectors(&v), expected);
    let req = br.requests().await.pop().unwrap();
    assert_eq!(req["path"], "/model/cohere.embed-english-v3/invoke");
    assert!(recorded_header(&req, "authorization")[0].starts_with("AWS4-HMAC-SHA256 "));
    let titan = "br/amazon.titan-embed-text-v2:0";
    let r = embed(
        &gw,
        json!({"model": titan, "input": "hello world", "dimensions": 4}),
        &[],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(vectors(&v), vec![mock_embedding("hello world", 4)]);
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert_eq!(
        br.requests().await.pop().unwrap()["path"],
        "/model/amazon.titan-embed-text-v2%3A0/invoke"
    );
    // Titan takes one text: a batch is refused before it is sent.
    let sent = br.requests().await.len();
    let r = embed(&gw, json!({"model": titan, "input": inputs}), &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_unavailable", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("embeds one input per request"), "{msg}");
    assert_eq!(br.requests().await.len(), sent);
    // With another target in the plan, the planner leaves Titan out (it tries the
    // translation first: Envoy would not retry the adapter's local reply).
    let r = embed(
        &gw,
        json!({"model": titan, "input": inputs, "fallbacks": ["oa/text-embedding-3-small"]}),
        &[],
    )
    .await;
    assert_eq!(served(&r), ("oa".into(), "1".into()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(vectors(&v), expected);
    assert_eq!(br.requests().await.len(), sent);

    // A route with no embeddings provider, and bad input: OpenAI-shaped errors.
    let r = embed(&gw, json!({"model": "chat-only", "input": "x"}), &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "embeddings_not_supported");
    let r = embed(&gw, json!({"model": "embed", "input": {"text": "x"}}), &[]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_type");
    assert!(v["error"]["request_id"].is_string(), "{v}");
}

fn expected_base64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect()
}
