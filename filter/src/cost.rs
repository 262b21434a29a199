//! Cost accounting when prices are configured: at the end of each request, every
//! attempt a provider may bill is charged at its target's price and counted in
//! Envoy stats (`switchyard_cost_micros_total`, per target
//! `switchyard_target_cost_micros.<provider>.<model>`, token totals, and
//! the part that was estimated). Rules are in `switchyard_core::cost`.

use switchyard_core::config::FilterConfig;
use switchyard_core::cost::{self, Usage};

use crate::host::{Counter, Host};
use crate::ledger::{Attempt, Entry};

/// The usage an attempt is charged for, and whether it is an estimate. Attempts that
/// got an error status are not billed by providers; an attempt with no answer is
/// only charged when it may have been cancelled mid-flight (a hedged request).
fn billed(attempt: &Attempt, entry: &Entry) -> Option<(Usage, bool)> {
    if let Some(u) = attempt.usage {
        return Some((u, false));
    }
    let estimate = Usage {
        prompt_tokens: cost::estimated_prompt_tokens(entry.request_bytes),
        completion_tokens: 0,
    };
    match attempt.status {
        Some(s) if (200..300).contains(&s) => Some((estimate, true)),
        None if entry.policy.hedge_after_ms.is_some() => Some((estimate, true)),
        _ => None,
    }
}

/// Charges every billable attempt of a finished request.
pub fn account(host: &impl Host, cfg: &FilterConfig, request_id: &str, entry: &Entry) {
    let add = |counter: Counter, labels: &[&str], value: u64| {
        if value > 0 {
            host.count(counter, labels, value);
        }
    };
    let mut total = 0;
    for attempt in &entry.attempts {
        let Some((usage, estimated)) = billed(attempt, entry) else {
            continue;
        };
        let Some(price) = cfg.prices.get(&attempt.target.to_string()) else {
            continue;
        };
        let micros = cost::micros(price, usage);
        total += micros;
        add(Counter::CostMicros, &[], micros);
        if estimated {
            add(Counter::CostEstimatedMicros, &[], micros);
        }
        add(Counter::PromptTokens, &[], usage.prompt_tokens);
        add(Counter::CompletionTokens, &[], usage.completion_tokens);
        add(
            Counter::TargetCostMicros,
            &[&attempt.target.provider, &attempt.target.model],
            micros,
        );
    }
    log::debug!(
        "switchyard [{request_id}]: cost {total} micro-units over {} attempts",
        entry.attempts.len()
    );
}
