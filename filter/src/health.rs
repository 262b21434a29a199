//! Active health checks, run by the adapter's root context: one worker at a time
//! fetches each provider's model list (claimed through shared data), and the
//! result, counted against the thresholds, is shared with every planner.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use switchyard_core::config::{HealthCheck, Provider};
use switchyard_core::dialect;

fn state_key(provider: &str) -> String {
    format!("sy:hc:{provider}")
}

fn read(key: &str) -> (String, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(v), cas)) => (String::from_utf8_lossy(&v).into_owned(), cas),
        Ok((None, cas)) => (String::new(), cas),
        Err(_) => (String::new(), None),
    }
}

/// `(healthy, streak of the latest result, last check started ms)`.
fn decode(s: &str) -> (bool, u32, u64) {
    let mut it = s.split(',');
    let healthy = it.next() != Some("down");
    let streak = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let last = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (healthy, streak, last)
}

fn encode(healthy: bool, streak: u32, last: u64) -> String {
    format!("{},{streak},{last}", if healthy { "up" } else { "down" })
}

/// Claims the next check of `provider` if it is due (one worker wins).
pub fn claim(provider: &str, hc: &HealthCheck, now_ms: u64) -> bool {
    let key = state_key(provider);
    let (current, cas) = read(&key);
    let (healthy, streak, last) = decode(&current);
    if now_ms < last + hc.interval_ms {
        return false;
    }
    hostcalls::set_shared_data(&key, Some(encode(healthy, streak, now_ms).as_bytes()), cas).is_ok()
}

/// Records a check's result.
pub fn record(provider: &str, hc: &HealthCheck, passed: bool) {
    let key = state_key(provider);
    for _ in 0..8 {
        let (current, cas) = read(&key);
        let (healthy, streak, last) = decode(&current);
        // The streak counts results that disagree with the current state.
        let streak = if passed != healthy { streak + 1 } else { 0 };
        let flip = if healthy {
            streak >= hc.unhealthy_after
        } else {
            streak >= hc.healthy_after
        };
        let next = if flip {
            encode(!healthy, 0, last)
        } else {
            encode(healthy, streak, last)
        };
        match hostcalls::set_shared_data(&key, Some(next.as_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => {
                if flip {
                    log::warn!(
                        "switchyard health: provider {provider} is now {}",
                        if healthy { "unhealthy" } else { "healthy" }
                    );
                }
                return;
            }
        }
    }
}

/// Whether `provider` is marked unhealthy.
pub fn is_down(provider: &str) -> bool {
    !decode(&read(&state_key(provider)).0).0
}

/// Starts a check of `provider`; returns the call's token.
pub fn check(name: &str, p: &Provider, hc: &HealthCheck) -> Option<u32> {
    let path = dialect::health_path(p.dialect, &p.base_path, p.api_version.as_deref())?;
    let auth = dialect::auth_headers(p.dialect, p.api_keys.first().map(String::as_str));
    let mut headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", p.authority.as_str()),
    ];
    headers.extend(auth.iter().map(|(k, v)| (*k, v.as_str())));
    let timeout = std::time::Duration::from_millis(hc.timeout_ms);
    match hostcalls::dispatch_http_call(&p.cluster, headers, None, vec![], timeout) {
        Ok(token) => Some(token),
        Err(_) => {
            record(name, hc, false);
            None
        }
    }
}
