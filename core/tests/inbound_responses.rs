//! The OpenAI Responses API as a client API (`switchyard_core::inbound::responses`),
//! checked against OpenAI's documented examples (`tests/fixtures/inbound/responses/`,
//! each file's source in its `README.md`): requests become chat-completions requests
//! field by field, chat answers become `response` objects with every member the API
//! reference and the SDKs require, and chat streams become the documented event
//! sequence with consistent indexes and sequence numbers, however the bytes are split.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use switchyard_core::dialect::anthropic;
use switchyard_core::inbound::responses::{self, ResponseStream};
use switchyard_core::inbound::{ClientApi, InboundError, MAX_OUTPUT_TOKENS, StreamBack as _};
use switchyard_core::request::{self, Endpoint};

/// The `created_at` the gateway passes in.
const CREATED: u64 = 1_700_000_000;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("fixtures/inbound/responses/", $name)).as_slice()
    };
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The chat request of a Responses request, which the gateway's own chat
/// validation must accept as it is.
fn chat(body: &[u8]) -> Value {
    let inbound =
        responses::to_chat(body).unwrap_or_else(|e| panic!("refused ({}): {}", e.code, e.message));
    let bytes = serde_json::to_vec(&inbound.chat).unwrap();
    if let Err(e) = request::inspect(&bytes, Endpoint::Chat) {
        panic!("the chat request is invalid ({}): {}", e.code, e.message);
    }
    assert_eq!(inbound.stream, inbound.chat["stream"] == true);
    inbound.chat
}

fn refused(body: &Value) -> InboundError {
    match responses::to_chat(body.to_string().as_bytes()) {
        Ok(i) => panic!("accepted: {body} → {}", i.chat),
        Err(e) => e,
    }
}

/// `spec_shapes.json`: required members and event examples from OpenAI's spec.
fn shapes() -> Value {
    parse(fixture!("spec_shapes.json"))
}

fn assert_has(v: &Value, keys: &Value, what: &str) {
    for k in keys.as_array().unwrap() {
        let k = k.as_str().unwrap();
        assert!(v.get(k).is_some(), "{what} lacks required `{k}`: {v}");
    }
}

/// Checks a `response` object as a client SDK reads it: every member the API
/// reference requires (a superset of openai-python's required fields), on the
/// object, its output items, their content parts and its usage.
fn assert_response_shape(r: &Value) {
    let s = shapes();
    let s = &s["schemas"];
    assert_has(r, &s["Response"], "response");
    assert_eq!(r["object"], "response");
    assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
    assert!(r["created_at"].is_u64());
    assert!(r["tools"].is_array() && r["parallel_tool_calls"].is_boolean());
    assert!(r["metadata"].is_object());
    for item in r["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                assert_has(item, &s["OutputMessage"], "message item");
                assert!(item["id"].as_str().unwrap().starts_with("msg_"), "{item}");
                assert_eq!(item["role"], "assistant");
                for part in item["content"].as_array().unwrap() {
                    match part["type"].as_str().unwrap() {
                        "output_text" => assert_has(part, &s["OutputTextContent"], "output_text"),
                        "refusal" => assert_has(part, &s["RefusalContent"], "refusal"),
                        other => panic!("unexpected part {other}"),
                    }
                }
            }
            "function_call" => {
                assert_has(item, &s["FunctionToolCall"], "function_call item");
                assert!(item["id"].as_str().unwrap().starts_with("fc_"), "{item}");
                assert!(item["arguments"].is_string());
            }
            other => panic!("unexpected item {other}"),
        }
        assert!(
            ["in_progress", "completed", "incomplete"].contains(&item["status"].as_str().unwrap()),
            "{item}"
        );
    }
    if !r["usage"].is_null() {
        let u = &r["usage"];
        assert_has(u, &s["ResponseUsage"], "usage");
        assert_has(
            &u["input_tokens_details"],
            &s["ResponseUsage.input_tokens_details"],
            "input_tokens_details",
        );
        assert_has(
            &u["output_tokens_details"],
            &s["ResponseUsage.output_tokens_details"],
            "output_tokens_details",
        );
    }
    // `output_text` is the SDKs' convenience property, not part of the API's JSON
    // (none of the documented responses has it).
    assert!(r.get("output_text").is_none());
}

/// The SDKs' `output_text`: the `output_text` parts of the message items, joined
/// (openai-python `Response.output_text`).
fn output_text(r: &Value) -> String {
    r["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap())
        .filter(|p| p["type"] == "output_text")
        .map(|p| p["text"].as_str().unwrap())
        .collect()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

// === request ===

#[test]
fn documented_text_input_becomes_one_user_message() {
    let v = chat(fixture!("text_input_request.json"));
    assert_eq!(
        v,
        json!({
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."}],
        })
    );
}

#[test]
fn documented_image_input_keeps_its_text_and_image_parts() {
    let v = chat(fixture!("image_input_request.json"));
    let url = "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg";
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "what is in this image?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}])
    );
    // `detail` carries over where chat has the value; a data: URL is a URL like any.
    let v = chat(
        json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "original"},
        ]}]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        ])
    );
    // A file sent inline becomes chat's `file` part (each dialect decides whether
    // its provider takes it).
    let v = chat(
        json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        ]}]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["messages"][0]["content"],
        json!([{"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}])
    );
}

#[test]
fn documented_streaming_request_puts_instructions_first_and_asks_for_usage() {
    let inbound = responses::to_chat(fixture!("streaming_request.json")).unwrap();
    assert!(inbound.stream);
    assert_eq!(
        chat(fixture!("streaming_request.json")),
        json!({
            "model": "gpt-5.4",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    // Without `stream` (or with `false`) there is no stream.
    let inbound = responses::to_chat(br#"{"model":"m","input":"x","stream":false}"#).unwrap();
    assert!(!inbound.stream);
    assert!(inbound.chat.get("stream").is_none() && inbound.chat.get("stream_options").is_none());
}

#[test]
fn documented_function_tools_become_chat_function_tools() {
    let request = parse(fixture!("functions_request.json"));
    let v = chat(fixture!("functions_request.json"));
    let tool = &request["tools"][0];
    assert_eq!(
        v["tools"],
        json!([{"type": "function", "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": tool["parameters"],
        }}])
    );
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": "What is the weather like in Boston today?"}])
    );
    // `strict` carries over when the client sets it; `parameters: null` is left out.
    let v = chat(
        json!({"model": "m", "input": "x", "tools": [
            {"type": "function", "name": "a", "parameters": {"type": "object"}, "strict": true},
            {"type": "function", "name": "b", "parameters": null, "strict": null},
        ]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        v["tools"],
        json!([
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}, "strict": true}},
            {"type": "function", "function": {"name": "b"}},
        ])
    );
}

#[test]
fn function_call_round_trip_becomes_assistant_tool_calls_and_a_tool_message() {
    let v = chat(fixture!("function_call_output_request.json"));
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": "What is the weather like in Boston today?"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_unLAR8MvFNptuiZK6K6HCy5k",
                "type": "function",
                "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\",\"unit\":\"celsius\"}"},
            }]},
            {"role": "tool", "tool_call_id": "call_unLAR8MvFNptuiZK6K6HCy5k",
             "content": "{\"temperature\": 22, \"unit\": \"celsius\", \"description\": \"Sunny\"}"},
        ])
    );
    assert_eq!(v["tools"][0]["function"]["name"], "get_current_weather");
}

#[test]
fn one_turns_calls_join_one_assistant_message_and_reasoning_items_are_dropped() {
    // A reasoning model's turn as the API returns it (a `reasoning` item, a message,
    // two parallel calls) and then the two outputs, replayed statelessly.
    let body = json!({"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris and Oslo?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA…"},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking both.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_p", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "call_id": "call_o", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
        {"type": "function_call_output", "call_id": "call_p", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_o",
         "output": [{"type": "input_text", "text": "9C"}]},
        {"role": "developer", "content": [{"type": "input_text", "text": "Answer briefly."}]},
    ]});
    let v = chat(body.to_string().as_bytes());
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_p", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_o", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_p", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_o", "content": [{"type": "text", "text": "9C"}]},
            {"role": "developer", "content": [{"type": "text", "text": "Answer briefly."}]},
        ])
    );
}

#[test]
fn structured_outputs_become_response_format() {
    let request = parse(fixture!("structured_outputs_request.json"));
    let v = chat(fixture!("structured_outputs_request.json"));
    let format = &request["text"]["format"];
    assert_eq!(
        v["response_format"],
        json!({"type": "json_schema", "json_schema": {
            "name": "calendar_event",
            "schema": format["schema"],
            "strict": true,
        }})
    );
    assert_eq!(
        v["messages"],
        json!([
            {"role": "system", "content": "Extract the event information."},
            {"role": "user", "content": "Alice and Bob are going to a science fair on Friday."},
        ])
    );
    let with = |format: Value| {
        chat(
            json!({"model": "m", "input": "x", "text": {"format": format}})
                .to_string()
                .as_bytes(),
        )
    };
    assert_eq!(
        with(json!({"type": "json_object"}))["response_format"],
        json!({"type": "json_object"})
    );
    assert!(
        with(json!({"type": "text"}))
            .get("response_format")
            .is_none()
    );
    assert_eq!(
        with(
            json!({"type": "json_schema", "name": "n", "description": "d", "schema": {"type": "object"}})
        )["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "n", "description": "d", "schema": {"type": "object"}}})
    );
    let e = refused(
        &json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
    );
    assert_eq!(e.code, "missing_required_parameter");
}

#[test]
fn settings_map_field_by_field() {
    // The documented reasoning request: `reasoning.effort` → `reasoning_effort`.
    let v = chat(fixture!("reasoning_request.json"));
    assert_eq!(v["reasoning_effort"], "high");
    assert_eq!(v["model"], "o3-mini");

    let body = json!({
        "model": "m", "input": "x",
        "max_output_tokens": 256, "temperature": 0.2, "top_p": 0.9,
        "parallel_tool_calls": false, "user": "u-1",
        "reasoning": {"effort": "low", "summary": "auto"},
        "metadata": {"k": "v"}, "store": true, "truncation": "auto",
        "include": ["reasoning.encrypted_content"], "service_tier": "auto",
        "prompt_cache_key": "k", "top_logprobs": 2, "max_tool_calls": 3,
        "safety_identifier": "s-1", "text": {"verbosity": "low"},
        "instructions": "", "previous_response_id": null, "background": false,
    });
    assert_eq!(
        chat(body.to_string().as_bytes()),
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "parallel_tool_calls": false,
            "user": "u-1",
            "reasoning_effort": "low",
        })
    );
    // `safety_identifier` stands in for `user`; efforts chat lacks are mapped.
    let v = chat(
        br#"{"model":"m","input":"x","safety_identifier":"s-1","reasoning":{"effort":"xhigh"}}"#,
    );
    assert_eq!(
        (&v["user"], &v["reasoning_effort"]),
        (&json!("s-1"), &json!("high"))
    );
    let v = chat(br#"{"model":"m","input":"x","reasoning":{"effort":"none"}}"#);
    assert!(v.get("reasoning_effort").is_none());
}

#[test]
fn tool_choice_forms() {
    let tools = json!([
        {"type": "function", "name": "a", "parameters": {"type": "object"}},
        {"type": "function", "name": "b", "parameters": {"type": "object"}},
    ]);
    let with = |choice: Value| {
        chat(
            json!({"model": "m", "input": "x", "tools": tools, "tool_choice": choice})
                .to_string()
                .as_bytes(),
        )
    };
    for s in ["auto", "none", "required"] {
        assert_eq!(with(json!(s))["tool_choice"], s);
    }
    let v = with(json!({"type": "function", "name": "b"}));
    assert_eq!(
        v["tool_choice"],
        json!({"type": "function", "function": {"name": "b"}})
    );
    assert_eq!(v["tools"].as_array().unwrap().len(), 2);
    // `allowed_tools`: only the allowed functions are offered, under its mode.
    let v = with(
        json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]}),
    );
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(
        v["tools"],
        json!([{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}])
    );
    for choice in [
        json!({"type": "web_search_preview"}),
        json!({"type": "file_search"}),
        json!({"type": "mcp", "server_label": "deepwiki"}),
        json!({"type": "custom", "name": "x"}),
        json!({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "image_generation"}]}),
    ] {
        let e =
            refused(&json!({"model": "m", "input": "x", "tools": tools, "tool_choice": choice}));
        assert_eq!(e.code, responses::UNSUPPORTED_TOOL, "{choice}");
    }
    let e = refused(&json!({"model": "m", "input": "x", "tool_choice": "always"}));
    assert_eq!(e.code, "invalid_value");
}

#[test]
fn stateful_requests_are_refused_with_a_way_out() {
    let e =
        refused(&json!({"model": "m", "input": "and now?", "previous_response_id": "resp_123"}));
    assert_eq!(e.code, "previous_response_not_supported");
    assert_eq!(e.code, responses::PREVIOUS_RESPONSE_NOT_SUPPORTED);
    assert!(
        e.message.contains("stateless") && e.message.contains("full conversation"),
        "{}",
        e.message
    );

    let e = refused(&json!({"model": "m", "input": "x", "conversation": "conv_1"}));
    assert_eq!(e.code, responses::CONVERSATION_NOT_SUPPORTED);
    let e = refused(&json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    assert_eq!(e.code, responses::CONVERSATION_NOT_SUPPORTED);
    assert!(e.message.contains("input[0]"), "{}", e.message);
    for (member, value) in [
        ("background", json!(true)),
        ("prompt", json!({"id": "pmpt_1"})),
        ("moderation", json!({"model": "omni-moderation-latest"})),
    ] {
        let mut body = json!({"model": "m", "input": "x"});
        body[member] = value;
        assert_eq!(
            refused(&body).code,
            responses::UNSUPPORTED_PARAMETER,
            "{member}"
        );
    }
}

/// Fuzzing finding 5 (docs/fuzzing.md): a `max_output_tokens` the chat form
/// refuses was taken, and the planner then refused `max_completion_tokens`, a
/// member the client never sent.
#[test]
fn max_output_tokens_over_the_gateways_limit_is_refused_in_responses_words() {
    let body = |n: u64| json!({"model": "gpt", "max_output_tokens": n, "input": "hi"});
    let at_limit = chat(body(MAX_OUTPUT_TOKENS).to_string().as_bytes());
    assert_eq!(at_limit["max_completion_tokens"], MAX_OUTPUT_TOKENS);
    for n in [MAX_OUTPUT_TOKENS + 1, u64::MAX] {
        let e = refused(&body(n));
        assert_eq!(e.code, "invalid_value");
        assert!(
            e.message.contains("`max_output_tokens`")
                && e.message.contains("10000000")
                && !e.message.contains("max_completion_tokens"),
            "{}",
            e.message
        );
    }
    let chat_over = json!({"model": "m", "max_completion_tokens": MAX_OUTPUT_TOKENS + 1,
        "messages": [{"role": "user", "content": "hi"}]});
    assert!(request::inspect(chat_over.to_string().as_bytes(), Endpoint::Chat).is_err());
}

/// Fuzzing finding 6 (docs/fuzzing.md): what only OpenAI serves was refused
/// (for "OpenAI targets only") before the rest of the request was checked, so
/// a request without a model, or with a `stream` that is no boolean, was
/// planned and sent to OpenAI unchecked. Now the client's mistake comes first,
/// and only a request that is well-formed otherwise is refused for OpenAI.
#[test]
fn a_request_is_checked_whole_before_it_is_refused_for_openai_only() {
    let api = ClientApi::Responses;
    for (body, code) in [
        // The fuzzer's reproducers.
        (
            json!({"previous_response_id": "resp_1", "input": "hi"}),
            "missing_required_parameter",
        ),
        (
            json!({"model": "gpt", "tools": [{"type": "web_search"}], "stream": "yes", "input": "hi"}),
            "invalid_type",
        ),
        (
            json!({"model": "", "conversation": "conv_1", "input": "hi"}),
            "invalid_type",
        ),
        (
            json!({"model": "gpt", "background": true, "prompt": {"id": "p"}, "stream": 1, "input": "hi"}),
            "invalid_type",
        ),
        (
            json!({"model": "gpt", "input": [{"type": "item_reference", "id": "msg_1"}, {"role": "robot", "content": "x"}]}),
            "invalid_value",
        ),
        (
            json!({"model": "gpt", "input": [{"role": "user", "content": [
                {"type": "input_image", "file_id": "file-1"}, {"type": "input_text"}]}]}),
            "missing_required_parameter",
        ),
        (
            json!({"model": "gpt", "input": "hi", "tools": [{"type": "file_search"}, {"type": "function"}]}),
            "missing_required_parameter",
        ),
        (
            json!({"model": "gpt", "input": "hi", "tool_choice": {"type": "mcp"}, "temperature": 9}),
            "invalid_type",
        ),
        (
            json!({"model": "gpt", "input": "hi", "moderation": {}, "max_output_tokens": 10_000_001}),
            "invalid_value",
        ),
    ] {
        let e = refused(&body);
        assert_eq!(e.code, code, "{body}: {}", e.message);
        assert!(!api.only_native(&e), "{body}: {e:?}");
    }
    // Well-formed otherwise: the first thing only OpenAI serves, by name, and
    // the members the planner routes it by were checked.
    for (body, code) in [
        (
            json!({"model": "gpt", "previous_response_id": "resp_1", "input": "hi", "stream": true}),
            responses::PREVIOUS_RESPONSE_NOT_SUPPORTED,
        ),
        // OpenAI keeps the state that stands in for `input`.
        (
            json!({"model": "gpt", "prompt": {"id": "pmpt_1"}}),
            responses::UNSUPPORTED_PARAMETER,
        ),
        (
            json!({"model": "gpt", "input": [{"type": "item_reference", "id": "msg_1"}]}),
            responses::CONVERSATION_NOT_SUPPORTED,
        ),
        (
            json!({"model": "gpt", "input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
                "tool_choice": {"type": "file_search"}}),
            responses::UNSUPPORTED_TOOL,
        ),
    ] {
        let e = refused(&body);
        assert_eq!(e.code, code, "{body}: {}", e.message);
        assert!(api.only_native(&e), "{body}: {e:?}");
    }
    let e = refused(
        &json!({"model": "gpt", "input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
        "tool_choice": {"type": "file_search"}}),
    );
    assert!(
        e.message.contains("tools[1]"),
        "the first refusal: {}",
        e.message
    );
}

#[test]
fn built_in_tools_are_refused() {
    for body in [
        fixture!("web_search_request.json"),
        fixture!("file_search_request.json"),
    ] {
        let e = responses::to_chat(body).unwrap_err();
        assert_eq!(e.code, "unsupported_tool");
        assert!(
            e.message.contains("tools[0]") && e.message.contains("only OpenAI"),
            "{}",
            e.message
        );
    }
    for kind in [
        "web_search",
        "web_search_preview",
        "file_search",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "custom",
    ] {
        let body = json!({"model": "m", "input": "x", "tools": [
            {"type": "function", "name": "f"}, {"type": kind},
        ]});
        let e = refused(&body);
        assert_eq!(e.code, responses::UNSUPPORTED_TOOL, "{kind}");
        assert!(e.message.contains(kind), "{}", e.message);
    }
}

#[test]
fn inputs_without_a_chat_equivalent_are_refused() {
    // The documented file input names its file by URL, which only OpenAI fetches.
    let e = responses::to_chat(fixture!("file_input_request.json")).unwrap_err();
    assert_eq!(e.code, responses::UNSUPPORTED_INPUT);
    assert!(
        e.message.contains("input[0].content[1]") && e.message.contains("file_data"),
        "{}",
        e.message
    );

    let part = |p: Value| json!({"model": "m", "input": [{"role": "user", "content": [p]}]});
    let e = refused(&part(
        json!({"type": "input_image", "file_id": "file-123", "detail": "auto"}),
    ));
    assert_eq!(e.code, responses::UNSUPPORTED_INPUT);
    assert!(
        e.message.contains("file_id") && e.message.contains("image_url"),
        "{}",
        e.message
    );
    let e = refused(&part(json!({"type": "input_file", "file_id": "file-123"})));
    assert_eq!(e.code, responses::UNSUPPORTED_INPUT);
    let e = refused(&part(
        json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}),
    ));
    assert_eq!(e.code, responses::UNSUPPORTED_INPUT);

    for input in [
        json!([{"type": "computer_call_output", "call_id": "c", "output": {"type": "computer_screenshot"}}]),
        json!([{"type": "web_search_call", "id": "ws_1", "status": "completed"}]),
        json!([{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "https://x/y.png"}]}]),
        json!([{"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}, {"role": "user", "content": "x"}]),
        json!([{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]),
    ] {
        let e = refused(&json!({"model": "m", "input": input}));
        assert_eq!(e.code, responses::UNSUPPORTED_INPUT, "{input}");
    }
}

#[test]
fn malformed_requests_are_the_clients_error() {
    let code = |body: &[u8]| responses::to_chat(body).unwrap_err().code;
    assert_eq!(code(b"{\"model\":"), "invalid_json");
    assert_eq!(code(b"[1]"), "invalid_request");
    for (body, expected) in [
        (json!({"input": "x"}), "missing_required_parameter"),
        (json!({"model": "m"}), "missing_required_parameter"),
        (json!({"model": 5, "input": "x"}), "invalid_type"),
        (json!({"model": "", "input": "x"}), "invalid_type"),
        (
            json!({"model": "m", "input": {"role": "user"}}),
            "invalid_type",
        ),
        (json!({"model": "m", "input": []}), "invalid_value"),
        (
            json!({"model": "m", "input": "x", "instructions": 1}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "invalid_value",
        ),
        (
            json!({"model": "m", "input": [{"role": "user"}]}),
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": 3}]}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}),
            "missing_required_parameter",
        ),
        (json!({"model": "m", "input": [7]}), "invalid_type"),
        (
            json!({"model": "m", "input": "x", "temperature": "hot"}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "temperature": 3}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "top_p": 1.5}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": 0}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "stream": "yes"}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "store": "no"}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "metadata": []}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": {}}),
            "invalid_type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}),
            "invalid_value",
        ),
        (
            json!({"model": "m", "input": "x", "truncation": "sometimes"}),
            "invalid_value",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "invalid_value",
        ),
    ] {
        assert_eq!(code(body.to_string().as_bytes()), expected, "{body}");
    }
}

// === answer ===

#[test]
fn documented_chat_answer_becomes_a_response_shaped_like_the_documented_one() {
    let chat = include_bytes!("fixtures/openai/chat_response.json");
    let r = parse(&responses::answer_from_chat(chat, "gpt-5.4", CREATED).unwrap());
    assert_response_shape(&r);
    assert_eq!(r["id"], "resp_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT");
    assert_eq!(
        (&r["created_at"], &r["model"], &r["status"]),
        (&json!(CREATED), &json!("gpt-5.4"), &json!("completed"))
    );
    assert_eq!(
        (&r["error"], &r["incomplete_details"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(output_text(&r), "Hello! How can I assist you today?");
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 19, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
               "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 29})
    );

    // The documented response to a text input: the same members on the message
    // item and its part (ours adds `logprobs`, which the spec's OutputTextContent
    // requires), the same usage members, and nothing the API does not send.
    let documented = parse(fixture!("text_input_response.json"));
    let (ours, theirs) = (&r["output"][0], &documented["output"][0]);
    assert_eq!(keys(ours), keys(theirs));
    assert_eq!(ours["content"][0]["logprobs"], json!([]));
    let mut part = ours["content"][0].clone();
    part.as_object_mut().unwrap().remove("logprobs");
    assert_eq!(keys(&part), keys(&theirs["content"][0]));
    assert_eq!(keys(&r["usage"]), keys(&documented["usage"]));
    assert_eq!(
        keys(&r["usage"]["input_tokens_details"]),
        keys(&documented["usage"]["input_tokens_details"])
    );
    for k in keys(&r) {
        assert!(
            documented.get(k).is_some(),
            "`{k}` is not in the documented response"
        );
    }
}

#[test]
fn documented_tool_call_answer_becomes_a_function_call_item() {
    let chat = include_bytes!("fixtures/openai/chat_tool_call_response.json");
    let r = parse(&responses::answer_from_chat(chat, "gpt-4o-mini", CREATED).unwrap());
    assert_response_shape(&r);
    assert_eq!(
        r["output"],
        json!([{
            "id": "fc_call_abc123", "type": "function_call", "status": "completed",
            "call_id": "call_abc123", "name": "get_current_weather",
            "arguments": "{\n\"location\": \"Boston, MA\"\n}",
        }])
    );
    let documented = parse(fixture!("functions_response.json"));
    assert_eq!(keys(&r["output"][0]), keys(&documented["output"][0]));
    assert_eq!(output_text(&r), "");
    assert_eq!(r["usage"]["total_tokens"], 99);
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 0);
}

#[test]
fn finish_reasons_set_the_status() {
    let answer = |finish: &str, message: Value| {
        let chat = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                      "prompt_tokens_details": {"cached_tokens": 3},
                      "completion_tokens_details": {"reasoning_tokens": 2}}});
        let r = parse(
            &responses::answer_from_chat(chat.to_string().as_bytes(), "alias", CREATED).unwrap(),
        );
        assert_response_shape(&r);
        r
    };
    let r = answer(
        "length",
        json!({"role": "assistant", "content": "Once upon a"}),
    );
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["output"][0]["id"], "msg_c1");
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 3);
    assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 2);
    let r = answer(
        "content_filter",
        json!({"role": "assistant", "content": ""}),
    );
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"], json!({"reason": "content_filter"}));
    assert_eq!(r["output"], json!([]));
    // Text and calls: the message first, then the calls, all completed.
    let r = answer(
        "tool_calls",
        json!({"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":1}"}},
        ]}),
    );
    assert_eq!(r["status"], "completed");
    let types: Vec<_> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["message", "function_call", "function_call"]);
    assert_eq!(r["output"][2]["call_id"], "call_2");
    // A refusal is a refusal part.
    let r = answer(
        "stop",
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
    );
    assert_eq!(
        r["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "I can't help with that."}])
    );
}

#[test]
fn broken_chat_answers_are_errors() {
    for body in [
        &b"{"[..],
        b"{}",
        br#"{"choices":[]}"#,
        br#"{"choices":[1]}"#,
    ] {
        assert!(
            responses::answer_from_chat(body, "m", CREATED).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn error_body_has_openais_error_shape() {
    let v = parse(&responses::error_body(
        400,
        "previous_response_not_supported",
        "say \"all\"",
        "req-1",
    ));
    let s = shapes();
    assert_has(&v["error"], &s["schemas"]["Error"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "previous_response_not_supported");
    assert_eq!(v["error"]["message"], "say \"all\"");
    assert_eq!(v["error"]["request_id"], "req-1");
    assert_eq!(
        parse(&responses::error_body(429, "x", "y", "r"))["error"]["type"],
        "rate_limit_error"
    );
    assert_eq!(
        parse(&responses::error_body(502, "x", "y", "r"))["error"]["type"],
        "api_error"
    );
}

// === stream ===

/// Runs a chat SSE stream through a [`ResponseStream`] fed in `piece`-byte pieces,
/// then `finish`.
fn stream_in_pieces(chat_sse: &[u8], piece: usize) -> String {
    let mut s = ResponseStream::new("alias", CREATED, "req-1");
    let mut out = Vec::new();
    for p in chat_sse.chunks(piece) {
        out.extend(s.feed(p));
    }
    out.extend(s.finish());
    assert!(s.is_done());
    String::from_utf8(out).unwrap()
}

/// [`stream_in_pieces`] whole, in 7-byte pieces and one byte at a time, which
/// must all give the same events.
fn stream(chat_sse: &[u8]) -> Vec<Value> {
    let whole = stream_in_pieces(chat_sse, chat_sse.len().max(1));
    for piece in [7, 1] {
        assert_eq!(
            whole,
            stream_in_pieces(chat_sse, piece),
            "the events must not depend on where the chat stream is split ({piece})"
        );
    }
    events(&whole)
}

/// The events of a Responses stream: each `event: <type>` matches its data's
/// `type`, sequence numbers count from 0, and each event has its schema's
/// required members and those of its documented example.
fn events(text: &str) -> Vec<Value> {
    let s = shapes();
    let mut out = Vec::new();
    for (n, block) in text.split("\n\n").filter(|b| !b.is_empty()).enumerate() {
        let (head, data) = block.split_once('\n').unwrap();
        let kind = head
            .strip_prefix("event: ")
            .unwrap_or_else(|| panic!("{block}"));
        let v = parse(data.strip_prefix("data: ").unwrap().as_bytes());
        assert_eq!(v["type"], kind);
        assert_eq!(v["sequence_number"], n, "{v}");
        let shape = &s["events"][kind];
        assert!(shape.is_object(), "undocumented event {kind}");
        assert_has(&v, &shape["required"], kind);
        let example = &shape["example"];
        for k in keys(example) {
            assert!(
                v.get(k).is_some(),
                "{kind} lacks `{k}` of the documented example"
            );
        }
        for nested in ["item", "part"] {
            if v.get(nested).is_some() && example[nested]["type"] == v[nested]["type"] {
                for k in keys(&example[nested]) {
                    assert!(v[nested].get(k).is_some(), "{kind}.{nested} lacks `{k}`");
                }
            }
        }
        if let Some(r) = v.get("response") {
            assert_response_shape(r);
        }
        out.push(v);
    }
    out
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Replays the events as openai-python's stream helper does
/// (`lib/streaming/responses/_responses.py`, `ResponseStreamState.accumulate_event`):
/// the snapshot starts from `response.created`, items and parts are appended at
/// `output_index` / `content_index`, deltas are appended to them. Checks that each
/// delta lands on the item and part it names, that each `.done` event holds what
/// the deltas built, and returns the snapshot's output.
fn accumulate(events: &[Value]) -> Vec<Value> {
    assert_eq!(
        events[0]["type"], "response.created",
        "the SDK needs it first"
    );
    let mut output: Vec<Value> = events[0]["response"]["output"].as_array().unwrap().clone();
    for e in &events[1..] {
        let oi = e["output_index"].as_u64().map(|i| i as usize);
        let ci = e["content_index"].as_u64().map(|i| i as usize);
        match e["type"].as_str().unwrap() {
            "response.output_item.added" => {
                assert_eq!(oi, Some(output.len()), "items are added in order: {e}");
                output.push(e["item"].clone());
            }
            "response.content_part.added" => {
                let item = &mut output[oi.unwrap()];
                assert_eq!(item["id"], e["item_id"]);
                let content = item["content"].as_array_mut().unwrap();
                assert_eq!(ci, Some(content.len()), "parts are added in order: {e}");
                content.push(e["part"].clone());
            }
            "response.output_text.delta" => {
                let item = &mut output[oi.unwrap()];
                assert_eq!(
                    (&item["type"], &item["id"]),
                    (&json!("message"), &e["item_id"])
                );
                let part = &mut item["content"][ci.unwrap()];
                assert_eq!(part["type"], "output_text");
                let text = format!(
                    "{}{}",
                    part["text"].as_str().unwrap(),
                    e["delta"].as_str().unwrap()
                );
                part["text"] = json!(text);
            }
            "response.function_call_arguments.delta" => {
                let item = &mut output[oi.unwrap()];
                assert_eq!(
                    (&item["type"], &item["id"]),
                    (&json!("function_call"), &e["item_id"])
                );
                let args = format!(
                    "{}{}",
                    item["arguments"].as_str().unwrap(),
                    e["delta"].as_str().unwrap()
                );
                item["arguments"] = json!(args);
            }
            "response.refusal.delta" => {
                let item = &mut output[oi.unwrap()];
                assert_eq!(item["id"], e["item_id"]);
                let part = &mut item["content"][ci.unwrap()];
                assert_eq!(part["type"], "refusal");
                let text = format!(
                    "{}{}",
                    part["refusal"].as_str().unwrap(),
                    e["delta"].as_str().unwrap()
                );
                part["refusal"] = json!(text);
            }
            "response.refusal.done" => {
                let item = &output[oi.unwrap()];
                assert_eq!(item["id"], e["item_id"]);
                assert_eq!(item["content"][ci.unwrap()]["refusal"], e["refusal"]);
            }
            "response.output_text.done" => {
                let item = &output[oi.unwrap()];
                assert_eq!(item["id"], e["item_id"]);
                assert_eq!(item["content"][ci.unwrap()]["text"], e["text"]);
            }
            "response.content_part.done" => {
                let item = &mut output[oi.unwrap()];
                assert_eq!(item["id"], e["item_id"]);
                let part = &item["content"][ci.unwrap()];
                assert_eq!(
                    (&part["text"], &part["refusal"]),
                    (&e["part"]["text"], &e["part"]["refusal"])
                );
                item["content"][ci.unwrap()] = e["part"].clone();
            }
            "response.function_call_arguments.done" => {
                let item = &output[oi.unwrap()];
                assert_eq!(item["id"], e["item_id"]);
                assert_eq!(
                    (&item["arguments"], &item["name"]),
                    (&e["arguments"], &e["name"])
                );
            }
            "response.output_item.done" => {
                let item = &mut output[oi.unwrap()];
                assert_eq!(item["id"], e["item"]["id"]);
                if item["type"] == "message" {
                    assert_eq!(item["content"], e["item"]["content"]);
                } else {
                    assert_eq!(item["arguments"], e["item"]["arguments"]);
                }
                *item = e["item"].clone();
            }
            "response.completed" | "response.incomplete" => {
                // The final response holds what the events built.
                assert_eq!(&output, e["response"]["output"].as_array().unwrap());
            }
            "response.failed" => {
                // The same, the items still open marked incomplete.
                for item in &mut output {
                    if item["status"] == "in_progress" {
                        item["status"] = json!("incomplete");
                    }
                }
                assert_eq!(&output, e["response"]["output"].as_array().unwrap());
            }
            "response.in_progress" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    output
}

#[test]
fn documented_chat_stream_becomes_the_documented_event_sequence() {
    let evs = stream(include_bytes!("fixtures/openai/chat_stream.sse"));
    let documented = String::from_utf8(fixture!("streaming_response.sse").to_vec()).unwrap();
    let documented: Vec<&str> = documented
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    // The documented sequence, with its elided deltas: the chat stream has one.
    assert_eq!(types(&evs), documented);
    let output = accumulate(&evs);
    assert_eq!(output.len(), 1);
    for e in &evs[2..evs.len() - 1] {
        assert_eq!(e["output_index"], 0);
        if e.get("item_id").is_some() {
            assert_eq!(e["item_id"], "msg_chatcmpl-123");
            assert_eq!(e["content_index"], 0);
        }
    }
    assert_eq!(evs[0]["response"]["id"], "resp_chatcmpl-123");
    assert_eq!(evs[0]["response"]["status"], "in_progress");
    assert_eq!(evs[0]["response"]["model"], "alias");
    assert_eq!(evs[0]["response"]["created_at"], CREATED);
    let last = &evs[evs.len() - 1]["response"];
    assert_eq!(last["status"], "completed");
    assert_eq!(output_text(last), "Hello");
    assert_eq!(last["output"][0]["status"], "completed");
    // The documented chat stream was not asked for usage (the gateway's is).
    assert_eq!(last["usage"], Value::Null);
}

/// Anthropic's documented stream turned into the gateway's chat chunks.
fn anthropic_chat(wire: &str) -> Vec<u8> {
    let mut t = anthropic::StreamTranslator::new(true, CREATED, "req-1");
    t.feed(wire.as_bytes())
}

#[test]
fn tool_call_stream_has_a_message_then_a_function_call() {
    let chat = anthropic_chat(include_str!("fixtures/anthropic/stream_tool_use.sse"));
    let evs = stream(&chat);
    let t = types(&evs);
    let deltas = |kind: &str| t.iter().filter(|k| **k == kind).count();
    let text_deltas = deltas("response.output_text.delta");
    let arg_deltas = deltas("response.function_call_arguments.delta");
    assert!(text_deltas > 1 && arg_deltas > 1, "{t:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n(
        "response.output_text.delta",
        text_deltas,
    ));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
    ]);
    expected.extend(std::iter::repeat_n(
        "response.function_call_arguments.delta",
        arg_deltas,
    ));
    expected.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(t, expected);

    let output = accumulate(&evs);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(output[0]["id"], "msg_msg_014p7gG3wDgGV9EUtLvnow3U");
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(output[1]["id"], "fc_toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(output[1]["name"], "get_weather");
    let args = parse(output[1]["arguments"].as_str().unwrap().as_bytes());
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    for e in &evs {
        if e["type"]
            .as_str()
            .unwrap()
            .starts_with("response.function_call_arguments")
        {
            assert_eq!(
                (&e["output_index"], &e["item_id"]),
                (&json!(1), &output[1]["id"])
            );
        }
    }
    let last = &evs[evs.len() - 1]["response"];
    assert_eq!(last["status"], "completed");
    // Usage from the final usage chunk: Anthropic's input tokens and its last
    // cumulative output count.
    assert_eq!(last["usage"]["input_tokens"], 472);
    assert_eq!(last["usage"]["output_tokens"], 89);
    assert_eq!(last["usage"]["total_tokens"], 561);
}

/// An OpenAI chat chunk for the composed streams below (the shape of
/// `openai/chat_stream.sse`).
fn chunk(delta: Value, finish: Option<&str>) -> String {
    let c = json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

fn usage_chunk() -> String {
    let c = json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [], "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}});
    format!("data: {c}\n\n")
}

#[test]
fn parallel_tool_calls_stream_as_consecutive_items() {
    // OpenAI's chat stream of two parallel calls: each call's first delta has its
    // `index`, `id` and name, the arguments follow in pieces under the same index.
    let mut wire = chunk(json!({"role": "assistant", "content": null}), None);
    for (i, id, city) in [(0, "call_p", "Paris"), (1, "call_o", "Oslo")] {
        wire += &chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
            "function": {"name": "get_current_weather", "arguments": ""}}]}),
            None,
        );
        wire += &chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": "{\"location\":"}}]}),
            None,
        );
        wire += &chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": format!("\"{city}\"}}")}}]}),
            None,
        );
    }
    wire += &chunk(json!({}), Some("tool_calls"));
    wire += &usage_chunk();
    wire += "data: [DONE]\n\n";
    let evs = stream(wire.as_bytes());
    let output = accumulate(&evs);
    assert_eq!(output.len(), 2);
    for (i, (id, city)) in [("call_p", "Paris"), ("call_o", "Oslo")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(output[i]["call_id"], id);
        assert_eq!(output[i]["status"], "completed");
        assert_eq!(
            output[i]["arguments"],
            format!("{{\"location\":\"{city}\"}}")
        );
    }
    let t = types(&evs);
    assert_eq!(
        t.iter()
            .filter(|k| **k == "response.output_item.done")
            .count(),
        2
    );
    let last = &evs[evs.len() - 1]["response"];
    assert_eq!(last["usage"]["input_tokens"], 82);
    assert_eq!(last["usage"]["total_tokens"], 99);

    // A call whose id and name come after its first arguments is announced once
    // they have come, with the arguments so far as its first delta.
    let wire = [
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_late", "function": {"name": "f", "arguments": ":1}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let evs = stream(wire.as_bytes());
    let output = accumulate(&evs);
    assert_eq!(
        (&output[0]["call_id"], &output[0]["arguments"]),
        (&json!("call_late"), &json!("{\"a\":1}"))
    );
}

#[test]
fn error_mid_stream_ends_with_response_failed() {
    let mut wire = chunk(json!({"role": "assistant", "content": ""}), None);
    wire += &chunk(json!({"content": "Hel"}), None);
    let error = switchyard_core::error::stream_error_events(
        "The provider ended the stream before the answer was complete.",
        "stream_truncated",
        "req-1",
    );
    let mut s = ResponseStream::new("alias", CREATED, "req-1");
    let mut out = s.feed(wire.as_bytes());
    out.extend(s.feed(&error));
    assert!(s.is_done());
    // Nothing follows the failure: not the chat stream's `[DONE]`, not `finish`.
    assert!(s.feed(b"data: [DONE]\n\n").is_empty());
    assert!(s.finish().is_empty());
    let evs = events(&String::from_utf8(out).unwrap());
    assert_eq!(
        types(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
        ]
    );
    accumulate(&evs);
    let failed = &evs[5]["response"];
    assert_eq!(failed["status"], "failed");
    // The documented `response.failed` error: `{code, message}`, code from
    // openai-python's `ResponseError.code` values.
    assert_eq!(
        failed["error"],
        json!({"code": "server_error", "message": "The provider ended the stream before the answer was complete."})
    );
    assert_eq!(failed["output"][0]["status"], "incomplete");
    assert_eq!(output_text(failed), "Hel");
    // No top-level `error` member: openai-python would raise on it before the
    // client sees `response.failed`.
    assert!(evs.iter().all(|e| e.get("error").is_none()));

    // Anthropic's documented error event, after its documented start of a text
    // stream, through the Anthropic dialect.
    let text = include_str!("fixtures/anthropic/stream_text.sse");
    let cut = text.find("event: content_block_stop").unwrap();
    let wire = format!(
        "{}{}",
        &text[..cut],
        include_str!("fixtures/anthropic/stream_error.sse")
    );
    let evs = stream(&anthropic_chat(&wire));
    assert_eq!(evs.last().unwrap()["type"], "response.failed");
    let failed = &evs.last().unwrap()["response"];
    assert_eq!(failed["error"]["code"], "server_error");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Overloaded"),
        "{failed}"
    );
    assert_eq!(output_text(failed), "Hello!");
    accumulate(&evs);

    // A rate limit keeps its code; an error before any chunk still starts the
    // response first (the SDK needs `response.created` before anything else).
    let wire = br#"data: {"error":{"message":"Rate limit reached","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}

data: [DONE]

"#;
    let evs = stream(wire);
    assert_eq!(
        types(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    assert_eq!(evs[0]["response"]["id"], "resp_req-1");
    assert_eq!(evs[2]["response"]["error"]["code"], "rate_limit_exceeded");
}

#[test]
fn early_end_is_response_failed_never_a_silent_end() {
    let wire = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hello"}), None),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]}), None),
    ]
    .concat();
    let evs = stream(wire.as_bytes());
    let t = types(&evs);
    assert_eq!(t.last(), Some(&"response.failed"));
    let failed = &evs.last().unwrap()["response"];
    assert_eq!(failed["error"]["code"], "server_error");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended"),
        "{failed}"
    );
    assert_eq!(failed["output"][0]["status"], "completed");
    assert_eq!(failed["output"][1]["status"], "incomplete");
    assert_eq!(failed["output"][1]["arguments"], "{\"a\"");
    accumulate(&evs);

    // A finished answer whose `[DONE]` never came ended early too.
    let wire = [
        chunk(json!({"content": "Hi"}), None),
        chunk(json!({}), Some("stop")),
    ]
    .concat();
    assert_eq!(
        types(&stream(wire.as_bytes())).last(),
        Some(&"response.failed")
    );

    // Nothing at all.
    let evs = stream(b"");
    assert_eq!(
        types(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    // A partial event does not count as an event.
    let evs = stream(b"data: {\"id\":\"chatcmpl-1\",\"choi");
    assert_eq!(
        types(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
}

#[test]
fn length_and_content_filter_end_as_response_incomplete() {
    for (finish, reason) in [
        ("length", "max_output_tokens"),
        ("content_filter", "content_filter"),
    ] {
        let wire = [
            chunk(json!({"role": "assistant", "content": "Once upon"}), None),
            chunk(json!({"content": " a time"}), None),
            chunk(json!({}), Some(finish)),
            usage_chunk(),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let evs = stream(wire.as_bytes());
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"],
            json!({"reason": reason})
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(output_text(&last["response"]), "Once upon a time");
        accumulate(&evs);
    }
}

#[test]
fn text_after_a_call_and_refusals_get_their_own_items_and_parts() {
    let wire = [
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}), None),
        chunk(json!({"content": "Done."}), None),
        chunk(json!({"refusal": "But not that."}), None),
        chunk(json!({}), Some("stop")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let evs = stream(wire.as_bytes());
    let output = accumulate(&evs);
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[1]["type"], "message");
    assert_eq!(output[1]["id"], "msg_chatcmpl-9_1");
    assert_eq!(
        output[1]["content"],
        json!([
            {"type": "output_text", "text": "Done.", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "But not that."},
        ])
    );
    let t = types(&evs);
    assert!(t.contains(&"response.refusal.delta") && t.contains(&"response.refusal.done"));

    // Going back to a call that is done cannot be expressed: the stream fails.
    let wire = [
        chunk(json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}), None),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    assert_eq!(
        types(&stream(wire.as_bytes())).last(),
        Some(&"response.failed")
    );
}

#[test]
fn an_oversized_or_corrupt_chat_stream_fails() {
    let mut s = ResponseStream::new("alias", CREATED, "req-1");
    let mut out = s.feed(b"data: ");
    let blob = vec![b'x'; responses::MAX_PENDING_BYTES];
    out.extend(s.feed(&blob));
    assert!(s.is_done());
    assert!(s.feed(b"\n\n").is_empty());
    let evs = events(&String::from_utf8(out).unwrap());
    assert_eq!(evs.last().unwrap()["type"], "response.failed");

    let evs = stream(b"data: {not json}\n\n");
    assert_eq!(
        types(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
}
