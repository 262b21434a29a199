//! Circuit breakers per target, in proxy-wasm shared data so every worker of an
//! Envoy sees one state; updated with compare-and-swap. The state machine is
//! `switchyard_core::circuit`; this module stores it, logs and counts transitions.

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};
use switchyard_core::circuit::{Settings, State, Transition};
use switchyard_core::plan::Target;

fn key(t: &Target) -> String {
    format!("sy:cb:{}/{}", t.provider, t.model)
}

thread_local! {
    static METRICS: Cell<Option<[u32; 3]>> = const { Cell::new(None) };
}

/// Envoy stats `wasmcustom.switchyard_circuit_{opened,half_opened,closed}_total`.
fn count(t: Transition) {
    let ids = METRICS.with(|m| {
        if m.get().is_none() {
            let define = |n: &str| hostcalls::define_metric(MetricType::Counter, n).unwrap_or(0);
            m.set(Some([
                define("switchyard_circuit_opened_total"),
                define("switchyard_circuit_half_opened_total"),
                define("switchyard_circuit_closed_total"),
            ]));
        }
        m.get().unwrap_or_default()
    });
    let id = match t {
        Transition::Opened => ids[0],
        Transition::HalfOpened => ids[1],
        Transition::Closed => ids[2],
    };
    let _ = hostcalls::increment_metric(id, 1);
}

/// Applies `f` to the target's state atomically (compare-and-swap, retried).
fn update<R>(t: &Target, f: impl Fn(State) -> (R, State, Option<Transition>)) -> Option<R> {
    let key = key(t);
    for _ in 0..8 {
        let (bytes, cas) = hostcalls::get_shared_data(&key).ok()?;
        let current = bytes
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(State::decode)
            .unwrap_or_default();
        let (result, next, transition) = f(current);
        if next == current {
            return Some(result);
        }
        match hostcalls::set_shared_data(&key, Some(next.encode().as_bytes()), cas) {
            Ok(()) => {
                if let Some(tr) = transition {
                    log::warn!("switchyard circuit {t}: {tr:?} ({})", next.encode());
                    count(tr);
                }
                return Some(result);
            }
            Err(Status::CasMismatch) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Whether a request planned now may use `t` (claims the half-open probe).
pub fn admit(settings: &Settings, t: &Target, now_ms: u64) -> bool {
    update(t, |s| s.admit(settings, now_ms)).unwrap_or(true)
}

/// Records an attempt's outcome: `ok`, or a failure that counts. It also counts
/// towards the next fleet report.
pub fn record(settings: &Settings, t: &Target, ok: bool, now_ms: u64) {
    crate::fleet::record(t, ok);
    update(t, |s| {
        let (next, tr) = if ok {
            s.success(settings, now_ms)
        } else {
            s.failure(settings, now_ms)
        };
        ((), next, tr)
    });
}
