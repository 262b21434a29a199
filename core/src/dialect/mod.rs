//! Provider dialects: how an OpenAI chat-completions request becomes each
//! provider's request, and how each provider's answer becomes OpenAI's.

pub mod anthropic;
pub mod openai;

use serde_json::Value;

use crate::config::Dialect;

/// Request fields that steer the gateway and must never reach a provider.
pub const GATEWAY_FIELDS: &[&str] = &["fallbacks"];

/// What an attempt sends, and what the response side needs to remember.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedRequest {
    /// Path after the provider's base path, e.g. `/chat/completions`.
    pub endpoint: &'static str,
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

/// Rewrites an OpenAI chat-completions request for `dialect`, addressed to `model`.
pub fn prepare_request(
    dialect: Dialect,
    request: &Value,
    model: &str,
) -> Result<PreparedRequest, TranslateError> {
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = stream
        && request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let (endpoint, body) = match dialect {
        Dialect::Openai => ("/chat/completions", openai::request(request, model)?),
        Dialect::Anthropic => ("/messages", anthropic::request(request, model)?),
    };
    let body = serde_json::to_vec(&body).map_err(|e| TranslateError::Invalid(e.to_string()))?;
    Ok(PreparedRequest {
        endpoint,
        body,
        stream,
        include_usage,
    })
}
