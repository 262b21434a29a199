//! The mock provider itself: each dialect's validation, and each misbehaviour the
//! fail-over tests rely on (driven directly, without Envoy).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::harness::sse_data;
use switchyard_tests::mock::{self, Dialect, MockConfig};

async fn start(dialect: Dialect) -> String {
    let mut cfg = MockConfig::new("m", dialect);
    cfg.api_key = Some("k".into());
    let (addr, _task) = mock::serve(cfg, "127.0.0.1:0").await.unwrap();
    format!("http://{addr}")
}

fn openai(base: &str, body: &Value, mock: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("k")
        .header("x-mock", mock)
        .json(body)
}

fn anthropic(base: &str, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

#[tokio::test]
async fn openai_dialect_validation() {
    let base = start(Dialect::Openai).await;
    let ok = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(openai(&base, &ok, "").send().await.unwrap().status(), 200);
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut extra = ok.clone();
    extra["fallbacks"] = json!([]);
    let r = openai(&base, &extra, "").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "Unrecognized request argument supplied: fallbacks"
    );
    // An Anthropic-shaped request to the OpenAI endpoint fails like OpenAI would.
    let r = openai(
        &base,
        &json!({"model": "gpt", "max_tokens": 5, "system": "x", "messages": []}),
        "",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn anthropic_dialect_validation() {
    let base = start(Dialect::Anthropic).await;
    let ok = json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let v: Value = anthropic(&base, &ok).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    for (body, msg) in [
        (
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens: Field required",
        ),
        (
            json!({"model": "c", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            json!({"model": "c", "max_tokens": 1, "stream_options": {}, "messages": []}),
            "stream_options: Extra inputs are not permitted",
        ),
    ] {
        let r = anthropic(&base, &body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], msg);
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "anthropic-version is required");
}

#[tokio::test]
async fn misbehaviour_on_demand() {
    let base = start(Dialect::Openai).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    let stream = json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]});

    let r = openai(&base, &body, "m:status=429,retry_after=3").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    // Sections for other instances are ignored.
    assert_eq!(
        openai(&base, &body, "other:status=500").send().await.unwrap().status(),
        200
    );

    let t = Instant::now();
    assert_eq!(
        openai(&base, &body, "*:delay_ms=300").send().await.unwrap().status(),
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    let t = Instant::now();
    let text = openai(&base, &stream, "m:chunk_delay_ms=50")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200), "chunks were not spaced");
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));

    let hang = openai(&base, &body, "m:hang")
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(hang.unwrap_err().is_timeout());

    let r = openai(&base, &stream, "m:reset_after=2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the stream must be cut, not ended");

    let r = openai(&base, &body, "m:malformed").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_err());

    let recorded: Value = reqwest::get(format!("{base}/_mock/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded.as_array().unwrap().len(), 7);
    assert_eq!(recorded[0]["body"]["model"], "gpt");
}

#[tokio::test]
async fn fail_rate_fails_a_share() {
    let mut cfg = MockConfig::new("m", Dialect::Anthropic);
    cfg.fail_rate = 0.5;
    cfg.fail_status = 529;
    let (addr, _task) = mock::serve(cfg, "127.0.0.1:0").await.unwrap();
    let body = json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let mut failed = 0;
    for _ in 0..200 {
        let r = anthropic(&format!("http://{addr}"), &body).send().await.unwrap();
        if r.status() == 529 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["type"], "overloaded_error");
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "{failed}/200 failed at rate 0.5");
}

// === The misbehaviours added with the per-dialect mock ===

/// A chat request in `dialect`'s own shape (model `m`, one user turn, `extra`
/// merged into the body), with the instance's key `k`.
fn chat(base: &str, dialect: Dialect, stream: bool, mock: &str, extra: Value) -> reqwest::RequestBuilder {
    let c = reqwest::Client::new();
    let (r, mut body) = match dialect {
        Dialect::Openai => (
            c.post(format!("{base}/v1/chat/completions")).bearer_auth("k"),
            json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Dialect::AzureOpenai => (
            c.post(format!(
                "{base}/openai/deployments/m/chat/completions?api-version=2024-10-21"
            ))
            .header("api-key", "k"),
            json!({"stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Dialect::Anthropic => (
            c.post(format!("{base}/v1/messages"))
                .header("x-api-key", "k")
                .header("anthropic-version", "2023-06-01"),
            json!({"model": "m", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Dialect::Gemini | Dialect::Vertex => {
            let op = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            let url = format!("{base}{}/models/m:{op}", dialect.base_path());
            let r = if dialect == Dialect::Gemini {
                c.post(url).header("x-goog-api-key", "k")
            } else {
                c.post(url).bearer_auth("k")
            };
            (r, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        }
        Dialect::Bedrock => {
            let op = if stream { "converse-stream" } else { "converse" };
            (
                c.post(format!("{base}/model/m/{op}")).bearer_auth("k"),
                json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
            )
        }
    };
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    r.header("x-mock", mock).json(&body)
}

/// A stream's events as `(name, payload)`: SSE `event:` and `data:` (`[DONE]` as
/// a string), or Bedrock frames (`:event-type`, or `:exception-type` for an
/// exception). A payload that is not JSON, or a frame that does not decode, is an
/// `Err` with what arrived.
fn stream_events(dialect: Dialect, body: &[u8]) -> Vec<(String, Result<Value, String>)> {
    if dialect == Dialect::Bedrock {
        return mock::decode_event_stream(body)
            .into_iter()
            .map(|f| match f {
                Ok(f) => {
                    let name = f.header(":event-type").or(f.header(":exception-type")).unwrap_or("");
                    let payload = serde_json::from_slice(&f.payload)
                        .map_err(|_| String::from_utf8_lossy(&f.payload).into_owned());
                    (name.to_string(), payload)
                }
                Err(e) => (String::new(), Err(e)),
            })
            .collect();
    }
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            let payload = if data == "[DONE]" {
                Ok(json!("[DONE]"))
            } else {
                serde_json::from_str(&data).map_err(|_| data.clone())
            };
            (name, payload)
        })
        .collect()
}

async fn events_of(base: &str, dialect: Dialect, mock: &str) -> Vec<(String, Result<Value, String>)> {
    let r = chat(base, dialect, true, mock, json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200, "{dialect:?} {mock}");
    stream_events(dialect, &r.bytes().await.unwrap())
}

#[tokio::test]
async fn first_event_error_in_every_dialect() {
    for dialect in Dialect::ALL {
        let base = start(dialect).await;
        let events = events_of(&base, dialect, "m:first_event_error").await;
        assert_eq!(events.len(), 1, "{dialect:?}: {events:?}");
        let (name, payload) = &events[0];
        let v = payload.as_ref().unwrap();
        match dialect {
            Dialect::Openai | Dialect::AzureOpenai => {
                assert_eq!(v["error"]["type"], "server_error", "{v}");
                assert!(v["error"]["message"].as_str().unwrap().contains("server had an error"));
            }
            Dialect::Anthropic => {
                assert_eq!(name, "error");
                assert_eq!(
                    v,
                    &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                );
            }
            Dialect::Gemini | Dialect::Vertex => {
                assert_eq!(
                    (v["error"]["code"].clone(), v["error"]["status"].clone()),
                    (json!(503), json!("UNAVAILABLE"))
                );
            }
            Dialect::Bedrock => {
                assert_eq!(name, "throttlingException");
                assert!(v["message"].is_string(), "{v}");
            }
        }
    }
}

#[tokio::test]
async fn error_event_after_n_events_in_every_dialect() {
    for dialect in Dialect::ALL {
        let base = start(dialect).await;
        let good = events_of(&base, dialect, "").await;
        let events = events_of(&base, dialect, "m:error_event_after=2").await;
        assert_eq!(events.len(), 3, "{dialect:?}: {events:?}");
        // The first two are the answer's own, intact.
        for (i, (name, payload)) in events[..2].iter().enumerate() {
            assert_eq!(name, &good[i].0, "{dialect:?}");
            assert!(
                payload.as_ref().is_ok_and(|v| v.get("error").is_none()),
                "{dialect:?}: {payload:?}"
            );
        }
        let (name, payload) = &events[2];
        let v = payload.as_ref().unwrap();
        assert!(v.to_string().contains(mock::MID_STREAM_ERROR), "{dialect:?}: {v}");
        match dialect {
            Dialect::Anthropic => assert_eq!((name.as_str(), &v["error"]["type"]), ("error", &json!("api_error"))),
            Dialect::Gemini | Dialect::Vertex => assert_eq!(v["error"]["status"], "INTERNAL"),
            Dialect::Bedrock => {
                assert_eq!(name, "modelStreamErrorException");
                assert_eq!(v["originalStatusCode"], 500);
            }
            Dialect::Openai | Dialect::AzureOpenai => assert_eq!(v["error"]["type"], "server_error"),
        }
    }
}

#[tokio::test]
async fn corrupt_event_in_every_dialect() {
    for dialect in Dialect::ALL {
        let base = start(dialect).await;
        let good = events_of(&base, dialect, "").await;
        let events = events_of(&base, dialect, "m:corrupt_event=2").await;
        // Same length, same framing: only the second event is broken.
        assert_eq!(events.len(), good.len(), "{dialect:?}: {events:?}");
        for (i, (name, payload)) in events.iter().enumerate() {
            if i == 1 {
                assert!(payload.is_err(), "{dialect:?}: {payload:?}");
                if dialect == Dialect::Bedrock {
                    assert_eq!(payload, &Err("message CRC mismatch".to_string()));
                } else {
                    assert_eq!(name, &good[1].0, "{dialect:?}: the event keeps its name");
                }
            } else {
                assert!(payload.is_ok(), "{dialect:?} event {i}: {payload:?}");
            }
        }
    }
}

#[tokio::test]
async fn safety_blocks_in_every_dialect() {
    for dialect in Dialect::ALL {
        let base = start(dialect).await;
        for safety in ["prompt", "finish"] {
            let mock = format!("m:safety={safety}");
            let r = chat(&base, dialect, false, &mock, json!({})).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            let streamed = chat(&base, dialect, true, &mock, json!({})).send().await.unwrap();
            assert_eq!(
                streamed.status().as_u16(),
                status,
                "{dialect:?} {mock}: streamed or not alike"
            );
            let events = stream_events(dialect, &streamed.bytes().await.unwrap());
            let last_json = |want: &str| {
                events
                    .iter()
                    .filter_map(|(n, p)| p.as_ref().ok().filter(|_| want.is_empty() || n == want))
                    .cloned()
                    .collect::<Vec<Value>>()
            };
            match (dialect, safety) {
                (Dialect::Gemini | Dialect::Vertex, "prompt") => {
                    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY", "{v}");
                    assert!(v.get("candidates").is_none());
                    assert_eq!(events.len(), 1);
                    assert_eq!(events[0].1.as_ref().unwrap()["promptFeedback"]["blockReason"], "SAFETY");
                }
                (Dialect::Gemini | Dialect::Vertex, _) => {
                    let c = &v["candidates"][0];
                    assert_eq!(c["finishReason"], "SAFETY", "{v}");
                    assert!(c.get("content").is_none(), "no text: {v}");
                    assert!(
                        c["safetyRatings"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["blocked"] == true)
                    );
                    assert_eq!(events.len(), 1);
                    assert_eq!(events[0].1.as_ref().unwrap()["candidates"][0]["finishReason"], "SAFETY");
                }
                (Dialect::Anthropic, _) => {
                    assert_eq!(
                        (v["stop_reason"].clone(), v["stop_details"]["type"].clone()),
                        (json!("refusal"), json!("refusal")),
                        "{v}"
                    );
                    assert_eq!(v["content"].as_array().unwrap().is_empty(), safety == "prompt", "{v}");
                    let delta = &last_json("message_delta")[0];
                    assert_eq!(delta["delta"]["stop_reason"], "refusal");
                    assert_eq!(events.last().unwrap().0, "message_stop");
                }
                (Dialect::Bedrock, _) => {
                    let stop = if safety == "prompt" {
                        "guardrail_intervened"
                    } else {
                        "content_filtered"
                    };
                    assert_eq!(v["stopReason"], stop, "{v}");
                    assert_eq!(last_json("messageStop")[0]["stopReason"], stop);
                }
                (Dialect::Openai | Dialect::AzureOpenai, "prompt") => {
                    let code = if dialect == Dialect::Openai {
                        "invalid_prompt"
                    } else {
                        "content_filter"
                    };
                    assert_eq!((status, v["error"]["code"].clone()), (400, json!(code)), "{v}");
                    if dialect == Dialect::AzureOpenai {
                        assert_eq!(v["error"]["innererror"]["code"], "ResponsibleAIPolicyViolation");
                    }
                }
                (Dialect::Openai | Dialect::AzureOpenai, _) => {
                    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
                    assert!(v["choices"][0]["message"]["content"].is_null());
                    let finishes: Vec<Value> = last_json("")
                        .iter()
                        .filter_map(|c| c.pointer("/choices/0/finish_reason").filter(|f| !f.is_null()).cloned())
                        .collect();
                    assert_eq!(finishes, [json!("content_filter")]);
                }
            }
        }
    }
    // `finish=content_filter` is `safety=finish`.
    let base = start(Dialect::Gemini).await;
    let v: Value = chat(&base, Dialect::Gemini, false, "m:finish=content_filter", json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
}

#[tokio::test]
async fn auth_errors_echo_keys_only_where_the_provider_does() {
    // OpenAI echoes an unknown key masked: its first 8 and last 4 characters.
    let base = start(Dialect::Openai).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]});
    let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    let masked = format!("sk-proj-{}6789", "*".repeat(key.len() - 12));
    assert_eq!(
        v["error"]["message"],
        format!(
            "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        )
    );
    assert_eq!(v["error"]["code"], "invalid_api_key");
    // `echo_key_in_error` answers so even for a good key; a short key is echoed whole.
    let r = openai(&base, &body, "m:echo_key_in_error").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Incorrect API key provided: k."),
        "{v}"
    );

    // Anthropic, Azure, Gemini and Vertex never echo the key.
    for dialect in [
        Dialect::Anthropic,
        Dialect::AzureOpenai,
        Dialect::Gemini,
        Dialect::Vertex,
    ] {
        let base = start(dialect).await;
        let r = chat(&base, dialect, false, "m:echo_key_in_error", json!({}))
            .send()
            .await
            .unwrap();
        assert!([400, 401].contains(&r.status().as_u16()), "{dialect:?}");
        let text = r.text().await.unwrap();
        assert!(!text.contains(": k") && !text.contains("'k'"), "{dialect:?}: {text}");
    }

    // Bedrock's signature mismatch carries the canonical request: every signed
    // header as received, the session token included.
    let base = start(Dialect::Bedrock).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/model/m/converse"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=00",
        )
        .header("x-amz-date", "20250101T000000Z")
        .header("x-amz-security-token", "SESSION-TOKEN-SECRET")
        .header("x-mock", "m:echo_key_in_error")
        .json(&json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with("InvalidSignatureException:")
    );
    let v: Value = r.json().await.unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("\nx-amz-security-token:SESSION-TOKEN-SECRET\n"),
        "{message}"
    );
    assert!(
        message.contains("\nhost;x-amz-date;x-amz-security-token\n"),
        "{message}"
    );
}

#[tokio::test]
async fn bedrock_signatures_are_checked() {
    let mut cfg = MockConfig::new("m", Dialect::Bedrock);
    cfg.api_key = Some("AKIDEXAMPLE/secret".into());
    let (addr, _task) = mock::serve(cfg, "127.0.0.1:0").await.unwrap();
    let body = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
    let send = |auth: Option<&'static str>, date: &'static str| {
        let mut r = reqwest::Client::new()
            .post(format!("http://{addr}/model/m/converse"))
            .header("x-amz-date", date)
            .json(&body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let kind = |r: &reqwest::Response| {
        r.headers()["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string()
    };
    let r = send(None, "20250101T000000Z").await.unwrap();
    assert_eq!(
        (r.status().as_u16(), kind(&r)),
        (403, "MissingAuthenticationTokenException".into())
    );
    // Signed far from now: AWS allows five minutes.
    let r = send(
        Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
        "20150830T123600Z",
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), kind(&r)),
        (403, "InvalidSignatureException".into())
    );
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired: 20150830T123600Z"),
        "{v}"
    );
    // Scoped to another region.
    let r = send(
        Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
        "20150830T123600Z",
    )
    .await
    .unwrap();
    assert_eq!(kind(&r), "InvalidSignatureException");
}

#[tokio::test]
async fn gemini_function_calling_config() {
    let tools = json!([{"functionDeclarations": [{"name": "get_weather"}, {"name": "get_time"}]}]);
    for dialect in [Dialect::Gemini, Dialect::Vertex] {
        let base = start(dialect).await;
        let ask = |config: Value| {
            let extra = json!({"tools": tools, "toolConfig": {"functionCallingConfig": config}});
            chat(&base, dialect, false, "", extra).send()
        };
        // Validated as the API validates it.
        for (config, wanted) in [
            (json!({"mode": "auto"}), "'tool_config.function_calling_config.mode'"),
            (
                json!({"mode": "AUTO", "allowedFunctionNames": ["get_time"]}),
                "allowed_function_names",
            ),
            (
                json!({"mode": "ANY", "allowedFunctionNames": "get_time"}),
                "allowed_function_names",
            ),
            (json!({"mode": "ANY", "names": []}), "Unknown name \"names\""),
        ] {
            let r = ask(config.clone()).await.unwrap();
            assert_eq!(r.status(), 400, "{config}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(wanted),
                "{config}: {v}"
            );
        }
        let no_tools = chat(
            &base,
            dialect,
            false,
            "",
            json!({"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(no_tools.status(), 400);

        // Honoured: AUTO calls the first tool, NONE answers in text, ANY with
        // allowed names calls one of them.
        let part = |v: Value| v["candidates"][0]["content"]["parts"][0].clone();
        let v: Value = ask(json!({"mode": "AUTO"})).await.unwrap().json().await.unwrap();
        assert_eq!(part(v)["functionCall"]["name"], "get_weather");
        let v: Value = ask(json!({"mode": "NONE"})).await.unwrap().json().await.unwrap();
        assert!(part(v.clone())["text"].is_string(), "{v}");
        let v: Value = ask(json!({"mode": "ANY", "allowedFunctionNames": ["get_time"]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(part(v)["functionCall"]["name"], "get_time");
        // Protobuf JSON: snake_case names and enum numbers are the same fields.
        let extra = json!({"tools": tools, "tool_config": {"function_calling_config": {"mode": 2, "allowed_function_names": ["get_time"]}}});
        let v: Value = chat(&base, dialect, false, "", extra)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(part(v)["functionCall"]["name"], "get_time");
    }
}

#[tokio::test]
async fn gemini_streams_a_json_array_without_alt_sse() {
    let base = start(Dialect::Gemini).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/v1beta/models/m:streamGenerateContent"))
        .header("x-goog-api-key", "k")
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    let chunks = v.as_array().unwrap();
    assert!(chunks.len() > 1);
    assert_eq!(chunks.last().unwrap()["candidates"][0]["finishReason"], "STOP");
}

/// Sends `request` on a fresh connection; returns the body bytes that arrived
/// after the head, and how the connection ended (`Ok` for a clean close).
async fn raw_exchange(base: &str, request: String) -> (Vec<u8>, std::io::Result<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(got.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    (got[head_end..].to_vec(), end)
}

#[tokio::test]
async fn truncate_closes_or_resets_after_n_bytes() {
    let base = start(Dialect::Openai).await;
    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let request = |mock: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\nx-mock: {mock}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let (got, end) = raw_exchange(&base, request("m:truncate=20")).await;
    assert_eq!(got.len(), 20, "{}", String::from_utf8_lossy(&got));
    assert!(end.is_ok(), "a clean close: {end:?}");
    let (got, end) = raw_exchange(&base, request("m:truncate_reset=20")).await;
    assert_eq!(got.len(), 20);
    assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);

    // A client sees an answer shorter than its framing said, JSON or stream.
    for dialect in Dialect::ALL {
        let base = start(dialect).await;
        for stream in [false, true] {
            let r = chat(&base, dialect, stream, "m:truncate=30", json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.bytes().await.is_err(), "{dialect:?} stream={stream}");
        }
    }
}

#[tokio::test]
async fn tool_choice_is_honoured_in_each_dialect() {
    // OpenAI: "none" answers in text, a named function is the one called.
    let base = start(Dialect::Openai).await;
    let tools =
        json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]);
    let ask = |choice: Value| {
        let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice});
        openai(&base, &body, "").send()
    };
    let v: Value = ask(json!("none")).await.unwrap().json().await.unwrap();
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    let v: Value = ask(json!({"type": "function", "function": {"name": "b"}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "b");
    let r = openai(
        &base,
        &json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}),
        "",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "tool_choice without tools");

    // Anthropic and Bedrock: a named tool is the one called.
    let base = start(Dialect::Anthropic).await;
    let extra = json!({"tools": [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "b"}});
    let v: Value = chat(&base, Dialect::Anthropic, false, "", extra)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["name"], "b", "{v}");
    let base = start(Dialect::Bedrock).await;
    let extra = json!({"toolConfig": {"tools": [{"toolSpec": {"name": "a"}}, {"toolSpec": {"name": "b"}}], "toolChoice": {"tool": {"name": "b"}}}});
    let v: Value = chat(&base, Dialect::Bedrock, false, "", extra)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["output"]["message"]["content"][0]["toolUse"]["name"], "b", "{v}");
}

#[tokio::test]
async fn azure_streams_start_with_prompt_filter_results() {
    let base = start(Dialect::AzureOpenai).await;
    let events = events_of(&base, Dialect::AzureOpenai, "").await;
    let first = events[0].1.as_ref().unwrap();
    assert_eq!(first["choices"], json!([]));
    assert_eq!((first["id"].as_str(), first["object"].as_str()), (Some(""), Some("")));
    assert_eq!(first["prompt_filter_results"][0]["prompt_index"], 0);
    // Then chunks annotated with their own filter results.
    for (_, e) in &events[1..events.len() - 1] {
        let e = e.as_ref().unwrap();
        assert_eq!(e["object"], "chat.completion.chunk");
        assert!(e["choices"][0]["content_filter_results"].is_object(), "{e}");
    }
}
