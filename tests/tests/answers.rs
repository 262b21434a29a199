//! A 200 means a correct, complete answer. A provider's broken 200 — invalid or
//! truncated JSON, a stream whose first events are an error or corrupt, a safety
//! block — falls over like a failure before headers while the answer is still
//! held (the pre-commit window); once a stream went out, it ends with one error
//! event a client can read. Each dialect's mock misbehaves the way its provider
//! does (`tests/src/mock/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, chat_body, served, sse_data};
use switchyard_tests::mock::MID_STREAM_ERROR;

/// Mocks of every chat dialect but Vertex (same wire as Gemini), the fallback
/// `fb` (OpenAI), and a route `<name>` = [<name>/m, fb/m] per dialect.
struct Fleet {
    gw: Gateway,
    mocks: Vec<Mock>,
    fb: Mock,
}

const DIALECTS: [(&str, Dialect); 5] = [
    ("oa", Dialect::Openai),
    ("az", Dialect::AzureOpenai),
    ("an", Dialect::Anthropic),
    ("ge", Dialect::Gemini),
    ("br", Dialect::Bedrock),
];

fn model(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Bedrock => "anthropic.claude-3-haiku-20240307-v1:0",
        _ => "m",
    }
}

async fn fleet(paths: &Paths, dir: &Scratch, policy: &str) -> Fleet {
    let fb = Mock::start(paths, &dir.0, "fb", Dialect::Openai, &[]);
    let mocks: Vec<Mock> = DIALECTS
        .iter()
        .map(|(name, d)| Mock::start(paths, &dir.0, name, *d, &[]))
        .collect();
    let mut b = Gateway::builder().provider(&fb);
    let mut routes = String::from("routes:\n");
    for m in &mocks {
        b = b.provider(m);
        routes.push_str(&format!(
            "  - {{ model: {0}, chain: [\"{0}/{1}\", fb/m], policy: {policy} }}\n  - {{ model: {0}-alone, chain: [\"{0}/{1}\"], policy: {policy} }}\n",
            m.name,
            model(m.dialect)
        ));
    }
    let gw = b.yaml(&routes).start(paths, dir).await;
    Fleet { gw, mocks, fb }
}

fn streamed(model: &str) -> Value {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_before_the_commit_fall_over_in_every_dialect() {
    let paths = Paths::discover();
    let dir = Scratch::new("answers-fallover");
    let f = fleet(&paths, &dir, "{}").await;
    for m in &f.mocks {
        let name = m.name.as_str();
        // Complete answers: held until checked whole.
        for fault in ["malformed", "truncate=20", "truncate_reset=20"] {
            let r =
                f.gw.chat(&chat_body(name), &[("x-mock", &format!("{name}:{fault}"))])
                    .await;
            assert_eq!(r.status(), 200, "{name} {fault}");
            assert_eq!(served(&r), ("fb".into(), "2".into()), "{name} {fault}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["object"], "chat.completion", "{name} {fault}: {v}");
        }
        // Streams: held until their first content.
        for fault in ["first_event_error", "corrupt_event=1", "end_after=0", "truncate=8"] {
            let r =
                f.gw.chat(&streamed(name), &[("x-mock", &format!("{name}:{fault}"))])
                    .await;
            assert_eq!(r.status(), 200, "{name} {fault}");
            assert_eq!(served(&r), ("fb".into(), "2".into()), "{name} {fault}");
            let data = sse_data(&r.text().await.unwrap());
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{name} {fault}");
            assert!(
                !data.iter().any(|d| d.contains("\"error\"")),
                "{name} {fault}: {data:?}"
            );
        }
        // With nowhere to go, the client gets an error status, never a 200.
        let r =
            f.gw.chat(
                &chat_body(&format!("{name}-alone")),
                &[("x-mock", &format!("{name}:malformed"))],
            )
            .await;
        assert_eq!(r.status(), 502, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["attempts"][0]["failure"], "bad_response", "{name}: {v}");
        let r =
            f.gw.chat(
                &streamed(&format!("{name}-alone")),
                &[("x-mock", &format!("{name}:first_event_error"))],
            )
            .await;
        assert!(
            r.status().is_server_error() || r.status() == 429,
            "{name}: {}",
            r.status()
        );
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["attempts"][0]["failure"].is_string(), "{name}: {v}");
    }
    assert!(!f.fb.requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_after_the_commit_ends_with_one_readable_error() {
    let paths = Paths::discover();
    let dir = Scratch::new("answers-committed");
    let f = fleet(&paths, &dir, "{}").await;
    for m in &f.mocks {
        let name = m.name.as_str();
        // The event after the mock's second content event (Anthropic starts with
        // three without content, OpenAI/Azure and Bedrock with one, Gemini none).
        let n = match m.dialect {
            Dialect::Anthropic => 6,
            Dialect::Gemini => 3,
            _ => 4,
        };
        // Spaced out, so the first content is released before the failure comes (had
        // both come in one read, nothing would have been released: it falls over).
        for (fault, code, message) in [
            (
                format!("chunk_delay_ms=60,error_event_after={n}"),
                "provider_stream_error",
                Some(MID_STREAM_ERROR),
            ),
            (
                format!("chunk_delay_ms=60,corrupt_event={n}"),
                "bad_provider_response",
                None,
            ),
        ] {
            let r =
                f.gw.chat(&streamed(name), &[("x-mock", &format!("{name}:{fault}"))])
                    .await;
            assert_eq!(r.status(), 200, "{name} {fault}");
            assert_eq!(served(&r).0, name, "{name} {fault}: committed, not fallen over");
            let data = sse_data(&r.text().await.unwrap());
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{name} {fault}");
            let errors: Vec<Value> = data
                .iter()
                .filter(|d| d.contains("\"error\""))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            assert_eq!(errors.len(), 1, "{name} {fault}: one error event: {data:?}");
            // A corrupt Bedrock frame is a decoding failure: same code.
            assert_eq!(errors[0]["error"]["code"], code, "{name} {fault}");
            if let Some(msg) = message {
                assert!(
                    errors[0]["error"]["message"].as_str().unwrap().contains(msg),
                    "{name}: the provider's message is kept: {}",
                    errors[0]
                );
            }
            // Every event before it is a well-formed chunk with some content.
            let chunks: Vec<Value> = data[..data.len() - 2]
                .iter()
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            assert!(
                chunks.iter().all(|c| c["object"] == "chat.completion.chunk"),
                "{name} {fault}"
            );
            assert!(
                chunks.iter().any(|c| c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())),
                "{name} {fault}: {data:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_blocks_are_content_filters_that_fall_over_where_allowed() {
    let paths = Paths::discover();
    let dir = Scratch::new("answers-safety");
    // Routes that do not fall over on content_filter: the client gets OpenAI's
    // `finish_reason: content_filter`, never an empty "stop". Each of these
    // providers says "blocked" in a 200 (Gemini's `promptFeedback`/`finishReason`,
    // Anthropic's `refusal`, Bedrock's guardrail and content filter), prompt and
    // finish, streamed or not: every case is a 200 from that provider's single
    // attempt whose one finish reason is `content_filter`.
    let f = fleet(&paths, &dir, "{}").await;
    for name in ["ge", "an", "br"] {
        for stream in [false, true] {
            for fault in ["safety=prompt", "safety=finish"] {
                let body = if stream { streamed(name) } else { chat_body(name) };
                let r = f.gw.chat(&body, &[("x-mock", &format!("{name}:{fault}"))]).await;
                let status = r.status();
                let who = served(&r);
                let text = r.text().await.unwrap();
                assert_eq!(status, 200, "{name} {fault} stream={stream}: {text}");
                assert_eq!(who, (name.to_string(), "1".into()), "{name} {fault} stream={stream}");
                let finish: Vec<String> = if stream {
                    sse_data(&text)
                        .iter()
                        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                        .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_string))
                        .collect()
                } else {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    vec![v["choices"][0]["finish_reason"].as_str().unwrap_or("").to_string()]
                };
                assert_eq!(
                    finish,
                    vec!["content_filter".to_string()],
                    "{name} {fault} stream={stream}: {text}"
                );
            }
        }
    }
    drop(f);
    // A route that allows it: the request falls over.
    let dir = Scratch::new("answers-safety-fallover");
    let f = fleet(
        &paths,
        &dir,
        "{ fail_over_on: [server_error, bad_response, content_filter] }",
    )
    .await;
    for stream in [false, true] {
        for fault in ["safety=prompt", "safety=finish"] {
            let body = if stream { streamed("ge") } else { chat_body("ge") };
            let r = f.gw.chat(&body, &[("x-mock", &format!("ge:{fault}"))]).await;
            assert_eq!(served(&r), ("fb".into(), "2".into()), "{fault} stream={stream}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_content_in_time_falls_over() {
    let paths = Paths::discover();
    let dir = Scratch::new("answers-ttft");
    let f = fleet(
        &paths,
        &dir,
        "{ first_byte_timeout_ms: 5000, first_token_timeout_ms: 400 }",
    )
    .await;
    // Gemini's first event already carries content: it is slow to start instead.
    for (name, slow) in [
        ("oa", "chunk_delay_ms=3000"),
        ("an", "chunk_delay_ms=3000"),
        ("br", "chunk_delay_ms=3000"),
        ("ge", "delay_ms=3000"),
    ] {
        let t = Instant::now();
        let r =
            f.gw.chat(&streamed(name), &[("x-mock", &format!("{name}:{slow}"))])
                .await;
        assert_eq!(served(&r), ("fb".into(), "2".into()), "{name}");
        let data = sse_data(&r.text().await.unwrap());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        assert!(t.elapsed() < Duration::from_millis(1500), "{name}: {:?}", t.elapsed());
    }
    // A client can tighten it.
    let t = Instant::now();
    let r =
        f.gw.chat(
            &streamed("oa"),
            &[
                ("x-mock", "oa:chunk_delay_ms=300"),
                ("x-switchyard-first-token-timeout-ms", "100"),
            ],
        )
        .await;
    assert_eq!(served(&r).0, "fb");
    assert!(t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_messages_reach_clients_without_credentials() {
    let paths = Paths::discover();
    let dir = Scratch::new("answers-scrub");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .keys("oa", &["sk-proj-abcdefgh12345678wxyz"])
        .route("chat", &["oa/m"])
        .start(&paths, &dir)
        .await;
    let r = gw.chat(&chat_body("chat"), &[("x-mock", "oa:echo_key_in_error")]).await;
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    for fragment in ["sk-proj", "abcdefgh", "wxyz", "Incorrect API key"] {
        assert!(!text.contains(fragment), "{fragment} relayed: {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["attempts"][0]["failure"], "auth", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_gets_the_tool_choice() {
    let paths = Paths::discover();
    let dir = Scratch::new("answers-toolchoice");
    let ge = Mock::start(&paths, &dir.0, "ge", Dialect::Gemini, &[]);
    let gw = Gateway::builder().provider(&ge).start(&paths, &dir).await;
    let tools = json!([
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}}
    ]);
    for (choice, call) in [
        (json!("none"), None),
        (json!("required"), Some("weather")),
        (json!({"type": "function", "function": {"name": "time"}}), Some("time")),
    ] {
        let mut body = chat_body("ge/gemini-2.0-flash");
        body["tools"] = tools.clone();
        body["tool_choice"] = choice.clone();
        let r = gw.chat(&body, &[]).await;
        assert_eq!(r.status(), 200, "{choice}");
        let v: Value = r.json().await.unwrap();
        let got = v["choices"][0]["message"]["tool_calls"][0]["function"]["name"].as_str();
        assert_eq!(got, call, "{choice}: {v}");
    }
}
