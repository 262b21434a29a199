//! Amazon Bedrock Runtime (Converse, ConverseStream, InvokeModel for embeddings),
//! from its API reference: SigV4 (`sigv4`, verified with the secret the mock was
//! given) or a Bedrock API key as bearer token, AWS errors (`x-amzn-ErrorType`
//! and `{"message"}`), message validation (roles, alternation, one member per
//! content block, `toolConfig` with tool blocks), `stopReason`s including
//! `guardrail_intervened` and `content_filtered`, and ConverseStream's binary
//! event stream (`eventstream`): `:event-type` frames whose payloads carry the
//! `p` padding Bedrock adds, and `:message-type: exception` frames.

pub(super) mod eventstream;
mod sigv4;

use hyper::Response;
use serde_json::{Value, json};

use super::{
    Body, Call, ChatRequest, Data, Event, Failure, Provider, Refused, Reply, Safety, StreamFailure, ToolChoice,
    asks_for_json, header_value, json_response, mock_embedding, now, texts, unknown_param, words,
};

pub(super) struct Bedrock;

const FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

const BLOCKS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "guardrailContent",
    "reasoningContent",
    "cachePoint",
];

/// The region the mock's credentials are scoped to.
const REGION: &str = "us-east-1";

/// What a guardrail answers for a blocked input, by default.
const GUARDRAIL_BLOCKED: &str = "Sorry, the model cannot answer this question.";

/// The padding Bedrock adds to stream payloads (`p`), cut to varying lengths.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// An AWS error: the type travels in `x-amzn-ErrorType`, the body has `message`.
fn aws_error(status: u16, kind: &str, message: &str) -> Response<Body> {
    let mut r = json_response(status, &json!({ "message": message }));
    let headers = r.headers_mut();
    headers.insert(
        "x-amzn-errortype",
        header_value(&format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")),
    );
    headers.insert("x-amzn-requestid", header_value("00000000-0000-4000-8000-000000000000"));
    r
}

fn validation(message: &str) -> Response<Body> {
    aws_error(400, "ValidationException", message)
}

fn mismatch(canonical: &str, string_to_sign: &str) -> Response<Body> {
    aws_error(
        403,
        "InvalidSignatureException",
        &format!(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{canonical}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
        ),
    )
}

/// Checks a request's credentials: a Bedrock API key as bearer token, or a SigV4
/// signature recomputed from what arrived (signed headers, path, query, body)
/// with the secret the mock was given (`--api-key ACCESS_KEY_ID/SECRET`).
fn authenticate(call: &Call) -> Result<(), Refused> {
    let keys = call.state.keys();
    let Some(auth) = call.header("authorization") else {
        return Err(Box::new(aws_error(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )));
    };
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return if (keys.is_empty() || keys.contains(&token)) && !call.b.echo_key_in_error {
            Ok(())
        } else {
            Err(Box::new(aws_error(
                403,
                "UnrecognizedClientException",
                "Invalid API Key format: Must start with pre-defined prefix",
            )))
        };
    }
    let incomplete = |m: &str| aws_error(403, "IncompleteSignatureException", m);
    let invalid = |m: &str| aws_error(403, "InvalidSignatureException", m);
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(Box::new(incomplete(&format!(
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={}",
            auth.split(' ').next().unwrap_or("")
        ))));
    };
    let a = sigv4::parse(fields).map_err(|m| incomplete(&m))?;
    let Some(date) = call.header("x-amz-date") else {
        return Err(Box::new(incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )));
    };
    if a.terminator != "aws4_request" {
        return Err(Box::new(invalid(&format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            a.terminator
        ))));
    }
    if a.service != "bedrock" {
        return Err(Box::new(invalid(
            "Credential should be scoped to correct service: 'bedrock'. ",
        )));
    }
    if !date.starts_with(a.date) {
        return Err(Box::new(invalid(&format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{date}'.",
            a.date,
            date.get(..8).unwrap_or(date)
        ))));
    }
    if a.region != REGION {
        return Err(Box::new(invalid(&format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            a.region
        ))));
    }
    if !a.signed_headers.contains(&"host") {
        return Err(Box::new(invalid(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        )));
    }
    let signed = sigv4::Signed {
        method: call.method,
        path: call.path,
        query: call.query,
        headers: call.headers,
        body: call.raw,
    };
    let canonical = sigv4::canonical_request(&signed, &a.signed_headers);
    let string_to_sign = sigv4::string_to_sign(date, &a.scope(), &canonical);
    if call.b.echo_key_in_error {
        return Err(Box::new(mismatch(&canonical, &string_to_sign)));
    }
    let Some(at) = sigv4::parse_amz_date(date) else {
        return Err(Box::new(incomplete(&format!(
            "Date must be in ISO-8601 'basic format'. Got '{date}'. See http://en.wikipedia.org/wiki/ISO_8601"
        ))));
    };
    // AWS refuses a request signed more than five minutes away from its clock.
    let now = now() as i64;
    if at < now - 300 {
        return Err(Box::new(invalid(&format!(
            "Signature expired: {date} is now earlier than {} ({} - 5 min.)",
            sigv4::amz_date(now - 300),
            sigv4::amz_date(now)
        ))));
    }
    if at > now + 300 {
        return Err(Box::new(invalid(&format!(
            "Signature not yet current: {date} is still later than {} ({} + 5 min.)",
            sigv4::amz_date(now + 300),
            sigv4::amz_date(now)
        ))));
    }
    let secret = keys
        .iter()
        .filter_map(|k| k.split_once('/'))
        .find(|(id, _)| *id == a.access_key_id)
        .map(|(_, s)| s);
    let secret = match (secret, keys.is_empty()) {
        (Some(s), _) => s,
        // No secret to check against: any signature passes.
        (None, true) => return Ok(()),
        (None, false) => {
            return Err(Box::new(aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )));
        }
    };
    let expected = sigv4::signature(secret, a.date, a.region, a.service, &string_to_sign);
    if expected != a.signature {
        return Err(Box::new(mismatch(&canonical, &string_to_sign)));
    }
    Ok(())
}

impl Bedrock {
    /// The model id of `/model/{id}/{op}`, decoded.
    fn model(path: &str, op: &str) -> Option<String> {
        let id = path.strip_prefix("/model/")?.strip_suffix(op)?.strip_suffix('/')?;
        (!id.is_empty() && !id.contains('/')).then(|| String::from_utf8_lossy(&sigv4::percent_decode(id)).into_owned())
    }

    fn usage(req: &ChatRequest, reply: &Reply) -> Value {
        let out = reply.out_tokens();
        json!({"inputTokens": req.input_tokens, "outputTokens": out, "totalTokens": req.input_tokens + out})
    }

    fn stop_reason(reply: &Reply) -> &'static str {
        match reply {
            Reply::Text(_) => "end_turn",
            Reply::Tool { .. } => "tool_use",
            Reply::Blocked(Safety::Prompt) => "guardrail_intervened",
            Reply::Blocked(Safety::Finish) => "content_filtered",
        }
    }
}

impl Provider for Bedrock {
    fn models(&self, _call: &Call) -> Option<Response<Body>> {
        // Bedrock lists models on its control-plane host, not on bedrock-runtime.
        None
    }

    fn embeddings(&self, call: &Call) -> Option<Response<Body>> {
        let model = Self::model(call.path, "invoke")?;
        if call.method != "POST" {
            return Some(aws_error(404, "UnknownOperationException", ""));
        }
        if let Err(r) = authenticate(call) {
            return Some(*r);
        }
        if let Some(status) = call.b.status.filter(|s| *s >= 300) {
            return Some(self.error(status, &call.failing_on_purpose(status)));
        }
        let body = call.body;
        if model.contains("cohere.embed") {
            let Some(texts) = body.get("texts").and_then(Value::as_array) else {
                return Some(validation(
                    "Malformed input request: #: required key [texts] not found, please reformat your input and try again.",
                ));
            };
            let texts: Vec<&str> = texts.iter().filter_map(Value::as_str).collect();
            let vectors: Vec<Vec<f64>> = texts.iter().map(|t| mock_embedding(t, 8)).collect();
            return Some(json_response(
                200,
                &json!({"id": "mock", "embeddings": vectors, "texts": texts, "response_type": "embeddings_floats"}),
            ));
        }
        if let Some(k) = body
            .as_object()
            .and_then(|o| unknown_param(o, &["inputText", "dimensions", "normalize", "embeddingTypes"]))
        {
            return Some(validation(&format!(
                "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
            )));
        }
        let Some(text) = body.get("inputText").and_then(Value::as_str) else {
            return Some(validation(
                "Malformed input request: #: required key [inputText] not found, please reformat your input and try again.",
            ));
        };
        let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
        Some(json_response(
            200,
            &json!({"embedding": mock_embedding(text, dims), "inputTextTokenCount": text.split_whitespace().count()}),
        ))
    }

    fn chat(&self, call: &Call) -> Result<ChatRequest, Refused> {
        let (model, stream) = match (
            Self::model(call.path, "converse"),
            Self::model(call.path, "converse-stream"),
        ) {
            (Some(m), _) => (m, false),
            (None, Some(m)) => (m, true),
            _ => return Err(Box::new(aws_error(404, "UnknownOperationException", ""))),
        };
        if call.method != "POST" {
            return Err(Box::new(aws_error(404, "UnknownOperationException", "")));
        }
        authenticate(call)?;
        let Some(obj) = call.body.as_object().filter(|_| call.is_json()) else {
            return Err(Box::new(validation(
                "Malformed input request, please reformat your input and try again.",
            )));
        };
        // Stricter than the reference, which does not say what an unknown member does.
        if let Some(k) = unknown_param(obj, FIELDS) {
            return Err(Box::new(validation(&format!(
                "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
            ))));
        }
        let Some(messages) = obj.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty()) else {
            return Err(Box::new(validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            )));
        };
        let mut uses_tools = false;
        let mut last_role = "";
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if role != "user" && role != "assistant" {
                return Err(Box::new(validation(&format!(
                    "1 validation error detected: Value '{role}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                    i + 1
                ))));
            }
            if (i == 0 && role != "user") || role == last_role {
                return Err(Box::new(validation(
                    "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
                )));
            }
            last_role = role;
            let Some(blocks) = m.get("content").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
                return Err(Box::new(validation(&format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ))));
            };
            for b in blocks {
                let keys: Vec<&String> = b.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                if keys.len() != 1 || !BLOCKS.contains(&keys[0].as_str()) {
                    return Err(Box::new(validation(&format!(
                        "Malformed input request: messages.{i}.content: a ContentBlock has exactly one of {BLOCKS:?}, got {keys:?}"
                    ))));
                }
                uses_tools |= keys[0] == "toolUse" || keys[0] == "toolResult";
            }
        }
        if uses_tools && obj.get("toolConfig").is_none() {
            return Err(Box::new(validation(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            )));
        }
        if !call.state.serves(&model) {
            return Err(Box::new(validation("The provided model identifier is invalid.")));
        }
        let tools: Vec<String> = obj
            .get("toolConfig")
            .and_then(|c| c.get("tools"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.pointer("/toolSpec/name").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let tool_choice = match obj.get("toolConfig").and_then(|c| c.get("toolChoice")) {
            None => ToolChoice::Auto,
            Some(c) if c.get("auto").is_some() => ToolChoice::Auto,
            Some(c) if c.get("any").is_some() => ToolChoice::Any(Vec::new()),
            Some(c) => match c.pointer("/tool/name").and_then(Value::as_str) {
                Some(name) if tools.iter().any(|t| t == name) => ToolChoice::Any(vec![name.to_string()]),
                _ => {
                    return Err(Box::new(validation(&format!(
                        "The value at toolConfig.toolChoice is invalid: {c}"
                    ))));
                }
            },
        };
        let system = texts(obj.get("system"));
        let blocks_of = |m: &Value, kind: &str| -> Vec<Value> {
            m.get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|b| b.get(kind))
                .cloned()
                .collect()
        };
        Ok(ChatRequest {
            model,
            stream,
            include_usage: true,
            input_tokens: words(&Value::Array(messages.clone())) + obj.get("system").map(words).unwrap_or(0),
            json: asks_for_json(&system),
            system,
            user_turns: messages
                .iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .filter(|m| !blocks_of(m, "text").is_empty())
                .count(),
            tools,
            tool_result: messages
                .last()
                .and_then(|m| blocks_of(m, "toolResult").into_iter().next())
                .and_then(|r| texts(r.get("content"))),
            tool_choice,
            ..ChatRequest::default()
        })
    }

    fn error(&self, status: u16, message: &str) -> Response<Body> {
        let kind = match status {
            400 => "ValidationException",
            401 | 403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            408 => "ModelTimeoutException",
            424 => "ModelErrorException",
            429 => "ThrottlingException",
            503 | 529 => "ServiceUnavailableException",
            _ => "InternalServerException",
        };
        aws_error(status, kind, message)
    }

    fn failure(&self, _call: &Call, failure: Failure, _req: &ChatRequest) -> Response<Body> {
        match failure {
            Failure::ModelGone => validation("The provided model identifier is invalid."),
            Failure::InvalidKey => aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            Failure::ContentPolicy => validation("The request was blocked by content filtering policy."),
            Failure::BadRequest => {
                validation("The model returned the following errors: temperature: must be less than or equal to 1")
            }
            // Converse names neither the prompt's size nor the model's window.
            Failure::ContextLength => validation("Input is too long for requested model."),
        }
    }

    fn json(&self, req: &ChatRequest, reply: &Reply, _n: u64) -> Value {
        let content = match reply {
            Reply::Text(t) => json!([{ "text": t }]),
            Reply::Tool { id, name, args } => json!([{"toolUse": {"toolUseId": id, "name": name,
                "input": Reply::args_json(args)}}]),
            Reply::Blocked(Safety::Prompt) => json!([{ "text": GUARDRAIL_BLOCKED }]),
            Reply::Blocked(Safety::Finish) => json!([]),
        };
        json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": Self::stop_reason(reply),
            "usage": Self::usage(req, reply), "metrics": {"latencyMs": 12}})
    }

    fn events(&self, req: &ChatRequest, reply: &Reply, _n: u64) -> Vec<Event> {
        let mut out = vec![Event::json("messageStart", json!({"role": "assistant"}))];
        let text_deltas = |out: &mut Vec<Event>, pieces: Vec<String>| {
            for piece in pieces {
                out.push(Event::json(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
        };
        match reply {
            // Text blocks get no contentBlockStart; tool blocks do.
            Reply::Text(t) => text_deltas(&mut out, Reply::pieces(t)),
            Reply::Tool { id, name, args } => {
                out.push(Event::json(
                    "contentBlockStart",
                    json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                ));
                for piece in Reply::arg_pieces(args) {
                    out.push(Event::json(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                    ));
                }
            }
            Reply::Blocked(Safety::Prompt) => text_deltas(&mut out, vec![GUARDRAIL_BLOCKED.to_string()]),
            Reply::Blocked(Safety::Finish) => {}
        }
        if !matches!(reply, Reply::Blocked(Safety::Finish)) {
            out.push(Event::json("contentBlockStop", json!({"contentBlockIndex": 0})));
        }
        out.push(Event::json(
            "messageStop",
            json!({ "stopReason": Self::stop_reason(reply) }),
        ));
        out.push(Event::json(
            "metadata",
            json!({"usage": Self::usage(req, reply), "metrics": {"latencyMs": 12}}),
        ));
        out
    }

    fn stream_type(&self, _call: &Call) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn frame(&self, _call: &Call, events: Vec<Event>) -> Vec<Vec<u8>> {
        let event = |kind: &str, payload: &[u8]| {
            eventstream::encode(
                &[
                    (":event-type", kind),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                payload,
            )
        };
        let padded = |i: usize, mut v: Value| {
            if let Some(o) = v.as_object_mut() {
                o.insert("p".into(), json!(&PADDING[..1 + (i * 17) % (PADDING.len() - 1)]));
            }
            v.to_string()
        };
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| match e.data {
                Data::Json(v) => event(e.name, padded(i, v).as_bytes()),
                Data::Corrupt(v) => {
                    // A frame whose message CRC does not match its bytes.
                    let mut frame = event(e.name, padded(i, v).as_bytes());
                    if let Some(last) = frame.last_mut() {
                        *last ^= 0xff;
                    }
                    frame
                }
                Data::Fail(f) => {
                    let (kind, payload) = match f {
                        StreamFailure::Overloaded => (
                            "throttlingException",
                            json!({"message": "Too many requests, please wait before trying again."}),
                        ),
                        StreamFailure::MidStream => (
                            "modelStreamErrorException",
                            json!({"message": super::MID_STREAM_ERROR, "originalStatusCode": 500,
                                "originalMessage": super::MID_STREAM_ERROR}),
                        ),
                    };
                    eventstream::encode(
                        &[
                            (":exception-type", kind),
                            (":content-type", "application/json"),
                            (":message-type", "exception"),
                        ],
                        payload.to_string().as_bytes(),
                    )
                }
                Data::Done => Vec::new(),
            })
            .collect()
    }
}
