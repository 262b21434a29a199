//! Fail-over policy: which failure classes move a request on to the next target,
//! and the time limits of its attempts. Configured per route, tightened per request.

use serde::{Deserialize, Serialize};

use crate::failure::FailureClass;

/// A route's fail-over policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Classes that fall over to the next target; any other failure is returned.
    #[serde(default = "Policy::default_classes")]
    pub fail_over_on: Vec<FailureClass>,
    /// Per-attempt limit until the provider's response headers (time to first byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    /// Per-attempt limit, for streamed answers, until the provider's first content
    /// (the gateway holds a stream until then, so a provider that answers 200 and
    /// then stalls falls over like one that does not answer). Defaults to the
    /// first-byte timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_timeout_ms: Option<u64>,
    /// Limit for the whole request, every attempt and the streamed answer included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Attempts on each target before the next (same-target retries, with Envoy's
    /// jittered exponential back-off between attempts). A provider with several
    /// keys gets at least one attempt per key.
    #[serde(default = "one")]
    pub attempts_per_target: usize,
    /// What happens when a stream already committed to the client fails: `end`
    /// it with an error event (the default), or `continue` the answer on the
    /// plan's next target and splice it into the same stream.
    #[serde(default, skip_serializing_if = "OnStreamFailure::is_end")]
    pub on_stream_failure: OnStreamFailure,
    /// When every target of a plan is cooling down (its provider asked for quiet
    /// with `Retry-After` or reset headers), try them anyway instead of answering
    /// 429 with the soonest `Retry-After` at once (the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub try_when_all_cooling: bool,
    /// Hedging: when the first attempt has no response headers after this long,
    /// the next target is tried in parallel and the first answer wins. Only for
    /// requests that follow a route's chain as configured (no `fallbacks`, no
    /// target moved back); it then replaces the first-byte timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_after_ms: Option<u64>,
}

fn one() -> usize {
    1
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            fail_over_on: Policy::default_classes(),
            first_byte_timeout_ms: None,
            first_token_timeout_ms: None,
            deadline_ms: None,
            try_when_all_cooling: false,
            on_stream_failure: OnStreamFailure::End,
            attempts_per_target: 1,
            hedge_after_ms: None,
        }
    }
}

/// What happens to a committed stream that fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStreamFailure {
    /// An OpenAI error event and `[DONE]` end the stream.
    #[default]
    End,
    /// The next target of the plan continues the answer from where it stopped;
    /// its words are spliced into the same stream.
    Continue,
}

impl OnStreamFailure {
    fn is_end(&self) -> bool {
        *self == OnStreamFailure::End
    }
}

/// Request headers a client may send to tighten (never loosen) its route's policy.
pub mod header {
    /// Comma-separated classes; intersected with the route's.
    pub const FAIL_OVER_ON: &str = "x-switchyard-fail-over-on";
    /// Milliseconds; the smaller of this and the route's applies.
    pub const FIRST_BYTE_TIMEOUT_MS: &str = "x-switchyard-first-byte-timeout-ms";
    /// Milliseconds; the smaller of this and the route's applies.
    pub const FIRST_TOKEN_TIMEOUT_MS: &str = "x-switchyard-first-token-timeout-ms";
    /// Milliseconds; the smaller of this and the route's applies.
    pub const DEADLINE_MS: &str = "x-switchyard-deadline-ms";
}

/// A client's policy header could not be understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("header {header}: {problem}")]
pub struct PolicyHeaderError {
    /// The header.
    pub header: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Policy {
    /// Everything but `content_filter` and `bad_request`: a safety refusal is not
    /// routed around unless a route says so, and a bad request fails everywhere.
    /// A prompt too long for one model falls over to the next (the planner
    /// already left out targets whose configured window it cannot fit).
    pub fn default_classes() -> Vec<FailureClass> {
        vec![
            FailureClass::Unreachable,
            FailureClass::RateLimited,
            FailureClass::ServerError,
            FailureClass::Auth,
            FailureClass::ModelUnavailable,
            FailureClass::ContextLength,
            FailureClass::BadResponse,
        ]
    }

    /// Whether `class` falls over.
    pub fn falls_over(&self, class: FailureClass) -> bool {
        class != FailureClass::BadRequest && self.fail_over_on.contains(&class)
    }

    /// Applies a client's tightening headers (`get` reads a request header).
    pub fn tightened(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Policy, PolicyHeaderError> {
        let mut p = self.clone();
        if let Some(v) = get(header::FAIL_OVER_ON) {
            let mut asked = Vec::new();
            for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let class = FailureClass::parse(name).ok_or_else(|| PolicyHeaderError {
                    header: header::FAIL_OVER_ON,
                    problem: format!("unknown failure class `{name}`"),
                })?;
                asked.push(class);
            }
            p.fail_over_on.retain(|c| asked.contains(c));
        }
        for (name, slot) in [
            (header::FIRST_BYTE_TIMEOUT_MS, &mut p.first_byte_timeout_ms),
            (
                header::FIRST_TOKEN_TIMEOUT_MS,
                &mut p.first_token_timeout_ms,
            ),
            (header::DEADLINE_MS, &mut p.deadline_ms),
        ] {
            if let Some(v) = get(name) {
                let ms = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| PolicyHeaderError {
                        header: name,
                        problem: format!("expected milliseconds > 0, got `{v}`"),
                    })?;
                *slot = min_opt(*slot, Some(ms));
            }
        }
        Ok(p)
    }

    /// The router's per-try timeout: until the first content for a stream (held
    /// until then), until the complete answer's headers otherwise.
    pub fn per_try_timeout_ms(&self, stream: bool) -> Option<u64> {
        match (stream, self.first_token_timeout_ms) {
            (true, Some(ms)) => Some(ms),
            _ => self.first_byte_timeout_ms,
        }
    }

    /// Whether the client's headers made any time limit tighter than `base`'s.
    pub fn tighter_limits_than(&self, base: &Policy) -> bool {
        self.first_byte_timeout_ms != base.first_byte_timeout_ms
            || self.first_token_timeout_ms != base.first_token_timeout_ms
            || self.deadline_ms != base.deadline_ms
    }

    /// Envoy `x-envoy-retry-on` value for this policy.
    pub fn retry_on(&self) -> &'static str {
        if self.falls_over(FailureClass::Unreachable) {
            "reset,connect-failure,refused-stream,retriable-status-codes"
        } else {
            "retriable-status-codes"
        }
    }

    /// Envoy `x-envoy-retriable-status-codes` value: the canonical statuses (see
    /// [`FailureClass::canonical_status`]) of the classes that fall over.
    pub fn retriable_status_codes(&self) -> String {
        let mut codes: Vec<u16> = Vec::new();
        for class in &self.fail_over_on {
            let add: &[u16] = match class {
                FailureClass::Unreachable => &[504],
                FailureClass::RateLimited => &[429],
                FailureClass::ServerError => &[500, 502, 503, 504, 529],
                FailureClass::Auth => &[401, 403],
                FailureClass::ModelUnavailable => &[404],
                FailureClass::ContentFilter => &[451],
                FailureClass::ContextLength => &[413],
                FailureClass::BadRequest => &[],
                FailureClass::BadResponse => &[502],
            };
            for c in add {
                if !codes.contains(c) {
                    codes.push(*c);
                }
            }
        }
        codes
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_router_values() {
        let p = Policy::default();
        assert!(p.falls_over(FailureClass::Auth) && !p.falls_over(FailureClass::ContentFilter));
        assert_eq!(
            p.retriable_status_codes(),
            "504,429,500,502,503,529,401,403,404,413"
        );
        assert!(p.retry_on().starts_with("reset,"));
    }

    #[test]
    fn headers_only_tighten() {
        let route = Policy {
            first_byte_timeout_ms: Some(5000),
            ..Policy::default()
        };
        let get = |h: &str| match h {
            header::FAIL_OVER_ON => Some("server_error, content_filter".to_string()),
            header::FIRST_BYTE_TIMEOUT_MS => Some("9000".to_string()),
            header::DEADLINE_MS => Some("20000".to_string()),
            _ => None,
        };
        let p = route.tightened(get).unwrap();
        assert_eq!(
            p.fail_over_on,
            vec![FailureClass::ServerError],
            "content_filter was not allowed by the route"
        );
        assert_eq!(p.first_byte_timeout_ms, Some(5000));
        assert_eq!(p.deadline_ms, Some(20000));
        assert_eq!(p.retry_on(), "retriable-status-codes");
        let bad =
            route.tightened(|h| (h == header::FAIL_OVER_ON).then(|| "everything".to_string()));
        assert!(bad.is_err());
        let bad = route.tightened(|h| (h == header::DEADLINE_MS).then(|| "-1".to_string()));
        assert!(bad.is_err());
    }
}
