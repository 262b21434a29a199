//! Anthropic Messages as a client API (`switchyard_core::inbound::anthropic`), checked
//! against Anthropic's documented examples (`tests/fixtures/inbound/anthropic/`, sources
//! in its README; the documented answers and streams of `tests/fixtures/anthropic/` and
//! `tests/fixtures/openai/`, sources in `tests/fixtures/README.md`).
//!
//! Requests are checked field by field and through the gateway's own chat validation;
//! answers and streams against the documented shapes; and the round trips Messages →
//! chat → Messages (through `dialect::anthropic`, the opposite translation) show that the
//! two directions agree on every field both forms hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use switchyard_core::dialect::{StreamTranslator as _, anthropic as dialect};
use switchyard_core::inbound::{InboundError, MAX_OUTPUT_TOKENS, StreamBack, anthropic};
use switchyard_core::request::Endpoint;

const CREATED: u64 = 1_700_000_000;

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The chat request of a Messages body, which the gateway's own validation of chat
/// requests must accept.
fn chat(body: &[u8]) -> Value {
    let inbound = anthropic::to_chat(body)
        .unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(body)));
    let bytes = serde_json::to_vec(&inbound.chat).unwrap();
    switchyard_core::request::inspect(&bytes, Endpoint::Chat).unwrap_or_else(|e| {
        panic!(
            "the gateway refuses the translation: {e:?}\n{}",
            inbound.chat
        )
    });
    assert_eq!(inbound.stream, inbound.chat["stream"] == true);
    inbound.chat
}

fn refused(body: Value) -> InboundError {
    anthropic::to_chat(body.to_string().as_bytes()).expect_err(&body.to_string())
}

// === requests ===

#[test]
fn documented_basic_request() {
    let body = include_bytes!("fixtures/inbound/anthropic/request_basic.json");
    let inbound = anthropic::to_chat(body).unwrap();
    assert!(!inbound.stream);
    assert_eq!(
        chat(body),
        json!({
            "model": "claude-opus-4-20250514",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Hello, Claude"}],
        })
    );
}

#[test]
fn documented_multi_turn_and_prefill_requests() {
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_multi_turn.json"
    ));
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": "Hello, Claude"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Can you describe LLMs to me?"},
        ])
    );
    // The prefill stays the last message (a loss the module docs list: most other models
    // answer after it rather than continue it).
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_prefill.json"
    ));
    assert_eq!(v["max_tokens"], 1);
    assert_eq!(
        v["messages"][1],
        json!({"role": "assistant", "content": "The answer is ("})
    );
}

#[test]
fn documented_system_prompt_becomes_the_first_message() {
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_system.json"
    ));
    assert_eq!(v["model"], "claude-3-7-sonnet-20250219");
    assert_eq!(v["max_tokens"], 2048);
    assert_eq!(
        v["messages"],
        json!([
            {"role": "system", "content": "You are a seasoned data scientist at a Fortune 500 company."},
            {"role": "user", "content": "Analyze this dataset for anomalies: <dataset>{{DATASET}}</dataset>"},
        ])
    );
    // System text blocks (the reference's other form, with a cache hint that is dropped).
    let v = chat(
        json!({
            "model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": "Today's date is 2024-06-01.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}],
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["messages"][0],
        json!({"role": "system", "content": [{"type": "text", "text": "Today's date is 2024-06-01."}]})
    );
}

#[test]
fn documented_images_become_image_url_parts() {
    let question = json!({"type": "text", "text": "What is in the above image?"});
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_image_base64.json"
    ));
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg..."}},
            question,
        ]}])
    );
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_image_url.json"
    ));
    assert_eq!(
        v["messages"][0]["content"][0],
        json!({"type": "image_url", "image_url": {
            "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
        }})
    );
}

#[test]
fn documented_tools_become_function_tools() {
    let body = include_bytes!("fixtures/inbound/anthropic/request_tools.json");
    let request = parse(body);
    let v = chat(body);
    assert_eq!(
        v["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": request["tools"][0]["input_schema"],
        }}])
    );
    assert!(
        v.get("tool_choice").is_none(),
        "Anthropic's default is OpenAI's: auto"
    );
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": "What is the weather like in San Francisco?"}])
    );
}

#[test]
fn documented_tool_round_trip_becomes_tool_calls_and_a_tool_message() {
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_tool_result.json"
    ));
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    let assistant = &messages[1];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(
        assistant["content"],
        "<thinking>I need to use get_weather, and the user wants SF, which is likely San Francisco, CA.</thinking>"
    );
    let call = &assistant["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments = call["function"]["arguments"].as_str().unwrap();
    assert_eq!(
        parse(arguments.as_bytes()),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"})
    );
}

#[test]
fn documented_tool_choice_forces_the_function() {
    let v = chat(include_bytes!(
        "fixtures/inbound/anthropic/request_tool_choice.json"
    ));
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "record_summary"}})
    );
    assert!(v.get("parallel_tool_calls").is_none());
    assert_eq!(v["tools"][0]["function"]["name"], "record_summary");
    assert_eq!(
        v["messages"][0]["content"][1],
        json!({"type": "text", "text": "Describe this image."})
    );
}

fn with_tool_choice(choice: Value) -> Value {
    let mut request = parse(include_bytes!(
        "fixtures/inbound/anthropic/request_tools.json"
    ));
    request["tool_choice"] = choice;
    chat(request.to_string().as_bytes())
}

#[test]
fn tool_choice_kinds_and_parallel_tool_use() {
    for (anthropic, openai) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
    ] {
        let v = with_tool_choice(anthropic.clone());
        assert_eq!(v["tool_choice"], openai, "{anthropic}");
        assert!(v.get("parallel_tool_calls").is_none());
    }
    for kind in ["auto", "any"] {
        let v = with_tool_choice(json!({"type": kind, "disable_parallel_tool_use": true}));
        assert_eq!(v["parallel_tool_calls"], false, "{kind}");
    }
    let v = with_tool_choice(
        json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
    );
    assert_eq!(v["tool_choice"]["function"]["name"], "get_weather");
    assert_eq!(v["parallel_tool_calls"], false);

    // Without tools OpenAI refuses tool_choice: `auto` and `none` mean nothing then, a
    // forced tool is the client's error.
    let base =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for kind in ["auto", "none"] {
        let mut r = base.clone();
        r["tool_choice"] = json!({"type": kind});
        let v = chat(r.to_string().as_bytes());
        assert!(v.get("tool_choice").is_none() && v.get("tools").is_none());
    }
    let mut r = base;
    r["tool_choice"] = json!({"type": "any"});
    assert_eq!(refused(r).code, "invalid_value");
}

#[test]
fn documented_tool_results_with_an_error_and_with_images() {
    let request = |result: Value| {
        json!({
            "model": "m", "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "What is the weather like in San Francisco?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather", "input": {"location": "San Francisco, CA"}}]},
                {"role": "user", "content": [result, {"type": "text", "text": "Thanks."}]},
            ],
        })
    };
    // "Tool execution error", as documented.
    let v = chat(
        request(json!({
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": "ConnectionError: the weather service API is not available (HTTP 500)",
            "is_error": true
        }))
        .to_string()
        .as_bytes(),
    );
    let messages = v["messages"].as_array().unwrap();
    // The assistant's turn has tool calls only: no text.
    assert_eq!(messages[1]["content"], Value::Null);
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
            "content": "Tool error: ConnectionError: the weather service API is not available (HTTP 500)"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": [{"type": "text", "text": "Thanks."}]})
    );

    // "Example of tool result with images": the text stays in the tool message, the image
    // moves to the user message after it.
    let v = chat(
        request(json!({
            "type": "tool_result",
            "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
            "content": [
                {"type": "text", "text": "15 degrees"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg..."}}
            ]
        }))
        .to_string()
        .as_bytes(),
    );
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages[2]["content"], "15 degrees");
    assert_eq!(
        messages[3]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg..."}},
            {"type": "text", "text": "Thanks."},
        ])
    );
    // A result without content is an empty one.
    let v = chat(
        request(json!({"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9"}))
            .to_string()
            .as_bytes(),
    );
    assert_eq!(v["messages"][2]["content"], "");
}

#[test]
fn sampling_stream_and_metadata_fields() {
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 300, "stream": true,
        "temperature": 0.2, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["\n\nHuman:", "END"],
        "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "service_tier": "auto",
        "cache_control": {"type": "ephemeral"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
    });
    let inbound = anthropic::to_chat(body.to_string().as_bytes()).unwrap();
    assert!(inbound.stream);
    assert_eq!(
        chat(body.to_string().as_bytes()),
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 300,
            "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0.2, "top_p": 0.9,
            "stop": ["\n\nHuman:", "END"],
            "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        }),
        "top_k, thinking, service_tier and cache_control are dropped"
    );
    // `stream: false` is the default.
    let mut off = body;
    off["stream"] = json!(false);
    let v = chat(off.to_string().as_bytes());
    assert!(v.get("stream").is_none() && v.get("stream_options").is_none());
}

#[test]
fn structured_output_becomes_a_json_schema_response_format() {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let v = chat(
        json!({
            "model": "m", "max_tokens": 50,
            "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
            "messages": [{"role": "user", "content": "Who wrote Hamlet?"}],
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})
    );
}

#[test]
fn thinking_blocks_and_citations_are_left_out_of_the_history() {
    let v = chat(
        json!({
            "model": "m", "max_tokens": 50,
            "messages": [
                {"role": "user", "content": "What's the weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Let me check.", "signature": "EqQBCgIYAhIM"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                    {"type": "text", "text": "Checking.", "citations": null},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "15"}, {"type": "text", "text": "degrees"}]}]},
            ],
        })
        .to_string()
        .as_bytes(),
    );
    let assistant = &v["messages"][1];
    assert_eq!(assistant["content"], "Checking.");
    assert_eq!(assistant["tool_calls"][0]["function"]["arguments"], "{}");
    assert!(!v.to_string().contains("EqQBCgIYAhIM"));
    // Text blocks of a tool result are joined with newlines.
    assert_eq!(v["messages"][2]["content"], "15\ndegrees");
    // Several text blocks of an assistant turn stay parts.
    let v = chat(
        json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["messages"][1]["content"],
        json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    );
}

#[test]
fn documents_in_the_forms_other_providers_read() {
    let v = chat(
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."}, "title": "Facts"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjc="}, "title": "paper.pdf"},
            {"type": "text", "text": "Summarise."},
        ]}]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["messages"][0]["content"],
        json!([
            {"type": "text", "text": "The grass is green."},
            {"type": "file", "file": {"filename": "paper.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjc="}},
            {"type": "text", "text": "Summarise."},
        ])
    );
}

#[test]
fn invalid_requests_are_refused_as_anthropic_refuses_them() {
    let ok =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let with = |key: &str, value: Value| {
        let mut r = ok.clone();
        if value.is_null() {
            r.as_object_mut().unwrap().remove(key);
        } else {
            r[key] = value;
        }
        r
    };
    let cases = [
        (
            with("model", Value::Null),
            "missing_required_parameter",
            "model: Field required",
        ),
        (with("model", json!(7)), "invalid_type", "model: "),
        (
            with("max_tokens", Value::Null),
            "missing_required_parameter",
            "max_tokens: Field required",
        ),
        (
            with("max_tokens", json!(1.5)),
            "invalid_type",
            "max_tokens: ",
        ),
        (with("max_tokens", json!(0)), "invalid_type", "max_tokens: "),
        (
            with("messages", Value::Null),
            "missing_required_parameter",
            "messages: Field required",
        ),
        (with("messages", json!("hi")), "invalid_type", "messages: "),
        (with("messages", json!([])), "invalid_value", "messages: "),
        (
            with("messages", json!([{"role": "system", "content": "x"}])),
            "invalid_value",
            "messages.0.role: ",
        ),
        (
            with("messages", json!([{"role": "user"}])),
            "missing_required_parameter",
            "messages.0.content: ",
        ),
        (
            with("messages", json!([{"role": "user", "content": 3}])),
            "invalid_type",
            "messages.0.content: ",
        ),
        (
            with("messages", json!([{"role": "user", "content": []}])),
            "invalid_value",
            "messages.0: ",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [{"text": "x"}]}]),
            ),
            "missing_required_parameter",
            "messages.0.content.0.type: ",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "text"}]}]),
            ),
            "missing_required_parameter",
            "messages.0.content.0.text: ",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]),
            ),
            "invalid_value",
            "messages.0.content.0.type: ",
        ),
        (
            with(
                "messages",
                json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}]}]),
            ),
            "invalid_type",
            "messages.0.content.0.input: ",
        ),
        (
            with("temperature", json!(1.5)),
            "invalid_type",
            "temperature: ",
        ),
        (with("top_p", json!("high")), "invalid_type", "top_p: "),
        (with("top_k", json!(-1)), "invalid_type", "top_k: "),
        (
            with("stop_sequences", json!("END")),
            "invalid_type",
            "stop_sequences: ",
        ),
        (with("stream", json!("yes")), "invalid_type", "stream: "),
        (
            with("metadata", json!({"user_id": 5})),
            "invalid_type",
            "metadata.user_id: ",
        ),
        (
            with("tools", json!([{"name": "t"}])),
            "missing_required_parameter",
            "tools.0.input_schema: ",
        ),
        (
            with("tool_choice", json!({"type": "sometimes"})),
            "invalid_value",
            "tool_choice.type: ",
        ),
        (
            with("system", json!([{"type": "image"}])),
            "invalid_value",
            "system.0.type: ",
        ),
        (
            with("temprature", json!(0.5)),
            anthropic::UNTRANSLATABLE,
            "temprature: not a member the gateway can carry",
        ),
    ];
    for (body, code, message) in cases {
        let e = refused(body.clone());
        assert_eq!(e.code, code, "{body} → {e:?}");
        assert!(e.message.starts_with(message), "{body} → {e:?}");
    }
    for body in [&b"{"[..], b"[1]", b"null"] {
        let e = anthropic::to_chat(body).unwrap_err();
        assert!(
            ["invalid_json", "invalid_request"].contains(&e.code),
            "{e:?}"
        );
    }
}

/// Fuzzing finding 5 (docs/fuzzing.md): a `max_tokens` the chat form refuses
/// was taken, and the planner then refused the chat form's member by name.
#[test]
fn max_tokens_over_the_gateways_limit_is_refused_in_messages_words() {
    let body = |n: u64| json!({"model": "claude", "max_tokens": n, "messages": [{"role": "user", "content": "hi"}]});
    let at_limit = chat(body(MAX_OUTPUT_TOKENS).to_string().as_bytes());
    assert_eq!(at_limit["max_tokens"], MAX_OUTPUT_TOKENS);
    for n in [MAX_OUTPUT_TOKENS + 1, u64::MAX] {
        let e = refused(body(n));
        assert_eq!(e.code, "invalid_value");
        assert!(
            e.message.starts_with("max_tokens: ") && e.message.contains("10000000"),
            "{}",
            e.message
        );
        let counted = anthropic::count_tokens_estimate(body(n).to_string().as_bytes());
        assert_eq!(counted.unwrap_err().code, "invalid_value");
    }
    // The limit is the one the chat form is checked against.
    let chat_over = json!({"model": "m", "max_tokens": MAX_OUTPUT_TOKENS + 1,
        "messages": [{"role": "user", "content": "hi"}]});
    assert!(
        switchyard_core::request::inspect(chat_over.to_string().as_bytes(), Endpoint::Chat)
            .is_err()
    );
}

/// Fuzzing finding 8 (docs/fuzzing.md): a conversation of one assistant turn
/// without content (or with thinking blocks only) was taken, and its chat form,
/// without a message, then failed the planner's check.
#[test]
fn a_conversation_left_empty_for_other_providers_is_anthropics_only() {
    for turns in [
        json!([{"role": "assistant", "content": []}]),
        json!([{"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]}]),
    ] {
        for system in [None, Some("be brief")] {
            let mut body = json!({"model": "claude", "max_tokens": 1024, "messages": turns});
            if let Some(s) = system {
                body["system"] = json!(s);
            }
            let e = refused(body.clone());
            assert_eq!(e.code, anthropic::UNTRANSLATABLE, "{body}: {}", e.message);
            assert!(e.message.starts_with("messages: "), "{}", e.message);
            // Anthropic's own targets still get it; it can be counted.
            anthropic::count_tokens_estimate(body.to_string().as_bytes()).unwrap();
        }
    }
    // The fuzzer's input: `messages` twice, the last one wins.
    let e = anthropic::to_chat(
        br#"{"model":"clau*","max_tokens":1024,"messages":[{}],"messages":[{"role":"assistant","content":[]}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.code, anthropic::UNTRANSLATABLE);
    // With something to answer, the empty final turn is still a prefill left out.
    let v = chat(
        json!({"model": "claude", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": []}]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(v["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[test]
fn what_only_anthropic_runs_is_refused_by_name() {
    let ok = parse(include_bytes!(
        "fixtures/inbound/anthropic/request_tools.json"
    ));
    let with = |key: &str, value: Value| {
        let mut r = ok.clone();
        r[key] = value;
        r
    };
    let user = |blocks: Value| json!([{"role": "user", "content": blocks}]);
    let cases = [
        // A server tool (the web search tool of the Messages reference).
        (
            with(
                "tools",
                json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
            ),
            "tools.0.type: `web_search_20250305`",
        ),
        // A client tool whose schema only Claude knows.
        (
            with(
                "tools",
                json!([ok["tools"][0], {"type": "bash_20250124", "name": "bash"}]),
            ),
            "tools.1.type: `bash_20250124`",
        ),
        (
            with(
                "mcp_servers",
                json!([{"type": "url", "url": "https://example.com/sse", "name": "x"}]),
            ),
            "mcp_servers: ",
        ),
        (
            with("container", json!("container_011CPR5CNjB747bTd36fQLFk")),
            "container: ",
        ),
        (
            with("stop_sequences", json!(["a", "b", "c", "d", "e"])),
            "stop_sequences: ",
        ),
        (
            with(
                "messages",
                user(
                    json!([{"type": "image", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}}]),
                ),
            ),
            "messages.0.content.0.source.type: ",
        ),
        (
            with(
                "messages",
                user(
                    json!([{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]),
                ),
            ),
            "messages.0.content.0.source: ",
        ),
        (
            with(
                "messages",
                user(
                    json!([{"type": "search_result", "source": "s", "title": "t", "content": []}]),
                ),
            ),
            "messages.0.content.0.type: `search_result`",
        ),
        (
            with(
                "messages",
                json!([
                    {"role": "user", "content": "news?"},
                    {"role": "assistant", "content": [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "news"}}]},
                ]),
            ),
            "messages.1.content.0.type: `server_tool_use`",
        ),
    ];
    for (body, message) in cases {
        let e = refused(body.clone());
        assert_eq!(e.code, anthropic::UNTRANSLATABLE, "{body} → {e:?}");
        assert!(e.message.starts_with(message), "{body} → {e:?}");
    }
    // A shape error is reported before (and instead of) an untranslatable feature.
    let mut both = with("mcp_servers", json!([]));
    both["max_tokens"] = json!("many");
    assert_eq!(refused(both).code, "invalid_type");
}

/// The Messages request the Anthropic dialect sends for a chat request: what a
/// request looks like once it has been through both directions.
fn through_both_directions(body: &[u8]) -> Value {
    let chat = chat(body);
    let model = chat["model"].as_str().unwrap().to_string();
    dialect::request(&chat, &model).unwrap()
}

/// A Messages request with string contents as the text blocks they stand for (the
/// Messages reference calls the two forms equivalent).
fn with_content_blocks(mut request: Value) -> Value {
    for m in request["messages"].as_array_mut().unwrap() {
        if let Some(text) = m["content"].as_str() {
            m["content"] = json!([{"type": "text", "text": text}]);
        }
    }
    request
}

#[test]
fn documented_requests_survive_both_directions() {
    let fixtures: [&[u8]; 9] = [
        include_bytes!("fixtures/inbound/anthropic/request_basic.json"),
        include_bytes!("fixtures/inbound/anthropic/request_multi_turn.json"),
        include_bytes!("fixtures/inbound/anthropic/request_prefill.json"),
        include_bytes!("fixtures/inbound/anthropic/request_system.json"),
        include_bytes!("fixtures/inbound/anthropic/request_image_base64.json"),
        include_bytes!("fixtures/inbound/anthropic/request_image_url.json"),
        include_bytes!("fixtures/inbound/anthropic/request_tools.json"),
        include_bytes!("fixtures/inbound/anthropic/request_tool_result.json"),
        include_bytes!("fixtures/inbound/anthropic/request_tool_choice.json"),
    ];
    for body in fixtures {
        assert_eq!(
            through_both_directions(body),
            with_content_blocks(parse(body)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // The fields the documented examples leave out, both ways.
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 300, "stream": true,
        "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "system": "Be brief.",
        "tools": [{"name": "get_time", "description": "Get the time", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Time?"}]}],
    });
    assert_eq!(through_both_directions(body.to_string().as_bytes()), body);
    for choice in [json!({"type": "auto"}), json!({"type": "none"})] {
        let mut b = body.clone();
        b["tool_choice"] = choice;
        assert_eq!(through_both_directions(b.to_string().as_bytes()), b);
    }
}

// === answers ===

/// The top-level members of the documented Messages answer.
fn documented_message_members() -> Vec<String> {
    let v = parse(include_bytes!("fixtures/anthropic/message_response.json"));
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn message(chat_answer: &[u8], model: &str) -> Value {
    let v = parse(&anthropic::answer_from_chat(chat_answer, model).unwrap());
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, documented_message_members(), "{v}");
    v
}

#[test]
fn documented_openai_answers_become_messages() {
    let v = message(
        include_bytes!("fixtures/openai/chat_response.json"),
        "claude-sonnet-4-5",
    );
    assert_eq!(
        v,
        json!({
            "id": "msg_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 19, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 10},
        })
    );

    let v = message(
        include_bytes!("fixtures/openai/chat_tool_call_response.json"),
        "claude-sonnet-4-5",
    );
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
            "input": {"location": "Boston, MA"}}])
    );
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["usage"]["input_tokens"], 82);
    assert_eq!(v["usage"]["output_tokens"], 17);
}

#[test]
fn documented_anthropic_answers_survive_both_directions() {
    for (fixture, model) in [
        (
            &include_bytes!("fixtures/anthropic/message_response.json")[..],
            "claude-sonnet-4-5-20250929",
        ),
        (
            &include_bytes!("fixtures/anthropic/tool_use_response.json")[..],
            "claude-sonnet-4-5",
        ),
    ] {
        let documented = parse(fixture);
        let chat = dialect::response(fixture, CREATED).unwrap();
        let v = message(&chat, model);
        assert_eq!(
            v["id"], documented["id"],
            "an Anthropic id is kept as it is"
        );
        assert_eq!(v["model"], documented["model"]);
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["stop_reason"], documented["stop_reason"]);
        assert_eq!(v["stop_sequence"], Value::Null);
        // Content blocks, less the `citations: null` the chat form has no room for.
        let mut content = documented["content"].clone();
        for block in content.as_array_mut().unwrap() {
            block.as_object_mut().unwrap().remove("citations");
        }
        assert_eq!(v["content"], content);
        for key in ["input_tokens", "output_tokens"] {
            assert_eq!(
                v["usage"][key],
                documented
                    .pointer(&format!("/usage/{key}"))
                    .cloned()
                    .unwrap_or(json!(0))
            );
        }
    }
}

fn chat_answer(message: Value, finish: &str, usage: Value) -> Vec<u8> {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
    .to_string()
    .into_bytes()
}

#[test]
fn answer_stop_reasons_usage_and_bad_answers() {
    let text = json!({"role": "assistant", "content": "Hi"});
    let usage = json!({"prompt_tokens": 2095, "completion_tokens": 503,
        "prompt_tokens_details": {"cached_tokens": 2051}});
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
    ] {
        let v = message(&chat_answer(text.clone(), finish, usage.clone()), "m");
        assert_eq!(v["stop_reason"], stop, "{finish}");
    }
    // Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI's
    // `prompt_tokens` include them.
    let v = message(&chat_answer(text.clone(), "stop", usage), "m");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 44, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2051, "output_tokens": 503})
    );
    // Tool calls reported with `stop` are still tool use.
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}});
    let v = message(
        &chat_answer(
            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
            "stop",
            json!(null),
        ),
        "m",
    );
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"a": 1}));
    assert_eq!(v["usage"]["input_tokens"], 0);
    // OpenAI's refusal is a refusal.
    let v = message(
        &chat_answer(
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
            "stop",
            json!(null),
        ),
        "m",
    );
    assert_eq!(v["stop_reason"], "refusal");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    // Arguments that are not JSON: an error, unless the token limit cut them.
    let cut = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]});
    let e = anthropic::answer_from_chat(&chat_answer(cut.clone(), "tool_calls", json!(null)), "m")
        .unwrap_err();
    assert_eq!(e.code, "bad_response");
    let v = message(&chat_answer(cut, "length", json!(null)), "m");
    assert_eq!(v["content"][0]["input"], json!({}));
    assert_eq!(v["stop_reason"], "max_tokens");
    // Not an answer.
    for body in [
        &b"nope"[..],
        b"{}",
        br#"{"choices":[]}"#,
        br#"{"choices":[{"index":0}]}"#,
    ] {
        assert_eq!(
            anthropic::answer_from_chat(body, "m").unwrap_err().code,
            "bad_response"
        );
    }
}

// === errors ===

#[test]
fn error_bodies_have_anthropics_shape_and_types() {
    let documented = parse(include_bytes!("fixtures/anthropic/error_not_found.json"));
    assert_eq!(
        parse(&anthropic::error_body(
            404,
            "The requested resource could not be found.",
            "req_011CSHoEeqs5C35K2UUqR7Fy"
        )),
        documented
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        let v = parse(&anthropic::error_body(status, "m", "r"));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind, "{status}");
        assert_eq!(v["error"]["message"], "m");
        assert_eq!(v["request_id"], "r");
    }
}

// === count_tokens ===

#[test]
fn count_tokens_is_the_gateways_estimate() {
    let body = include_bytes!("fixtures/inbound/anthropic/request_count_tokens.json");
    assert_eq!(
        anthropic::count_tokens_estimate(body).unwrap(),
        switchyard_core::cost::estimated_prompt_tokens(body.len())
    );
    // An image counts as a large image does for Anthropic, whatever the size of its data.
    let body = include_bytes!("fixtures/inbound/anthropic/request_image_base64.json");
    let data = "/9j/4AAQSkZJRg...".len();
    assert_eq!(
        anthropic::count_tokens_estimate(body).unwrap(),
        switchyard_core::cost::estimated_prompt_tokens(body.len() - data) + 1_600
    );
    // What only Anthropic runs is counted, not refused; the shape is still checked.
    let with_server_tool = json!({"model": "m", "messages": [{"role": "user", "content": "news?"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
    assert!(anthropic::count_tokens_estimate(with_server_tool.to_string().as_bytes()).is_ok());
    let no_messages = json!({"model": "m"});
    assert_eq!(
        anthropic::count_tokens_estimate(no_messages.to_string().as_bytes())
            .unwrap_err()
            .code,
        "missing_required_parameter"
    );
}

// === streams ===

/// An Anthropic event stream, taken apart: `(event, data)`; every event is
/// `event: <type>\ndata: <one JSON line>` whose data has that `type`.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (head, data) = e
                .split_once('\n')
                .unwrap_or_else(|| panic!("not an event: {e:?}"));
            let name = head.strip_prefix("event: ").expect("an event: line");
            let data = parse(
                data.strip_prefix("data: ")
                    .expect("a data: line")
                    .as_bytes(),
            );
            assert_eq!(data["type"], name, "{e}");
            (name.to_string(), data)
        })
        .collect()
}

/// The documented stream's events as the gateway sends them back: pings are the
/// provider's keep-alives, and an empty first `input_json_delta` carries nothing.
fn documented(text: &str) -> Vec<(String, Value)> {
    events(text)
        .into_iter()
        .filter(|(name, data)| {
            name != "ping" && data.pointer("/delta/partial_json") != Some(&json!(""))
        })
        .collect()
}

/// The chat stream the gateway makes of a documented Anthropic stream (the Anthropic
/// dialect's translation, with the usage chunk the inbound translation asks for).
fn chat_stream_of(anthropic_sse: &str) -> Vec<u8> {
    let mut t = dialect::StreamTranslator::new(true, CREATED, "req-1");
    let mut out = t.feed(anthropic_sse.as_bytes());
    out.extend(t.finish());
    out
}

fn back(chat_sse: &[u8], model: &str) -> String {
    let mut s = anthropic::MessageStream::new(model);
    let mut out = s.feed(chat_sse);
    out.extend(s.finish());
    String::from_utf8(out).unwrap()
}

/// Runs `chat_sse` through a stream split at every byte boundary and fed one byte at
/// a time: the output must not depend on where the bytes are split.
fn assert_split_anywhere(chat_sse: &[u8], model: &str) {
    let whole = back(chat_sse, model);
    for cut in 0..=chat_sse.len() {
        let mut s = anthropic::MessageStream::new(model);
        let mut out = s.feed(&chat_sse[..cut]);
        out.extend(s.feed(&chat_sse[cut..]));
        out.extend(s.finish());
        assert_eq!(String::from_utf8(out).unwrap(), whole, "cut at {cut}");
    }
    let mut s = anthropic::MessageStream::new(model);
    let mut out = Vec::new();
    for byte in chat_sse {
        out.extend(s.feed(std::slice::from_ref(byte)));
    }
    out.extend(s.finish());
    assert_eq!(String::from_utf8(out).unwrap(), whole, "byte by byte");
}

/// Compares a translated stream with a documented one: the same events in the same
/// order, the same blocks and deltas, the same stop reason and output tokens.
fn assert_same_stream(ours: &[(String, Value)], documented: &[(String, Value)]) {
    let names = |e: &[(String, Value)]| e.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(ours), names(documented));
    for ((name, ours), (_, doc)) in ours.iter().zip(documented) {
        match name.as_str() {
            "message_start" => {
                for key in [
                    "id",
                    "type",
                    "role",
                    "content",
                    "model",
                    "stop_reason",
                    "stop_sequence",
                ] {
                    assert_eq!(
                        ours["message"][key], doc["message"][key],
                        "message_start {key}"
                    );
                }
            }
            "content_block_start"
            | "content_block_delta"
            | "content_block_stop"
            | "message_stop" => {
                assert_eq!(ours, doc)
            }
            "message_delta" => {
                assert_eq!(ours["delta"], doc["delta"]);
                assert_eq!(
                    ours["usage"]["output_tokens"],
                    doc["usage"]["output_tokens"]
                );
            }
            other => panic!("unexpected event {other}"),
        }
    }
}

#[test]
fn documented_text_stream_survives_both_directions() {
    let wire = include_str!("fixtures/anthropic/stream_text.sse");
    let chat = chat_stream_of(wire);
    let ours = events(&back(&chat, "claude-sonnet-4-5-20250929"));
    assert_same_stream(&ours, &documented(wire));
    // The input tokens, known only at the end of a chat stream, are in message_delta.
    let (_, delta) = &ours[ours.len() - 2];
    assert_eq!(delta["usage"]["input_tokens"], 25);
    assert_eq!(
        ours[0].1["message"]["usage"],
        json!({"input_tokens": 0, "output_tokens": 0})
    );
}

#[test]
fn documented_tool_use_stream_survives_both_directions_split_anywhere() {
    let wire = include_str!("fixtures/anthropic/stream_tool_use.sse");
    let chat = chat_stream_of(wire);
    let ours = events(&back(&chat, "claude-sonnet-4-5-20250929"));
    assert_same_stream(&ours, &documented(wire));
    let (_, delta) = &ours[ours.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["input_tokens"], 472);
    assert_eq!(delta["usage"]["output_tokens"], 89);
    assert_split_anywhere(&chat, "claude-sonnet-4-5-20250929");
}

#[test]
fn documented_openai_stream_becomes_the_documented_event_sequence() {
    let text = back(
        include_bytes!("fixtures/openai/chat_stream.sse"),
        "claude-x",
    );
    let ours = events(&text);
    let documented = documented(include_str!("fixtures/anthropic/stream_text.sse"));
    let names = |e: &[(String, Value)]| {
        let mut n: Vec<String> = e.iter().map(|(n, _)| n.clone()).collect();
        n.dedup();
        n
    };
    // The same sequence (the documented one has two text deltas, OpenAI's one).
    assert_eq!(names(&ours), names(&documented));
    assert_eq!(ours[0].1["message"]["id"], "msg_chatcmpl-123");
    assert_eq!(ours[0].1["message"]["model"], "claude-x");
    assert_eq!(ours[0].1["message"]["content"], json!([]));
    assert_eq!(
        ours[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        ours[2].1["delta"],
        json!({"type": "text_delta", "text": "Hello"})
    );
    assert_eq!(
        ours[4].1["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    // No usage chunk: zeros.
    assert_eq!(ours[4].1["usage"]["output_tokens"], 0);
    assert_split_anywhere(
        include_bytes!("fixtures/openai/chat_stream.sse"),
        "claude-x",
    );
}

#[test]
fn parallel_tool_calls_become_blocks_of_their_own() {
    let wire = include_bytes!("fixtures/inbound/anthropic/chat_stream_parallel_tools.sse");
    let ours = events(&back(wire, "claude-x"));
    let summary: Vec<(String, Value)> = ours
        .iter()
        .map(|(n, d)| (n.clone(), d.get("index").cloned().unwrap_or(Value::Null)))
        .collect();
    assert_eq!(
        summary,
        [
            ("message_start", Value::Null),
            ("content_block_start", json!(0)),
            ("content_block_delta", json!(0)),
            ("content_block_stop", json!(0)),
            ("content_block_start", json!(1)),
            ("content_block_delta", json!(1)),
            ("content_block_stop", json!(1)),
            ("content_block_start", json!(2)),
            ("content_block_delta", json!(2)),
            ("content_block_delta", json!(2)),
            ("content_block_stop", json!(2)),
            ("message_delta", Value::Null),
            ("message_stop", Value::Null),
        ]
        .map(|(n, i)| (n.to_string(), i))
    );
    assert_eq!(
        ours[4].1["content_block"],
        json!({"type": "tool_use", "id": "call_abc123", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        ours[7].1["content_block"],
        json!({"type": "tool_use", "id": "call_def456", "name": "get_time", "input": {}})
    );
    let input: String = ours[8..10]
        .iter()
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        parse(input.as_bytes()),
        json!({"timezone": "America/New_York"})
    );
    assert_eq!(
        ours[11].1["usage"],
        json!({"input_tokens": 18, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64, "output_tokens": 17})
    );
    assert_eq!(ours[11].1["delta"]["stop_reason"], "tool_use");
}

#[test]
fn documented_error_event_ends_the_stream() {
    // The provider's documented error event, through the Anthropic dialect: the chat
    // stream's error event, then back into the documented one.
    let chat = chat_stream_of(include_str!("fixtures/anthropic/stream_error.sse"));
    let ours = events(&back(&chat, "claude-x"));
    let documented = events(include_str!("fixtures/anthropic/stream_error.sse"));
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].0, "error");
    assert_eq!(ours[0].1["error"], documented[0].1["error"]);
    assert_eq!(ours[0].1["request_id"], "req-1");

    // Mid-stream: the gateway's own error event after some text.
    let text_stream = include_str!("fixtures/anthropic/stream_text.sse");
    let cut = text_stream.find("event: content_block_stop").unwrap();
    let mut chat =
        dialect::StreamTranslator::new(true, CREATED, "req-2").feed(&text_stream.as_bytes()[..cut]);
    chat.extend(switchyard_core::error::stream_error_events(
        "The provider did not answer in time.",
        "timeout",
        "req-2",
    ));
    let mut s = anthropic::MessageStream::new("claude-x");
    let out = String::from_utf8(s.feed(&chat)).unwrap();
    let ours = events(&out);
    let names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        ours[4].1,
        json!({"type": "error", "error": {"type": "api_error", "message": "The provider did not answer in time."}, "request_id": "req-2"})
    );
    // Nothing after the error.
    assert!(s.feed(b"data: [DONE]\n\n").is_empty());
    assert!(s.finish().is_empty());
}

#[test]
fn a_stream_that_ends_early_ends_with_an_error_event() {
    let wire = include_bytes!("fixtures/inbound/anthropic/chat_stream_parallel_tools.sse");
    let text = std::str::from_utf8(wire).unwrap();
    // Cut before the finish reason.
    let cut = text.find("\"finish_reason\":\"tool_calls\"").unwrap();
    let start = text[..cut].rfind("data: ").unwrap();
    let ours = events(&back(&wire[..start], "claude-x"));
    let (name, data) = ours.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!ours.iter().any(|(n, _)| n == "message_stop"));

    // After the finish reason, only the end is missing: the message is whole.
    let cut = text.find("data: [DONE]").unwrap();
    let ours = events(&back(&wire[..cut], "claude-x"));
    let names: Vec<&str> = ours.iter().rev().take(2).map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["message_stop", "message_delta"]);

    // A last event without its blank line still counts.
    let ours = events(&back(&wire[..wire.len() - 2], "claude-x"));
    assert_eq!(ours.last().unwrap().0, "message_stop");

    // Nothing at all.
    let ours = events(&back(b"", "claude-x"));
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].0, "error");
}

#[test]
fn broken_chat_streams_end_with_an_error_event() {
    let chunk = |delta: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
        )
    };
    // A tool call resumed after another began cannot be expressed.
    let call = |index: u64, id: Option<&str>, args: &str| {
        chunk(
            json!({"tool_calls": [{"index": index, "id": id, "function": {"name": "f", "arguments": args}}]}),
        )
    };
    let wire = [
        call(0, Some("a"), "{"),
        call(1, Some("b"), "{}"),
        call(0, None, "}"),
    ]
    .concat();
    let ours = events(&back(wire.as_bytes(), "m"));
    assert_eq!(ours.last().unwrap().0, "error");
    // An event that is not JSON.
    let ours = events(&back(b"data: {nope\n\n", "m"));
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].1["error"]["type"], "api_error");
    // A rate-limit error of the chat stream keeps its kind.
    let wire = br#"data: {"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}

"#;
    let ours = events(&back(wire, "m"));
    assert_eq!(ours[0].1["error"]["type"], "rate_limit_error");
    // An event that never ends is not held without bound.
    let mut s = anthropic::MessageStream::new("m");
    let mut out = s.feed(b"data: \"");
    let piece = vec![b'x'; 1024 * 1024];
    for _ in 0..17 {
        out.extend(s.feed(&piece));
    }
    let ours = events(&String::from_utf8(out).unwrap());
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].0, "error");
    assert!(s.finish().is_empty());
}
