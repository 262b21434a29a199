//! Targets the providers asked us to leave alone for a while (429 with a reset
//! time, rejected keys), shared by every worker through proxy-wasm shared data.
//! The planner moves cooling targets to the back of new plans; nothing waits.

use proxy_wasm::hostcalls;
use switchyard_core::plan::Target;

/// How long a provider whose key was rejected (401/403) is moved back.
pub const AUTH_COOLDOWN_MS: u64 = 60_000;

fn target_key(t: &Target) -> String {
    format!("sy:cool:t:{}/{}", t.provider, t.model)
}

fn provider_key(provider: &str) -> String {
    format!("sy:cool:p:{provider}")
}

fn read(key: &str) -> u64 {
    match hostcalls::get_shared_data(key) {
        Ok((Some(v), _)) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn write(key: &str, until_ms: u64) {
    // Last writer wins: any recent "leave it alone" is as good as another.
    let _ = hostcalls::set_shared_data(key, Some(until_ms.to_string().as_bytes()), None);
}

/// Leave `target` alone until `until_ms` (rate limited).
pub fn cool_target(t: &Target, until_ms: u64) {
    write(&target_key(t), until_ms);
}

/// Leave every target of `provider` alone until `until_ms` (its key was rejected).
pub fn cool_provider(provider: &str, until_ms: u64) {
    write(&provider_key(provider), until_ms);
}

fn key_key(provider: &str, index: usize) -> String {
    format!("sy:cool:k:{provider}#{index}")
}

/// Leave key `index` of `provider` alone until `until_ms`.
pub fn cool_key(provider: &str, index: usize, until_ms: u64) {
    write(&key_key(provider, index), until_ms);
}

/// The key for the next attempt on a provider with `keys` keys: the first key this
/// request has not used yet, keys that are not cooling before those that are, in
/// configured order. Once every key was used, they are used again in that order.
pub fn pick_key(provider: &str, keys: usize, used: &[usize], now_ms: u64) -> Option<usize> {
    match keys {
        0 => None,
        1 => Some(0),
        _ => {
            let (mut order, cooling): (Vec<usize>, Vec<usize>) =
                (0..keys).partition(|i| read(&key_key(provider, *i)) <= now_ms);
            order.extend(cooling);
            let fresh = order.iter().copied().find(|k| !used.contains(k));
            fresh.or_else(|| order.get(used.len() % keys).copied())
        }
    }
}

/// Whether `t` is cooling at `now_ms`.
pub fn is_cooling(t: &Target, now_ms: u64) -> bool {
    read(&target_key(t)) > now_ms || read(&provider_key(&t.provider)) > now_ms
}
