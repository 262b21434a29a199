//! The allowance control planes sharing one database lend between them: lending
//! one level above `meter.rs`.
//!
//! Each meter window's allowance lives in the database as a [`Window`]: what no
//! control plane (replica) holds (`unlent`), each replica's [`Slice`] (what it
//! took, and what its Envoys used of it), and the use of the window so far. A
//! replica borrows slices in a transaction (`BEGIN IMMEDIATE`: the others wait),
//! lends them to its Envoys exactly as a lone control plane lends its meters,
//! and gives back what it does not need in the same way. Tokens move one way
//! per transaction and a transaction either happens or not, so
//! `unlent + Σ (taken − used) + used = limit` at every commit
//! ([`Window::balanced`]): replicas together never lend more than the limit.
//!
//! - **Alone** (no other live replica), a replica takes everything unlent at
//!   once: a lone control plane behaves and performs as before (one
//!   transaction per meter window, none per exchange).
//! - **With others**, a slice is what the replica's Envoys want (about a
//!   second of their demand), at most a share of what is left
//!   (`free / (2 × replicas)`): small slices near the end, so replicas do not
//!   starve each other; never smaller than the request it is wanted for (all
//!   or nothing, as grants).
//! - **Credit**: an Envoy may spend `limit / (2 × envoys in the fleet)` before
//!   its first grant in a window, so every replica keeps credit for its
//!   Envoys in its slice, and the window keeps it for live replicas that hold
//!   no slice of it yet ([`Window::kept_for`]): they may not have heard of the
//!   window while their Envoys spend.
//! - **A replica that is gone** (not seen for [`LEASE_MS`]) gets no more
//!   credit kept; the part of its slice it held unlent goes back, what its
//!   Envoys held or could spend on credit stays out (a control plane that
//!   comes back under the same address resumes its slice and adopts what its
//!   Envoys hold).

use std::collections::BTreeMap;

use switchyard_core::governance::credit;

/// A replica not seen for this long is gone (heartbeats are once a second).
pub const LEASE_MS: u64 = 30_000;

/// How long an ask that could not be met keeps other replicas releasing the
/// credit the window keeps for them.
const NEED_MS: u64 = 2_000;

/// A control plane on the database, as it last said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Its status address (stable across restarts: a restarted control plane
    /// resumes its slices).
    pub id: String,
    /// Envoys reporting to it.
    pub envoys: u32,
    /// The fewest Envoys in the fleet it told its Envoys lately (their credit
    /// is `limit / (2 × told)`).
    pub told: u32,
}

impl Replica {
    /// Credit its Envoys may spend on a meter of `limit` before a grant.
    fn credit(&self, limit: u64) -> i64 {
        (credit(limit, self.told) as i64).saturating_mul(i64::from(self.envoys))
    }
}

/// One replica's part of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slice {
    /// Taken from the window (less what was given back).
    pub taken: i64,
    /// Used by its Envoys (as it flushed it).
    pub used: i64,
    /// What its Envoys held or could spend on credit at the last flush: kept
    /// out when the replica is gone.
    pub kept: i64,
}

/// One meter window as the database keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The limit.
    pub limit: u64,
    /// Held by no replica (negative after a limit was lowered).
    pub unlent: i64,
    /// Used in the window, fleet-wide, as replicas flushed it.
    pub used: i64,
    /// The largest ask that could not be met lately…
    pub need: i64,
    /// …and when (Unix ms).
    pub need_ms: u64,
    /// Each replica's slice.
    pub slices: BTreeMap<String, Slice>,
}

/// What a replica asks of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// Owed: credit its Envoys may spend, or spent, that its slice does not
    /// cover. Given as far as it can be.
    pub owed: i64,
    /// Wanted on top (its Envoys' demand for about a second).
    pub want: i64,
    /// The least of `want` that is of use (a request's estimate).
    pub at_least: i64,
}

/// What a replica knows of a window after a transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// What it could still take.
    pub free: i64,
    /// What other live replicas hold unused (it may come back).
    pub others: i64,
    /// Used fleet-wide, as flushed.
    pub used: i64,
    /// An ask another replica could not meet lately (0: none).
    pub need: i64,
}

impl Window {
    /// A window with `limit`, of which `used` was used already (saved use of
    /// a budget's window).
    pub fn new(limit: u64, used: i64) -> Window {
        Window {
            limit,
            unlent: limit as i64 - used,
            used,
            ..Window::default()
        }
    }

    /// `unlent + Σ (taken − used) + used = limit`.
    pub fn balanced(&self) -> bool {
        let held: i64 = self.slices.values().map(|s| s.taken - s.used).sum();
        self.unlent + held + self.used == self.limit as i64
    }

    /// A changed limit changes what is unlent.
    pub fn set_limit(&mut self, limit: u64) {
        self.unlent += limit as i64 - self.limit as i64;
        self.limit = limit;
    }

    /// Credit kept for the Envoys of live replicas (`others`) that hold no
    /// slice of this window yet.
    pub fn kept_for(&self, others: &[Replica]) -> i64 {
        others
            .iter()
            .filter(|r| !self.slices.contains_key(&r.id))
            .map(|r| r.credit(self.limit))
            .sum()
    }

    /// What a replica could take, `others` being the other live replicas.
    pub fn free(&self, others: &[Replica]) -> i64 {
        self.unlent - self.kept_for(others)
    }

    /// `me`'s slice (zero when it has none).
    pub fn slice(&self, me: &str) -> Slice {
        self.slices.get(me).copied().unwrap_or_default()
    }

    /// Gives `me` what it asks as far as the window allows (all that is free
    /// when no other replica is live); returns how much.
    pub fn take(&mut self, me: &str, ask: &Ask, others: &[Replica], now_ms: u64) -> i64 {
        let free = self.free(others).max(0);
        let n = if others.is_empty() {
            free
        } else {
            let owed = ask.owed.clamp(0, free);
            let rest = free - owed;
            // About a second of demand, but at most a share of what is left:
            // small slices near the end.
            let share = rest / (2 * (others.len() as i64 + 1));
            let slice = ask.want.min(share.max(ask.at_least)).min(rest).max(0);
            // All or nothing: a slice too small for the request it is wanted
            // for would sit unused here while another replica waits.
            owed + if slice < ask.at_least { 0 } else { slice }
        };
        if ask.want > 0 && n < ask.owed + ask.at_least.max(1) {
            self.need = ask.at_least.max(1);
            self.need_ms = now_ms;
        }
        if n > 0 || self.slices.contains_key(me) || ask.owed == 0 {
            // The slice exists from now on: the window keeps no credit for
            // `me` any more (its own slice does).
            let s = self.slices.entry(me.to_string()).or_default();
            s.taken += n;
            self.unlent -= n;
        }
        n
    }

    /// `me` gives back `n` (at most what it holds unused); returns how much.
    pub fn give(&mut self, me: &str, n: i64) -> i64 {
        let Some(s) = self.slices.get_mut(me) else {
            return 0;
        };
        let n = n.clamp(0, (s.taken - s.used).max(0));
        s.taken -= n;
        self.unlent += n;
        n
    }

    /// After a lowered limit: `me` gives back up to `n` of what it holds
    /// unused, as far as the window is short.
    pub fn cover(&mut self, me: &str, n: i64) -> i64 {
        if self.unlent >= 0 {
            return 0;
        }
        self.give(me, n.min(-self.unlent))
    }

    /// `me`'s Envoys used `used` more; `kept` is what they hold or may spend
    /// on credit now.
    pub fn flush(&mut self, me: &str, used: i64, kept: i64) {
        let s = self.slices.entry(me.to_string()).or_default();
        s.used += used;
        s.kept = kept.max(0);
        self.used += used;
    }

    /// `gone` is gone: what it held unlent comes back; what its Envoys held or
    /// could spend on credit stays out (errs toward refusing).
    pub fn reclaim(&mut self, gone: &str) {
        if let Some(s) = self.slices.get_mut(gone) {
            let spare = (s.taken - s.used - s.kept).max(0);
            s.taken -= spare;
            self.unlent += spare;
        }
    }

    /// The window as `me` sees it.
    pub fn view(&self, me: &str, others: &[Replica], now_ms: u64) -> View {
        View {
            free: self.free(others),
            others: others
                .iter()
                .filter_map(|r| self.slices.get(&r.id))
                .map(|s| (s.taken - s.used).max(0))
                .sum(),
            used: self.used,
            need: if now_ms.saturating_sub(self.need_ms) < NEED_MS && !self.slices.contains_key(me)
            {
                self.need
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, envoys: u32, told: u32) -> Replica {
        Replica {
            id: id.into(),
            envoys,
            told,
        }
    }

    #[test]
    fn alone_a_replica_takes_everything_at_once() {
        let mut w = Window::new(1000, 100);
        let n = w.take("a", &Ask::default(), &[], 0);
        assert_eq!((n, w.unlent), (900, 0));
        assert!(w.balanced());
        // A raised limit is taken with the next transaction.
        w.set_limit(1200);
        assert_eq!(w.take("a", &Ask::default(), &[], 0), 200);
        // A lowered one is covered by what the replica holds unused.
        w.set_limit(1000);
        assert_eq!(w.cover("a", 500), 200);
        assert_eq!(w.unlent, 0);
        assert!(w.balanced());
    }

    #[test]
    fn with_others_slices_are_a_second_of_demand_and_small_near_the_end() {
        // 3 Envoys in the fleet, told 3: credit 1000 / 6 = 166 each.
        let a = replica("a", 2, 3);
        let b = replica("b", 1, 3);
        let mut w = Window::new(1000, 0);
        // b holds no slice: its Envoy's credit is kept for it.
        assert_eq!(w.kept_for(std::slice::from_ref(&b)), 166);
        let ask = Ask {
            owed: 332,
            want: 100,
            at_least: 10,
        };
        let n = w.take("a", &ask, std::slice::from_ref(&b), 0);
        assert_eq!(n, 432, "its credit, then its demand");
        assert_eq!(w.free(std::slice::from_ref(&b)), 1000 - 432 - 166);
        // b takes its own credit: nothing is kept for it any more.
        let n = w.take(
            "b",
            &Ask {
                owed: 166,
                ..Ask::default()
            },
            std::slice::from_ref(&a),
            0,
        );
        assert_eq!(n, 166);
        assert_eq!(w.kept_for(std::slice::from_ref(&b)), 0);
        // Near the end a big demand gets a share of what is left…
        let left = w.unlent;
        let big = Ask {
            owed: 0,
            want: 10_000,
            at_least: 10,
        };
        assert_eq!(w.take("a", &big, std::slice::from_ref(&b), 0), left / 4);
        assert!(w.balanced());
        // …never less than the request it is for, and nothing when even that
        // cannot be met: the need is left for replicas without a slice to see.
        let idle = replica("a", 0, 3);
        let mut end = Window::new(30, 0);
        let ask = Ask {
            owed: 0,
            want: 100,
            at_least: 20,
        };
        assert_eq!(end.take("b", &ask, std::slice::from_ref(&idle), 5), 20);
        assert_eq!(end.take("b", &ask, std::slice::from_ref(&idle), 6), 0);
        assert!(end.balanced());
        assert_eq!(end.view("b", &[], 7).need, 0, "b has a slice");
        assert_eq!(end.view("a", &[], 7).need, 20);
        assert_eq!(end.view("a", &[], 6 + NEED_MS).need, 0);
    }

    #[test]
    fn a_gone_replica_returns_what_it_held_unlent() {
        let a = replica("a", 1, 2);
        let mut w = Window::new(1000, 0);
        w.take("a", &Ask::default(), &[], 0);
        w.flush("a", 300, 150);
        w.reclaim("a");
        // 1000 taken, 300 used, 150 held by its Envoys: 550 back.
        assert_eq!((w.unlent, w.slice("a").taken), (550, 450));
        assert!(w.balanced());
        // Giving back never gives what was used.
        assert_eq!(w.give("a", 10_000), 150);
        assert!(w.balanced());
        assert_eq!(w.view("b", std::slice::from_ref(&a), 0).others, 0);
    }
}
