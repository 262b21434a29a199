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

/// Leave key `index` of `provider` alone until `until_ms`.
pub fn cool_key(host: &impl Host, provider: &str, index: usize, until_ms: u64) {
    write(host, &key_key(provider, index), until_ms);
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
    read(host, &target_key(t))
}

/// Until when `t` is cooling (0 when it is not).
pub fn cooling_until(host: &impl Host, t: &Target) -> u64 {
    read(host, &target_key(t)).max(read(host, &provider_key(&t.provider)))
}

/// Whether `t` is cooling at `now_ms`.
pub fn is_cooling(host: &impl Host, t: &Target, now_ms: u64) -> bool {
    cooling_until(host, t) > now_ms
}
