//! Failure classes: what went wrong with an attempt, independent of dialect, and
//! how a provider's error answer is classified.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Dialect;

/// Class of an attempt's failure; policy decides per class what happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// No response: connection refused, reset, or no response headers in time.
    Unreachable,
    /// 429 or a provider's rate-limit error.
    RateLimited,
    /// 5xx, or a provider's overloaded error (Anthropic 529).
    ServerError,
    /// 401/403: the key is wrong, revoked or lacks access.
    Auth,
    /// 404, a model-not-found or deprecated-model error.
    ModelUnavailable,
    /// The provider's content-safety system refused the request or the answer.
    ContentFilter,
    /// Any other 4xx: the request itself was rejected.
    BadRequest,
}

impl FailureClass {
    /// Every class, in a fixed order.
    pub const ALL: [FailureClass; 7] = [
        FailureClass::Unreachable,
        FailureClass::RateLimited,
        FailureClass::ServerError,
        FailureClass::Auth,
        FailureClass::ModelUnavailable,
        FailureClass::ContentFilter,
        FailureClass::BadRequest,
    ];

    /// Classifies a provider's HTTP status alone; `None` for success.
    pub fn from_status(status: u16) -> Option<FailureClass> {
        Some(match status {
            200..=399 => return None,
            401 | 403 => FailureClass::Auth,
            404 | 410 => FailureClass::ModelUnavailable,
            408 => FailureClass::Unreachable,
            429 => FailureClass::RateLimited,
            451 => FailureClass::ContentFilter,
            400..=499 => FailureClass::BadRequest,
            _ => FailureClass::ServerError,
        })
    }

    /// Classifies a provider's error answer from its status and body.
    pub fn classify(dialect: Dialect, status: u16, body: &[u8]) -> Option<FailureClass> {
        let by_status = FailureClass::from_status(status)?;
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let err = v.get("error");
        let field = |k: &str| {
            err.and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let message = field("message").to_ascii_lowercase();
        let content = message.contains("content management policy")
            || message.contains("content policy")
            || message.contains("content filtering")
            || message.contains("safety system");
        let model_gone = message.contains("does not exist")
            || message.contains("deprecated")
            || message.contains("decommissioned")
            || message.contains("not found");
        Some(match dialect {
            Dialect::Openai | Dialect::AzureOpenai => match field("code") {
                "model_not_found" | "DeploymentNotFound" => FailureClass::ModelUnavailable,
                "content_policy_violation" | "content_filter" => FailureClass::ContentFilter,
                "invalid_api_key" => FailureClass::Auth,
                "rate_limit_exceeded" | "insufficient_quota" => FailureClass::RateLimited,
                _ if by_status == FailureClass::BadRequest && content => {
                    FailureClass::ContentFilter
                }
                _ if by_status == FailureClass::BadRequest
                    && message.contains("model")
                    && model_gone =>
                {
                    FailureClass::ModelUnavailable
                }
                _ => by_status,
            },
            Dialect::Bedrock => {
                let (kind, message) = crate::dialect::bedrock::error_details(None, body);
                return crate::dialect::bedrock::classify(status, &kind, &message);
            }
            Dialect::Gemini | Dialect::Vertex => match field("status") {
                "NOT_FOUND" => FailureClass::ModelUnavailable,
                "RESOURCE_EXHAUSTED" => FailureClass::RateLimited,
                "PERMISSION_DENIED" | "UNAUTHENTICATED" => FailureClass::Auth,
                // Gemini answers a bad key with 400 INVALID_ARGUMENT.
                "INVALID_ARGUMENT" if message.contains("api key") => FailureClass::Auth,
                "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" => FailureClass::ServerError,
                _ if by_status == FailureClass::BadRequest && content => {
                    FailureClass::ContentFilter
                }
                _ => by_status,
            },
            Dialect::Anthropic => match field("type") {
                "not_found_error" => FailureClass::ModelUnavailable,
                "authentication_error" | "permission_error" => FailureClass::Auth,
                "rate_limit_error" => FailureClass::RateLimited,
                "overloaded_error" | "api_error" => FailureClass::ServerError,
                "invalid_request_error" if content => FailureClass::ContentFilter,
                "invalid_request_error" if message.starts_with("model:") => {
                    FailureClass::ModelUnavailable
                }
                _ => by_status,
            },
        })
    }

    /// The status the router sees for this class, so that its retry decision (by
    /// status code) follows the class rather than the provider's choice of code.
    pub fn canonical_status(self, original: u16) -> u16 {
        match self {
            FailureClass::Unreachable => 504,
            FailureClass::RateLimited => 429,
            FailureClass::ServerError if (500..=599).contains(&original) => original,
            FailureClass::ServerError => 503,
            FailureClass::Auth if original == 401 || original == 403 => original,
            FailureClass::Auth => 401,
            FailureClass::ModelUnavailable => 404,
            FailureClass::ContentFilter => 451,
            FailureClass::BadRequest => 400,
        }
    }

    /// Stable name used in config, error bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Unreachable => "unreachable",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ServerError => "server_error",
            FailureClass::Auth => "auth",
            FailureClass::ModelUnavailable => "model_unavailable",
            FailureClass::ContentFilter => "content_filter",
            FailureClass::BadRequest => "bad_request",
        }
    }

    /// Parses [`FailureClass::as_str`].
    pub fn parse(s: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(FailureClass::from_status(200), None);
        assert_eq!(
            FailureClass::from_status(503),
            Some(FailureClass::ServerError)
        );
        assert_eq!(
            FailureClass::from_status(529),
            Some(FailureClass::ServerError)
        );
        assert_eq!(
            FailureClass::from_status(429),
            Some(FailureClass::RateLimited)
        );
        assert_eq!(FailureClass::from_status(401), Some(FailureClass::Auth));
        assert_eq!(
            FailureClass::from_status(422),
            Some(FailureClass::BadRequest)
        );
        for c in FailureClass::ALL {
            assert_eq!(FailureClass::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn bodies_refine_the_status() {
        let oa =
            |status, body: &str| FailureClass::classify(Dialect::Openai, status, body.as_bytes());
        let an = |status, body: &str| {
            FailureClass::classify(Dialect::Anthropic, status, body.as_bytes())
        };
        assert_eq!(
            oa(
                400,
                r#"{"error":{"message":"Your request was rejected as a result of our safety system.","code":"content_policy_violation"}}"#
            ),
            Some(FailureClass::ContentFilter)
        );
        assert_eq!(
            oa(
                400,
                r#"{"error":{"message":"The model `gpt-3` has been deprecated","code":null}}"#
            ),
            Some(FailureClass::ModelUnavailable)
        );
        assert_eq!(
            oa(400, r#"{"error":{"message":"bad temperature"}}"#),
            Some(FailureClass::BadRequest)
        );
        assert_eq!(oa(400, "not json"), Some(FailureClass::BadRequest));
        assert_eq!(
            an(
                404,
                r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-2"}}"#
            ),
            Some(FailureClass::ModelUnavailable)
        );
        assert_eq!(
            an(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#
            ),
            Some(FailureClass::ContentFilter)
        );
        assert_eq!(
            an(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Some(FailureClass::ServerError)
        );
        assert_eq!(FailureClass::ContentFilter.canonical_status(400), 451);
        assert_eq!(FailureClass::ServerError.canonical_status(529), 529);
    }
}
