//! Governance decisions on their way to the control plane's audit log: a
//! planner appends its request's decision when the request ends ([`record`]),
//! the fleet exchange takes them into its report ([`take`]).
//!
//! One bounded buffer per Envoy, in shared state: the native module's exchange
//! runs on Envoy's main thread, where a worker's own memory is out of reach, and
//! on proxy-wasm every worker's exchange drains it. It is a ring of
//! [`CAPACITY`] slots, `sy:gov:d:<n>`, and `sy:gov:dq` = `<next>,<taken>,<stuck>`:
//! a decision claims sequence number `next` with one compare-and-swap and
//! writes slot `next % CAPACITY` as `<seq> <json>`; a report reads the slots
//! from `taken` on and moves `taken` past what it read (with a compare-and-swap
//! that fails if another worker's report took them first). Per decision that is
//! two small shared reads or writes and one of its own size, whatever the ring
//! holds.
//!
//! When the ring is full a decision is counted in `sy:gov:dropped` instead of
//! kept, and the next report carries the count: the control plane records how
//! many decisions were not recorded one by one, so the audit log is never
//! silently short. A slot claimed but never written (its writer's host call
//! failed) holds the ring up for one report, then is skipped and counted.

use std::cell::Cell;

use switchyard_core::governance::{Decision, MAX_DECISION_BYTES, MAX_DECISIONS};

use crate::host::{self, Cas, Host};

const QUEUE: &str = "sy:gov:dq";
const DROPPED: &str = "sy:gov:dropped";

/// Decisions the ring holds: two full reports' worth, so a burst, or the
/// reports missed while the control plane is away for a moment, waits for
/// the next report instead of being counted as dropped.
pub const CAPACITY: u64 = 2 * MAX_DECISIONS as u64;

fn slot_key(seq: u64) -> String {
    format!("sy:gov:d:{}", seq % CAPACITY)
}

/// The ring's positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Queue {
    /// The next sequence number to claim.
    next: u64,
    /// Everything before this was taken.
    taken: u64,
    /// 1 + the sequence number a report found claimed but not written (0:
    /// none): the next report skips it if it is still not written.
    stuck: u64,
}

impl Queue {
    fn decode(v: &[u8]) -> Queue {
        let v = std::str::from_utf8(v).unwrap_or_default();
        let mut it = v.split(',').map(|n| n.parse::<u64>().unwrap_or(0));
        let (next, taken, stuck) = (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        );
        Queue {
            next,
            taken: taken.min(next),
            stuck,
        }
    }

    fn encode(self) -> Vec<u8> {
        format!("{},{},{}", self.next, self.taken, self.stuck).into_bytes()
    }
}

/// Keeps `d` for the next report, or counts it as dropped when the ring is
/// full.
pub fn record(host: &impl Host, d: &Decision) {
    let json = serde_json::to_string(d).unwrap_or_default();
    let claimed = Cell::new(None);
    let ok = host::shared_update(host, QUEUE, |v| {
        let q = Queue::decode(v);
        if q.next - q.taken >= CAPACITY {
            claimed.set(None);
            return None;
        }
        claimed.set(Some(q.next));
        Some(
            Queue {
                next: q.next + 1,
                ..q
            }
            .encode(),
        )
    });
    match claimed.get().filter(|_| ok) {
        // Not written: the slot is skipped and counted by a later report.
        Some(seq) => {
            let _ = host.shared_set(&slot_key(seq), format!("{seq} {json}").as_bytes(), None);
        }
        None => add_dropped(host, 1),
    }
}

/// Counts `n` decisions that will not reach the audit log one by one.
pub fn add_dropped(host: &impl Host, n: u64) {
    if n == 0 {
        return;
    }
    host::shared_update(host, DROPPED, |v| {
        Some(count(v).saturating_add(n).to_string().into_bytes())
    });
}

fn count(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What a slot holds for sequence number `seq`.
enum Slot {
    /// The decision and its size.
    Decision(Decision, usize),
    /// Not written yet for `seq` (empty, or an earlier lap's decision).
    Unwritten,
    /// Written but not a decision (counted as dropped).
    Unreadable,
}

fn read_slot(host: &impl Host, seq: u64) -> Slot {
    let v = host.shared_get(&slot_key(seq)).0.unwrap_or_default();
    let v = std::str::from_utf8(&v).unwrap_or_default();
    let Some((n, json)) = v.split_once(' ') else {
        return Slot::Unwritten;
    };
    if n.parse::<u64>().ok() != Some(seq) {
        return Slot::Unwritten;
    }
    match serde_json::from_str(json) {
        Ok(d) => Slot::Decision(d, json.len()),
        Err(_) => Slot::Unreadable,
    }
}

/// What [`take`] took for one report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The oldest decisions waiting.
    pub decisions: Vec<Decision>,
    /// Decisions dropped since the last report.
    pub dropped: u64,
    /// The report is full: more decisions wait beyond it.
    pub more: bool,
}

/// Takes the decisions for one report: the oldest first, at most
/// [`MAX_DECISIONS`] and [`MAX_DECISION_BYTES`] of them (the rest wait for the
/// next report), and how many were dropped since the last report.
pub fn take(host: &impl Host) -> Taken {
    let mut out = Taken::default();
    let mut skipped = 0u64;
    let mut claimed = false;
    // Another worker's report may take the same decisions first: then read
    // again from where it stopped.
    'read: for _ in 0..4 {
        let (v, mut cas) = host.shared_get(QUEUE);
        let q = Queue::decode(v.as_deref().unwrap_or_default());
        out = Taken::default();
        skipped = 0;
        let (mut at, mut stuck, mut bytes) = (q.taken, 0, 0);
        while at < q.next {
            if out.decisions.len() == MAX_DECISIONS {
                out.more = true;
                break;
            }
            match read_slot(host, at) {
                Slot::Decision(d, len) => {
                    if bytes + len > MAX_DECISION_BYTES {
                        out.more = true;
                        break;
                    }
                    bytes += len;
                    out.decisions.push(d);
                }
                Slot::Unreadable => skipped += 1,
                Slot::Unwritten if q.stuck == at + 1 => skipped += 1,
                Slot::Unwritten => {
                    stuck = at + 1;
                    break;
                }
            }
            at += 1;
        }
        if at == q.taken && stuck == q.stuck {
            claimed = true;
            break;
        }
        // Decisions claimed meanwhile move `next` on: keep it, move `taken`.
        let mut current = q;
        for _ in 0..8 {
            let moved = Queue {
                taken: at,
                stuck,
                ..current
            };
            match host.shared_set(QUEUE, &moved.encode(), cas) {
                Cas::Done => {
                    claimed = true;
                    break 'read;
                }
                Cas::Failed => break 'read,
                Cas::Conflict => {
                    let (v, c) = host.shared_get(QUEUE);
                    current = Queue::decode(v.as_deref().unwrap_or_default());
                    cas = c;
                    if current.taken != q.taken {
                        continue 'read;
                    }
                }
            }
        }
        // Could not move `taken`: the decisions stay for the next report.
        break;
    }
    if !claimed {
        return Taken::default();
    }
    let dropped = Cell::new(0);
    host::shared_update(host, DROPPED, |v| {
        let n = count(v);
        dropped.set(n);
        (n != 0).then(|| b"0".to_vec())
    });
    out.dropped = dropped.get().saturating_add(skipped);
    out
}

/// Decisions waiting for a report.
pub fn backlog(host: &impl Host) -> u64 {
    let q = Queue::decode(&host.shared_get(QUEUE).0.unwrap_or_default());
    q.next - q.taken
}

/// Puts back what a report that did not arrive carried (decisions that no
/// longer fit are counted as dropped).
pub fn restore(host: &impl Host, decisions: &[Decision], dropped: u64) {
    for d in decisions {
        record(host, d);
    }
    add_dropped(host, dropped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemHost;
    use switchyard_core::governance::Reason;

    fn decision(n: u64) -> Decision {
        Decision::new(n, &format!("req-{n}"), Reason::KeyUnknown)
    }

    fn pair(t: Taken) -> (Vec<Decision>, u64) {
        (t.decisions, t.dropped)
    }

    fn ids(ds: &[Decision]) -> Vec<u64> {
        ds.iter().map(|d| d.at_ms).collect()
    }

    #[test]
    fn decisions_go_out_in_order_and_once() {
        let host = MemHost::with_request(&[]);
        assert_eq!(pair(take(&host)), (vec![], 0));
        for n in 0..3 {
            record(&host, &decision(n));
        }
        let (got, dropped) = pair(take(&host));
        assert_eq!((ids(&got), dropped), (vec![0, 1, 2], 0));
        assert_eq!(got[1].request_id, "req-1");
        assert_eq!(pair(take(&host)), (vec![], 0), "taken once");
        // Around the ring several times.
        for lap in 0..3 {
            for n in 0..CAPACITY {
                record(&host, &decision(lap * CAPACITY + n));
            }
            let first = take(&host);
            assert!(first.more, "a full report, more waiting");
            let (a, _) = pair(first);
            let second = take(&host);
            assert!(!second.more);
            let (b, dropped) = pair(second);
            assert_eq!(
                (a.len(), b.len(), dropped),
                (MAX_DECISIONS, MAX_DECISIONS, 0)
            );
            assert_eq!(a[0].at_ms, lap * CAPACITY);
            assert_eq!(b[MAX_DECISIONS - 1].at_ms, (lap + 1) * CAPACITY - 1);
        }
    }

    #[test]
    fn a_full_ring_counts_what_it_cannot_keep() {
        let host = MemHost::with_request(&[]);
        for n in 0..CAPACITY + 5 {
            record(&host, &decision(n));
        }
        assert_eq!(backlog(&host), CAPACITY);
        let (first, dropped) = pair(take(&host));
        assert_eq!((first.len(), dropped), (MAX_DECISIONS, 5));
        assert_eq!(backlog(&host), CAPACITY - MAX_DECISIONS as u64);
        assert_eq!(first[0].at_ms, 0, "the oldest are kept, the newest counted");
        // Room again: a new decision is kept after those still waiting.
        record(&host, &decision(9_999));
        let (second, dropped) = pair(take(&host));
        assert_eq!((second.len(), dropped), (MAX_DECISIONS, 0));
        let (third, _) = pair(take(&host));
        assert_eq!(ids(&third), vec![9_999]);
        // A report that did not arrive puts its decisions back; what no
        // longer fits is counted with the count it carried.
        for n in 0..CAPACITY - 1 {
            record(&host, &decision(n));
        }
        restore(&host, &third, 7);
        restore(&host, &[decision(1), decision(2)], 0);
        let mut total = 0;
        let mut dropped = 0;
        loop {
            let (got, d) = pair(take(&host));
            dropped += d;
            if got.is_empty() {
                break;
            }
            total += got.len() as u64;
        }
        assert_eq!((total, dropped), (CAPACITY, 7 + 2));
    }

    #[test]
    fn a_report_holds_a_bounded_number_of_bytes() {
        let host = MemHost::with_request(&[]);
        // Quotes: twice their length in JSON.
        let long = "\"".repeat(switchyard_core::governance::MAX_REQUEST_ID_BYTES);
        for n in 0..CAPACITY {
            record(&host, &Decision::new(n, &long, Reason::KeyMissing));
        }
        let (got, _) = pair(take(&host));
        let bytes: usize = got
            .iter()
            .map(|d| serde_json::to_string(d).unwrap().len())
            .sum();
        assert!(got.len() < MAX_DECISIONS && bytes <= MAX_DECISION_BYTES);
        assert!(bytes > MAX_DECISION_BYTES - 400, "filled: {bytes}");
    }

    #[test]
    fn a_slot_never_written_holds_one_report_then_is_counted() {
        let host = MemHost::with_request(&[]);
        record(&host, &decision(0));
        // Claimed by a writer whose slot write did not happen (yet).
        let q = Queue::decode(&host.shared_get(QUEUE).0.unwrap());
        host.shared_set(
            QUEUE,
            &Queue {
                next: q.next + 1,
                ..q
            }
            .encode(),
            None,
        );
        record(&host, &decision(2));
        let (got, dropped) = pair(take(&host));
        assert_eq!((ids(&got), dropped), (vec![0], 0), "waits at the gap");
        let (got, dropped) = pair(take(&host));
        assert_eq!((ids(&got), dropped), (vec![2], 1), "then skips it, counted");
        // A late write to the skipped slot is never read.
        host.shared_set(
            &slot_key(1),
            format!("1 {}", serde_json::to_string(&decision(1)).unwrap()).as_bytes(),
            None,
        );
        assert_eq!(pair(take(&host)), (vec![], 0));
        // Garbage in a slot is counted, not sent.
        record(&host, &decision(3));
        host.shared_set(&slot_key(3), b"3 {not json", None);
        record(&host, &decision(4));
        let (got, dropped) = pair(take(&host));
        assert_eq!((ids(&got), dropped), (vec![4], 1));
    }
}
