//! Cost accounting when prices are configured: at the end of each request, every
//! attempt a provider may bill is charged at its target's price and counted in
//! Envoy stats per target (`switchyard_cost_micros_total` and the part that was
//! estimated, docs/metrics.md). Rules are in `switchyard_core::cost`.

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

/// Tokens and cost (micro-units) of every billable attempt of a request, by the
/// same rules as [`account`] (governance charges them to the request's key).
pub fn charged(cfg: &FilterConfig, entry: &Entry) -> (u64, u64) {
    entry
        .attempts
        .iter()
        .filter_map(|a| billed(a, entry).map(|(u, _)| (a, u)))
        .fold((0, 0), |(tokens, micros), (a, u)| {
            let cost = cfg
                .prices
                .get(&a.target.to_string())
                .map_or(0, |p| cost::micros(p, u));
            (
                tokens + u.prompt_tokens + u.completion_tokens,
                micros + cost,
            )
        })
}

/// Whether part of a request's charge is a prompt estimate (an attempt billed
/// without reported usage).
pub fn estimated(entry: &Entry) -> bool {
    entry
        .attempts
        .iter()
        .any(|a| billed(a, entry).is_some_and(|(_, estimate)| estimate))
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
        let (provider, model) = crate::metrics::target_labels(cfg, &attempt.target);
        let target = [provider.as_ref(), model.as_ref()];
        add(Counter::Cost, &target, micros);
        if estimated {
            add(Counter::CostEstimated, &target, micros);
        }
    }
    log::debug!(
        "switchyard [{request_id}]: cost {total} micro-units over {} attempts",
        entry.attempts.len()
    );
}
