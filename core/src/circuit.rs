//! Circuit breaker state machine per target, as pure functions over a small
//! serialisable state (the filter keeps it in proxy-wasm shared data, updated with
//! compare-and-swap so every worker sees one state).
//!
//! closed --(N consecutive failures)--> open(until now + cool-down)
//! open --(cool-down over, one request claims the probe)--> half-open
//! half-open --(probe succeeds)--> closed      --(probe fails)--> open (longer)
//! The cool-down doubles on every trip without a success in between, up to a cap.

use serde::{Deserialize, Serialize};

/// Breaker settings (the `circuit_breaker` section of the config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// First cool-down.
    pub base_open_ms: u64,
    /// Longest cool-down.
    pub max_open_ms: u64,
}

/// A target's breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Consecutive failures seen while closed.
    pub failures: u32,
    /// Open until this time (ms); 0 when closed.
    pub open_until: u64,
    /// Trips since the last success (drives the cool-down).
    pub trips: u32,
    /// When a half-open probe was handed out (0: none in flight).
    pub probe_since: u64,
}

/// What a change of state means, for stats and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// closed → open, or half-open → open.
    Opened,
    /// open → half-open (a probe was handed out).
    HalfOpened,
    /// → closed after a success.
    Closed,
}

impl State {
    /// Parses the shared-data form `failures,open_until,trips,probe_since`.
    pub fn decode(s: &str) -> State {
        let mut it = s.split(',').map(|p| p.parse::<u64>().unwrap_or(0));
        let (f, o, t, p) = (it.next(), it.next(), it.next(), it.next());
        State {
            failures: f.unwrap_or(0) as u32,
            open_until: o.unwrap_or(0),
            trips: t.unwrap_or(0) as u32,
            probe_since: p.unwrap_or(0),
        }
    }

    /// The shared-data form.
    pub fn encode(&self) -> String {
        format!(
            "{},{},{},{}",
            self.failures, self.open_until, self.trips, self.probe_since
        )
    }

    fn cool_down(settings: &Settings, trips: u32) -> u64 {
        settings
            .base_open_ms
            .saturating_mul(1u64 << trips.min(20))
            .min(settings.max_open_ms)
    }

    /// Planning at `now`: `(may this request use the target, new state, transition)`.
    /// An open circuit whose cool-down is over lets exactly one request through as
    /// the probe; a probe that never reports is replaced after `base_open_ms`.
    pub fn admit(self, settings: &Settings, now: u64) -> (bool, State, Option<Transition>) {
        if self.open_until == 0 {
            return (true, self, None);
        }
        if now < self.open_until {
            return (false, self, None);
        }
        let probe_stale = self.probe_since != 0 && now >= self.probe_since + settings.base_open_ms;
        if self.probe_since == 0 || probe_stale {
            return (
                true,
                State {
                    probe_since: now,
                    ..self
                },
                Some(Transition::HalfOpened),
            );
        }
        (false, self, None)
    }

    /// An attempt on the target succeeded.
    pub fn success(self) -> (State, Option<Transition>) {
        let t = (self.open_until != 0).then_some(Transition::Closed);
        (State::default(), t)
    }

    /// An attempt on the target failed in a way that counts (unreachable, 5xx).
    pub fn failure(self, settings: &Settings, now: u64) -> (State, Option<Transition>) {
        if self.open_until != 0 {
            // A failed probe (or a late failure while open): open again, longer.
            if self.probe_since != 0 || now >= self.open_until {
                let trips = self.trips + 1;
                let s = State {
                    failures: 0,
                    open_until: now + State::cool_down(settings, trips - 1),
                    trips,
                    probe_since: 0,
                };
                return (s, Some(Transition::Opened));
            }
            return (self, None);
        }
        let failures = self.failures + 1;
        if failures >= settings.consecutive_failures {
            let s = State {
                failures: 0,
                open_until: now + State::cool_down(settings, self.trips),
                trips: self.trips + 1,
                probe_since: 0,
            };
            return (s, Some(Transition::Opened));
        }
        (State { failures, ..self }, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        consecutive_failures: 3,
        base_open_ms: 1000,
        max_open_ms: 3000,
    };

    #[test]
    fn opens_probes_closes() {
        let mut st = State::default();
        for _ in 0..2 {
            st = st.failure(&S, 10).0;
            assert!(st.admit(&S, 10).0);
        }
        let (st, t) = st.failure(&S, 10);
        assert_eq!(t, Some(Transition::Opened));
        assert_eq!(st.open_until, 1010);
        assert!(!st.admit(&S, 500).0, "open: no traffic");
        let (ok, st, t) = st.admit(&S, 1010);
        assert!(
            ok && t == Some(Transition::HalfOpened),
            "one probe after the cool-down"
        );
        assert!(!st.admit(&S, 1011).0, "only one probe at a time");
        let (st, t) = st.success();
        assert_eq!((st, t), (State::default(), Some(Transition::Closed)));
    }

    #[test]
    fn failed_probes_back_off_exponentially_to_the_cap() {
        let mut st = State::default();
        for _ in 0..3 {
            st = st.failure(&S, 0).0;
        }
        assert_eq!(st.open_until, 1000);
        let mut now = 1000;
        let mut opens = Vec::new();
        for _ in 0..3 {
            let (ok, s, _) = st.admit(&S, now);
            assert!(ok);
            st = s.failure(&S, now).0;
            opens.push(st.open_until - now);
            now = st.open_until;
        }
        assert_eq!(opens, vec![2000, 3000, 3000]);
        assert_eq!(State::decode(&st.encode()), st);
    }

    #[test]
    fn a_lost_probe_is_replaced() {
        let st = State {
            open_until: 1000,
            trips: 1,
            ..State::default()
        };
        let (_, st, _) = st.admit(&S, 1000);
        assert!(!st.admit(&S, 1500).0);
        assert!(
            st.admit(&S, 2000).0,
            "the probe never reported: a new one after a cool-down"
        );
    }
}
