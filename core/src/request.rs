//! Validation of a client's OpenAI request (chat completions or embeddings),
//! without building a JSON tree: only the members the gateway needs are parsed.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::dialect::Members;

/// The OpenAI endpoints the gateway serves with a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// The client-facing path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    /// The endpoint served at `path` (without query).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        [Endpoint::Chat, Endpoint::Embeddings]
            .into_iter()
            .find(|e| e.path() == path)
    }
}

/// What the planner needs from a valid request.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatRequest<'a> {
    /// `model`: a route alias or `provider/model`.
    pub model: Cow<'a, str>,
    /// `fallbacks`: more aliases or `provider/model` targets, in order.
    pub fallbacks: Vec<Cow<'a, str>>,
    /// `stream`.
    pub stream: bool,
}

/// Why a request is invalid: becomes a 400 with this code and message.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestError {
    /// OpenAI-style error code.
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        code,
        message: message.into(),
    }
}

fn string<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw.get()).ok()
}

/// Checks the body of a request to `endpoint`.
pub fn inspect(body: &[u8], endpoint: Endpoint) -> Result<ChatRequest<'_>, RequestError> {
    let members: Members<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            err("invalid_request", "The request body must be a JSON object.")
        } else {
            err(
                "invalid_json",
                format!("The request body is not valid JSON: {e}"),
            )
        }
    })?;
    let model = match members.get("model") {
        None => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'model'.",
            ));
        }
        Some(raw) => string(raw)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| err("invalid_type", "`model` must be a non-empty string."))?,
    };
    if endpoint == Endpoint::Embeddings {
        check_input(members.get("input"))?;
    }
    match members.get("messages") {
        None if endpoint == Endpoint::Embeddings => {}
        None => {
            return Err(err(
                "missing_required_parameter",
                "Missing required parameter: 'messages'.",
            ));
        }
        Some(raw) => {
            let messages: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
                err(
                    "invalid_type",
                    "`messages` must be a non-empty array of messages.",
                )
            })?;
            if messages.is_empty() {
                return Err(err(
                    "invalid_type",
                    "`messages` must be a non-empty array of messages.",
                ));
            }
            for (i, m) in messages.iter().enumerate() {
                if !m.get().starts_with('{') {
                    return Err(err(
                        "invalid_type",
                        format!("messages[{i}] must be an object."),
                    ));
                }
            }
        }
    }
    let stream = match members.get("stream").map(RawValue::get) {
        Some(_) if endpoint == Endpoint::Embeddings => false,
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(err("invalid_type", "`stream` must be a boolean.")),
    };
    let fallbacks = match members.get("fallbacks") {
        None => Vec::new(),
        Some(raw) if raw.get() == "null" => Vec::new(),
        Some(raw) => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get())
                .map_err(|_| err("invalid_type", "`fallbacks` must be an array of strings."))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(string(item).ok_or_else(|| {
                    err(
                        "invalid_type",
                        format!("fallbacks[{i}] must be a string `provider/model`."),
                    )
                })?);
            }
            out
        }
    };
    Ok(ChatRequest {
        model,
        fallbacks,
        stream,
    })
}

/// `input` of an embeddings request: a non-empty string, or a non-empty array of
/// strings, of token ids, or of token-id arrays.
fn check_input(raw: Option<&RawValue>) -> Result<(), RequestError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Input {
        Text(String),
        Texts(Vec<String>),
        Tokens(Vec<u32>),
        TokenArrays(Vec<Vec<u32>>),
    }
    let Some(raw) = raw else {
        return Err(err(
            "missing_required_parameter",
            "Missing required parameter: 'input'.",
        ));
    };
    let empty = match serde_json::from_str::<Input>(raw.get()) {
        Ok(Input::Text(s)) => s.is_empty(),
        Ok(Input::Texts(v)) => v.is_empty() || v.iter().any(|s| s.is_empty()),
        Ok(Input::Tokens(v)) => v.is_empty(),
        Ok(Input::TokenArrays(v)) => v.is_empty() || v.iter().any(Vec::is_empty),
        Err(_) => {
            return Err(err(
                "invalid_type",
                "`input` must be a string, an array of strings, or an array of token ids (or of arrays of them).",
            ));
        }
    };
    if empty {
        return Err(err("invalid_value", "`input` must not be empty."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        inspect(body.as_bytes(), Endpoint::Chat).unwrap_err().code
    }

    #[test]
    fn embeddings() {
        let e = |body: &str| {
            inspect(body.as_bytes(), Endpoint::Embeddings).map(|r| r.model.into_owned())
        };
        assert_eq!(e(r#"{"model":"m","input":"hi"}"#).unwrap(), "m");
        assert!(e(r#"{"model":"m","input":["a","b"],"encoding_format":"float"}"#).is_ok());
        assert!(e(r#"{"model":"m","input":[1,2,3]}"#).is_ok());
        assert!(e(r#"{"model":"m","input":[[1],[2,3]]}"#).is_ok());
        assert_eq!(
            e(r#"{"model":"m"}"#).unwrap_err().code,
            "missing_required_parameter"
        );
        assert_eq!(
            e(r#"{"model":"m","input":{"a":1}}"#).unwrap_err().code,
            "invalid_type"
        );
        assert_eq!(
            e(r#"{"model":"m","input":""}"#).unwrap_err().code,
            "invalid_value"
        );
        assert_eq!(
            e(r#"{"model":"m","input":[]}"#).unwrap_err().code,
            "invalid_value"
        );
        assert_eq!(
            e(r#"{"input":"x"}"#).unwrap_err().code,
            "missing_required_parameter"
        );
    }

    #[test]
    fn valid() {
        let r = inspect(br#"{"model":"ch\u0061t","stream":true,"fallbacks":["a/b"],"messages":[{"role":"user","content":"x"}],"extra":{"deep":[1,2]}}"#, Endpoint::Chat).unwrap();
        assert_eq!(r.model, "chat");
        assert!(r.stream);
        assert_eq!(r.fallbacks, vec!["a/b"]);
    }

    #[test]
    fn invalid() {
        assert_eq!(code("{\"model\":"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_request");
        assert_eq!(
            code("{\"model\":\"m\",\"messages\":[{}],} "),
            "invalid_json"
        );
        assert_eq!(code(r#"{"messages":[{}]}"#), "missing_required_parameter");
        assert_eq!(code(r#"{"model":"m"}"#), "missing_required_parameter");
        assert_eq!(code(r#"{"model":5,"messages":[{}]}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"","messages":[{}]}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"m","messages":[]}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"m","messages":"hi"}"#), "invalid_type");
        assert_eq!(code(r#"{"model":"m","messages":[1]}"#), "invalid_type");
        assert_eq!(
            code(r#"{"model":"m","messages":[{}],"stream":"yes"}"#),
            "invalid_type"
        );
        assert_eq!(
            code(r#"{"model":"m","messages":[{}],"fallbacks":"a/b"}"#),
            "invalid_type"
        );
        assert_eq!(
            code(r#"{"model":"m","messages":[{}],"fallbacks":[1]}"#),
            "invalid_type"
        );
        // Deep nesting in a member the gateway does not read is skipped without
        // recursion (serde_json's `RawValue` scanner): no stack overflow in the VM.
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(code(&deep), "missing_required_parameter");
        assert_eq!(
            code(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
            "invalid_request"
        );
    }
}
