//! Failure classes: what went wrong with an attempt, independent of dialect, and
//! the wording checks each dialect's error classification
//! ([`crate::dialect::Api::classify_error`]) shares.

use serde::{Deserialize, Serialize};

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
    /// The prompt (with the answer's token budget) does not fit the model's
    /// context window: OpenAI's `context_length_exceeded` and each dialect's
    /// equivalent. A target with a larger window may take it.
    ContextLength,
    /// Any other 4xx: the request itself was rejected.
    BadRequest,
    /// A 2xx that is not a valid answer: invalid or truncated JSON, a stream that
    /// breaks off, an event that cannot be understood, an in-stream error before
    /// any content.
    BadResponse,
}

impl FailureClass {
    /// Every class, in a fixed order.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::Unreachable,
        FailureClass::RateLimited,
        FailureClass::ServerError,
        FailureClass::Auth,
        FailureClass::ModelUnavailable,
        FailureClass::ContentFilter,
        FailureClass::ContextLength,
        FailureClass::BadRequest,
        FailureClass::BadResponse,
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
            // Its own status, so the router's retry decision tells it from a bad
            // request (the client still gets the provider's status).
            FailureClass::ContextLength => 413,
            FailureClass::BadRequest => 400,
            FailureClass::BadResponse => 502,
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
            FailureClass::ContextLength => "context_length",
            FailureClass::BadRequest => "bad_request",
            FailureClass::BadResponse => "bad_response",
        }
    }

    /// Parses [`FailureClass::as_str`].
    pub fn parse(s: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Whether a provider's error message (lower-case) says a content policy refused it.
pub(crate) fn mentions_content_policy(message: &str) -> bool {
    message.contains("content management policy")
        || message.contains("content policy")
        || message.contains("content filtering")
        || message.contains("safety system")
}

/// Whether a provider's error message (lower-case) says the prompt does not fit
/// the model's context window (each provider words it its own way).
pub(crate) fn mentions_context_length(message: &str) -> bool {
    message.contains("context length")
        || message.contains("context_length_exceeded")
        || message.contains("context window")
        || message.contains("prompt is too long")
        || message.contains("input is too long")
        || message.contains("too many input tokens")
        || message.contains("too many tokens")
        || (message.contains("input token count") && message.contains("exceeds"))
}

/// Whether a provider's error message (lower-case) says the model is gone.
pub(crate) fn mentions_model_gone(message: &str) -> bool {
    message.contains("does not exist")
        || message.contains("deprecated")
        || message.contains("decommissioned")
        || message.contains("not found")
}

/// A provider's error message as it may be relayed to a client: anything that
/// looks like a credential (API keys, masked key fragments, bearer tokens, AWS
/// access key ids, long opaque tokens) is replaced by `[redacted]`, and the
/// message is bounded.
pub fn scrub(message: &str) -> String {
    const MAX: usize = 500;
    let mut out = String::with_capacity(message.len().min(MAX));
    let mut redact_next = false;
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let lower = word.to_ascii_lowercase();
        if redact_next || looks_like_secret(word) {
            out.push_str("[redacted]");
            if word.ends_with(['.', ',', ';']) {
                out.push(word.chars().last().unwrap_or('.'));
            }
        } else {
            out.push_str(word);
        }
        redact_next = lower == "bearer" || lower.ends_with("key:") || lower == "token:";
        if out.len() > MAX {
            let mut cut = MAX;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

/// Whether one word of a message looks like (part of) a credential.
fn looks_like_secret(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '*' && c != '…');
    let lower = w.to_ascii_lowercase();
    let known_prefix = [
        "sk-", "sk_", "pk-", "rk-", "key-", "aiza", "akia", "asia", "ya29.", "xai-", "gsk_",
    ]
    .iter()
    .any(|p| lower.starts_with(p));
    let masked = w.contains('*') || w.contains('…') || w.contains("...");
    let opaque = w.len() >= 20
        && w.chars().filter(char::is_ascii_digit).count() >= 2
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.=+/".contains(c));
    (known_prefix && w.len() >= 6) || (masked && w.len() >= 6) || opaque
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
        assert_eq!(FailureClass::ContentFilter.canonical_status(400), 451);
        assert_eq!(FailureClass::BadResponse.canonical_status(200), 502);
        assert_eq!(FailureClass::ServerError.canonical_status(529), 529);
    }

    #[test]
    fn scrub_removes_credential_like_words() {
        for (msg, leaked) in [
            (
                "Incorrect API key provided: sk-proj-abc***********************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
                "wxyz",
            ),
            (
                "Invalid key: AIzaSyA1234567890abcdefghijklmnopqrstu",
                "AIzaSy",
            ),
            (
                "The security token included in the request is invalid: AKIAIOSFODNN7EXAMPLE",
                "AKIAIOSFODNN7",
            ),
            ("auth failed for Bearer eyJhbGciOi.eyJzdWIi.sig", "eyJ"),
            ("invalid x-api-key: sk-ant-api03-…abcd", "abcd"),
        ] {
            let s = scrub(msg);
            assert!(!s.contains(leaked), "{s}");
            assert!(s.contains("[redacted]"), "{s}");
        }
        assert_eq!(scrub("Overloaded"), "Overloaded");
        assert_eq!(
            scrub("The model `gpt-4-0314` has been deprecated"),
            "The model `gpt-4-0314` has been deprecated"
        );
        assert!(scrub(&"x ".repeat(2000)).len() < 520);
    }
}
