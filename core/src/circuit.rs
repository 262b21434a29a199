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
        if now >= self.window_start.saturating_add(settings.window_ms) {
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

    /// At least 1 ms, so an open circuit's `open_until` is never 0 (closed) nor
    /// `now` (over at once), whatever the settings.
    fn cool_down(settings: &Settings, trips: u32) -> u64 {
        settings
            .base_open_ms
            .saturating_mul(1u64 << trips.min(20))
            .min(settings.max_open_ms)
            .max(1)
    }

    /// Opened at `now` after `trips` trips without a success in between.
    fn opened(settings: &Settings, now: u64, trips: u32) -> State {
        State {
            failures: 0,
            open_until: now.saturating_add(State::cool_down(settings, trips)),
            trips: trips.saturating_add(1),
            probe_since: 0,
            window_start: now,
            window_ok: 0,
            window_failed: 0,
        }
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
        let probe_stale =
            self.probe_since != 0 && now >= self.probe_since.saturating_add(settings.base_open_ms);
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
                window_ok: s.window_ok.saturating_add(1),
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
                return (
                    State::opened(settings, now, self.trips),
                    Some(Transition::Opened),
                );
            }
            return (self, None);
        }
        let s = self.roll(settings, now);
        let s = State {
            failures: s.failures.saturating_add(1),
            window_failed: s.window_failed.saturating_add(1),
            ..s
        };
        if s.failures >= settings.consecutive_failures || s.rate_exceeded(settings) {
            return (
                State::opened(settings, now, self.trips),
                Some(Transition::Opened),
            );
        }
        (s, None)
    }

    /// `ok` successes, then `failed` failures, all at `now`: the state that as
    /// many calls of [`State::success`] and [`State::failure`] would leave, in
    /// constant time whatever the counts (the control plane applies one report's
    /// counts per target at once). The transition is the last one: an opening
    /// when there was one, else a closing.
    pub fn record(
        self,
        settings: &Settings,
        now: u64,
        ok: u64,
        failed: u64,
    ) -> (State, Option<Transition>) {
        let (s, closed) = self.successes(settings, now, ok);
        let (s, opened) = s.failures(settings, now, failed);
        (s, opened.or(closed))
    }

    /// `n` successes at `now`.
    fn successes(self, settings: &Settings, now: u64, n: u64) -> (State, Option<Transition>) {
        if n == 0 {
            return (self, None);
        }
        let (s, t) = self.success(settings, now);
        if n == 1 {
            return (s, t);
        }
        // The first success closed the circuit and rolled the window if it was
        // over; at the same `now` the others only count, unless the window has
        // no length (then each starts a new one, and two leave what n leave).
        if settings.window_ms == 0 {
            return (s.success(settings, now).0, t);
        }
        let more = u32::try_from(n - 1).unwrap_or(u32::MAX);
        (
            State {
                window_ok: s.window_ok.saturating_add(more),
                ..s
            },
            t,
        )
    }

    /// `n` failures at `now`.
    fn failures(self, settings: &Settings, now: u64, n: u64) -> (State, Option<Transition>) {
        if n == 0 {
            return (self, None);
        }
        let (mut s, mut t, mut left) = (self, None, n);
        if s.open_until == 0 {
            let j = s.failures_to_open(settings, now);
            if j > left {
                return (s.closed_failures(settings, now, left), None);
            }
            s = State::opened(settings, now, s.trips);
            t = Some(Transition::Opened);
            left -= j;
        }
        // Open: the first failure re-opens it when it is a probe's or the
        // cool-down is over; that leaves it open past `now`, where failures
        // change nothing (unless `now` is so late that the time saturated).
        if left > 0 && (s.probe_since != 0 || now >= s.open_until) {
            s = State::opened(settings, now, s.trips);
            t = Some(Transition::Opened);
            left -= 1;
            if left > 0 && now >= s.open_until {
                let trips = s
                    .trips
                    .saturating_add(u32::try_from(left).unwrap_or(u32::MAX));
                s = State::opened(settings, now, trips.saturating_sub(1));
            }
        }
        (s, t)
    }

    /// How many failures from now on open this closed circuit.
    fn failures_to_open(&self, settings: &Settings, now: u64) -> u64 {
        let first = self.roll(settings, now);
        let by_count =
            u64::from(settings.consecutive_failures.saturating_sub(first.failures)).max(1);
        let by_rate = settings.failure_rate_percent.and_then(|pct| {
            let min = u64::from(settings.min_requests.max(1));
            if settings.window_ms == 0 {
                // Every failure starts a window holding only itself.
                return (min <= 1 && pct <= 100).then_some(1);
            }
            let (ok, failed) = (u64::from(first.window_ok), u64::from(first.window_failed));
            let by_volume = min.saturating_sub(ok + failed).max(1);
            // After j more failures the rate is reached when
            // (failed + j) * 100 >= pct * (ok + failed + j), that is
            // j * (100 - pct) >= pct * (ok + failed) - 100 * failed.
            let a = 100 - i128::from(pct);
            let b = i128::from(pct) * i128::from(ok + failed) - 100 * i128::from(failed);
            let by_ratio = match a {
                a if a > 0 => u64::try_from((b.max(0) + a - 1) / a).unwrap_or(u64::MAX),
                0 if b <= 0 => 1,
                // Over 100 %, or 100 % with a success in the window: never.
                _ => return None,
            };
            Some(by_volume.max(by_ratio).max(1))
        });
        by_rate.map_or(by_count, |r| r.min(by_count))
    }

    /// `n` failures that leave this closed circuit closed.
    fn closed_failures(self, settings: &Settings, now: u64, n: u64) -> State {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let s = self.roll(settings, now);
        let s = State {
            failures: s.failures.saturating_add(n),
            window_failed: s.window_failed.saturating_add(n),
            ..s
        };
        if settings.window_ms == 0 {
            // Each failure started a new window.
            State {
                window_start: now,
                window_ok: 0,
                window_failed: 1,
                ..s
            }
        } else {
            s
        }
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

    /// What `n` single calls leave: the reference for [`State::record`].
    fn one_by_one(
        st: State,
        s: &Settings,
        now: u64,
        ok: u64,
        failed: u64,
    ) -> (State, Option<Transition>) {
        let (mut st, mut last) = (st, None);
        for _ in 0..ok {
            let (next, t) = st.success(s, now);
            st = next;
            last = t.or(last);
        }
        for _ in 0..failed {
            let (next, t) = st.failure(s, now);
            st = next;
            last = t.or(last);
        }
        (st, last)
    }

    #[test]
    fn counts_at_once_leave_what_single_outcomes_leave() {
        // A small deterministic generator: the same cases on every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let now = 100_000;
        let mut checked = 0;
        for consecutive_failures in [1, 3, 7] {
            for failure_rate_percent in [None, Some(30), Some(50), Some(100), Some(150)] {
                for min_requests in [0, 1, 4, 12] {
                    for window_ms in [0, 100, 10_000] {
                        let s = Settings {
                            consecutive_failures,
                            base_open_ms: 1000,
                            max_open_ms: 8000,
                            failure_rate_percent,
                            window_ms,
                            min_requests,
                        };
                        for _ in 0..40 {
                            let st = State {
                                failures: next(8) as u32,
                                open_until: [0, now - 5, now, now + 5][next(4) as usize],
                                trips: next(5) as u32,
                                probe_since: [0, 0, now - 3][next(3) as usize],
                                window_start: [now - 20_000, now - 150, now - 50, now]
                                    [next(4) as usize],
                                window_ok: next(9) as u32,
                                window_failed: next(9) as u32,
                            };
                            let (ok, failed) = (next(15), next(15));
                            assert_eq!(
                                st.record(&s, now, ok, failed),
                                one_by_one(st, &s, now, ok, failed),
                                "{s:?} {st:?} ok={ok} failed={failed}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 5000);
    }

    #[test]
    fn huge_counts_cost_nothing_and_saturate() {
        let s = Settings {
            failure_rate_percent: Some(50),
            ..S
        };
        let t = std::time::Instant::now();
        let (st, tr) = State::default().record(&s, 10, u64::MAX, u64::MAX);
        assert_eq!(tr, Some(Transition::Opened));
        assert_eq!(st.open_until, 1010);
        let (st, tr) = State::default().record(&s, 10, u64::MAX, 1);
        assert_eq!((tr, st.window_ok, st.failures), (None, u32::MAX, 1));
        let (st, _) = st.record(&s, u64::MAX, 0, u64::MAX);
        assert_eq!(st.open_until, u64::MAX, "saturated, not wrapped");
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
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
