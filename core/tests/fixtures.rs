//! The providers' documented example payloads (`tests/fixtures/`, each file's source in
//! `tests/fixtures/README.md`) run through the dialect translators: the OpenAI answers they
//! become, the usage the gateway bills from them, and the failure class of the documented
//! error bodies.
//!
//! The translator bugs these fixtures found (listed in the README) are fixed and asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use switchyard_core::cost::{Usage, UsageTail};
use switchyard_core::dialect::{self, Dialect, StreamTranslator as _, anthropic, bedrock, gemini};
use switchyard_core::eventstream;
use switchyard_core::failure::FailureClass;
use switchyard_core::request::Endpoint;

/// The `created` timestamp the gateway passes in.
const CREATED: u64 = 1_700_000_000;

/// The class the adapter gives an error answer (`Api::classify_error`) when the
/// provider sent no error-type header.
fn classify(dialect: Dialect, status: u16, body: &[u8]) -> Option<FailureClass> {
    dialect::api(dialect).classify_error(status, None, body).0
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The `usage` the gateway's cost accounting finds at the end of an OpenAI answer,
/// fed in small pieces as a proxy sees it.
fn billed(answer: &[u8]) -> Option<Usage> {
    let mut tail = UsageTail::default();
    for piece in answer.chunks(11) {
        tail.feed(piece);
    }
    tail.usage()
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Option<Usage> {
    Some(Usage {
        prompt_tokens,
        completion_tokens,
    })
}

/// Runs a stream translator over `wire` twice, once whole and once in 7-byte pieces, and
/// checks that both give the same bytes.
fn translate(wire: &[u8], mut make: impl FnMut() -> Box<dyn FnMut(&[u8]) -> Vec<u8>>) -> String {
    let whole = make()(wire);
    let mut feed = make();
    let mut pieces = Vec::new();
    for piece in wire.chunks(7) {
        pieces.extend(feed(piece));
    }
    assert_eq!(
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&pieces),
        "the translation must not depend on where the provider's bytes are split"
    );
    String::from_utf8(whole).unwrap()
}

/// An OpenAI chat-completions event stream, taken apart.
struct Chunks {
    /// Every `data:` payload, `[DONE]` included.
    data: Vec<String>,
    /// The JSON chunks (every payload but `[DONE]`).
    chunks: Vec<Value>,
}

impl Chunks {
    fn parse(text: &str) -> Chunks {
        let mut data = Vec::new();
        for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            assert!(!payload.contains('\n'), "one line per event: {event:?}");
            data.push(payload.to_string());
        }
        let chunks = data
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| parse(d.as_bytes()))
            .collect();
        Chunks { data, chunks }
    }

    /// The concatenated `delta.content` of choice 0.
    fn content(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content"))
            .filter_map(Value::as_str)
            .collect()
    }

    /// The non-null `finish_reason`s, in order.
    fn finish_reasons(&self) -> Vec<String> {
        self.chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/finish_reason"))
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    }

    /// The tool-call deltas of choice 0.
    fn tool_deltas(&self) -> Vec<&Value> {
        self.chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/tool_calls"))
            .filter_map(Value::as_array)
            .flatten()
            .collect()
    }

    /// The tool calls assembled from the deltas as an OpenAI client does:
    /// `(index, id, name, arguments)`.
    fn tool_calls(&self) -> Vec<(u64, String, String, String)> {
        let mut calls: Vec<(u64, String, String, String)> = Vec::new();
        for d in self.tool_deltas() {
            let index = d["index"]
                .as_u64()
                .expect("every tool-call delta has an index");
            if calls.last().map(|c| c.0) != Some(index) {
                calls.push((index, String::new(), String::new(), String::new()));
            }
            let call = calls.last_mut().unwrap();
            if let Some(id) = d["id"].as_str() {
                call.1.push_str(id);
            }
            if let Some(name) = d.pointer("/function/name").and_then(Value::as_str) {
                call.2.push_str(name);
            }
            if let Some(args) = d.pointer("/function/arguments").and_then(Value::as_str) {
                call.3.push_str(args);
            }
        }
        calls
    }

    /// Checks what every translated stream owes its client: one `[DONE]`, last; one
    /// finish reason; the role first; chunk objects carrying `id`, `created` and `model`.
    fn assert_well_formed(&self, created: u64) {
        assert_eq!(self.data.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(
            self.data.iter().filter(|d| *d == "[DONE]").count(),
            1,
            "{:?}",
            self.data
        );
        assert_eq!(self.finish_reasons().len(), 1, "{:?}", self.data);
        assert_eq!(self.chunks[0]["choices"][0]["delta"]["role"], "assistant");
        for c in &self.chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["created"], created);
            assert!(c["id"].is_string() && c["model"].is_string(), "{c}");
        }
    }

    /// The `usage` of the final chunk, which must have no choices.
    fn final_usage(&self) -> &Value {
        let last = self.chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]), "{last}");
        &last["usage"]
    }

    fn has_usage(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| c.get("usage").is_some_and(|u| !u.is_null()))
    }
}

/// `message.tool_calls[i]` of a chat completion as `(id, name, parsed arguments)`.
fn tool_call(message: &Value, i: usize) -> (String, String, Value) {
    let call = &message["tool_calls"][i];
    assert_eq!(call["type"], "function", "{call}");
    let args = call["function"]["arguments"]
        .as_str()
        .expect("arguments are a JSON string");
    (
        call["id"].as_str().unwrap().to_string(),
        call["function"]["name"].as_str().unwrap().to_string(),
        parse(args.as_bytes()),
    )
}

// === OpenAI: the client's own dialect, passed through ===

#[test]
fn openai_documented_answers_are_billed_from_their_usage() {
    let body = include_bytes!("fixtures/openai/chat_response.json");
    let v = parse(body);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(billed(body), usage(19, 10));

    let body = include_bytes!("fixtures/openai/chat_tool_call_response.json");
    let v = parse(body);
    let (id, name, args) = tool_call(&v["choices"][0]["message"], 0);
    assert_eq!(
        (id.as_str(), name.as_str()),
        ("call_abc123", "get_current_weather")
    );
    assert_eq!(args, json!({"location": "Boston, MA"}));
    assert_eq!(billed(body), usage(82, 17));

    // The documented stream asks for no usage chunk, so there is nothing to bill from.
    let stream = include_str!("fixtures/openai/chat_stream.sse");
    let chunks = Chunks::parse(stream);
    assert_eq!(chunks.content(), "Hello");
    assert_eq!(chunks.finish_reasons(), ["stop"]);
    assert_eq!(billed(stream.as_bytes()), None);
}

#[test]
fn openai_documented_errors_are_classified() {
    let cases: [(u16, &[u8], FailureClass); 4] = [
        (
            401,
            include_bytes!("fixtures/openai/error_invalid_api_key.json"),
            FailureClass::Auth,
        ),
        (
            404,
            include_bytes!("fixtures/openai/error_model_not_found.json"),
            FailureClass::ModelUnavailable,
        ),
        (
            429,
            include_bytes!("fixtures/openai/error_rate_limit.json"),
            FailureClass::RateLimited,
        ),
        (
            429,
            include_bytes!("fixtures/openai/error_insufficient_quota.json"),
            FailureClass::RateLimited,
        ),
    ];
    for (status, body, class) in cases {
        for d in [Dialect::Openai, Dialect::AzureOpenai] {
            assert_eq!(
                classify(d, status, body),
                Some(class),
                "{d:?} {status} {}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(dialect::error_message(body).is_some_and(|m| !m.is_empty()));
    }
    // The model-not-found body keeps that class even under a status that alone says
    // "bad request" (OpenAI-compatible servers answer it with 400).
    assert_eq!(
        classify(
            Dialect::Openai,
            400,
            include_bytes!("fixtures/openai/error_model_not_found.json")
        ),
        Some(FailureClass::ModelUnavailable)
    );
}

// === Request side: the documented OpenAI requests in each provider's dialect ===

fn prepared(d: Dialect, body: &[u8], model: &str) -> Value {
    let p = dialect::prepare_request(d, Endpoint::Chat, body, model).unwrap();
    assert!(!p.stream && !p.include_usage);
    parse(&p.body)
}

#[test]
fn documented_function_calling_request_reaches_each_provider_in_its_tool_shape() {
    let body = include_bytes!("fixtures/openai/chat_request_tools.json");
    // The gateway's own validation accepts OpenAI's documented request.
    switchyard_core::request::inspect(body, Endpoint::Chat).unwrap();
    let request = parse(body);
    let function = &request["tools"][0]["function"];
    let question = "What is the weather like in Boston today?";

    // OpenAI: passed through with the target's model.
    let v = prepared(Dialect::Openai, body, "gpt-4o-mini");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["tools"], request["tools"]);
    assert_eq!(v["tool_choice"], "auto");

    // Anthropic: `tools[].{name, description, input_schema}`.
    let v = prepared(Dialect::Anthropic, body, "claude-sonnet-4-5");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    assert_eq!(
        v["tools"],
        json!([{
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "input_schema": function["parameters"],
        }])
    );
    assert_eq!(v["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": question}]}])
    );

    // Gemini (and Vertex): `tools[].functionDeclarations[]`.
    for d in [Dialect::Gemini, Dialect::Vertex] {
        let v = prepared(d, body, "gemini-2.0-flash");
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations": [{
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": function["parameters"],
            }]}]),
            "{d:?}"
        );
        assert_eq!(
            v["contents"],
            json!([{"role": "user", "parts": [{"text": question}]}])
        );
        assert!(v.get("model").is_none(), "the model travels in the path");
        // `tool_choice: auto` as Gemini's function-calling mode (the API reference's
        // `toolConfig.functionCallingConfig.mode`).
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "AUTO"}})
        );
    }
    // A forced function, `required` and `none`.
    let mut forced = request.clone();
    forced["tool_choice"] =
        json!({"type": "function", "function": {"name": "get_current_weather"}});
    let v = prepared(Dialect::Gemini, forced.to_string().as_bytes(), "g");
    assert_eq!(
        v["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_current_weather"]})
    );
    for (choice, mode) in [("required", "ANY"), ("none", "NONE")] {
        forced["tool_choice"] = json!(choice);
        let v = prepared(Dialect::Gemini, forced.to_string().as_bytes(), "g");
        assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], mode);
    }

    // Bedrock Converse: `toolConfig.tools[].toolSpec.{name, description, inputSchema.json}`.
    let v = prepared(
        Dialect::Bedrock,
        body,
        "anthropic.claude-3-haiku-20240307-v1:0",
    );
    assert_eq!(
        v["toolConfig"],
        json!({
            "tools": [{"toolSpec": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "inputSchema": {"json": function["parameters"]},
            }}],
            "toolChoice": {"auto": {}},
        })
    );
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"text": question}]}])
    );
    assert!(v.get("model").is_none(), "the model travels in the path");
}

#[test]
fn documented_developer_message_becomes_each_providers_system_prompt() {
    let body = include_bytes!("fixtures/openai/chat_request_default.json");
    switchyard_core::request::inspect(body, Endpoint::Chat).unwrap();
    let system = "You are a helpful assistant.";

    let v = prepared(Dialect::Anthropic, body, "claude-sonnet-4-5");
    assert_eq!(v["system"], system);
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}])
    );

    let v = prepared(Dialect::Gemini, body, "gemini-2.0-flash");
    assert_eq!(v["systemInstruction"], json!({"parts": [{"text": system}]}));
    assert_eq!(
        v["contents"],
        json!([{"role": "user", "parts": [{"text": "Hello!"}]}])
    );

    let v = prepared(
        Dialect::Bedrock,
        body,
        "anthropic.claude-3-haiku-20240307-v1:0",
    );
    assert_eq!(v["system"], json!([{"text": system}]));
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"text": "Hello!"}]}])
    );
}

// === Anthropic Messages ===

#[test]
fn anthropic_documented_message_response() {
    let out = anthropic::response(
        include_bytes!("fixtures/anthropic/message_response.json"),
        CREATED,
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["id"], "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], CREATED);
    assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], "Hi! My name is Claude.");
    assert!(message.get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598})
    );
    assert_eq!(billed(&out), usage(2095, 503));
}

#[test]
fn anthropic_documented_tool_use_response() {
    let out = anthropic::response(
        include_bytes!("fixtures/anthropic/tool_use_response.json"),
        CREATED,
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["id"], "msg_01Aq9w938a90dw8q");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    let message = &v["choices"][0]["message"];
    assert_eq!(
        message["content"],
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(message["tool_calls"].as_array().map(Vec::len), Some(1));
    let (id, name, args) = tool_call(message, 0);
    assert_eq!(id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(name, "get_weather");
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // The documented example carries no usage: the translation reports zero, which the
    // gateway bills as such.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    );
    assert_eq!(billed(&out), usage(0, 0));
}

fn anthropic_stream(wire: &str, include_usage: bool) -> (String, bool) {
    let text = translate(wire.as_bytes(), || {
        let mut t = anthropic::StreamTranslator::new(include_usage, CREATED, "req-1");
        Box::new(move |b| t.feed(b))
    });
    let mut t = anthropic::StreamTranslator::new(include_usage, CREATED, "req-1");
    t.feed(wire.as_bytes());
    (text, t.is_done())
}

#[test]
fn anthropic_documented_text_stream() {
    let wire = include_str!("fixtures/anthropic/stream_text.sse");
    let (text, done) = anthropic_stream(wire, true);
    assert!(done);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert_eq!(chunks.content(), "Hello!");
    assert_eq!(chunks.finish_reasons(), ["stop"]);
    assert!(chunks.tool_deltas().is_empty());
    for c in &chunks.chunks {
        assert_eq!(c["id"], "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
        assert_eq!(c["model"], "claude-sonnet-4-5-20250929");
    }
    // input_tokens from message_start, the cumulative output_tokens from message_delta.
    assert_eq!(
        chunks.final_usage(),
        &json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40})
    );
    assert_eq!(billed(text.as_bytes()), usage(25, 15));

    // Without stream_options.include_usage: the same answer, no usage chunk.
    let (text, _) = anthropic_stream(wire, false);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert_eq!(chunks.content(), "Hello!");
    assert!(!chunks.has_usage());
    assert_eq!(billed(text.as_bytes()), None);
}

#[test]
fn anthropic_documented_tool_use_stream() {
    let (text, done) =
        anthropic_stream(include_str!("fixtures/anthropic/stream_tool_use.sse"), true);
    assert!(done);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert_eq!(
        chunks.content(),
        "Okay, let's check the weather for San Francisco, CA:"
    );
    let calls = chunks.tool_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (index, id, name, args) = &calls[0];
    assert_eq!(*index, 0, "the first tool call is OpenAI tool index 0");
    assert_eq!(id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(name, "get_weather");
    assert_eq!(
        parse(args.as_bytes()),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(chunks.finish_reasons(), ["tool_calls"]);
    assert_eq!(
        chunks.final_usage(),
        &json!({"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561})
    );
    assert_eq!(billed(text.as_bytes()), usage(472, 89));
}

#[test]
fn anthropic_documented_thinking_stream_sends_only_the_answer() {
    let (text, done) =
        anthropic_stream(include_str!("fixtures/anthropic/stream_thinking.sse"), true);
    assert!(done);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert_eq!(chunks.content(), "27 * 453 = 12,231");
    assert!(!text.contains("step by step") && !text.contains("EqQBCgIYAhIM"));
    assert_eq!(chunks.finish_reasons(), ["stop"]);
}

#[test]
fn anthropic_documented_error_event_ends_the_stream() {
    let (text, done) = anthropic_stream(include_str!("fixtures/anthropic/stream_error.sse"), true);
    assert!(done);
    let chunks = Chunks::parse(&text);
    assert_eq!(chunks.data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(chunks.chunks.len(), 1);
    let error = &chunks.chunks[0]["error"];
    assert_eq!(error["message"], "overloaded_error: Overloaded");
    assert_eq!(error["code"], "provider_stream_error");
    assert_eq!(error["request_id"], "req-1");
    // The stream is reported as failed, so an adapter that has not yet committed it
    // to the client falls over instead.
    let mut t = anthropic::StreamTranslator::new(true, CREATED, "req-1");
    t.feed(include_str!("fixtures/anthropic/stream_error.sse").as_bytes());
    assert!(matches!(
        t.progress().end,
        Some(dialect::StreamEnd::Failed(FailureClass::ServerError, _))
    ));
    assert!(!t.progress().content, "the error came before any content");
}

#[test]
fn anthropic_documented_errors_are_classified() {
    let cases: [(u16, &[u8], &str, &str, FailureClass); 3] = [
        (
            529,
            include_bytes!("fixtures/anthropic/error_overloaded.json"),
            "overloaded_error",
            "Overloaded",
            FailureClass::ServerError,
        ),
        (
            404,
            include_bytes!("fixtures/anthropic/error_not_found.json"),
            "not_found_error",
            "The requested resource could not be found.",
            FailureClass::ModelUnavailable,
        ),
        (
            429,
            include_bytes!("fixtures/anthropic/error_rate_limit.json"),
            "rate_limit_error",
            "Your account has hit a rate limit.",
            FailureClass::RateLimited,
        ),
    ];
    for (status, body, kind, message, class) in cases {
        assert_eq!(
            anthropic::error_details(body),
            Some((kind.to_string(), message.to_string()))
        );
        assert_eq!(
            classify(Dialect::Anthropic, status, body),
            Some(class),
            "{status} {kind}"
        );
    }
}

// === Google Gemini ===

#[test]
fn gemini_documented_generate_content_response() {
    let out = gemini::response(
        include_bytes!("fixtures/gemini/generate_content_response.json"),
        CREATED,
        "gemini-configured",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], CREATED);
    assert_eq!(v["model"], "gemini-2.0-flash", "modelVersion wins");
    let message = &v["choices"][0]["message"];
    assert_eq!(
        message["content"],
        "Google's headquarters, also known as the Googleplex, is located in **Mountain View, California**.\n"
    );
    assert!(message.get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 22, "total_tokens": 29})
    );
    assert_eq!(billed(&out), usage(7, 22));
}

#[test]
fn gemini_documented_function_call_response() {
    let out = gemini::response(
        include_bytes!("fixtures/gemini/function_call_response.json"),
        CREATED,
        "gemini-pro",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["model"], "gemini-pro");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"].as_array().map(Vec::len), Some(1));
    let (id, name, args) = tool_call(message, 0);
    assert!(!id.is_empty());
    assert_eq!(name, "find_theaters");
    assert_eq!(
        args,
        json!({"movie": "Barbie", "location": "Mountain View, CA"})
    );
    // Gemini says STOP for a function call; OpenAI clients need tool_calls.
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(billed(&out), usage(0, 0));
}

#[test]
fn gemini_documented_safety_stop_is_a_content_filter() {
    let out = gemini::response(
        include_bytes!("fixtures/gemini/safety_response.json"),
        CREATED,
        "m",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Safety error incoming in 5, 4, 3, 2..."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(billed(&out), usage(7, 20));
}

#[test]
fn gemini_documented_thinking_response_leaves_thoughts_out_and_bills_them() {
    let out = gemini::response(
        include_bytes!("fixtures/gemini/thinking_response.json"),
        CREATED,
        "m",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["id"], "2pmHaJqQEoqC-8YP6eStyAY");
    assert_eq!(v["model"], "gemini-2.5-flash");
    // The `thought: true` part is a summary of the model's thinking, not the answer.
    assert_eq!(v["choices"][0]["message"]["content"], "Mountain View");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Thinking tokens are output tokens (as OpenAI counts reasoning tokens).
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 14, "completion_tokens": 26, "total_tokens": 40})
    );
}

/// Translates a Gemini stream; the end (finish chunk, usage, `[DONE]`) comes when
/// the provider's stream ends, as the adapter calls `finish` then.
fn gemini_stream(wire: &str, include_usage: bool, model: &str) -> (String, bool) {
    let mut text = translate(wire.as_bytes(), || {
        let mut t = gemini::StreamTranslator::new(include_usage, CREATED, model, "req-1");
        Box::new(move |b| t.feed(b))
    });
    let mut t = gemini::StreamTranslator::new(include_usage, CREATED, model, "req-1");
    t.feed(wire.as_bytes());
    text.push_str(&String::from_utf8(t.finish()).unwrap());
    (text, t.is_done())
}

#[test]
fn gemini_documented_stream() {
    let wire = include_str!("fixtures/gemini/stream.sse");
    let (text, done) = gemini_stream(wire, true, "gemini-configured");
    assert!(done);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert_eq!(
        chunks.content(),
        "The capital of Wyoming is **Cheyenne**.\n"
    );
    assert_eq!(chunks.finish_reasons(), ["stop"]);
    for c in &chunks.chunks {
        assert_eq!(c["model"], "gemini-2.0-flash");
    }
    // The usage of the last provider chunk, the only one with candidatesTokenCount.
    assert_eq!(
        chunks.final_usage(),
        &json!({"prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17})
    );
    assert_eq!(billed(text.as_bytes()), usage(7, 10));

    let (text, _) = gemini_stream(wire, false, "gemini-configured");
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert!(!chunks.has_usage());
}

#[test]
fn gemini_documented_function_call_stream() {
    let (text, done) = gemini_stream(
        include_str!("fixtures/gemini/stream_function_call.sse"),
        true,
        "gemini-1.5-flash",
    );
    assert!(done);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert_eq!(chunks.content(), "");
    let calls = chunks.tool_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (index, id, name, args) = &calls[0];
    assert_eq!(*index, 0);
    assert!(!id.is_empty());
    assert_eq!(name, "getTemperature");
    assert_eq!(parse(args.as_bytes()), json!({"city": "San Jose"}));
    assert_eq!(chunks.finish_reasons(), ["tool_calls"]);
    // No usageMetadata in this stream: the usage chunk still has OpenAI's fields.
    let usage = chunks
        .chunks
        .iter()
        .rev()
        .find_map(|c| c.get("usage").filter(|u| !u.is_null()));
    assert_eq!(
        usage,
        Some(&json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}))
    );
}

#[test]
fn gemini_documented_stream_with_a_finish_reason_on_every_chunk_keeps_all_text() {
    // gemini-pro put `finishReason: STOP` on every chunk: the text of every chunk
    // reaches the client, then one finish reason, one usage chunk and one [DONE].
    let (text, done) = gemini_stream(
        include_str!("fixtures/gemini/stream_finish_every_chunk.sse"),
        true,
        "gemini-pro",
    );
    assert!(done);
    assert_eq!(text.matches("data: [DONE]").count(), 1, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = Chunks::parse(&text);
    assert_eq!(chunks.finish_reasons(), ["stop"]);
    let usage = chunks
        .chunks
        .iter()
        .rev()
        .find_map(|c| c.get("usage").filter(|u| !u.is_null()));
    assert!(usage.is_some_and(|u| u["total_tokens"].is_u64()), "{text}");
    assert_eq!(
        Chunks::parse(&text).content(),
        "In the quaint, sunlit cottage nestled amidst a lush meadow, resided two feline \
         companions named Mittens and Whiskers. Mittens, with her silky black fur and piercing \
         green eyes, possessed an air of elegance and mystery. Whiskers, other and for \
         adventure stronger than ever."
    );
}

#[test]
fn gemini_documented_errors_are_classified() {
    let cases: [(u16, &[u8], &str, FailureClass); 4] = [
        (
            400,
            include_bytes!("fixtures/gemini/error_api_key_invalid.json"),
            "INVALID_ARGUMENT",
            FailureClass::Auth,
        ),
        (
            404,
            include_bytes!("fixtures/gemini/error_not_found.json"),
            "NOT_FOUND",
            FailureClass::ModelUnavailable,
        ),
        (
            429,
            include_bytes!("fixtures/gemini/error_quota_exceeded.json"),
            "RESOURCE_EXHAUSTED",
            FailureClass::RateLimited,
        ),
        (
            403,
            include_bytes!("fixtures/gemini/error_permission_denied.json"),
            "PERMISSION_DENIED",
            FailureClass::Auth,
        ),
    ];
    for (status, body, kind, class) in cases {
        let (got_kind, message) = gemini::error_details(body).unwrap();
        assert_eq!(got_kind, kind);
        assert_eq!(
            Some(message),
            parse(body)["error"]["message"].as_str().map(str::to_string)
        );
        for d in [Dialect::Gemini, Dialect::Vertex] {
            assert_eq!(
                classify(d, status, body),
                Some(class),
                "{d:?} {status} {kind}"
            );
        }
    }
}

// === AWS Bedrock Converse ===

#[test]
fn bedrock_documented_converse_responses() {
    let out = bedrock::response(
        include_bytes!("fixtures/bedrock/converse_response.json"),
        CREATED,
        "anthropic.claude-3-sonnet-20240229-v1:0",
        "chatcmpl-bedrock-1",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["id"], "chatcmpl-bedrock-1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], CREATED);
    assert_eq!(v["model"], "anthropic.claude-3-sonnet-20240229-v1:0");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"], "",
        "the reference's example text is empty"
    );
    assert!(message.get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 628, "total_tokens": 658})
    );
    assert_eq!(billed(&out), usage(30, 628));

    let out = bedrock::response(
        include_bytes!("fixtures/bedrock/converse_stop_sequence_response.json"),
        CREATED,
        "m",
        "id",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 51, "completion_tokens": 442, "total_tokens": 493})
    );

    let out = bedrock::response(
        include_bytes!("fixtures/bedrock/tool_result_answer_response.json"),
        CREATED,
        "m",
        "id",
    )
    .unwrap();
    let v = parse(&out);
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The most popular song on WZPZ is Elemental Hotel by 8 Storey Hike."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn bedrock_documented_tool_use_response() {
    let out = bedrock::response(
        include_bytes!("fixtures/bedrock/tool_use_response.json"),
        CREATED,
        "cohere.command-r-v1:0",
        "chatcmpl-bedrock-2",
    )
    .unwrap();
    let v = parse(&out);
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"].as_array().map(Vec::len), Some(1));
    let (id, name, args) = tool_call(message, 0);
    assert_eq!(id, "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
    assert_eq!(name, "top_song");
    assert_eq!(args, json!({"sign": "WZPZ"}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(billed(&out), usage(0, 0));
}

/// One ConverseStream frame, as Bedrock frames an event.
fn bedrock_event(e: &Value) -> Vec<u8> {
    eventstream::encode(
        &[
            (":event-type", e["type"].as_str().unwrap()),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        e["payload"].to_string().as_bytes(),
    )
}

/// The documented ConverseStream fixture, and its events as binary frames.
fn bedrock_wire() -> (Value, Vec<Vec<u8>>) {
    let fixture = parse(include_bytes!("fixtures/bedrock/converse_stream.json"));
    let frames = fixture["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(bedrock_event)
        .collect();
    (fixture, frames)
}

fn bedrock_stream(wire: &[u8], include_usage: bool) -> (String, bool) {
    let text = translate(wire, || {
        let mut t = bedrock::StreamTranslator::new(include_usage, CREATED, "m", "id-1", "req-1");
        Box::new(move |b| t.feed(b))
    });
    let mut t = bedrock::StreamTranslator::new(include_usage, CREATED, "m", "id-1", "req-1");
    t.feed(wire);
    (text, t.is_done())
}

#[test]
fn bedrock_documented_converse_stream() {
    let (_, frames) = bedrock_wire();
    let wire = frames.concat();
    let (text, done) = bedrock_stream(&wire, true);
    assert!(done);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    for c in &chunks.chunks {
        assert_eq!((&c["id"], &c["model"]), (&json!("id-1"), &json!("m")));
    }
    assert_eq!(
        chunks.content(),
        "The most popular song on WZPZ is Elemental Hotel by 8 Storey Hike."
    );
    let calls = chunks.tool_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (index, id, name, args) = &calls[0];
    assert_eq!(*index, 0);
    assert_eq!(id, "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
    assert_eq!(name, "top_song");
    assert_eq!(parse(args.as_bytes()), json!({"sign": "WZPZ"}));
    assert_eq!(chunks.finish_reasons(), ["tool_calls"]);
    assert_eq!(
        chunks.final_usage(),
        &json!({"prompt_tokens": 30, "completion_tokens": 628, "total_tokens": 658})
    );
    assert_eq!(billed(text.as_bytes()), usage(30, 628));

    let (text, _) = bedrock_stream(&wire, false);
    let chunks = Chunks::parse(&text);
    chunks.assert_well_formed(CREATED);
    assert!(!chunks.has_usage());
    assert_eq!(billed(text.as_bytes()), None);
}

#[test]
fn bedrock_documented_stream_exception_ends_the_stream_with_an_error() {
    let (fixture, frames) = bedrock_wire();
    let exception = &fixture["exception"];
    // The answer starts (messageStart and the first text delta), then the documented
    // throttlingException member arrives in place of the rest.
    let mut stream = frames[..2].concat();
    stream.extend(eventstream::encode(
        &[
            (":exception-type", exception["type"].as_str().unwrap()),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        exception["payload"].to_string().as_bytes(),
    ));
    let (text, done) = bedrock_stream(&stream, true);
    assert!(done);
    let chunks = Chunks::parse(&text);
    assert_eq!(chunks.data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(chunks.content(), "The most popular song on WZPZ is ");
    let message = chunks
        .chunks
        .iter()
        .find_map(|c| c.pointer("/error/message"))
        .and_then(Value::as_str)
        .expect("an error event");
    assert!(
        message.contains("throttlingException") && message.contains("exceeding the account quotas"),
        "{message}"
    );
    assert!(text.contains("req-1"), "the request id reaches the client");
}

#[test]
fn bedrock_documented_errors_are_classified() {
    let errors = parse(include_bytes!("fixtures/bedrock/errors.json"));
    let expected = [
        ("ThrottlingException", FailureClass::RateLimited),
        ("AccessDeniedException", FailureClass::Auth),
        ("ResourceNotFoundException", FailureClass::ModelUnavailable),
        ("ValidationException", FailureClass::BadRequest),
        ("ServiceQuotaExceededException", FailureClass::RateLimited),
        ("ModelNotReadyException", FailureClass::ServerError),
        ("InternalServerException", FailureClass::ServerError),
        ("ServiceUnavailableException", FailureClass::ServerError),
        ("ModelErrorException", FailureClass::ServerError),
        ("ModelTimeoutException", FailureClass::ServerError),
    ];
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), expected.len());
    for (e, (kind, class)) in errors.iter().zip(expected) {
        let status = u16::try_from(e["status"].as_u64().unwrap()).unwrap();
        let header = e["x-amzn-ErrorType"].as_str();
        assert_eq!(header, Some(kind));
        let body = e["body"].to_string();
        let (got_kind, message) = bedrock::error_details(header, body.as_bytes());
        assert_eq!(got_kind, kind);
        assert_eq!(message, e["body"]["message"].as_str().unwrap());
        assert_eq!(
            bedrock::classify(status, &got_kind, &message),
            Some(class),
            "{status} {kind}"
        );
    }
    // The error type as restJson1 allows it on the wire (Smithy's own examples): with a
    // `:`-suffix, with a `namespace#` prefix, both, and in the body's `__type`.
    for header in [
        "ThrottlingException",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.validate/",
        "com.amazonaws.bedrockruntime#ThrottlingException",
        "com.amazonaws.bedrockruntime#ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.validate/",
    ] {
        let (kind, _) = bedrock::error_details(Some(header), br#"{"message":"x"}"#);
        assert_eq!(kind, "ThrottlingException", "{header}");
    }
    let (kind, message) = bedrock::error_details(
        None,
        br#"{"__type":"com.amazonaws.bedrockruntime#ThrottlingException","message":"x"}"#,
    );
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("ThrottlingException", "x")
    );
    // A throttled answer classifies as rate limited from its body and status alone.
    let throttled = errors[0]["body"].to_string();
    assert_eq!(
        classify(Dialect::Bedrock, 429, throttled.as_bytes()),
        Some(FailureClass::RateLimited)
    );
}
