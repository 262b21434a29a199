//! OpenAI-shaped error bodies: every error a client sees has this shape and carries
//! the request id.

use serde::Serialize;

/// One attempt as reported in an error that lists every attempt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptReport {
    /// 1-based attempt number.
    pub attempt: usize,
    /// Provider name.
    pub provider: String,
    /// Model name at that provider.
    pub model: String,
    /// HTTP status the provider answered with; `None` when it never answered.
    pub status: Option<u16>,
    /// Index (never the value) of the provider key used, when it has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<usize>,
    /// Failure class (see [`crate::failure::FailureClass`]).
    pub failure: String,
    /// The provider's own message, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Builds `{"error":{"message","type","param","code","request_id"}}`.
pub fn body(message: &str, kind: &str, code: &str, request_id: &str) -> Vec<u8> {
    body_with_attempts(message, kind, code, request_id, &[])
}

/// Like [`body`], with the `attempts` list for failures after fail-over.
pub fn body_with_attempts(
    message: &str,
    kind: &str,
    code: &str,
    request_id: &str,
    attempts: &[AttemptReport],
) -> Vec<u8> {
    let mut err = serde_json::json!({
        "message": message,
        "type": kind,
        "param": null,
        "code": code,
        "request_id": request_id,
    });
    if !attempts.is_empty() {
        err["attempts"] = serde_json::json!(attempts);
    }
    serde_json::json!({ "error": err }).to_string().into_bytes()
}

/// An error as the last events of an OpenAI chunk stream: an `error` chunk (the
/// OpenAI SDKs raise it) and `[DONE]`, so a broken stream still ends well-formed.
pub fn stream_error_events(message: &str, code: &str, request_id: &str) -> Vec<u8> {
    let body = body(message, "api_error", code, request_id);
    let mut out = Vec::with_capacity(body.len() + 32);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    out
}

/// The OpenAI error `type` for an HTTP status the gateway returns.
pub fn type_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let v: serde_json::Value = serde_json::from_slice(&body(
            "bad \"json\"",
            "invalid_request_error",
            "invalid_json",
            "r1",
        ))
        .unwrap();
        assert_eq!(v["error"]["message"], "bad \"json\"");
        assert_eq!(v["error"]["code"], "invalid_json");
        assert_eq!(v["error"]["request_id"], "r1");
        assert!(v["error"].get("attempts").is_none());
    }
}
