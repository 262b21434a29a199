//! OpenAI Chat Completions and Azure OpenAI, from their API references: request
//! validation (unknown arguments, roles, `stream_options`, `tool_choice`),
//! credentials (`Authorization: Bearer`; Azure `api-key` and `api-version`),
//! `{"error":{"message","type","param","code"}}` errors (Azure:
//! `{"error":{"code","message"}}`), SSE chunks ending in `data: [DONE]`, Azure's
//! content-filter annotations (`prompt_filter_results`, `content_filter_results`,
//! and the first stream chunk that carries only the prompt's), embeddings (`encoding_format: base64` as
//! little-endian f32s). The Responses API is [`responses`]'s.

use hyper::Response;
use serde_json::{Value, json};

mod responses;

pub use responses::ENCRYPTED_REASONING;

use super::{
    Api, Body, Call, ChatRequest, Data, Event, Failure, Provider, Refused, Reply, Safety, StreamFailure, ToolChoice,
    cut_json, json_response, mock_embedding, names, now, texts, unknown_param, words,
};

/// OpenAI, or Azure OpenAI when `azure`.
pub(super) struct OpenAi {
    pub(super) azure: bool,
}

const PARAMS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
];

const AZURE_DENIED: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

const NO_KEY: &str = "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys.";

/// Azure's per-category content-filter annotation, everything `filtered` or not.
fn filter_results(filtered: bool) -> Value {
    let (severity, hit) = if filtered { ("high", true) } else { ("safe", false) };
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": hit, "severity": severity},
    })
}

/// The key as OpenAI echoes an unknown one: its first 8 and last 4 characters,
/// the rest masked; a short one whole.
fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return key.to_string();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 12))
}

impl OpenAi {
    fn openai_error(
        &self,
        status: u16,
        message: &str,
        kind: &str,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Response<Body> {
        json_response(
            status,
            &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
        )
    }

    fn azure_error(&self, status: u16, message: &str, code: Option<&str>) -> Response<Body> {
        let code = code.map(str::to_string).unwrap_or_else(|| status.to_string());
        json_response(status, &json!({"error": {"code": code, "message": message}}))
    }

    fn invalid(&self, message: &str, param: Option<&str>, code: Option<&str>) -> Response<Body> {
        if self.azure {
            return json_response(
                400,
                &json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
            );
        }
        self.openai_error(400, message, "invalid_request_error", param, code)
    }

    /// The credential check: OpenAI's bearer key, Azure's `api-key`.
    fn credential(&self, call: &Call) -> Result<(), Refused> {
        if self.azure {
            let key = call.header("api-key").unwrap_or("");
            if !call.state.knows(key) || call.b.echo_key_in_error {
                return Err(Box::new(self.azure_error(401, AZURE_DENIED, None)));
            }
            if call.header("authorization").is_some() {
                return Err(Box::new(self.azure_error(
                    401,
                    "Stricter than the real API: another provider's credential arrived.",
                    None,
                )));
            }
            return Ok(());
        }
        let key = call.bearer().unwrap_or("");
        if key.is_empty() {
            return Err(Box::new(self.openai_error(
                401,
                NO_KEY,
                "invalid_request_error",
                None,
                None,
            )));
        }
        if !call.state.knows(key) || call.b.echo_key_in_error {
            let message = format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                masked(key)
            );
            return Err(Box::new(self.openai_error(
                401,
                &message,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            )));
        }
        Ok(())
    }

    /// The Azure deployment named by `path`, when it is `/openai/deployments/{d}/{op}`
    /// with an `api-version`.
    fn deployment<'a>(&self, call: &Call<'a>, op: &str) -> Option<&'a str> {
        call.path
            .strip_prefix("/openai/deployments/")
            .and_then(|r| r.strip_suffix(op))
            .and_then(|r| r.strip_suffix('/'))
            .filter(|d| !d.is_empty() && !d.contains('/'))
            .filter(|_| call.query_param("api-version").is_some())
    }

    fn chunk(&self, req: &ChatRequest, n: u64, choice: Value) -> Value {
        let mut c = json!({"id": format!("chatcmpl-mock{n}"), "object": "chat.completion.chunk", "created": now(),
            "model": req.model, "system_fingerprint": "fp_mock", "choices": [choice]});
        if req.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn usage(req: &ChatRequest, reply: &Reply) -> Value {
        let out = reply.out_tokens();
        json!({"prompt_tokens": req.input_tokens, "completion_tokens": out, "total_tokens": req.input_tokens + out})
    }
}

impl Provider for OpenAi {
    fn models(&self, call: &Call) -> Option<Response<Body>> {
        let list = if self.azure { "/openai/models" } else { "/v1/models" };
        if call.method != "GET" || call.path != list {
            return None;
        }
        if self.azure && call.query_param("api-version").is_none() {
            return Some(self.azure_error(404, "Resource not found", None));
        }
        if let Err(r) = self.credential(call) {
            return Some(*r);
        }
        let data: Vec<Value> = call
            .state
            .cfg
            .models
            .iter()
            .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
            .collect();
        Some(json_response(200, &json!({"object": "list", "data": data})))
    }

    fn embeddings(&self, call: &Call) -> Option<Response<Body>> {
        let deployment = if self.azure {
            Some(self.deployment(call, "embeddings")?)
        } else if call.path == "/v1/embeddings" {
            None
        } else {
            return None;
        };
        if call.method != "POST" {
            return Some(self.error(405, "Method not allowed"));
        }
        if let Err(r) = self.credential(call) {
            return Some(*r);
        }
        if let Some(status) = call.b.status.filter(|s| *s >= 300) {
            return Some(self.error(status, &call.failing_on_purpose(status)));
        }
        let body = call.body;
        let model = match deployment {
            Some(d) => d.to_string(),
            None => match body.get("model").and_then(Value::as_str) {
                Some(m) => m.to_string(),
                None => return Some(self.invalid("you must provide a model parameter", None, None)),
            },
        };
        let base64 = match body.get("encoding_format").and_then(Value::as_str) {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Some(self.invalid(
                    &format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                    Some("encoding_format"),
                    None,
                ));
            }
        };
        let inputs: Vec<String> = match body.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect(),
            _ => return Some(self.invalid("'input' is a required property", Some("input"), None)),
        };
        let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
        let tokens: u64 = inputs.iter().map(|i| i.split_whitespace().count() as u64).sum();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = mock_embedding(t, dims);
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                    json!(self::base64(&bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        Some(json_response(
            200,
            &json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        ))
    }

    fn chat(&self, call: &Call) -> Result<ChatRequest, Refused> {
        if self.is_responses(call) {
            return self.responses(call);
        }
        let deployment = if self.azure {
            match self.deployment(call, "chat/completions") {
                Some(d) if call.method == "POST" => Some(d),
                _ => return Err(Box::new(self.azure_error(404, "Resource not found", None))),
            }
        } else {
            if call.method != "POST" || call.path != "/v1/chat/completions" {
                return Err(Box::new(self.invalid(
                    &format!("Invalid URL ({} {})", call.method, call.path),
                    None,
                    None,
                )));
            }
            None
        };
        self.credential(call)?;
        if !call.is_json() {
            return Err(Box::new(self.invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)", None, None)));
        }
        let Some(obj) = call.body.as_object() else {
            return Err(Box::new(self.invalid(
                "The request body must be a JSON object.",
                None,
                None,
            )));
        };
        if let Some(k) = unknown_param(obj, PARAMS) {
            return Err(Box::new(self.invalid(
                &format!("Unrecognized request argument supplied: {k}"),
                None,
                None,
            )));
        }
        let model = match (deployment, obj.get("model").and_then(Value::as_str)) {
            // Azure: the deployment names the model; a body `model` is ignored.
            (Some(d), _) => d,
            (None, Some(m)) => m,
            (None, None) => return Err(Box::new(self.invalid("you must provide a model parameter", None, None))),
        };
        if !call.state.serves(model) {
            return Err(Box::new(if self.azure {
                self.azure_error(404, "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.", Some("DeploymentNotFound"))
            } else {
                self.openai_error(
                    404,
                    &format!("The model `{model}` does not exist or you do not have access to it."),
                    "invalid_request_error",
                    None,
                    Some("model_not_found"),
                )
            }));
        }
        let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
            return Err(Box::new(self.invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            )));
        };
        if messages.is_empty() {
            return Err(Box::new(self.invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            )));
        }
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if !["system", "developer", "user", "assistant", "tool", "function"].contains(&role) {
                return Err(Box::new(self.invalid(&format!("Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."), Some(&format!("messages[{i}].role")), Some("invalid_value"))));
            }
        }
        let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if obj.get("stream_options").is_some_and(|o| !o.is_null()) && !stream {
            return Err(Box::new(self.invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                Some("stream_options"),
                None,
            )));
        }
        let tools = names(obj.get("tools"), "/function/name");
        let tool_choice = match obj.get("tool_choice") {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(_) if tools.is_empty() => {
                return Err(Box::new(self.invalid(
                    "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                    Some("tool_choice"),
                    None,
                )));
            }
            Some(Value::String(s)) if s == "none" => ToolChoice::None,
            Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
            Some(Value::String(s)) if s == "required" => ToolChoice::Any(Vec::new()),
            Some(c) => match c.pointer("/function/name").and_then(Value::as_str) {
                Some(name) if c.get("type").and_then(Value::as_str) == Some("function") => {
                    if !tools.iter().any(|t| t == name) {
                        return Err(Box::new(self.invalid(
                            &format!("Invalid value for 'tool_choice': function '{name}' is not one of the tools."),
                            Some("tool_choice"),
                            None,
                        )));
                    }
                    ToolChoice::Any(vec![name.to_string()])
                }
                _ => {
                    return Err(Box::new(self.invalid(
                        &format!("Invalid value for 'tool_choice': {c}."),
                        Some("tool_choice"),
                        None,
                    )));
                }
            },
        };
        let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or("").to_string();
        let system: Vec<String> = messages
            .iter()
            .filter(|m| ["system", "developer"].contains(&role(m).as_str()))
            .filter_map(|m| texts(m.get("content")))
            .collect();
        Ok(ChatRequest {
            model: model.to_string(),
            stream,
            include_usage: stream
                && obj
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            input_tokens: words(&Value::Array(messages.clone())),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            user_turns: messages.iter().filter(|m| role(m) == "user").count(),
            tools,
            tool_result: messages
                .last()
                .filter(|m| role(m) == "tool")
                .and_then(|m| texts(m.get("content"))),
            json: obj
                .get("response_format")
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("json")),
            tool_choice,
            ..ChatRequest::default()
        })
    }

    fn error(&self, status: u16, message: &str) -> Response<Body> {
        if self.azure {
            return self.azure_error(status, message, None);
        }
        let (kind, code) = match status {
            400 | 404 | 405 => ("invalid_request_error", None),
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("invalid_request_error", Some("unsupported_country_region_territory")),
            // OpenAI's 429s: the limit hit is the type, `rate_limit_exceeded` the code.
            429 => ("requests", Some("rate_limit_exceeded")),
            _ => ("server_error", None),
        };
        self.openai_error(status, message, kind, None, code)
    }

    fn failure(&self, call: &Call, failure: Failure, req: &ChatRequest) -> Response<Body> {
        match failure {
            Failure::ContentPolicy => self.openai_error(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
                "invalid_request_error",
                None,
                Some("content_policy_violation"),
            ),
            Failure::ModelGone => self.openai_error(
                404,
                &format!(
                    "The model `{}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations",
                    req.model
                ),
                "invalid_request_error",
                None,
                Some("model_not_found"),
            ),
            Failure::InvalidKey if self.azure => self.azure_error(401, AZURE_DENIED, None),
            Failure::InvalidKey => self.openai_error(
                401,
                "Incorrect API key provided.",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            Failure::BadRequest => self.invalid(
                "Invalid value for 'temperature': must be between 0 and 2.",
                Some("temperature"),
                None,
            ),
            Failure::ContextLength if req.api == Api::Responses => self.responses_too_long(),
            // Azure answers this one in OpenAI's shape too.
            Failure::ContextLength => {
                let (tokens, window) = req.over_window(call.b, 128_000);
                self.openai_error(
                    400,
                    &format!(
                        "This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
                    ),
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                )
            }
        }
    }

    fn blocked(&self, _req: &ChatRequest, safety: Safety) -> Option<Response<Body>> {
        if safety != Safety::Prompt {
            return None;
        }
        if self.azure {
            return Some(json_response(
                400,
                &json!({"error": {
                    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                    "type": null, "param": "prompt", "code": "content_filter", "status": 400,
                    "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": filter_results(true)},
                }}),
            ));
        }
        Some(self.openai_error(
            400,
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt: https://platform.openai.com/docs/guides/reasoning#advice-on-prompting",
            "invalid_request_error",
            None,
            Some("invalid_prompt"),
        ))
    }

    fn json(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Value {
        if req.api == Api::Responses {
            return responses::json(req, reply, n);
        }
        let (message, finish) = match reply {
            Reply::Text(t) => (json!({"role": "assistant", "content": t, "refusal": null}), "stop"),
            Reply::Tool { id, name, args } => (
                json!({"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}),
                "tool_calls",
            ),
            Reply::Blocked(_) => (
                json!({"role": "assistant", "content": null, "refusal": null}),
                "content_filter",
            ),
        };
        let mut choice = json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish});
        let mut v = json!({
            "id": format!("chatcmpl-mock{n}"), "object": "chat.completion", "created": now(), "model": req.model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": Self::usage(req, reply),
        });
        if self.azure {
            choice["content_filter_results"] = filter_results(matches!(reply, Reply::Blocked(_)));
            v["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": filter_results(false)}]);
        }
        v["choices"] = json!([choice]);
        v
    }

    fn events(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Event> {
        if req.api == Api::Responses {
            return responses::events(req, reply, n);
        }
        let azure = self.azure;
        let ev = |delta: Value, finish: Value| {
            let mut choice = json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish});
            if azure {
                choice["content_filter_results"] = match finish.as_str() {
                    Some("content_filter") => filter_results(true),
                    Some(_) => json!({}),
                    None => filter_results(false),
                };
            }
            Event::json("", self.chunk(req, n, choice))
        };
        let mut out = Vec::new();
        if azure {
            // Azure's first chunk, whenever its content filters run (by default):
            // the prompt's filter results, no choice, empty `id`/`model`/`object`.
            out.push(Event::json(
                "",
                json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filter_results(false)}]}),
            ));
        }
        out.push(ev(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ));
        let finish = match reply {
            Reply::Text(t) => {
                for piece in Reply::pieces(t) {
                    out.push(ev(json!({ "content": piece }), Value::Null));
                }
                "stop"
            }
            Reply::Tool { id, name, args } => {
                out.push(ev(
                    json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in Reply::arg_pieces(args) {
                    out.push(ev(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
                "tool_calls"
            }
            Reply::Blocked(_) => "content_filter",
        };
        out.push(ev(json!({}), json!(finish)));
        if req.include_usage {
            let mut c = self.chunk(req, n, Value::Null);
            c["choices"] = json!([]);
            c["usage"] = Self::usage(req, reply);
            out.push(Event::json("", c));
        }
        out.push(Event {
            name: "",
            data: Data::Done,
        });
        out
    }

    fn stream_type(&self, _call: &Call) -> &'static str {
        "text/event-stream"
    }

    fn frame(&self, call: &Call, events: Vec<Event>) -> Vec<Vec<u8>> {
        if self.is_responses(call) {
            return responses::frame(events);
        }
        events
            .into_iter()
            .map(|e| {
                let data = match e.data {
                    Data::Json(v) => v.to_string(),
                    Data::Done => "[DONE]".to_string(),
                    Data::Corrupt(v) => cut_json(&v),
                    Data::Fail(f) => {
                        let message = match f {
                            StreamFailure::Overloaded => {
                                "The server had an error while processing your request. Sorry about that!"
                            }
                            StreamFailure::MidStream => super::MID_STREAM_ERROR,
                        };
                        json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
                            .to_string()
                    }
                };
                format!("data: {data}\n\n").into_bytes()
            })
            .collect()
    }
}

/// RFC 4648 base64 (standard alphabet, padded): how OpenAI sends embeddings asked
/// for with `encoding_format: base64`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10.
    #[test]
    fn base64_test_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn keys_are_masked_as_openai_masks_them() {
        // A 51-character key, as OpenAI echoed one: `sk-PMafP`, 39 stars, `E873`.
        let key = format!("sk-PMafP{}E873", "x".repeat(39));
        assert_eq!(masked(&key), format!("sk-PMafP{}E873", "*".repeat(39)));
        assert_eq!(masked("undefined"), "undefined");
    }
}
