//! Fleet-wide rates over the last minute, from what every filter reports
//! ([`switchyard_core::fleet::Observed`]): per route, fail-overs by class and
//! which plan slot served; per target, percentiles of the time to response
//! headers. Kept as one slot per second of the window, so memory is bounded by
//! the window, the configured routes and targets, and the fixed bucket counts.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard_core::fleet::{LATENCY_BUCKETS_MS, MAX_POSITIONS, Observed};

/// The window rates are computed over (seconds).
pub const WINDOW_S: u64 = 60;

/// Number of latency buckets (the bounds, plus one for longer times).
const BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

#[derive(Clone, Debug, Default)]
struct RouteSums {
    requests: u64,
    all_failed: u64,
    served: [u64; MAX_POSITIONS],
    fallbacks: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    second: u64,
    routes: BTreeMap<String, RouteSums>,
    latency: BTreeMap<String, [u64; BUCKETS]>,
}

/// One route over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteRates {
    /// Planned requests that ended in the window.
    pub requests: u64,
    /// Requests per second.
    pub per_s: f64,
    /// Fail-overs per request, by failure class.
    pub failover_by_class: BTreeMap<String, f64>,
    /// Share of served requests by plan slot (`"1"` = primary).
    pub served_by_position: BTreeMap<String, f64>,
    /// Share of requests whose every attempt failed.
    pub all_failed: f64,
}

/// One target's time to response headers over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetLatency {
    /// Successful attempts counted.
    pub count: u64,
    /// Median (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
}

/// The rates `switchyard status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Seconds covered (up to [`WINDOW_S`]).
    pub window_s: u64,
    /// By route alias (and `_direct`).
    pub routes: BTreeMap<String, RouteRates>,
    /// By target (`provider/model`).
    pub targets: BTreeMap<String, TargetLatency>,
}

/// The window, shared by the HTTP handlers.
#[derive(Clone, Debug, Default)]
pub struct Window(Arc<Mutex<VecDeque<Slot>>>);

impl Window {
    /// Adds one report's observations at `now_ms`. Routes other than
    /// `routes` (and `_direct`) and targets other than `targets` are ignored;
    /// counts are clamped as the report's circuit counts are.
    pub fn add(
        &self,
        o: &Observed,
        routes: &HashSet<String>,
        targets: &HashSet<String>,
        now_ms: u64,
    ) {
        let Ok(mut w) = self.0.lock() else { return };
        let second = now_ms / 1000;
        prune(&mut w, second);
        if w.back().is_none_or(|s| s.second != second) {
            w.push_back(Slot {
                second,
                ..Slot::default()
            });
        }
        let Some(slot) = w.back_mut() else { return };
        let clamp = |n: u64| n.min(switchyard_core::fleet::MAX_ATTEMPTS_PER_REPORT);
        for r in &o.routes {
            if r.route != "_direct" && !routes.contains(&r.route) {
                continue;
            }
            let sums = slot.routes.entry(r.route.clone()).or_default();
            sums.requests = sums.requests.saturating_add(clamp(r.requests));
            sums.all_failed = sums.all_failed.saturating_add(clamp(r.all_failed));
            for (i, n) in r.served.iter().enumerate() {
                let i = i.min(MAX_POSITIONS - 1);
                sums.served[i] = sums.served[i].saturating_add(clamp(*n));
            }
            for c in &r.fallbacks {
                if switchyard_core::failure::FailureClass::parse(&c.class).is_some() {
                    let n = sums.fallbacks.entry(c.class.clone()).or_default();
                    *n = n.saturating_add(clamp(c.n));
                }
            }
        }
        for l in &o.latency {
            if !targets.contains(&l.target) {
                continue;
            }
            let b = slot.latency.entry(l.target.clone()).or_insert([0; BUCKETS]);
            for (i, n) in l.buckets.iter().take(BUCKETS).enumerate() {
                b[i] = b[i].saturating_add(clamp(*n));
            }
        }
    }

    /// The rates over the last [`WINDOW_S`] seconds before `now_ms`.
    pub fn rates(&self, now_ms: u64) -> Rates {
        let Ok(mut w) = self.0.lock() else {
            return Rates::default();
        };
        let second = now_ms / 1000;
        prune(&mut w, second);
        let mut routes: BTreeMap<String, RouteSums> = BTreeMap::new();
        let mut latency: BTreeMap<String, [u64; BUCKETS]> = BTreeMap::new();
        for slot in w.iter() {
            for (r, s) in &slot.routes {
                let t = routes.entry(r.clone()).or_default();
                t.requests = t.requests.saturating_add(s.requests);
                t.all_failed = t.all_failed.saturating_add(s.all_failed);
                for i in 0..MAX_POSITIONS {
                    t.served[i] = t.served[i].saturating_add(s.served[i]);
                }
                for (c, n) in &s.fallbacks {
                    let e = t.fallbacks.entry(c.clone()).or_default();
                    *e = e.saturating_add(*n);
                }
            }
            for (target, b) in &slot.latency {
                let t = latency.entry(target.clone()).or_insert([0; BUCKETS]);
                for i in 0..BUCKETS {
                    t[i] = t[i].saturating_add(b[i]);
                }
            }
        }
        let window_s = w
            .front()
            .map_or(0, |s| (second - s.second + 1).min(WINDOW_S));
        let per = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        Rates {
            window_s,
            routes: routes
                .into_iter()
                .map(|(r, s)| {
                    let served: u64 = s.served.iter().sum();
                    let rates = RouteRates {
                        requests: s.requests,
                        per_s: per(s.requests, window_s.max(1)),
                        failover_by_class: s
                            .fallbacks
                            .iter()
                            .map(|(c, n)| (c.clone(), per(*n, s.requests)))
                            .collect(),
                        served_by_position: s
                            .served
                            .iter()
                            .enumerate()
                            .filter(|(_, n)| **n > 0)
                            .map(|(i, n)| ((i + 1).to_string(), per(*n, served)))
                            .collect(),
                        all_failed: per(s.all_failed, s.requests),
                    };
                    (r, rates)
                })
                .collect(),
            targets: latency
                .into_iter()
                .filter_map(|(t, b)| {
                    let count: u64 = b.iter().sum();
                    (count > 0).then(|| {
                        (
                            t,
                            TargetLatency {
                                count,
                                p50_ms: quantile(&b, 0.5),
                                p99_ms: quantile(&b, 0.99),
                            },
                        )
                    })
                })
                .collect(),
        }
    }
}

fn prune(w: &mut VecDeque<Slot>, second: u64) {
    while w.front().is_some_and(|s| s.second + WINDOW_S <= second) {
        w.pop_front();
    }
}

/// The `q` quantile of bucket counts, interpolated linearly inside its bucket
/// (as Prometheus' `histogram_quantile`); times past the last bound read as
/// the last bound.
pub fn quantile(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if *n > 0 && (seen + n) as f64 >= rank {
            let Some(upper) = LATENCY_BUCKETS_MS.get(i) else {
                return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1] as f64;
            };
            let lower = if i == 0 { 0 } else { LATENCY_BUCKETS_MS[i - 1] };
            let within = (rank - seen as f64) / *n as f64;
            return lower as f64 + (*upper - lower) as f64 * within;
        }
        seen += n;
    }
    LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1] as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::fleet::{ClassCount, RouteOutcome, latency_bucket};

    fn observed(
        route: &str,
        requests: u64,
        served: Vec<u64>,
        fallbacks: u64,
        latencies: &[u64],
    ) -> Observed {
        let mut buckets = vec![0; BUCKETS];
        for l in latencies {
            buckets[latency_bucket(*l)] += 1;
        }
        Observed {
            routes: vec![RouteOutcome {
                route: route.into(),
                requests,
                served,
                all_failed: 0,
                fallbacks: vec![
                    ClassCount {
                        class: "server_error".into(),
                        n: fallbacks,
                    },
                    ClassCount {
                        class: "made_up".into(),
                        n: 9,
                    },
                ],
            }],
            latency: vec![switchyard_core::fleet::TargetLatency {
                target: "a/m".into(),
                buckets,
            }],
            drill: None,
        }
    }

    #[test]
    fn rates_over_the_window() {
        let w = Window::default();
        let routes: HashSet<String> = ["chat".to_string()].into();
        let targets: HashSet<String> = ["a/m".to_string()].into();
        let t0 = 1_000_000;
        // Two Envoys, 100 requests: 80 by the primary, 20 by the fallback.
        w.add(
            &observed("chat", 50, vec![40, 10], 10, &[100; 40]),
            &routes,
            &targets,
            t0,
        );
        w.add(
            &observed("chat", 50, vec![40, 10], 10, &[1000; 40]),
            &routes,
            &targets,
            t0 + 500,
        );
        w.add(
            &observed("other", 9, vec![9], 0, &[]),
            &routes,
            &targets,
            t0 + 600,
        );
        let r = w.rates(t0 + 900);
        let chat = &r.routes["chat"];
        assert_eq!(chat.requests, 100);
        assert_eq!(
            chat.failover_by_class.len(),
            1,
            "unknown classes are dropped"
        );
        assert!((chat.failover_by_class["server_error"] - 0.2).abs() < 1e-9);
        assert!((chat.served_by_position["1"] - 0.8).abs() < 1e-9);
        assert!((chat.served_by_position["2"] - 0.2).abs() < 1e-9);
        assert!(
            !r.routes.contains_key("other"),
            "unconfigured routes are ignored"
        );
        let a = &r.targets["a/m"];
        assert_eq!(a.count, 80);
        // Half the times are 100 ms (bucket 50-100), half 1 s (600-1000).
        assert!(a.p50_ms > 50.0 && a.p50_ms <= 100.0, "{a:?}");
        assert!(a.p99_ms > 600.0 && a.p99_ms <= 1000.0, "{a:?}");
        // A minute later it is all gone.
        assert!(w.rates(t0 + 61_000).routes.is_empty());
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut b = vec![0; BUCKETS];
        b[latency_bucket(300)] = 10; // 250-400
        assert!((quantile(&b, 0.5) - 325.0).abs() < 1e-9);
        b[BUCKETS - 1] = 1000;
        assert_eq!(quantile(&b, 0.99), 60_000.0);
        assert_eq!(quantile(&[0; BUCKETS], 0.5), 0.0);
    }
}
