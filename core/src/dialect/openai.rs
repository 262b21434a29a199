//! OpenAI chat completions: the client's own dialect, so requests pass through with
//! the target's model name and without gateway-only fields.

use serde_json::Value;

use super::{
    Answer, Api, Context, GATEWAY_FIELDS, Progress, StreamEnd, StreamTranslator, TranslateError,
};
use crate::failure::{
    FailureClass, mentions_content_policy, mentions_context_length, mentions_model_gone, scrub,
};
use crate::request::{Endpoint, Members};
use crate::sse;

/// The request for an OpenAI-dialect provider, built from the client's raw members.
pub fn request_bytes(members: &Members<'_>, model: &str) -> Result<Vec<u8>, TranslateError> {
    let model = serde_json::to_string(model).map_err(|e| TranslateError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(
        members
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 16,
    );
    out.push(b'{');
    let mut first = true;
    let mut wrote_model = false;
    for (k, v) in &members.0 {
        if GATEWAY_FIELDS.contains(&k.as_ref()) || (k == "model" && wrote_model) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        let key = serde_json::to_string(k.as_ref())
            .map_err(|e| TranslateError::Invalid(e.to_string()))?;
        out.extend_from_slice(key.as_bytes());
        out.push(b':');
        if k == "model" {
            out.extend_from_slice(model.as_bytes());
            wrote_model = true;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !wrote_model {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"model\":");
        out.extend_from_slice(model.as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

// === the API ===

/// OpenAI's API (and OpenAI-compatible servers), or Azure OpenAI's deployments.
#[derive(Debug)]
pub struct OpenAi {
    azure: bool,
}

/// `dialect: openai`.
pub static OPENAI: OpenAi = OpenAi { azure: false };
/// `dialect: azure_openai`: the target's model is the deployment name.
pub static AZURE: OpenAi = OpenAi { azure: true };

impl Api for OpenAi {
    fn path(
        &self,
        endpoint: Endpoint,
        base_path: &str,
        model: &str,
        api_version: Option<&str>,
        _stream: bool,
    ) -> String {
        let op = match endpoint {
            Endpoint::Chat => "chat/completions",
            Endpoint::Embeddings => "embeddings",
        };
        if self.azure {
            format!(
                "{base_path}/openai/deployments/{model}/{op}?api-version={}",
                api_version.unwrap_or(super::AZURE_API_VERSION)
            )
        } else {
            format!("{base_path}/{op}")
        }
    }

    fn health_path(&self, base_path: &str, api_version: Option<&str>) -> Option<String> {
        Some(if self.azure {
            format!(
                "{base_path}/openai/models?api-version={}",
                api_version.unwrap_or(super::AZURE_API_VERSION)
            )
        } else {
            format!("{base_path}/models")
        })
    }

    fn auth_headers(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        match key {
            Some(k) if self.azure => vec![("api-key", k.to_string())],
            Some(k) => vec![("authorization", format!("Bearer {k}"))],
            None => Vec::new(),
        }
    }

    fn speaks_openai(&self) -> bool {
        true
    }

    fn prepare(
        &self,
        _endpoint: Endpoint,
        members: &Members<'_>,
        _body: &[u8],
        model: &str,
    ) -> Result<Vec<u8>, TranslateError> {
        request_bytes(members, model)
    }

    fn answer(&self, body: &[u8], ctx: &Context<'_>) -> Answer {
        check_answer(body, ctx.endpoint)
    }

    fn stream(&self, ctx: &Context<'_>) -> Box<dyn StreamTranslator> {
        Box::new(StreamWatch::new(ctx.request_id))
    }

    fn classify_error(
        &self,
        status: u16,
        _error_type: Option<&str>,
        body: &[u8],
    ) -> (Option<FailureClass>, Option<String>) {
        let Some(by_status) = FailureClass::from_status(status) else {
            return (None, None);
        };
        let message = super::error_message(body);
        let lower = message.as_deref().unwrap_or("").to_ascii_lowercase();
        let code = error_code(body);
        let class = match code.as_deref().unwrap_or("") {
            "model_not_found" | "DeploymentNotFound" => FailureClass::ModelUnavailable,
            "content_policy_violation" | "content_filter" => FailureClass::ContentFilter,
            "invalid_api_key" => FailureClass::Auth,
            "rate_limit_exceeded" | "insufficient_quota" => FailureClass::RateLimited,
            "context_length_exceeded" | "string_above_max_length" => FailureClass::ContextLength,
            _ if by_status == FailureClass::BadRequest && mentions_context_length(&lower) => {
                FailureClass::ContextLength
            }
            _ if by_status == FailureClass::BadRequest && mentions_content_policy(&lower) => {
                FailureClass::ContentFilter
            }
            _ if by_status == FailureClass::BadRequest
                && lower.contains("model")
                && mentions_model_gone(&lower) =>
            {
                FailureClass::ModelUnavailable
            }
            _ => by_status,
        };
        (Some(class), message)
    }
}

/// `error.code` of an OpenAI error body.
fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/code")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A complete OpenAI answer: a chat completion with choices, or an embeddings list.
fn check_answer(body: &[u8], endpoint: Endpoint) -> Answer {
    #[derive(serde::Deserialize)]
    struct Choice {
        #[serde(default)]
        finish_reason: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Shape<'a> {
        #[serde(default)]
        choices: Option<Vec<Choice>>,
        #[serde(default, borrow)]
        data: Option<&'a serde_json::value::RawValue>,
        #[serde(default, borrow)]
        error: Option<&'a serde_json::value::RawValue>,
    }
    let shape: Shape<'_> = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => {
            return Answer::Failed(
                FailureClass::BadResponse,
                format!("the provider's 200 is not a valid JSON answer: {e}"),
            );
        }
    };
    if shape.error.is_some() {
        let message = super::error_message(body).unwrap_or_default();
        return Answer::Failed(
            FailureClass::BadResponse,
            format!("the provider's 200 holds an error: {}", scrub(&message)),
        );
    }
    match endpoint {
        Endpoint::Embeddings if shape.data.is_some_and(|d| d.get().starts_with('[')) => {
            Answer::Ok(body.to_vec())
        }
        Endpoint::Embeddings => Answer::Failed(
            FailureClass::BadResponse,
            "the provider's 200 has no `data` list".to_string(),
        ),
        Endpoint::Chat => match shape.choices {
            Some(choices) if !choices.is_empty() => {
                if choices
                    .iter()
                    .any(|c| c.finish_reason.as_deref() == Some("content_filter"))
                {
                    Answer::Filtered(
                        body.to_vec(),
                        "the provider's answer was stopped by its content filter".to_string(),
                    )
                } else {
                    Answer::Ok(body.to_vec())
                }
            }
            _ => Answer::Failed(
                FailureClass::BadResponse,
                "the provider's 200 has no `choices`".to_string(),
            ),
        },
    }
}

/// Watches an OpenAI event stream that passes through: every event is read
/// (valid JSON? an error? the first content? `[DONE]`?) and re-emitted as it
/// came, so a stream that starts with an error or a corrupt event is known before
/// anything reaches the client, and one that breaks later ends with an error
/// event a client can read — never with a corrupt event, a partial one, or two
/// errors.
#[derive(Debug)]
pub struct StreamWatch {
    parser: sse::Parser,
    request_id: String,
    progress: Progress,
}

impl StreamWatch {
    /// A watch whose error events carry `request_id`.
    pub fn new(request_id: &str) -> Self {
        StreamWatch {
            parser: sse::Parser::default(),
            request_id: request_id.to_string(),
            progress: Progress::default(),
        }
    }

    fn fail(&mut self, class: FailureClass, message: String, code: &str) -> Vec<u8> {
        let out = crate::error::stream_error_events(&scrub(&message), code, &self.request_id);
        self.progress.end = Some(StreamEnd::Failed(class, message));
        self.progress.error_tail = out.len();
        out
    }
}

/// Writes one SSE event with `data` (several `data:` lines if it has several).
fn emit(out: &mut Vec<u8>, data: &str) {
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// What the watch reads of an OpenAI chunk (unknown members are skipped, not
/// built).
#[derive(serde::Deserialize)]
struct Chunk {
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    prompt_filter_results: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(serde::Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

impl Choice {
    /// Whether the choice carries answer content (or finishes the answer).
    fn has_content(&self) -> bool {
        let text = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.is_empty());
        self.finish_reason.is_some()
            || self.delta.as_ref().is_some_and(|d| {
                text(&d.content)
                    || d.tool_calls.is_some()
                    || text(&d.refusal)
                    || text(&d.reasoning_content)
            })
    }
}

impl StreamTranslator for StreamWatch {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.progress.end.is_some() {
            return out;
        }
        for ev in self.parser.feed(bytes) {
            if ev.data == "[DONE]" {
                self.progress.content = true;
                self.progress.end = Some(StreamEnd::Complete);
                out.extend_from_slice(b"data: [DONE]\n\n");
                return out;
            }
            let chunk: Chunk = match serde_json::from_str(&ev.data) {
                Ok(c) => c,
                Err(e) => {
                    out.extend(self.fail(
                        FailureClass::BadResponse,
                        format!("the provider sent an event that is not valid JSON: {e}"),
                        "bad_provider_response",
                    ));
                    return out;
                }
            };
            if let Some(e) = chunk.error {
                let message = e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("provider stream error")
                    .to_string();
                let class = match e
                    .get("type")
                    .or_else(|| e.get("code"))
                    .and_then(Value::as_str)
                {
                    Some("rate_limit_exceeded" | "rate_limit_error") => FailureClass::RateLimited,
                    _ => FailureClass::ServerError,
                };
                out.extend(self.fail(class, message, "provider_stream_error"));
                return out;
            }
            // Azure's first event annotates the prompt (`prompt_filter_results`, no
            // choices, no `object`): not part of OpenAI's stream, left out.
            if chunk.prompt_filter_results.is_some()
                && chunk.choices.is_empty()
                && chunk.usage.is_none()
                && chunk.object.as_deref() != Some("chat.completion.chunk")
            {
                continue;
            }
            self.progress.content |= chunk.choices.iter().any(Choice::has_content);
            emit(&mut out, &ev.data);
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        if self.progress.end.is_some() {
            return Vec::new();
        }
        self.fail(
            FailureClass::BadResponse,
            "The provider ended the stream before the answer was complete.".to_string(),
            "stream_truncated",
        )
    }

    fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn raw_rewrite_keeps_everything_else_byte_for_byte() {
        let body = br#"{"model":"chat","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"fallbacks":["a/b"],"temperature":0.20}"#;
        let p = crate::dialect::prepare_request(
            crate::dialect::Dialect::Openai,
            crate::request::Endpoint::Chat,
            body,
            "gpt-4o",
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&p.body).unwrap(),
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.20}"#
        );
        let p = crate::dialect::prepare_request(
            crate::dialect::Dialect::Openai,
            crate::request::Endpoint::Chat,
            br#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            "m",
        )
        .unwrap();
        assert!(p.stream && p.include_usage);
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["model"], "m");
        assert!(
            crate::dialect::prepare_request(
                crate::dialect::Dialect::Openai,
                crate::request::Endpoint::Chat,
                b"[1]",
                "m"
            )
            .is_err()
        );
    }
}
