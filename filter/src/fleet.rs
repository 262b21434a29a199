//! The filter's side of the fleet exchange: outcome counters per target in shared
//! data (every worker adds to them), taken and sent to the control plane by the
//! planner's root context on a timer; the answer (targets open fleet-wide) is
//! written to shared data for the planner of every worker.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use switchyard_core::fleet::{Outcome, State};
use switchyard_core::plan::Target;

const INDEX: &str = "sy:rep:index";

fn counter_key(target: &str) -> String {
    format!("sy:rep:{target}")
}

fn open_key(target: &str) -> String {
    format!("sy:fleet:{target}")
}

fn read(key: &str) -> (String, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(v), cas)) => (String::from_utf8_lossy(&v).into_owned(), cas),
        Ok((None, cas)) => (String::new(), cas),
        Err(_) => (String::new(), None),
    }
}

/// Compare-and-swap update of a text value; gives up after a few conflicts.
fn update(key: &str, f: impl Fn(&str) -> Option<String>) {
    for _ in 0..8 {
        let (current, cas) = read(key);
        let Some(next) = f(&current) else { return };
        match hostcalls::set_shared_data(key, Some(next.as_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// Counts one attempt's outcome for the next report.
pub fn record(t: &Target, ok: bool) {
    let name = t.to_string();
    update(INDEX, |index| {
        if index.split(',').any(|n| n == name) {
            None
        } else if index.is_empty() {
            Some(name.clone())
        } else {
            Some(format!("{index},{name}"))
        }
    });
    add(&name, u64::from(ok), u64::from(!ok), 0);
}

/// Counts a successful attempt's time to response headers.
pub fn record_latency(t: &Target, ms: u64) {
    add(&t.to_string(), 0, 0, ms);
}

/// Puts counts that could not be reported back, for the next report.
pub fn restore(o: &Outcome) {
    add(&o.target, o.ok, o.failed, o.latency_ms_sum);
}

fn add(name: &str, ok: u64, failed: u64, latency_ms: u64) {
    update(&counter_key(name), |v| {
        let mut it = v.split(',').map(|n| n.parse::<u64>().unwrap_or(0));
        let (o, f, l) = (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        );
        Some(format!("{},{},{}", o + ok, f + failed, l + latency_ms))
    });
}

/// Takes (and zeroes) every target's counters since the last report.
pub fn take() -> Vec<Outcome> {
    let (index, _) = read(INDEX);
    let mut out = Vec::new();
    for target in index.split(',').filter(|t| !t.is_empty()) {
        let key = counter_key(target);
        for _ in 0..8 {
            let (v, cas) = read(&key);
            let mut it = v.split(',').map(|n| n.parse::<u64>().unwrap_or(0));
            let (ok, failed, latency_ms_sum) = (
                it.next().unwrap_or(0),
                it.next().unwrap_or(0),
                it.next().unwrap_or(0),
            );
            if ok == 0 && failed == 0 {
                break;
            }
            match hostcalls::set_shared_data(&key, Some(b"0,0,0"), cas) {
                Err(Status::CasMismatch) => continue,
                Ok(()) => out.push(Outcome {
                    target: target.to_string(),
                    ok,
                    failed,
                    latency_ms_sum,
                }),
                Err(_) => {}
            }
            break;
        }
    }
    out
}

/// Stores the control plane's answer: open targets get their time, others 0.
pub fn apply(state: &State) {
    let (index, _) = read(INDEX);
    let mut names: Vec<&str> = index.split(',').filter(|t| !t.is_empty()).collect();
    for o in &state.open {
        if !names.contains(&o.target.as_str()) {
            names.push(&o.target);
        }
    }
    for name in names {
        let until = state
            .open
            .iter()
            .find(|o| o.target == name)
            .map_or(0, |o| o.until_ms);
        let key = open_key(name);
        let (current, _) = read(&key);
        if current != until.to_string() && !(current.is_empty() && until == 0) {
            let _ = hostcalls::set_shared_data(&key, Some(until.to_string().as_bytes()), None);
        }
    }
}

/// Stores the effective weight factors (1 for targets not listed).
pub fn apply_weights(state: &State) {
    let (index, _) = read(INDEX);
    for name in index.split(',').filter(|t| !t.is_empty()) {
        let factor = state
            .weights
            .iter()
            .find(|w| w.target == name)
            .map_or(1.0, |w| w.factor);
        let key = format!("sy:w:{name}");
        if read(&key).0.parse::<f64>().unwrap_or(1.0) != factor {
            let _ = hostcalls::set_shared_data(&key, Some(factor.to_string().as_bytes()), None);
        }
    }
}

/// `t`'s effective weight factor (1 when the fleet has not lowered it).
pub fn weight_factor(t: &Target) -> f64 {
    read(&format!("sy:w:{t}"))
        .0
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .unwrap_or(1.0)
}

/// Whether the fleet has set `t` aside at `now_ms`.
pub fn is_open(t: &Target, now_ms: u64) -> bool {
    read(&open_key(&t.to_string()))
        .0
        .parse::<u64>()
        .is_ok_and(|until| until > now_ms)
}
