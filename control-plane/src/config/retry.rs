//! `retry:`: Envoy's back-off between attempts and the retry budget.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    #[serde(default = "default_backoff_base_ms")]
    pub(super) backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub(super) backoff_max_ms: u64,
    /// Retry budget: same-target retries (and key rotation) may be at most this
    /// share (%) of the requests in flight on an Envoy. Off by default. Fail-over
    /// to another target is never limited by it.
    #[serde(default)]
    pub(super) budget_percent: Option<f64>,
    #[serde(default)]
    pub(super) min_retry_concurrency: Option<u32>,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            budget_percent: None,
            min_retry_concurrency: None,
        }
    }
}

// Every retry today goes to another target (plans hold no duplicates): keep
// Envoy's jittered back-off short so fail-over is not delayed for nothing.
fn default_backoff_base_ms() -> u64 {
    1
}
fn default_backoff_max_ms() -> u64 {
    25
}

impl RawRetry {
    /// Checks the section; problems are added to `problems`.
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            problems.push("retry: expected 0 < backoff_base_ms <= backoff_max_ms".to_string());
        }
        if let Some(b) = self.budget_percent
            && !(0.0..=100.0).contains(&b)
        {
            problems.push(format!("retry.budget_percent: expected 0..=100, got {b}"));
        }
        if self.min_retry_concurrency.is_some() && self.budget_percent.is_none() {
            problems.push(
                "retry.min_retry_concurrency: only meaningful with retry.budget_percent"
                    .to_string(),
            );
        }
    }

    /// The budget as `(percent, minimum concurrency)`, when one is set.
    pub(super) fn budget(&self) -> Option<(f64, u32)> {
        self.budget_percent
            .map(|b| (b, self.min_retry_concurrency.unwrap_or(3)))
    }
}
