//! Provider dialects: how an OpenAI chat-completions request becomes each
//! provider's request, and how each provider's answer becomes OpenAI's.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use serde_json::Value;

use crate::config::Dialect;

/// Request fields that steer the gateway and must never reach a provider.
pub const GATEWAY_FIELDS: &[&str] = &["fallbacks"];

/// What an attempt sends, and what the response side needs to remember.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedRequest {
    /// The body in the provider's dialect.
    pub body: Vec<u8>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// Why a request could not be put into a provider's dialect.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The request does not have the shape the translation needs.
    #[error("{0}")]
    Invalid(String),
}

/// The text of an OpenAI message `content`: the string, or its text parts joined.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `error.message` of a provider's error body: OpenAI, Azure, Anthropic and Gemini
/// all put it there.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `(error.<kind_key>, error.message)` of a provider's error body, `default` when
/// the kind is missing.
pub(crate) fn error_kind_and_message(
    body: &[u8],
    kind_key: &str,
    default: &str,
) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let field = |k: &str, d: &str| e.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    Some((field(kind_key, default), field("message", "")))
}

/// One OpenAI chat-completion chunk as an SSE event (for translated streams).
pub fn chunk_event(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish: Option<&str>,
) -> String {
    let c = serde_json::json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {c}\n\n")
}

/// The end of a translated stream: the usage chunk when the client asked for it
/// (`stream_options.include_usage`), then `[DONE]`.
pub fn stream_end(id: &str, created: u64, model: &str, usage: Option<Value>) -> String {
    let mut out = String::new();
    if let Some(usage) = usage {
        let c = serde_json::json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage,
        });
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// Azure OpenAI `api-version` used when the provider config names none.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// The request path for `model` at a provider of `dialect` under `base_path`.
pub fn path(
    dialect: Dialect,
    base_path: &str,
    model: &str,
    api_version: Option<&str>,
    stream: bool,
) -> String {
    match dialect {
        Dialect::Gemini if stream => {
            format!("{base_path}/models/{model}:streamGenerateContent?alt=sse")
        }
        Dialect::Gemini => format!("{base_path}/models/{model}:generateContent"),
        Dialect::Openai => format!("{base_path}/chat/completions"),
        Dialect::Anthropic => format!("{base_path}/messages"),
        Dialect::AzureOpenai => format!(
            "{base_path}/openai/deployments/{model}/chat/completions?api-version={}",
            api_version.unwrap_or(AZURE_API_VERSION)
        ),
    }
}

/// The path of a provider's model list: a cheap, free request for health checks.
pub fn health_path(dialect: Dialect, base_path: &str, api_version: Option<&str>) -> String {
    match dialect {
        Dialect::Openai | Dialect::Anthropic | Dialect::Gemini => format!("{base_path}/models"),
        Dialect::AzureOpenai => {
            format!(
                "{base_path}/openai/models?api-version={}",
                api_version.unwrap_or(AZURE_API_VERSION)
            )
        }
    }
}

/// Rewrites an OpenAI chat-completions request body for `dialect`, addressed to
/// `model`. The OpenAI path never builds a JSON tree: it re-emits the top-level
/// members as raw slices of the original body, replacing `model` and dropping
/// gateway-only fields.
pub fn prepare_request(
    dialect: Dialect,
    body: &[u8],
    model: &str,
) -> Result<PreparedRequest, TranslateError> {
    let members: Members<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::Invalid(format!("request body: {e}")))?;
    let stream = members.get("stream").is_some_and(|v| v.get() == "true");
    let include_usage = stream
        && members
            .get("stream_options")
            .and_then(|o| serde_json::from_str::<StreamOptions>(o.get()).ok())
            .is_some_and(|o| o.include_usage == Some(true));
    let body = match dialect {
        Dialect::Openai | Dialect::AzureOpenai => openai::request_bytes(&members, model)?,
        Dialect::Gemini => {
            let request: Value = serde_json::from_slice(body)
                .map_err(|e| TranslateError::Invalid(format!("request body: {e}")))?;
            serde_json::to_vec(&gemini::request(&request)?)
                .map_err(|e| TranslateError::Invalid(e.to_string()))?
        }
        Dialect::Anthropic => {
            let request: Value = serde_json::from_slice(body)
                .map_err(|e| TranslateError::Invalid(format!("request body: {e}")))?;
            let out = anthropic::request(&request, model)?;
            serde_json::to_vec(&out).map_err(|e| TranslateError::Invalid(e.to_string()))?
        }
    };
    Ok(PreparedRequest {
        body,
        stream,
        include_usage,
    })
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The top-level members of a JSON object, in order, values left unparsed.
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'a> Members<'a> {
    /// The raw value of member `key`.
    pub fn get(&self, key: &str) -> Option<&'a serde_json::value::RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}
