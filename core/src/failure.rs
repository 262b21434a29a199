//! Failure classes: what went wrong with an attempt, independent of dialect.

/// Class of an attempt's failure; policy decides per class what happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// No response: connection refused, reset, timeout before headers.
    Unreachable,
    /// 429 or a provider's rate-limit error.
    RateLimited,
    /// 5xx, or a provider's overloaded error (Anthropic 529).
    ServerError,
    /// 401/403: the key is wrong, revoked or lacks access.
    Auth,
    /// 404 or a model-not-found error.
    ModelUnavailable,
    /// Any other 4xx: the request itself was rejected.
    BadRequest,
}

impl FailureClass {
    /// Classifies a provider's HTTP status; `None` for success.
    pub fn from_status(status: u16) -> Option<FailureClass> {
        Some(match status {
            200..=399 => return None,
            401 | 403 => FailureClass::Auth,
            404 => FailureClass::ModelUnavailable,
            408 => FailureClass::Unreachable,
            429 => FailureClass::RateLimited,
            400..=499 => FailureClass::BadRequest,
            _ => FailureClass::ServerError,
        })
    }

    /// Stable name used in error bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Unreachable => "unreachable",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ServerError => "server_error",
            FailureClass::Auth => "auth",
            FailureClass::ModelUnavailable => "model_unavailable",
            FailureClass::BadRequest => "bad_request",
        }
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
    }
}
