//! Targets the providers asked us to leave alone for a while (429 with a reset
//! time, rejected keys), in the state every worker shares. The planner moves
//! cooling targets to the back of new plans; nothing waits.

use switchyard_core::config::Target;

use crate::host::{self, Host};

/// How long a provider whose key was rejected (401/403) is moved back.
pub const AUTH_COOLDOWN_MS: u64 = 60_000;

fn target_key(t: &Target) -> String {
    format!("sy:cool:t:{}/{}", t.provider, t.model)
}

fn provider_key(provider: &str) -> String {
    format!("sy:cool:p:{provider}")
}

fn key_key(provider: &str, index: usize) -> String {
    format!("sy:cool:k:{provider}#{index}")
}

/// Every key of the provider rate limited: all its targets, as if each had said so.
fn provider_rate_key(provider: &str) -> String {
    format!("sy:cool:r:{provider}")
}

fn read(host: &impl Host, key: &str) -> u64 {
    host::shared_text(host, key).parse().unwrap_or(0)
}

fn write(host: &impl Host, key: &str, until_ms: u64) {
    // Last writer wins: any recent "leave it alone" is as good as another.
    host.shared_set(key, until_ms.to_string().as_bytes(), None);
}

/// Leave `target` alone until `until_ms` (rate limited).
pub fn cool_target(host: &impl Host, t: &Target, until_ms: u64) {
    write(host, &target_key(t), until_ms);
}

/// Leave every target of `provider` alone until `until_ms` (its key was rejected).
pub fn cool_provider(host: &impl Host, provider: &str, until_ms: u64) {
    write(host, &provider_key(provider), until_ms);
}

/// Why a key is set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCooling {
    /// The provider rate limited it (a 429 with a reset time).
    RateLimited,
    /// The provider rejected it (401/403).
    Rejected,
}

/// Leave key `index` of `provider` (which has `keys` keys) alone until `until_ms`.
/// When that leaves every key cooling at `now_ms`, the provider is left alone until
/// its first key is back, as if it had said so itself (for `why`): its targets go
/// to the back of new plans, and count for the "every target cooling" answer when
/// rate limited, instead of costing each request an attempt per key.
pub fn cool_key(
    host: &impl Host,
    provider: &str,
    (index, keys): (usize, usize),
    until_ms: u64,
    now_ms: u64,
    why: KeyCooling,
) {
    write(host, &key_key(provider, index), until_ms);
    let soonest = (0..keys)
        .map(|i| read(host, &key_key(provider, i)))
        .min()
        .unwrap_or(0);
    if soonest > now_ms {
        let key = match why {
            KeyCooling::RateLimited => provider_rate_key(provider),
            KeyCooling::Rejected => provider_key(provider),
        };
        // Never shortens a longer "leave it alone" already there.
        if read(host, &key) < soonest {
            write(host, &key, soonest);
        }
    }
}

/// The key for the next attempt on a provider with `keys` keys: the first key this
/// request has not used yet, keys that are not cooling before those that are, in
/// configured order. Once every key was used, they are used again in that order.
pub fn pick_key(
    host: &impl Host,
    provider: &str,
    keys: usize,
    used: &[usize],
    now_ms: u64,
) -> Option<usize> {
    match keys {
        0 => None,
        1 => Some(0),
        _ => {
            let (mut order, cooling): (Vec<usize>, Vec<usize>) =
                (0..keys).partition(|i| read(host, &key_key(provider, *i)) <= now_ms);
            order.extend(cooling);
            let fresh = order.iter().copied().find(|k| !used.contains(k));
            fresh.or_else(|| order.get(used.len() % keys).copied())
        }
    }
}

/// Until when the provider asked (`Retry-After`, reset headers) to leave `t` alone
/// (0 when it did not, or that time has passed).
pub fn rate_limited_until(host: &impl Host, t: &Target) -> u64 {
    read(host, &target_key(t)).max(read(host, &provider_rate_key(&t.provider)))
}

/// Until when `t` is cooling (0 when it is not).
pub fn cooling_until(host: &impl Host, t: &Target) -> u64 {
    rate_limited_until(host, t).max(read(host, &provider_key(&t.provider)))
}

/// Whether `t` is cooling at `now_ms`.
pub fn is_cooling(host: &impl Host, t: &Target, now_ms: u64) -> bool {
    cooling_until(host, t) > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemHost;

    fn target(model: &str) -> Target {
        Target {
            provider: "a".into(),
            model: model.into(),
        }
    }

    #[test]
    fn a_provider_cools_once_every_key_does() {
        let host = MemHost::with_request(&[]);
        let now = host.now;
        let t = target("m");
        // One key of two: the provider still has a key to try.
        cool_key(
            &host,
            "a",
            (0, 2),
            now + 5_000,
            now,
            KeyCooling::RateLimited,
        );
        assert!(!is_cooling(&host, &t, now));
        assert_eq!(pick_key(&host, "a", 2, &[], now), Some(1));
        // Both: every target of the provider is rate limited until the first key is back.
        cool_key(
            &host,
            "a",
            (1, 2),
            now + 2_000,
            now,
            KeyCooling::RateLimited,
        );
        assert_eq!(rate_limited_until(&host, &target("other")), now + 2_000);
        assert!(is_cooling(&host, &t, now + 1_999));
        assert!(!is_cooling(&host, &t, now + 2_000));
    }

    #[test]
    fn every_key_rejected_moves_the_provider_back_without_a_rate_limit() {
        let host = MemHost::with_request(&[]);
        let now = host.now;
        let t = target("m");
        cool_provider(&host, "a", now + 90_000);
        cool_key(&host, "a", (0, 2), now + 60_000, now, KeyCooling::Rejected);
        cool_key(&host, "a", (1, 2), now + 60_000, now, KeyCooling::Rejected);
        assert_eq!(rate_limited_until(&host, &t), 0, "not a rate limit");
        assert_eq!(
            cooling_until(&host, &t),
            now + 90_000,
            "a longer cool-down stays"
        );
    }
}
