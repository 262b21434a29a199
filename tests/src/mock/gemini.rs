//! Gemini API (`generativelanguage`, v1beta) and Vertex AI (same bodies under a
//! project and location), from their API references: API key (`x-goog-api-key` or
//! `?key=`) or OAuth bearer, protobuf-JSON field names (lowerCamel or the proto's
//! snake_case, anything else "Cannot find field"), `toolConfig.
//! functionCallingConfig` (mode `AUTO`/`ANY`/`NONE`/`VALIDATED`,
//! `allowedFunctionNames` only with `ANY`/`VALIDATED`), google.rpc errors
//! `{"error":{"code","message","status"}}`, `streamGenerateContent` as SSE with
//! `alt=sse` or else as a streamed JSON array, `promptFeedback.blockReason` and
//! `finishReason: SAFETY`, embeddings (`batchEmbedContents`, Vertex `:predict`).

use hyper::Response;
use serde_json::{Map, Value, json};

use super::{
    Body, Call, ChatRequest, Data, Event, Failure, Provider, Refused, Reply, Safety, StreamFailure, ToolChoice,
    VERTEX_BASE, cut_json, json_response, mock_embedding, texts, words,
};

/// Gemini, or Vertex AI when `vertex`.
pub(super) struct Gemini {
    pub(super) vertex: bool,
}

const FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
];

/// Vertex AI's request has these too.
const VERTEX_FIELDS: &[&str] = &["labels"];

const GENERATION_FIELDS: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
    "audioTimestamp",
    "routingConfig",
];

const MODES: &[&str] = &["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"];

/// The proto field name of a lowerCamel JSON name (`toolConfig` → `tool_config`).
fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The first key of `obj` that is neither a known field nor its proto name.
fn unknown<'a>(obj: &'a Map<String, Value>, known: &[&str]) -> Option<&'a String> {
    obj.keys().find(|k| !known.iter().any(|f| f == k || snake(f) == **k))
}

/// Field `camel` of `obj`, under its JSON or its proto name.
fn field<'a>(obj: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    obj.get(camel).or_else(|| obj.get(&snake(camel)))
}

fn safety_ratings() -> Value {
    json!([
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    ])
}

impl Gemini {
    fn status_error(&self, code: u16, status: &str, message: &str, details: Option<Value>) -> Response<Body> {
        let mut error = json!({"code": code, "message": message, "status": status});
        if let Some(d) = details {
            error["details"] = d;
        }
        json_response(code, &json!({ "error": error }))
    }

    fn invalid(&self, message: &str) -> Response<Body> {
        self.status_error(400, "INVALID_ARGUMENT", message, None)
    }

    fn prefix(&self) -> String {
        format!("{}/models/", if self.vertex { VERTEX_BASE } else { "/v1beta" })
    }

    fn proto(&self) -> &'static str {
        if self.vertex {
            "google.cloud.aiplatform.v1"
        } else {
            "google.ai.generativelanguage.v1beta"
        }
    }

    fn key_invalid(&self) -> Response<Body> {
        self.status_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            Some(
                json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]),
            ),
        )
    }

    fn unauthenticated(&self) -> Response<Body> {
        self.status_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.", None)
    }

    fn not_found(&self, model: &str) -> Response<Body> {
        let message = if self.vertex {
            format!(
                "Publisher Model `projects/mock-project/locations/us-central1/publishers/google/models/{model}` was not found or your project does not have access to it. Please ensure you are using a valid model version."
            )
        } else {
            format!(
                "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
            )
        };
        self.status_error(404, "NOT_FOUND", &message, None)
    }

    /// The credential check: an API key (header or `key` query parameter), or
    /// Vertex's OAuth bearer token. Neither ever echoes what it got.
    fn credential(&self, call: &Call) -> Result<(), Refused> {
        if self.vertex {
            let token = call.bearer().unwrap_or("");
            if !call.state.knows(token) || call.header("x-goog-api-key").is_some() || call.b.echo_key_in_error {
                return Err(Box::new(self.unauthenticated()));
            }
            return Ok(());
        }
        let key = call
            .header("x-goog-api-key")
            .or_else(|| call.query_param("key"))
            .unwrap_or("");
        if key.is_empty() {
            return Err(Box::new(self.status_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", None)));
        }
        if !call.state.knows(key) || call.b.echo_key_in_error {
            return Err(Box::new(self.key_invalid()));
        }
        if call.header("authorization").is_some() {
            return Err(Box::new(self.status_error(
                401,
                "UNAUTHENTICATED",
                "Stricter than the real API: another provider's credential arrived.",
                None,
            )));
        }
        Ok(())
    }

    /// `toolConfig`, checked as the API checks it, and the tool choice it makes.
    fn tool_choice(&self, obj: &Map<String, Value>, tools: &[String]) -> Result<ToolChoice, Refused> {
        let Some(config) = field(obj, "toolConfig") else {
            return Ok(ToolChoice::Auto);
        };
        let unknown_at = |k: &str, at: &str| {
            self.invalid(&format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
            ))
        };
        let Some(config) = config.as_object() else {
            return Err(Box::new(self.invalid(&format!(
                "Invalid value at 'tool_config' (type.googleapis.com/{}.ToolConfig), {config}",
                self.proto()
            ))));
        };
        if let Some(k) = unknown(config, &["functionCallingConfig", "retrievalConfig"]) {
            return Err(Box::new(unknown_at(k, "tool_config")));
        }
        let Some(calling) = field(config, "functionCallingConfig") else {
            return Ok(ToolChoice::Auto);
        };
        let Some(calling) = calling.as_object() else {
            return Err(Box::new(self.invalid(&format!(
                "Invalid value at 'tool_config.function_calling_config' (type.googleapis.com/{}.FunctionCallingConfig), {calling}",
                self.proto()
            ))));
        };
        if let Some(k) = unknown(calling, &["mode", "allowedFunctionNames"]) {
            return Err(Box::new(unknown_at(k, "tool_config.function_calling_config")));
        }
        let given = field(calling, "mode");
        let mode = match given {
            None => Some("MODE_UNSPECIFIED"),
            Some(Value::String(m)) => MODES.iter().copied().find(|x| x == m),
            // Protobuf JSON also takes an enum's number.
            Some(Value::Number(n)) => n.as_u64().and_then(|i| MODES.get(i as usize).copied()),
            Some(_) => None,
        };
        let Some(mode) = mode else {
            return Err(Box::new(self.invalid(&format!(
                "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/{}.FunctionCallingConfig.Mode), {}",
                self.proto(),
                given.unwrap_or(&Value::Null)
            ))));
        };
        let allowed: Vec<String> = match field(calling, "allowedFunctionNames") {
            None => Vec::new(),
            Some(Value::Array(a)) => {
                let mut names = Vec::new();
                for v in a {
                    let Some(s) = v.as_str() else {
                        return Err(Box::new(self.invalid(&format!(
                            "Invalid value at 'tool_config.function_calling_config.allowed_function_names' (TYPE_STRING), {v}"
                        ))));
                    };
                    names.push(s.to_string());
                }
                names
            }
            Some(other) => {
                return Err(Box::new(self.invalid(&format!(
                    "Invalid value at 'tool_config.function_calling_config.allowed_function_names' (TYPE_STRING), {other}"
                ))));
            }
        };
        let forcing = mode == "ANY" || mode == "VALIDATED";
        if !allowed.is_empty() && !forcing {
            return Err(Box::new(self.invalid(&format!(
                "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: allowed_function_names may only be set when the function calling mode is ANY or VALIDATED, not {mode}.\n"
            ))));
        }
        if forcing && tools.is_empty() {
            return Err(Box::new(self.invalid(&format!(
                "* GenerateContentRequest.tool_config.function_calling_config.mode: function calling mode {mode} is set without function_declarations.\n"
            ))));
        }
        // Stricter than the documented API: a name no declaration has is refused.
        if let Some((i, name)) = allowed.iter().enumerate().find(|(_, n)| !tools.contains(n)) {
            return Err(Box::new(self.invalid(&format!(
                "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names[{i}]: {name} is not one of the declared functions.\n"
            ))));
        }
        Ok(match mode {
            "NONE" => ToolChoice::None,
            "ANY" => ToolChoice::Any(allowed),
            "VALIDATED" if !allowed.is_empty() => ToolChoice::AutoAmong(allowed),
            _ => ToolChoice::Auto,
        })
    }

    fn usage(req: &ChatRequest, reply: &Reply) -> Value {
        let out = reply.out_tokens();
        if out == 0 {
            return json!({"promptTokenCount": req.input_tokens, "totalTokenCount": req.input_tokens});
        }
        json!({"promptTokenCount": req.input_tokens, "candidatesTokenCount": out, "totalTokenCount": req.input_tokens + out})
    }

    /// One response (a whole answer, or one chunk of a stream).
    fn response(req: &ChatRequest, n: u64, candidate: Option<Value>, usage: Value) -> Value {
        let mut v = json!({"usageMetadata": usage, "modelVersion": req.model, "responseId": format!("mock-{n}")});
        if let Some(c) = candidate {
            v["candidates"] = json!([c]);
        }
        v
    }

    /// The answer when `reply` is a safety block.
    fn blocked_response(req: &ChatRequest, reply: &Reply, n: u64, safety: Safety) -> Value {
        let usage = Self::usage(req, reply);
        match safety {
            Safety::Prompt => {
                let mut v = Self::response(req, n, None, usage);
                v["promptFeedback"] = json!({"blockReason": "SAFETY", "safetyRatings": safety_ratings()});
                v
            }
            Safety::Finish => Self::response(
                req,
                n,
                Some(json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": safety_ratings()})),
                usage,
            ),
        }
    }

    fn sse(call: &Call) -> bool {
        call.query_param("alt") == Some("sse")
    }
}

impl Provider for Gemini {
    fn models(&self, call: &Call) -> Option<Response<Body>> {
        // Vertex has no model list under the publisher; Gemini lists at /v1beta/models.
        if self.vertex || call.method != "GET" || call.path != "/v1beta/models" {
            return None;
        }
        if let Err(r) = self.credential(call) {
            return Some(*r);
        }
        let models: Vec<Value> = call
            .state
            .cfg
            .models
            .iter()
            .map(|m| {
                json!({"name": format!("models/{m}"), "version": "001", "displayName": m,
                    "supportedGenerationMethods": ["generateContent", "countTokens"]})
            })
            .collect();
        Some(json_response(200, &json!({ "models": models })))
    }

    fn embeddings(&self, call: &Call) -> Option<Response<Body>> {
        let rest = call.path.strip_prefix(self.prefix().as_str())?;
        let model = if self.vertex {
            rest.strip_suffix(":predict")?
        } else {
            rest.strip_suffix(":batchEmbedContents")?
        };
        if call.method != "POST" {
            return Some(self.status_error(404, "NOT_FOUND", "Method not found.", None));
        }
        if let Err(r) = self.credential(call) {
            return Some(*r);
        }
        if let Some(status) = call.b.status.filter(|s| *s >= 300) {
            return Some(self.error(status, &call.failing_on_purpose(status)));
        }
        let body = call.body;
        if self.vertex {
            let Some(instances) = body.get("instances").and_then(Value::as_array) else {
                return Some(self.invalid("Invalid JSON payload received. Missing `instances`."));
            };
            let dims = body
                .pointer("/parameters/outputDimensionality")
                .and_then(Value::as_u64)
                .unwrap_or(8) as usize;
            let predictions: Vec<Value> = instances
                .iter()
                .map(|i| {
                    let text = i.get("content").and_then(Value::as_str).unwrap_or("");
                    json!({"embeddings": {"statistics": {"truncated": false, "token_count": text.split_whitespace().count()},
                        "values": mock_embedding(text, dims)}})
                })
                .collect();
            return Some(json_response(200, &json!({ "predictions": predictions })));
        }
        let Some(requests) = body.get("requests").and_then(Value::as_array) else {
            return Some(self.invalid("* BatchEmbedContentsRequest.requests: requests is required"));
        };
        let mut out = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if r.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
                return Some(self.invalid(&format!(
                    "* BatchEmbedContentsRequest.requests[{i}].model: model must match the parent model"
                )));
            }
            let text = r.pointer("/content/parts/0/text").and_then(Value::as_str).unwrap_or("");
            let dims = r.get("outputDimensionality").and_then(Value::as_u64).unwrap_or(8) as usize;
            out.push(json!({ "values": mock_embedding(text, dims) }));
        }
        Some(json_response(200, &json!({ "embeddings": out })))
    }

    fn chat(&self, call: &Call) -> Result<ChatRequest, Refused> {
        let rest = call.path.strip_prefix(self.prefix().as_str()).unwrap_or("");
        let (model, stream) = match rest.rsplit_once(':') {
            Some((m, "generateContent")) => (m, false),
            Some((m, "streamGenerateContent")) => (m, true),
            _ => {
                return Err(Box::new(self.status_error(
                    404,
                    "NOT_FOUND",
                    &format!("Method not found: {} {}", call.method, call.path),
                    None,
                )));
            }
        };
        if call.method != "POST" || model.is_empty() {
            return Err(Box::new(self.status_error(404, "NOT_FOUND", "Method not found.", None)));
        }
        self.credential(call)?;
        let Some(obj) = call.body.as_object().filter(|_| call.is_json()) else {
            return Err(Box::new(
                self.invalid("Invalid JSON payload received. Expected an object."),
            ));
        };
        let extra: &[&str] = if self.vertex { VERTEX_FIELDS } else { &[] };
        let known: Vec<&str> = FIELDS.iter().chain(extra).copied().collect();
        if let Some(k) = unknown(obj, &known) {
            return Err(Box::new(self.invalid(&format!(
                "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
            ))));
        }
        if let Some(config) = field(obj, "generationConfig").and_then(Value::as_object)
            && let Some(k) = unknown(config, GENERATION_FIELDS)
        {
            return Err(Box::new(self.invalid(&format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at 'generation_config': Cannot find field."
            ))));
        }
        let Some(contents) = obj.get("contents").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
            return Err(Box::new(
                self.invalid("* GenerateContentRequest.contents: contents is not specified\n"),
            ));
        };
        for (i, c) in contents.iter().enumerate() {
            let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
            if role != "user" && role != "model" {
                return Err(Box::new(
                    self.invalid(&format!("Please use a valid role: user, model. (contents[{i}])")),
                ));
            }
        }
        if !call.state.serves(model) {
            return Err(Box::new(self.not_found(model)));
        }
        let tools: Vec<String> = obj
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .filter_map(|t| field(t, "functionDeclarations").and_then(Value::as_array))
            .flatten()
            .filter_map(|d| d.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let tool_choice = self.tool_choice(obj, &tools)?;
        let words_in = |v: &Value| -> u64 {
            v.get("parts")
                .and_then(Value::as_array)
                .map(|ps| ps.iter().map(|p| words(p.get("text").unwrap_or(&Value::Null))).sum())
                .unwrap_or(0)
        };
        let system = field(obj, "systemInstruction");
        let input = contents.iter().map(words_in).sum::<u64>() + system.map(words_in).unwrap_or(0);
        let parts = |c: &Value| c.get("parts").and_then(Value::as_array).cloned().unwrap_or_default();
        let is_user = |c: &&Value| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user";
        Ok(ChatRequest {
            model: model.to_string(),
            stream,
            include_usage: true,
            input_tokens: input,
            system: texts(system.and_then(|s| s.get("parts"))),
            user_turns: contents
                .iter()
                .filter(is_user)
                .filter(|c| parts(c).iter().any(|p| p.get("text").is_some()))
                .count(),
            tools,
            tool_result: contents.last().and_then(|c| {
                parts(c).iter().find_map(|p| {
                    let response = p.get("functionResponse").or_else(|| p.get("function_response"))?;
                    let r = response.get("response")?;
                    Some(match r.get("content").unwrap_or(r) {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                })
            }),
            json: field(obj, "generationConfig")
                .and_then(Value::as_object)
                .and_then(|g| field(g, "responseMimeType"))
                .and_then(Value::as_str)
                == Some("application/json"),
            tool_choice,
            ..ChatRequest::default()
        })
    }

    fn error(&self, status: u16, message: &str) -> Response<Body> {
        let name = match status {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            409 => "ABORTED",
            429 => "RESOURCE_EXHAUSTED",
            499 => "CANCELLED",
            501 => "UNIMPLEMENTED",
            503 | 529 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        };
        self.status_error(status, name, message, None)
    }

    fn failure(&self, call: &Call, failure: Failure, req: &ChatRequest) -> Response<Body> {
        match failure {
            Failure::ModelGone => self.not_found(&req.model),
            Failure::InvalidKey if self.vertex => self.unauthenticated(),
            Failure::InvalidKey => self.key_invalid(),
            // Gemini refuses a prompt with a 200 that says so, not with an error.
            Failure::ContentPolicy => {
                let reply = Reply::Blocked(Safety::Prompt);
                if req.stream {
                    let chunks = self.frame(call, self.events(req, &reply, 0));
                    super::stream_response(self.stream_type(call), chunks, 0, None)
                } else {
                    json_response(200, &self.json(req, &reply, 0))
                }
            }
            Failure::BadRequest => self.invalid(
                "* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0]\n",
            ),
            Failure::ContextLength => {
                // Gemini 2.x models take 1,048,576 input tokens.
                let (tokens, window) = req.over_window(call.b, 1_048_576);
                self.invalid(&format!(
                    "The input token count ({tokens}) exceeds the maximum number of tokens allowed ({window})."
                ))
            }
        }
    }

    fn json(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Value {
        let parts = match reply {
            Reply::Text(t) => json!([{ "text": t }]),
            Reply::Tool { name, args, .. } => json!([{"functionCall": {"name": name, "args": Reply::args_json(args)}}]),
            Reply::Blocked(s) => return Self::blocked_response(req, reply, n, *s),
        };
        Self::response(
            req,
            n,
            Some(json!({"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0})),
            Self::usage(req, reply),
        )
    }

    fn events(&self, req: &ChatRequest, reply: &Reply, n: u64) -> Vec<Event> {
        let pieces: Vec<Value> = match reply {
            Reply::Text(t) => Reply::pieces(t).into_iter().map(|p| json!([{ "text": p }])).collect(),
            // Gemini sends a function call whole, in one chunk.
            Reply::Tool { name, args, .. } => {
                vec![json!([{"functionCall": {"name": name, "args": Reply::args_json(args)}}])]
            }
            // A block is one chunk, the only one.
            Reply::Blocked(s) => return vec![Event::json("", Self::blocked_response(req, reply, n, *s))],
        };
        let last = pieces.len().saturating_sub(1);
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, parts)| {
                let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
                let usage = if i == last {
                    candidate["finishReason"] = json!("STOP");
                    Self::usage(req, reply)
                } else {
                    json!({"promptTokenCount": req.input_tokens, "totalTokenCount": req.input_tokens})
                };
                Event::json("", Self::response(req, n, Some(candidate), usage))
            })
            .collect()
    }

    fn stream_type(&self, call: &Call) -> &'static str {
        if Self::sse(call) {
            "text/event-stream"
        } else {
            "application/json"
        }
    }

    fn frame(&self, call: &Call, events: Vec<Event>) -> Vec<Vec<u8>> {
        let sse = Self::sse(call);
        let last = events.len().saturating_sub(1);
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let data = match e.data {
                    Data::Json(v) => v.to_string(),
                    Data::Corrupt(v) => cut_json(&v),
                    Data::Fail(StreamFailure::Overloaded) => {
                        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
                            .to_string()
                    }
                    Data::Fail(StreamFailure::MidStream) => {
                        json!({"error": {"code": 500, "message": super::MID_STREAM_ERROR, "status": "INTERNAL"}})
                            .to_string()
                    }
                    Data::Done => String::new(),
                };
                if sse {
                    return format!("data: {data}\r\n\r\n").into_bytes();
                }
                // Without `alt=sse`: one JSON array, its elements as they come.
                let open = if i == 0 { "[" } else { ",\r\n" };
                let close = if i == last { "]" } else { "" };
                format!("{open}{data}{close}").into_bytes()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_names() {
        assert_eq!(snake("toolConfig"), "tool_config");
        assert_eq!(snake("allowedFunctionNames"), "allowed_function_names");
        let obj = json!({"system_instruction": {}, "toolConfig": {}});
        let obj = obj.as_object().unwrap();
        assert_eq!(unknown(obj, FIELDS), None);
        assert!(field(obj, "systemInstruction").is_some());
        let obj = json!({"systemInstructions": {}});
        assert_eq!(
            unknown(obj.as_object().unwrap(), FIELDS).map(String::as_str),
            Some("systemInstructions")
        );
    }
}
