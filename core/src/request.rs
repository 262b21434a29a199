//! Validation of a client's OpenAI chat-completions request, without building a
//! JSON tree: only the members the gateway needs are parsed.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::dialect::Members;

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

/// Checks the body of `POST /v1/chat/completions`.
pub fn inspect(body: &[u8]) -> Result<ChatRequest<'_>, RequestError> {
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
    match members.get("messages") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        inspect(body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn valid() {
        let r = inspect(br#"{"model":"ch\u0061t","stream":true,"fallbacks":["a/b"],"messages":[{"role":"user","content":"x"}],"extra":{"deep":[1,2]}}"#).unwrap();
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
