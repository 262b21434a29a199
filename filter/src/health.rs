//! Active health checks, run by the adapter's background task: one worker at a
//! time fetches each provider's model list (claimed through shared state), and
//! the result, counted against the thresholds, is shared with every planner.

use std::cell::Cell;

use switchyard_core::config::{FilterConfig, HealthCheck, Provider};
use switchyard_core::dialect;

use crate::host::{self, Cas, Gauge, Host};
use crate::metrics;

fn state_key(provider: &str) -> String {
    format!("sy:hc:{provider}")
}

/// `(healthy, streak of the latest result, last check started ms)`.
fn decode(s: &[u8]) -> (bool, u32, u64) {
    let s = std::str::from_utf8(s).unwrap_or_default();
    let mut it = s.split(',');
    let healthy = it.next() != Some("down");
    let streak = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let last = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (healthy, streak, last)
}

fn encode(healthy: bool, streak: u32, last: u64) -> Vec<u8> {
    format!("{},{streak},{last}", if healthy { "up" } else { "down" }).into_bytes()
}

/// Claims the next check of `provider` if it is due (one worker wins).
pub fn claim(host: &impl Host, provider: &str, hc: &HealthCheck, now_ms: u64) -> bool {
    let key = state_key(provider);
    let (current, cas) = host.shared_get(&key);
    let (healthy, streak, last) = decode(current.as_deref().unwrap_or_default());
    if now_ms < last + hc.interval_ms {
        return false;
    }
    host.shared_set(&key, &encode(healthy, streak, now_ms), cas) == Cas::Done
}

/// Records a check's result.
pub fn record(host: &impl Host, provider: &str, hc: &HealthCheck, passed: bool) {
    let flipped = Cell::new(None);
    let now_healthy = Cell::new(true);
    host::shared_update(host, &state_key(provider), |current| {
        let (healthy, streak, last) = decode(current);
        // The streak counts results that disagree with the current state.
        let streak = if passed != healthy { streak + 1 } else { 0 };
        let flip = if healthy {
            streak >= hc.unhealthy_after
        } else {
            streak >= hc.healthy_after
        };
        flipped.set(flip.then_some(!healthy));
        now_healthy.set(healthy != flip);
        Some(if flip {
            encode(!healthy, 0, last)
        } else {
            encode(healthy, streak, last)
        })
    });
    // Health checks run for configured providers only.
    host.gauge(
        Gauge::HealthState,
        &[&metrics::label(provider)],
        u64::from(now_healthy.get()),
    );
    if let Some(now_healthy) = flipped.get() {
        log::warn!(
            "switchyard health: provider {provider} is now {}",
            if now_healthy { "healthy" } else { "unhealthy" }
        );
    }
}

/// Whether `provider` is marked unhealthy.
pub fn is_down(host: &impl Host, provider: &str) -> bool {
    !decode(
        host.shared_get(&state_key(provider))
            .0
            .as_deref()
            .unwrap_or_default(),
    )
    .0
}

/// Starts a check of `provider`; returns the call's token.
pub fn check(
    host: &impl Host,
    cfg: &FilterConfig,
    name: &str,
    p: &Provider,
    hc: &HealthCheck,
) -> Option<u32> {
    let path = dialect::health_path(p.dialect, &p.base_path, p.api_version.as_deref())?;
    let keys = crate::credentials::of(host, cfg, name, p);
    let auth = dialect::auth_headers(p.dialect, keys.key(0));
    let mut headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", p.authority.as_str()),
    ];
    headers.extend(auth.iter().map(|(k, v)| (*k, v.as_str())));
    let token = host.http_call(&p.cluster, &headers, None, hc.timeout_ms);
    if token.is_none() {
        record(host, name, hc, false);
    }
    token
}
