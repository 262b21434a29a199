//! Circuit breaker state machine per target, as pure functions over a small
//! serialisable state (the filter keeps it in proxy-wasm shared data, updated with
//! compare-and-swap so every worker sees one state).
//!
//! closed --(N consecutive failures, or a failure rate over a window with a
//!          minimum volume)--> open(until now + cool-down)
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
    /// Also open when at least this share (%) of the attempts in the current
    /// window failed, once the window holds `min_requests` attempts.
    #[serde(default)]
    pub failure_rate_percent: Option<u32>,
    /// Length of the failure-rate window.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Attempts a window needs before its failure rate counts.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_window_ms() -> u64 {
    10_000
}

fn default_min_requests() -> u32 {
    20
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
    /// Start of the current failure-rate window (ms).
    pub window_start: u64,
    /// Successful attempts in the window.
    pub window_ok: u32,
    /// Failed attempts in the window.
    pub window_failed: u32,
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
    /// Parses the shared-data form
    /// `failures,open_until,trips,probe_since,window_start,window_ok,window_failed`.
    pub fn decode(s: &str) -> State {
        let v: Vec<u64> = s
            .split(',')
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        State {
            failures: at(0) as u32,
            open_until: at(1),
            trips: at(2) as u32,
            probe_since: at(3),
            window_start: at(4),
            window_ok: at(5) as u32,
            window_failed: at(6) as u32,
        }
    }

    /// The shared-data form.
    pub fn encode(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.failures,
            self.open_until,
            self.trips,
            self.probe_since,
            self.window_start,
            self.window_ok,
            self.window_failed
        )
    }

    /// Starts a new failure-rate window when the current one is over.
    fn roll(self, settings: &Settings, now: u64) -> State {
        if now >= self.window_start + settings.window_ms {
            State {
                window_start: now,
                window_ok: 0,
                window_failed: 0,
                ..self
            }
        } else {
            self
        }
    }

    fn rate_exceeded(&self, settings: &Settings) -> bool {
        let total = self.window_ok + self.window_failed;
        settings.failure_rate_percent.is_some_and(|pct| {
            total >= settings.min_requests.max(1)
                && u64::from(self.window_failed) * 100 >= u64::from(pct) * u64::from(total)
        })
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
    pub fn success(self, settings: &Settings, now: u64) -> (State, Option<Transition>) {
        if self.open_until != 0 {
            return (
                State {
                    window_start: now,
                    ..State::default()
                },
                Some(Transition::Closed),
            );
        }
        let s = self.roll(settings, now);
        (
            State {
                failures: 0,
                trips: 0,
                window_ok: s.window_ok + 1,
                ..s
            },
            None,
        )
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
                    window_start: now,
                    window_ok: 0,
                    window_failed: 0,
                };
                return (s, Some(Transition::Opened));
            }
            return (self, None);
        }
        let s = self.roll(settings, now);
        let s = State {
            failures: s.failures + 1,
            window_failed: s.window_failed + 1,
            ..s
        };
        let failures = s.failures;
        if failures >= settings.consecutive_failures || s.rate_exceeded(settings) {
            let s = State {
                failures: 0,
                open_until: now + State::cool_down(settings, self.trips),
                trips: self.trips + 1,
                probe_since: 0,
                window_start: now,
                window_ok: 0,
                window_failed: 0,
            };
            return (s, Some(Transition::Opened));
        }
        (s, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        consecutive_failures: 3,
        base_open_ms: 1000,
        max_open_ms: 3000,
        failure_rate_percent: None,
        window_ms: 10_000,
        min_requests: 20,
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
        let (st, t) = st.success(&S, 1011);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!((st.open_until, st.trips, st.failures), (0, 0, 0));
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
    fn failure_rate_over_a_window_with_minimum_volume() {
        let s = Settings {
            consecutive_failures: 1000,
            failure_rate_percent: Some(50),
            min_requests: 10,
            ..S
        };
        let mut st = State::default();
        // Alternating success/failure: 50 % once 10 attempts are in the window.
        for i in 0..9u64 {
            st = if i % 2 == 0 {
                st.failure(&s, i).0
            } else {
                st.success(&s, i).0
            };
            assert_eq!(st.open_until, 0, "below the minimum volume at {i}");
        }
        let (st, t) = st.success(&s, 9);
        assert_eq!(t, None, "a success never opens");
        let (st, t) = st.failure(&s, 10);
        assert_eq!(t, Some(Transition::Opened), "6 of 11 failed");
        assert!(st.open_until > 10);
        // A new window forgets the old one.
        let mut st = State::default();
        for i in 0..8u64 {
            st = st.failure(&s, i).0;
            st = st.success(&s, i).0;
        }
        let (st, _) = st.success(&s, 20_000);
        assert_eq!((st.window_ok, st.window_failed), (1, 0));
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
