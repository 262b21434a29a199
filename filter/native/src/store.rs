//! The state every worker of this Envoy shares (circuits, cool-downs, fleet
//! counters, health): plain process memory behind a lock, with the
//! compare-and-swap semantics of proxy-wasm's shared data, so the filter logic
//! treats both hosts alike. Only configured targets and providers have entries,
//! so it stays small.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use switchyard_filter::host::Cas;

/// Value and version of each key.
type Map = HashMap<String, (Vec<u8>, u32)>;

fn map() -> &'static Mutex<Map> {
    static MAP: OnceLock<Mutex<Map>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The value of `key` and its version (versions start at 1; `None` when unset).
pub fn get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match map().lock() {
        Ok(m) => match m.get(key) {
            Some((v, version)) => (Some(v.clone()), Some(*version)),
            None => (None, None),
        },
        Err(_) => (None, None),
    }
}

/// Writes `key`; with `cas`, only if its version is still `cas` (`None` writes
/// unconditionally, as does a `cas` for a key that is unset).
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Cas {
    let Ok(mut m) = map().lock() else {
        return Cas::Failed;
    };
    match m.get_mut(key) {
        Some((v, version)) => {
            if cas.is_some_and(|c| c != *version) {
                return Cas::Conflict;
            }
            v.clear();
            v.extend_from_slice(value);
            *version = version.wrapping_add(1).max(1);
        }
        None => {
            m.insert(key.to_string(), (value.to_vec(), 1));
        }
    }
    Cas::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap() {
        assert_eq!(get("t:k"), (None, None));
        assert_eq!(set("t:k", b"a", None), Cas::Done);
        let (v, version) = get("t:k");
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        assert_eq!(set("t:k", b"b", version), Cas::Done);
        assert_eq!(set("t:k", b"c", version), Cas::Conflict, "stale version");
        assert_eq!(get("t:k").0.as_deref(), Some(&b"b"[..]));
    }
}
