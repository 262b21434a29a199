//! The gateway's other client APIs, Anthropic Messages (`/v1/messages`,
//! `/v1/messages/count_tokens`) and OpenAI Responses (`/v1/responses`), end to
//! end: the official SDKs through every dialect (each the fallback of a failing
//! primary of another dialect), the client's own body passed to targets that
//! speak its API (and what only they can take going only to them), errors in the
//! client's shape, and broken streams that end with the client API's error event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

use serde_json::{Value, json};
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch, recorded_header};
use switchyard_tests::mock::{ENCRYPTED_REASONING, MID_STREAM_ERROR, THINKING, THINKING_SIGNATURE};

/// Every dialect, with the mock's name and the model it serves.
const ADAPTERS: [(Dialect, &str, &str); 6] = [
    (Dialect::Openai, "oa", "gpt-4o-mini"),
    (Dialect::AzureOpenai, "az", "gpt-4o-deployment"),
    (Dialect::Anthropic, "an", "claude-haiku"),
    (Dialect::Gemini, "ge", "gemini-2.0-flash"),
    (Dialect::Vertex, "vx", "gemini-2.0-flash-001"),
    (Dialect::Bedrock, "br", "anthropic.claude-3-haiku-20240307-v1:0"),
];

/// A gateway over one mock of every dialect with a `via-<name>` route per mock:
/// `primary` (a failing target of another dialect) first, then the mock.
/// `primary(name)` names the primary's `provider/model`.
async fn every_dialect(
    paths: &Paths,
    dir: &Scratch,
    primary: impl Fn(&str) -> &'static str,
) -> (Gateway, Vec<Mock>, Vec<Value>) {
    let mocks: Vec<Mock> = ADAPTERS
        .iter()
        .map(|(d, name, _)| Mock::start(paths, &dir.0, name, *d, &[]))
        .collect();
    let mut builder = Gateway::builder();
    for m in &mocks {
        builder = builder.provider(m);
    }
    let mut cases = Vec::new();
    for (_, name, model) in ADAPTERS {
        let first = primary(name);
        let alias = format!("via-{name}");
        builder = builder.route(&alias, &[first, &format!("{name}/{model}")]);
        let failing = first.split('/').next().unwrap();
        cases.push(json!({"model": alias, "mock": format!("{failing}:status=503"), "name": name, "served": model}));
    }
    (builder.start(paths, dir).await, mocks, cases)
}

/// Runs `tests/sdk/<script>` with the project's Python; its JSON output.
async fn sdk(script: &str, url: String, cases: &[Value]) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "run `make setup` first");
    let script = root.join("tests/sdk").join(script);
    let arg = serde_json::to_string(cases).unwrap();
    let out = tokio::task::spawn_blocking(move || Command::new(python).arg(script).args([url, arg]).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// POSTs `body` to `path`; `(status, response headers, body text)`.
async fn post(
    gw: &Gateway,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().post(gw.at(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request to gateway");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// An SSE body's events: `(event name, data as JSON)`, every data JSON.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|n| n.trim().to_string())
                .unwrap_or_default();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap_or_else(|| panic!("an event without data: {e:?}\n{text}"));
            let v: Value = serde_json::from_str(data.trim())
                .unwrap_or_else(|err| panic!("event data is not JSON ({err}): {data}\n{text}"));
            (name, v)
        })
        .collect()
}

fn messages_body(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}]})
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}})
}

/// (a), (e), (g): the Anthropic SDK, served by every dialect after a failing
/// primary of another one; count_tokens, an unknown model and every provider
/// failing, as the SDK sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_against_every_dialect() {
    let paths = Paths::discover();
    let dir = Scratch::new("anthropic-sdk");
    let (gw, mocks, cases) = every_dialect(&paths, &dir, |name| {
        if name == "an" {
            "oa/gpt-4o-mini"
        } else {
            "an/claude-haiku"
        }
    })
    .await;
    let v = sdk("anthropic_client.py", gw.url.clone(), &cases).await;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let served = case["served"].as_str().unwrap();
        let hello = format!("Hello from {name} ({served}).");
        let r = &v["cases"][case["model"].as_str().unwrap()];
        let plain = &r["plain"];
        assert_eq!(plain["type"], "message", "{name}: {r}");
        assert_eq!(plain["role"], "assistant", "{name}");
        assert_eq!(plain["text"], hello, "{name}: {r}");
        assert_eq!(plain["blocks"], json!(["text"]), "{name}: {r}");
        assert_eq!(plain["stop_reason"], "end_turn", "{name}: {r}");
        assert_eq!(plain["provider"], name, "{name}: {r}");
        assert_eq!(plain["chain_position"], "2", "{name}: the primary failed first");
        assert!(plain["usage"]["input_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        assert!(plain["usage"]["output_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        let stream = &r["stream"];
        assert_eq!(stream["text"], hello, "{name}: {r}");
        assert_eq!(stream["final_text"], hello, "{name}: {r}");
        assert_eq!(stream["stop_reason"], "end_turn", "{name}: {r}");
        assert_eq!(stream["provider"], name, "{name}: {r}");
        assert!(stream["usage"]["output_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        let tools = &r["tools"];
        assert_eq!(tools["stop_reason"], "tool_use", "{name}: {r}");
        assert_eq!(tools["name"], "get_weather", "{name}: {r}");
        assert_eq!(tools["input"], json!({"location": "Paris"}), "{name}: {r}");
        assert!(tools["id"].as_str().is_some_and(|i| !i.is_empty()), "{name}: {r}");
        assert_eq!(tools["streamed"]["stop_reason"], "tool_use", "{name}: {r}");
        assert_eq!(tools["streamed"]["name"], "get_weather", "{name}: {r}");
        assert_eq!(tools["streamed"]["input"], json!({"location": "Paris"}), "{name}: {r}");
        assert_eq!(
            tools["answer"],
            format!("{hello} [tool result: 18 C and sunny]"),
            "{name}: {r}"
        );
        assert_eq!(tools["answer_stop_reason"], "end_turn", "{name}: {r}");
    }
    // What the providers got: a Messages target the client's own body, the
    // others their own API.
    let an = &mocks[2].requests().await;
    assert!(
        an.iter()
            .any(|q| q["path"] == "/v1/messages" && q["body"]["model"] == "claude-haiku"),
        "{an:?}"
    );
    let ge = &mocks[3].requests().await;
    assert!(
        ge.iter()
            .all(|q| q["path"].as_str().unwrap().contains(":generateContent")
                || q["path"].as_str().unwrap().contains(":streamGenerateContent")),
        "{ge:?}"
    );

    // (g) count_tokens: an estimate, answered by the gateway.
    assert!(v["count_tokens"].as_u64().unwrap() > 0, "{v}");
    // (e) An unknown model: Anthropic's 404, in Anthropic's shape.
    let unknown = &v["unknown_model"];
    assert_eq!(unknown["exception"], "NotFoundError", "{v}");
    assert_eq!(unknown["status"], 404, "{v}");
    assert_eq!(unknown["body"]["type"], "error", "{v}");
    assert_eq!(unknown["body"]["error"]["type"], "not_found_error", "{v}");
    assert!(
        unknown["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model"),
        "{v}"
    );
    // Every provider failing: the SDK's error for the status, the summary of the
    // attempts in Anthropic's shape.
    for key in ["all_failed", "all_failed_stream"] {
        let failed = &v[key];
        assert!(failed.is_object(), "{key}: {v}");
        assert_eq!(failed["body"]["type"], "error", "{key}: {v}");
        // Anthropic's error has no `code`: the gateway's leads the message.
        let message = failed["body"]["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("all_attempts_failed: 2 attempts failed"),
            "{key}: {message}"
        );
        assert!(failed["request_id"].is_string(), "{key}: {v}");
        assert!(
            failed["content_type"].as_str().unwrap().starts_with("application/json"),
            "{key}: {v}"
        );
    }
    assert_eq!(v["all_failed"]["status"], 503, "{v}");
    assert_eq!(v["all_failed"]["exception"], "ServiceUnavailableError", "{v}");
    assert_eq!(v["all_failed"]["internal_server_error"], true, "{v}");
    assert_eq!(v["all_failed"]["body"]["error"]["type"], "overloaded_error", "{v}");
    assert_eq!(v["all_failed_stream"]["status"], 500, "{v}");
    assert_eq!(v["all_failed_stream"]["exception"], "InternalServerError", "{v}");
    assert_eq!(v["all_failed_stream"]["body"]["error"]["type"], "api_error", "{v}");
}

/// (b): the OpenAI SDK's Responses client, served by every dialect after a
/// failing primary of another one; an unknown model and every provider failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_sdk_against_every_dialect() {
    let paths = Paths::discover();
    let dir = Scratch::new("responses-sdk");
    // OpenAI and Azure speak Responses: each is the fallback of a translated
    // primary, every other dialect the fallback of a native one.
    let (gw, mocks, cases) = every_dialect(&paths, &dir, |name| {
        if name == "oa" || name == "az" {
            "an/claude-haiku"
        } else {
            "oa/gpt-4o-mini"
        }
    })
    .await;
    let v = sdk("responses_client.py", gw.at("/v1"), &cases).await;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let served = case["served"].as_str().unwrap();
        let hello = format!("Hello from {name} ({served}).");
        let r = &v["cases"][case["model"].as_str().unwrap()];
        let plain = &r["plain"];
        assert_eq!(plain["object"], "response", "{name}: {r}");
        assert_eq!(plain["status"], "completed", "{name}: {r}");
        assert!(plain["id"].as_str().unwrap().starts_with("resp_"), "{name}: {r}");
        assert_eq!(plain["text"], hello, "{name}: {r}");
        assert_eq!(plain["items"], json!(["message"]), "{name}: {r}");
        assert_eq!(plain["provider"], name, "{name}: {r}");
        assert_eq!(plain["chain_position"], "2", "{name}: the primary failed first");
        let u = &plain["usage"];
        assert!(u["input_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        assert!(u["output_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap(),
            "{name}: {r}"
        );
        let stream = &r["stream"];
        assert_eq!(stream["text"], hello, "{name}: {r}");
        assert_eq!(stream["final_text"], hello, "{name}: {r}");
        assert_eq!(stream["status"], "completed", "{name}: {r}");
        assert!(stream["usage"]["total_tokens"].as_u64().unwrap() > 0, "{name}: {r}");
        // The documented event sequence, numbered from 0.
        let types: Vec<&str> = r["events"]["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(types.first(), Some(&"response.created"), "{name}: {types:?}");
        assert_eq!(types.get(1), Some(&"response.in_progress"), "{name}: {types:?}");
        assert_eq!(types.last(), Some(&"response.completed"), "{name}: {types:?}");
        for t in [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ] {
            assert!(types.contains(&t), "{name}: no {t} in {types:?}");
        }
        let numbers: Vec<u64> = r["events"]["sequence_numbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "{name}: {r}");
        let tools = &r["tools"];
        let call = json!([{"call_id": tools["calls"][0]["call_id"], "name": "get_weather",
            "arguments": {"location": "Paris"}}]);
        assert_eq!(tools["calls"], call, "{name}: {r}");
        assert!(
            tools["calls"][0]["call_id"].as_str().is_some_and(|c| !c.is_empty()),
            "{name}: {r}"
        );
        assert_eq!(tools["streamed"][0]["name"], "get_weather", "{name}: {r}");
        assert_eq!(
            tools["streamed"][0]["arguments"],
            json!({"location": "Paris"}),
            "{name}: {r}"
        );
        assert_eq!(
            tools["answer"],
            format!("{hello} [tool result: 18 C and sunny]"),
            "{name}: {r}"
        );
        assert_eq!(tools["answer_status"], "completed", "{name}: {r}");
    }
    // OpenAI and Azure got the client's Responses body; Azure at its v1 path with
    // the deployment as the model.
    let oa = mocks[0].requests().await;
    assert!(
        oa.iter()
            .any(|q| q["path"] == "/v1/responses" && q["body"]["model"] == "gpt-4o-mini"),
        "{oa:?}"
    );
    let az = mocks[1].requests().await;
    let native: Vec<&Value> = az.iter().filter(|q| q["path"] == "/openai/v1/responses").collect();
    assert!(!native.is_empty(), "{az:?}");
    assert!(native.iter().all(|q| q["body"]["model"] == "gpt-4o-deployment"));
    assert!(
        native
            .iter()
            .all(|q| recorded_header(q, "api-key") == vec!["key-az".to_string()])
    );

    let unknown = &v["unknown_model"];
    assert_eq!(unknown["exception"], "NotFoundError", "{v}");
    assert_eq!(unknown["status"], 404, "{v}");
    assert!(
        unknown["body"]["message"].as_str().unwrap().contains("no-such-model"),
        "{v}"
    );
    let failed = &v["all_failed"];
    assert_eq!(failed["status"], 503, "{v}");
    assert_eq!(failed["exception"], "InternalServerError", "{v}");
    assert_eq!(failed["code"], "all_attempts_failed", "{v}");
    assert!(
        failed["body"]["message"]
            .as_str()
            .unwrap()
            .starts_with("2 attempts failed"),
        "{v}"
    );
    assert!(failed["request_id"].is_string(), "{v}");
}

/// (c) Messages to an Anthropic target: the client's body as it is (thinking,
/// `cache_control`, `anthropic-beta`), the thinking block and its signature back
/// intact, streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pass_through_to_anthropic_untouched() {
    let paths = Paths::discover();
    let dir = Scratch::new("messages-native");
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let gw = Gateway::builder()
        .provider(&an)
        .provider(&oa)
        .route("claude", &["an/claude-sonnet-4-5", "oa/gpt-4o-mini"])
        .start(&paths, &dir)
        .await;
    let beta = "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31";
    // The `anthropic-beta` each request brought to the provider (checked last).
    let mut betas = Vec::new();
    for stream in [false, true] {
        let body = json!({
            "model": "claude",
            "max_tokens": 4096,
            "stream": stream,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        });
        let (status, h, text) = post(&gw, "/v1/messages", &body, &[("anthropic-beta", beta)]).await;
        assert_eq!(status, 200, "stream={stream}: {text}");
        assert_eq!(header(&h, "x-switchyard-provider"), "an");
        let hello = "Hello from an (claude-sonnet-4-5). [system: You are terse.]";
        if stream {
            let ev = events(&text);
            let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names.first(), Some(&"message_start"), "{text}");
            assert_eq!(names.last(), Some(&"message_stop"), "{text}");
            assert_eq!(
                ev[1].1["content_block"],
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                "{text}"
            );
            let deltas: Vec<&Value> = ev.iter().filter_map(|(_, d)| d.get("delta")).collect();
            let thinking: String = deltas
                .iter()
                .filter(|d| d["type"] == "thinking_delta")
                .map(|d| d["thinking"].as_str().unwrap())
                .collect();
            assert_eq!(thinking, THINKING, "{text}");
            let signatures: Vec<&Value> = deltas
                .iter()
                .filter(|d| d["type"] == "signature_delta")
                .copied()
                .collect();
            assert_eq!(signatures.len(), 1, "{text}");
            assert_eq!(signatures[0]["signature"], THINKING_SIGNATURE, "{text}");
            let said: String = deltas
                .iter()
                .filter(|d| d["type"] == "text_delta")
                .map(|d| d["text"].as_str().unwrap())
                .collect();
            assert_eq!(said, hello, "{text}");
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["content"],
                json!([{"type": "thinking", "thinking": THINKING, "signature": THINKING_SIGNATURE},
                    {"type": "text", "text": hello}]),
                "{v}"
            );
            assert_eq!(v["model"], "claude-sonnet-4-5", "{v}");
        }
        let reqs = an.requests().await;
        let got = reqs.last().unwrap();
        assert_eq!(got["path"], "/v1/messages");
        let mut sent = body.clone();
        sent["model"] = json!("claude-sonnet-4-5");
        assert_eq!(got["body"], sent, "the client's body, only the model replaced");
        betas.push(recorded_header(got, "anthropic-beta"));
        assert_eq!(recorded_header(got, "x-api-key"), vec!["key-an".to_string()]);
    }
    // No `anthropic-beta` from the client: none at the provider either.
    let (status, _, text) = post(&gw, "/v1/messages", &messages_body("claude", "hi"), &[]).await;
    assert_eq!(status, 200, "{text}");
    let reqs = an.requests().await;
    assert!(recorded_header(reqs.last().unwrap(), "anthropic-beta").is_empty());

    // The same request when the Anthropic target fails goes to OpenAI translated:
    // no thinking block, and the beta header does not reach OpenAI.
    let body = json!({"model": "claude", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "Say hello"}]});
    let (status, h, text) = post(
        &gw,
        "/v1/messages",
        &body,
        &[("anthropic-beta", beta), ("x-mock", "an:status=529")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&h, "x-switchyard-provider"), "oa");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from oa (gpt-4o-mini)."}]),
        "{v}"
    );
    let got = oa.requests().await;
    let got = got.last().unwrap();
    assert_eq!(got["path"], "/v1/chat/completions");
    assert!(recorded_header(got, "anthropic-beta").is_empty(), "{got}");

    assert_eq!(
        betas,
        vec![vec![beta.to_string()], vec![beta.to_string()]],
        "the client's anthropic-beta reaches the Anthropic target (JSON, stream)"
    );
}

/// (c) Responses to OpenAI and Azure: the client's body as it is (members a
/// translation would drop included), and what only the Responses API answers
/// (an encrypted reasoning item) back to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_pass_through_to_openai_untouched() {
    let paths = Paths::discover();
    let dir = Scratch::new("responses-native");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let az = Mock::start(&paths, &dir.0, "az", Dialect::AzureOpenai, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&az)
        .route("gpt", &["oa/o4-mini", "az/o4-mini-deployment"])
        .start(&paths, &dir)
        .await;
    for (stream, fault, mock, model) in [
        (false, "", &oa, "o4-mini"),
        (true, "", &oa, "o4-mini"),
        (false, "oa:status=500", &az, "o4-mini-deployment"),
        (true, "oa:status=500", &az, "o4-mini-deployment"),
    ] {
        let body = json!({
            "model": "gpt",
            "stream": stream,
            "instructions": "You are terse.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
            "include": ["reasoning.encrypted_content"],
            "store": false,
            "reasoning": {"effort": "low", "summary": "auto"},
            "truncation": "auto",
            "metadata": {"ticket": "42"},
            "max_output_tokens": 2048,
            "prompt_cache_key": "greeting",
        });
        let (status, h, text) = post(&gw, "/v1/responses", &body, &[("x-mock", fault)]).await;
        assert_eq!(status, 200, "{}: {text}", mock.name);
        assert_eq!(header(&h, "x-switchyard-provider"), mock.name);
        let response = if stream {
            let ev = events(&text);
            assert_eq!(ev.first().unwrap().0, "response.created", "{text}");
            assert_eq!(ev.last().unwrap().0, "response.completed", "{text}");
            for (name, data) in &ev {
                assert_eq!(data["type"], *name, "{text}");
            }
            ev.last().unwrap().1["response"].clone()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(response["object"], "response", "{response}");
        assert_eq!(response["status"], "completed", "{response}");
        assert_eq!(response["model"], model, "{response}");
        assert_eq!(response["store"], false, "{response}");
        assert_eq!(response["metadata"], json!({"ticket": "42"}), "{response}");
        assert_eq!(response["output"][0]["type"], "reasoning", "{response}");
        assert_eq!(
            response["output"][0]["encrypted_content"], ENCRYPTED_REASONING,
            "{response}"
        );
        assert_eq!(
            response["output"][1]["content"][0]["text"],
            format!("Hello from {} ({model}). [system: You are terse.]", mock.name),
            "{response}"
        );
        let reqs = mock.requests().await;
        let got = reqs.last().unwrap();
        let path = if mock.name == "az" {
            "/openai/v1/responses"
        } else {
            "/v1/responses"
        };
        assert_eq!(got["path"], path, "{got}");
        let mut sent = body.clone();
        sent["model"] = json!(model);
        assert_eq!(
            got["body"], sent,
            "{}: the client's body, only the model replaced",
            mock.name
        );
    }
}

/// (d) What only a client API's own targets can do goes only to them: an
/// Anthropic server tool skips the non-Anthropic primary, and is refused in
/// Anthropic's shape when the plan has no Anthropic target; the same for a
/// Responses built-in tool and `previous_response_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_only_the_native_api_does_goes_to_native_targets_only() {
    let paths = Paths::discover();
    let dir = Scratch::new("native-only");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let ge = Mock::start(&paths, &dir.0, "ge", Dialect::Gemini, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&an)
        .provider(&ge)
        .route("search", &["oa/gpt-4o-mini", "an/claude-haiku"])
        .route("nosearch", &["oa/gpt-4o-mini", "ge/gemini-2.0-flash"])
        .route("gpt", &["an/claude-haiku", "ge/gemini-2.0-flash", "oa/gpt-4o-mini"])
        .start(&paths, &dir)
        .await;
    let web_search = json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 3});
    for stream in [false, true] {
        let mut body = messages_body("search", "What happened today?");
        body["tools"] = json!([web_search, weather_tool()]);
        body["tool_choice"] = json!({"type": "auto"});
        body["stream"] = json!(stream);
        let (status, h, text) = post(&gw, "/v1/messages", &body, &[]).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(header(&h, "x-switchyard-provider"), "an", "{text}");
        assert_eq!(
            header(&h, "x-switchyard-attempts"),
            "1",
            "the primary was skipped, not tried"
        );
        let got = an.requests().await;
        assert_eq!(got.last().unwrap()["body"]["tools"][0], web_search);
    }
    assert!(oa.requests().await.is_empty(), "the OpenAI primary was never asked");

    let mut body = messages_body("nosearch", "What happened today?");
    body["tools"] = json!([web_search]);
    let (status, h, text) = post(&gw, "/v1/messages", &body, &[]).await;
    assert_eq!(status, 400, "{text}");
    assert!(header(&h, "content-type").starts_with("application/json"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/messages"), "{v}");
    assert!(v.get("request_id").is_some(), "{v}");
    assert!(oa.requests().await.is_empty() && ge.requests().await.is_empty());

    // Responses: a built-in tool goes to OpenAI only, third in the chain.
    let body = json!({"model": "gpt", "input": "What happened today?", "tools": [{"type": "web_search"}]});
    let (status, h, text) = post(&gw, "/v1/responses", &body, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&h, "x-switchyard-provider"), "oa");
    assert_eq!(
        header(&h, "x-switchyard-attempts"),
        "1",
        "Anthropic and Gemini skipped, not tried"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "response", "{v}");
    let first_id = v["id"].as_str().unwrap().to_string();
    let got = oa.requests().await;
    assert_eq!(got.last().unwrap()["body"]["tools"], json!([{"type": "web_search"}]));
    // `previous_response_id` too: the response it names is OpenAI's.
    let body = json!({"model": "gpt", "previous_response_id": first_id, "input": "And tomorrow?"});
    let (status, h, text) = post(&gw, "/v1/responses", &body, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&h, "x-switchyard-provider"), "oa");
    assert_eq!(
        oa.requests().await.last().unwrap()["body"]["previous_response_id"],
        first_id
    );
    assert!(
        an.requests()
            .await
            .iter()
            .all(|q| q["path"] == "/v1/messages" && q["body"]["model"] == "claude-haiku")
    );
    assert!(ge.requests().await.is_empty(), "{:?}", ge.requests().await);
    // And refused, in OpenAI's shape, when the plan has no OpenAI target.
    let body = json!({"model": "an/claude-haiku", "input": "What happened today?", "tools": [{"type": "web_search"}]});
    let (status, _, text) = post(&gw, "/v1/responses", &body, &[]).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "unsupported_tool", "{v}");
}

/// (e) Errors in the client API's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_the_client_apis_shape() {
    let paths = Paths::discover();
    let dir = Scratch::new("inbound-errors");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&an)
        .route("chat", &["oa/gpt-4o-mini", "an/claude-haiku"])
        .start(&paths, &dir)
        .await;
    // An unknown model: Anthropic's not_found_error.
    let (status, h, text) = post(&gw, "/v1/messages", &messages_body("no-such-model", "hi"), &[]).await;
    assert_eq!(status, 404, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "not_found_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no-such-model"), "{v}");
    assert_eq!(v["request_id"], header(&h, "x-request-id"), "{v}");
    // A malformed request: Anthropic's invalid_request_error.
    let (status, _, text) = post(&gw, "/v1/messages", &json!({"model": "chat", "max_tokens": 5}), &[]).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("messages"), "{v}");
    // Every attempt failing: the summary, in Anthropic's shape, with the status
    // of the last attempt.
    let (status, _, text) = post(
        &gw,
        "/v1/messages",
        &messages_body("chat", "hi"),
        &[("x-mock", "oa:status=500;an:status=529")],
    )
    .await;
    assert_eq!(status, 529, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("all_attempts_failed: 2 attempts failed"),
        "{message}"
    );
    assert!(
        message.contains("oa/gpt-4o-mini") && message.contains("an/claude-haiku"),
        "{message}"
    );
    assert!(
        v.get("attempts").is_none(),
        "Anthropic's shape has no attempts list: {v}"
    );
    // Responses: OpenAI's shape.
    let (status, _, text) = post(
        &gw,
        "/v1/responses",
        &json!({"model": "chat", "input": "hi"}),
        &[("x-mock", "*:status=500")],
    )
    .await;
    assert_eq!(status, 500, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "all_attempts_failed", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("2 attempts failed"),
        "{v}"
    );
    let (status, _, text) = post(&gw, "/v1/responses", &json!({"model": "chat"}), &[]).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
}

/// (e) The gateway's own refusals — authentication, checked before anything
/// else; permissions; limits — come in the client API's shape too, as the
/// official Anthropic SDK sees them, and an Anthropic client tells
/// `budget_exceeded` from `rate_limit_exceeded` (both Anthropic
/// `rate_limit_error`s) by the code leading the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_refusals_come_in_the_client_apis_shape() {
    let paths = Paths::discover();
    let dir = Scratch::new("inbound-refusals");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&an)
        .route("chat", &["an/claude-haiku", "oa/gpt-4o-mini"])
        .route("other", &["oa/gpt-4o-mini"])
        .yaml(
            "prices:\n  an/claude-haiku: { input: 1.0, output: 2.0 }\n  oa/gpt-4o-mini: { input: 1.0, output: 2.0 }\n",
        )
        .start(&paths, &dir)
        .await;
    let (_, good) = gw.create_key(&json!({"name": "good"})).await;
    gw.wait_for_key(&good, "chat").await;
    let (revoked_id, revoked) = gw.create_key(&json!({"name": "gone"})).await;
    let (_, expired) = gw
        .create_key(&json!({"name": "old", "expires_at_ms": 1_000_000_000_000u64}))
        .await;
    let (_, other_only) = gw.create_key(&json!({"name": "other-only", "routes": ["other"]})).await;
    let (_, slow) = gw.create_key(&json!({"name": "slow", "limits": {"rpm": 2}})).await;
    let (_, broke) = gw
        .create_key(&json!({"name": "broke", "limits": {"budget_day_usd": 0.000001}}))
        .await;
    let (s, _) = gw
        .admin_call("POST", &format!("/admin/v1/keys/{revoked_id}/revoke"), None)
        .await;
    assert_eq!(s, 200);
    // Every Envoy has the newest table within a second (revocation.rs measures it).
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let before = oa.requests().await.len() + an.requests().await.len();

    // No key at all, in raw HTTP: Anthropic's shape for both Messages paths,
    // OpenAI's for Responses, each with the request id.
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let (status, h, text) = post(&gw, path, &messages_body("chat", "hi"), &[]).await;
        assert_eq!(status, 401, "{path}: {text}");
        assert!(header(&h, "content-type").starts_with("application/json"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error", "{path}: {v}");
        assert_eq!(v["error"]["type"], "authentication_error", "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid_api_key: "), "{path}: {message}");
        assert!(!header(&h, "x-request-id").is_empty());
        assert_eq!(v["request_id"], header(&h, "x-request-id"), "{path}: {v}");
        assert!(v.get("code").is_none() && v["error"].get("code").is_none(), "{v}");
    }
    let (status, h, text) = post(&gw, "/v1/responses", &json!({"model": "chat", "input": "hi"}), &[]).await;
    assert_eq!(status, 401, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
    assert_eq!(v["error"]["request_id"], header(&h, "x-request-id"), "{v}");

    // The SDK: each refusal its own exception, Anthropic's error body, the
    // gateway's code first in the message.
    let case = |name: &str, key: &str, model: &str, call: &str, tries: u32| json!({"name": name, "key": key, "model": model, "call": call, "tries": tries});
    let cases = [
        case("unknown", "sk-sy-not-a-key", "chat", "create", 1),
        case("revoked", &revoked, "chat", "create", 1),
        case("expired", &expired, "chat", "create", 1),
        case("count_tokens", "sk-sy-not-a-key", "chat", "count_tokens", 1),
        case("forbidden", &other_only, "chat", "create", 1),
        case("budget", &broke, "chat", "create", 1),
        // RPM 2: a first request or two pass on credit, then the limit answers.
        case("rate", &slow, "chat", "create", 4),
        case("good", &good, "chat", "create", 1),
    ];
    let v = sdk("anthropic_errors.py", gw.url.clone(), &cases).await;
    let expect = [
        (
            "unknown",
            401,
            "AuthenticationError",
            "authentication_error",
            "invalid_api_key",
        ),
        (
            "revoked",
            401,
            "AuthenticationError",
            "authentication_error",
            "invalid_api_key",
        ),
        (
            "expired",
            401,
            "AuthenticationError",
            "authentication_error",
            "invalid_api_key",
        ),
        (
            "count_tokens",
            401,
            "AuthenticationError",
            "authentication_error",
            "invalid_api_key",
        ),
        (
            "forbidden",
            403,
            "PermissionDeniedError",
            "permission_error",
            "model_not_allowed",
        ),
        ("budget", 429, "RateLimitError", "rate_limit_error", "budget_exceeded"),
        ("rate", 429, "RateLimitError", "rate_limit_error", "rate_limit_exceeded"),
    ];
    for (name, status, exception, kind, code) in expect {
        let r = &v[name];
        assert_eq!(r["status"], status, "{name}: {v}");
        assert_eq!(r["exception"], exception, "{name}: {v}");
        assert_eq!(r["body"]["type"], "error", "{name}: {v}");
        assert_eq!(r["body"]["error"]["type"], kind, "{name}: {v}");
        let message = r["body"]["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{code}: ")), "{name}: {message}");
        assert!(r["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{name}: {v}");
        assert_eq!(r["body"]["request_id"], r["request_id"], "{name}: {v}");
        if status == 429 {
            // The gateway's own marks stay, whatever the client's API.
            assert_eq!(r["limit"], "gateway", "{name}: {v}");
            let subject = if name == "budget" { "key broke" } else { "key slow" };
            assert_eq!(r["limit_subject"], subject, "{name}: {v}");
        }
    }
    assert_eq!(v["good"], json!({"served": 1}), "{v}");
    let served = v["rate"]["served_before"].as_u64().unwrap();
    assert!(served >= 1, "{v}");
    assert_eq!(
        oa.requests().await.len() + an.requests().await.len(),
        before + 1 + served as usize,
        "a refused request reached a provider"
    );
}

/// (d) A Responses request that names state stored at a provider
/// (`previous_response_id`, `conversation`, an `item_reference`) goes to one
/// target: the first of its plan, in the route's configured order (weights do
/// not draw it), that speaks the Responses API itself. When that target fails
/// the client gets its error, which says why nothing else was tried: the
/// state is not at any other provider. A plan without such a target is
/// refused 400, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_state_goes_to_one_provider_only() {
    let paths = Paths::discover();
    let dir = Scratch::new("stored-state");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let az = Mock::start(&paths, &dir.0, "az", Dialect::AzureOpenai, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&az)
        .provider(&an)
        .yaml(concat!(
            "routes:\n",
            "  - { model: gpt, chain: [an/claude-haiku, oa/o4-mini, az/o4-mini-deployment] }\n",
            "  - { model: weighted, chain: [oa/o4-mini, az/o4-mini-deployment], weights: [1, 99] }\n",
            "  - { model: claude, chain: [an/claude-haiku] }\n",
        ))
        .start(&paths, &dir)
        .await;
    // A response stored at OpenAI (the mocks know the ids they stored).
    let first = json!({"model": "oa/o4-mini", "input": "What happened today?"});
    let (status, _, text) = post(&gw, "/v1/responses", &first, &[]).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let earlier = v["id"].as_str().unwrap().to_string();
    let continued = |model: &str| json!({"model": model, "previous_response_id": earlier, "input": "And tomorrow?"});

    // Served by the first target that holds Responses state: OpenAI, second in
    // the chain; Anthropic skipped, not tried.
    let (status, h, text) = post(&gw, "/v1/responses", &continued("gpt"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&h, "x-switchyard-provider"), "oa");
    assert_eq!(header(&h, "x-switchyard-attempts"), "1");
    assert_eq!(
        oa.requests().await.last().unwrap()["body"]["previous_response_id"],
        earlier.as_str()
    );

    // OpenAI fails: the client gets its error; Azure, next in the chain, is never asked.
    for (body, member) in [
        (continued("gpt"), "previous_response_id"),
        (
            json!({"model": "gpt", "conversation": "conv_1", "input": "And tomorrow?"}),
            "conversation",
        ),
        (
            json!({"model": "gpt", "input": [{"type": "item_reference", "id": "msg_1"},
                {"role": "user", "content": "And tomorrow?"}]}),
            "item_reference",
        ),
    ] {
        let (status, h, text) = post(&gw, "/v1/responses", &body, &[("x-mock", "oa:status=500")]).await;
        assert_eq!(status, 500, "{member}: {text}");
        assert_eq!(header(&h, "x-switchyard-attempts"), "1", "{member}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("1 attempt failed: oa/o4-mini: 500"),
            "{member}: {message}"
        );
        assert!(
            message.contains(&format!("`{member}` names state stored at oa/o4-mini")),
            "{member}: {message}"
        );
        assert!(message.contains("never to another provider"), "{member}: {message}");
    }
    assert!(az.requests().await.is_empty(), "{:?}", az.requests().await);
    assert!(an.requests().await.is_empty(), "{:?}", an.requests().await);

    // A weighted route: the configured order, not the draw (Azure weighs 99 of 100).
    for _ in 0..8 {
        let (status, h, text) = post(&gw, "/v1/responses", &continued("weighted"), &[]).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(header(&h, "x-switchyard-provider"), "oa", "{text}");
    }
    assert!(az.requests().await.is_empty(), "{:?}", az.requests().await);

    // No target holds Responses state: 400, nothing sent.
    let (status, h, text) = post(&gw, "/v1/responses", &continued("claude"), &[]).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "previous_response_not_supported", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`previous_response_id`") && message.contains("/v1/responses") && message.contains("`claude`"),
        "{message}"
    );
    assert_eq!(v["error"]["request_id"], header(&h, "x-request-id"), "{v}");
    assert!(an.requests().await.is_empty(), "{:?}", an.requests().await);
}

/// (f) A stream that breaks after it was committed to the client ends with the
/// client API's error event (Anthropic `error`; Responses `error` or
/// `response.failed`), never a silent or a complete-looking end: whether the
/// target speaks the client's API or is translated, and whether the provider
/// said so (its in-stream error) or just stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_after_commit_ends_with_the_client_apis_error_event() {
    let paths = Paths::discover();
    let dir = Scratch::new("inbound-broken");
    let oa = Mock::start(&paths, &dir.0, "oa", Dialect::Openai, &[]);
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let ge = Mock::start(&paths, &dir.0, "ge", Dialect::Gemini, &[]);
    let gw = Gateway::builder()
        .provider(&oa)
        .provider(&an)
        .provider(&ge)
        .start(&paths, &dir)
        .await;
    // Each fault cuts the stream after its first words (the Anthropic stream's
    // `message_start`, block start, ping and two deltas; OpenAI's role chunk and
    // two words; Gemini's first two chunks; the Responses stream's first two
    // deltas), then ends it cleanly (`end_after`) or with the provider's error
    // event (`error_event_after`).
    let cuts = [
        ("an/claude-haiku", "an", 5),
        ("oa/gpt-4o-mini", "oa", 3),
        ("ge/gemini-2.0-flash", "ge", 2),
    ];
    for (model, mock, k) in cuts {
        for fault in ["end_after", "error_event_after"] {
            // Chunks 50 ms apart: the first words reach the client (the stream
            // is committed) before the break.
            let x_mock = format!("{mock}:chunk_delay_ms=50,{fault}={k}");
            // A Messages client.
            let mut body = messages_body(model, "Say hello to everyone");
            body["stream"] = json!(true);
            let (status, _, text) = post(&gw, "/v1/messages", &body, &[("x-mock", &x_mock)]).await;
            let who = format!("Messages via {model}, {x_mock}");
            assert_eq!(status, 200, "{who}: {text}");
            let ev = events(&text);
            let said: String = ev
                .iter()
                .filter_map(|(_, d)| d.pointer("/delta/text").and_then(Value::as_str))
                .collect();
            assert!(said.starts_with("Hello"), "{who}: committed before it broke: {text}");
            let (name, data) = ev.last().unwrap();
            assert_eq!(name, "error", "{who}: {text}");
            assert_eq!(data["type"], "error", "{who}: {text}");
            assert!(
                data["error"]["type"].is_string() && data["error"]["message"].is_string(),
                "{who}: {text}"
            );
            assert!(ev.iter().all(|(n, _)| n != "message_stop"), "{who}: {text}");
            if fault == "error_event_after" {
                assert!(
                    data["error"]["message"].as_str().unwrap().contains(MID_STREAM_ERROR),
                    "{who}: the provider's reason reaches the client: {text}"
                );
            }

            // A Responses client (OpenAI's Responses stream is cut after its
            // created, in_progress, item added, part added and first delta).
            let x_mock = if mock == "oa" {
                format!("oa:chunk_delay_ms=50,{fault}=5")
            } else {
                x_mock.clone()
            };
            let body = json!({"model": model, "input": "Say hello to everyone", "stream": true});
            let (status, _, text) = post(&gw, "/v1/responses", &body, &[("x-mock", &x_mock)]).await;
            let who = format!("Responses via {model}, {x_mock}");
            assert_eq!(status, 200, "{who}: {text}");
            let ev = events(&text);
            assert_eq!(ev[0].0, "response.created", "{who}: {text}");
            assert!(
                ev.iter().any(|(n, _)| n == "response.output_text.delta"),
                "{who}: committed before it broke: {text}"
            );
            let (name, data) = ev.last().unwrap();
            assert!(name == "error" || name == "response.failed", "{who}: {text}");
            assert_eq!(data["type"], *name, "{who}: {text}");
            if name == "response.failed" {
                assert_eq!(data["response"]["status"], "failed", "{who}: {text}");
                assert!(data["response"]["error"]["message"].is_string(), "{who}: {text}");
            } else {
                assert!(data["message"].is_string(), "{who}: {text}");
            }
            assert!(ev.iter().all(|(n, _)| n != "response.completed"), "{who}: {text}");
            if fault == "error_event_after" {
                let message = data
                    .pointer("/response/error/message")
                    .or(data.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                assert!(
                    message.contains(MID_STREAM_ERROR),
                    "{who}: the provider's reason reaches the client: {text}"
                );
            }
            // Numbered in order, the error event included.
            let numbers: Vec<u64> = ev
                .iter()
                .map(|(_, d)| d["sequence_number"].as_u64().unwrap_or(u64::MAX))
                .collect();
            assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>(), "{who}: {text}");
        }
    }
    // A native stream whose event is broken (its JSON cut short) after commit:
    // the broken event never reaches the client, an error event of its API
    // ends the stream.
    let corrupt = [
        (
            "/v1/messages",
            json!({"model": "an/claude-haiku", "max_tokens": 256, "stream": true,
                "messages": [{"role": "user", "content": "Say hello to everyone"}]}),
            "an:chunk_delay_ms=50,corrupt_event=5",
        ),
        (
            "/v1/responses",
            json!({"model": "oa/gpt-4o-mini", "input": "Say hello to everyone", "stream": true}),
            "oa:chunk_delay_ms=50,corrupt_event=6",
        ),
    ];
    for (path, body, x_mock) in corrupt {
        let (status, _, text) = post(&gw, path, &body, &[("x-mock", x_mock)]).await;
        assert_eq!(status, 200, "{path} {x_mock}: {text}");
        let ev = events(&text);
        let (name, _) = ev.last().unwrap();
        assert!(
            name == "error" || (path == "/v1/responses" && name == "response.failed"),
            "{path}: {text}"
        );
        assert!(
            ev.iter().all(|(n, _)| n != "message_stop" && n != "response.completed"),
            "{path}: {text}"
        );
        assert!(text.contains("Hello"), "{path}: committed before it broke: {text}");
    }
}

/// (g) count_tokens: answered by the gateway with an estimate; nothing goes to a
/// provider, and a request with a server tool is counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_answered_by_the_gateway() {
    let paths = Paths::discover();
    let dir = Scratch::new("count-tokens");
    let an = Mock::start(&paths, &dir.0, "an", Dialect::Anthropic, &[]);
    let gw = Gateway::builder()
        .provider(&an)
        .route("claude", &["an/claude-haiku"])
        .start(&paths, &dir)
        .await;
    let short = json!({"model": "claude", "messages": [{"role": "user", "content": "Say hello"}]});
    let (status, h, text) = post(&gw, "/v1/messages/count_tokens", &short, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert!(header(&h, "content-type").starts_with("application/json"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let n_short = v["input_tokens"].as_u64().unwrap();
    assert!(n_short > 0, "{v}");
    // A longer prompt counts more.
    let long = json!({"model": "claude", "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello ".repeat(200)}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}, weather_tool()]});
    let (status, _, text) = post(&gw, "/v1/messages/count_tokens", &long, &[]).await;
    assert_eq!(status, 200, "{text}");
    let n_long = serde_json::from_str::<Value>(&text).unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(n_long > n_short * 10, "{n_long} vs {n_short}");
    assert!(an.requests().await.is_empty(), "count_tokens never reaches a provider");
    // Malformed: Anthropic's error.
    let (status, _, text) = post(&gw, "/v1/messages/count_tokens", &json!({"model": "claude"}), &[]).await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
}
