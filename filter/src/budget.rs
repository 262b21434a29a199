//! The retry budget: same-target retries (and key rotation) across the requests
//! in flight on this Envoy are bounded by `retry.budget_percent`, counted in the
//! state all workers share. Fail-over to another target takes nothing from it: it
//! adds no load to the failing provider.

use std::cell::Cell;

use switchyard_core::config::RetryBudget;

use crate::host::{self, Host};

const KEY: &str = "sy:budget";

/// `(requests in flight, retry slots they hold)`.
fn decode(v: &[u8]) -> (u64, u64) {
    let s = std::str::from_utf8(v).unwrap_or_default();
    let mut it = s.split(',').map(|n| n.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn encode(active: u64, granted: u64) -> Vec<u8> {
    format!("{active},{granted}").into_bytes()
}

/// A request enters flight wanting `wanted` same-target retry slots; returns how
/// many it gets. Release them with [`release`] when it ends.
pub fn take(envoy: &impl Host, budget: &RetryBudget, wanted: u64) -> u64 {
    let got = Cell::new(0);
    let ok = host::shared_update(envoy, KEY, |v| {
        let (active, granted) = decode(v);
        let active = active.saturating_add(1);
        let g = budget.grant(active, granted, wanted);
        got.set(g);
        Some(encode(active, granted.saturating_add(g)))
    });
    if ok { got.get() } else { 0 }
}

/// The request that took `slots` ended.
pub fn release(envoy: &impl Host, slots: u64) {
    host::shared_update(envoy, KEY, |v| {
        let (active, granted) = decode(v);
        Some(encode(
            active.saturating_sub(1),
            granted.saturating_sub(slots),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemHost;

    #[test]
    fn retries_are_a_share_of_the_requests_in_flight() {
        let host = MemHost::default();
        let b = RetryBudget {
            percent: 20.0,
            min_concurrency: 1,
        };
        // The first request may use the minimum; the next ones get nothing until
        // enough requests are in flight.
        assert_eq!(take(&host, &b, 2), 1);
        assert_eq!(take(&host, &b, 2), 0);
        for _ in 0..8 {
            take(&host, &b, 0);
        }
        // 11 in flight: 20 % is 2 slots, 1 held.
        assert_eq!(take(&host, &b, 3), 1);
        release(&host, 1);
        release(&host, 1);
        assert_eq!(decode(&host.shared_get(KEY).0.unwrap()), (9, 0));
    }
}
