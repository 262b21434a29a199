//! The audit log: one JSON record per line, each carrying the SHA-256 of the one
//! before it, so a changed, removed or reordered record breaks the chain
//! ([`verify`]). The head (last sequence number and hash) is also kept in the
//! key database: records cut off the end are noticed too. Keys, key hashes and
//! prompts never appear in it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchyard_core::sigv4::hex;

use super::store::{AuditHead, Store};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One record as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3 …
    pub seq: u64,
    /// Unix ms.
    pub ts_ms: u64,
    /// What happened: `key.created`, `key.updated`, `key.revoked`, `team.set`,
    /// `config.applied`, `request` (governance's decision on one request),
    /// `requests.unrecorded` (how many decisions a node could not report one
    /// by one).
    pub event: String,
    /// Details (ids, names, limits, counts; never a key).
    pub detail: Value,
    /// Hash of the previous record.
    pub prev: String,
    /// SHA-256 of `prev` and this record without `hash`.
    pub hash: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    ts_ms: u64,
    event: &'a str,
    detail: &'a Value,
    prev: &'a str,
}

fn hash_of(seq: u64, ts_ms: u64, event: &str, detail: &Value, prev: &str) -> String {
    let body = serde_json::to_vec(&Hashed {
        seq,
        ts_ms,
        event,
        detail,
        prev,
    })
    .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(&body);
    hex(&h.finalize())
}

/// Why the log cannot be appended to.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// File trouble.
    #[error("audit log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The log, open for appending.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    inner: Mutex<(std::fs::File, u64, String)>,
}

impl Log {
    /// Opens (or creates) the log and finds its head. A chain already broken is
    /// reported (`verify` names the record) and appending goes on after the last
    /// record.
    pub fn open(path: &Path) -> Result<Log, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let (mut seq, mut head) = (0, GENESIS.to_string());
        if path.exists() {
            match verify(path, None) {
                Ok(v) => {
                    seq = v.records;
                    head = v.head;
                }
                Err(e) => {
                    tracing::error!("audit log {}: {e}", path.display());
                    if let Some(last) = last_record(path) {
                        seq = last.seq;
                        head = last.hash;
                    }
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Log {
            path: path.to_path_buf(),
            inner: Mutex::new((file, seq, head)),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record (and records the new head in `store`).
    pub fn append(&self, store: Option<&Store>, ts_ms: u64, event: &str, detail: Value) {
        self.append_all(store, ts_ms, vec![(event, detail)]);
    }

    /// Appends records, chained in their order, with one write of the file
    /// and one update of the head in `store` (a fleet report's decisions: the
    /// cost of a report is one write, however many it carries).
    pub fn append_all(&self, store: Option<&Store>, ts_ms: u64, records: Vec<(&str, Value)>) {
        if records.is_empty() {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let Some(store) = store else {
            self.write(&mut g, ts_ms, records);
            return;
        };
        let written = store.append_audit(&self.path, |head| {
            // Another control plane appended to this file since our last record.
            if let Some(h) = head.filter(|h| h.seq > g.1) {
                (g.1, g.2) = (h.seq, h.hash);
            }
            self.write(&mut g, ts_ms, records)
        });
        if let Err(e) = written {
            tracing::error!("audit head: {e}");
        }
    }

    /// Chains `records` after the head in `g` and writes them at once; the new
    /// head, or `None` when the file refused them.
    fn write(
        &self,
        g: &mut (std::fs::File, u64, String),
        ts_ms: u64,
        records: Vec<(&str, Value)>,
    ) -> Option<AuditHead> {
        let (mut seq, mut prev) = (g.1, g.2.clone());
        let mut lines = Vec::with_capacity(records.len() * 256);
        for (event, detail) in records {
            seq += 1;
            let hash = hash_of(seq, ts_ms, event, &detail, &prev);
            let record = Record {
                seq,
                ts_ms,
                event: event.to_string(),
                detail,
                prev,
                hash: hash.clone(),
            };
            lines.extend(serde_json::to_vec(&record).unwrap_or_default());
            lines.push(b'\n');
            prev = hash;
        }
        // One write of an append-only file: records of control planes sharing
        // it never interleave.
        if let Err(e) = g.0.write_all(&lines).and_then(|()| g.0.flush()) {
            tracing::error!("audit log {}: cannot append: {e}", self.path.display());
            return None;
        }
        (g.1, g.2) = (seq, prev.clone());
        Some(AuditHead { seq, hash: prev })
    }
}

fn last_record(path: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Record>(l).ok())
}

/// A chain that holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records in the log.
    pub records: u64,
    /// Hash of the last one.
    pub head: String,
}

/// Where the chain breaks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Tamper {
    /// Not readable.
    #[error("cannot read the log: {0}")]
    Read(String),
    /// A line is not a record.
    #[error("line {line}: not an audit record ({why})")]
    Malformed {
        /// 1-based line.
        line: usize,
        /// Parser message.
        why: String,
    },
    /// A record's content does not match its hash: it was changed.
    #[error(
        "line {line} (record {seq}): its hash does not match its content: the record was changed"
    )]
    Changed {
        /// 1-based line.
        line: usize,
        /// Its sequence number.
        seq: u64,
    },
    /// A record does not follow the one before it: one was removed, inserted or
    /// the order changed.
    #[error(
        "line {line} (record {seq}): expected record {expected} chained to the previous one: records were removed or reordered"
    )]
    Broken {
        /// 1-based line.
        line: usize,
        /// Its sequence number.
        seq: u64,
        /// The sequence number that should be there.
        expected: u64,
    },
    /// The log ends before the head recorded in the database.
    #[error(
        "the log ends at record {found} but record {expected} was written ({head}): records were cut off the end"
    )]
    Truncated {
        /// Last record in the file.
        found: u64,
        /// Last record the database knows.
        expected: u64,
        /// Its hash.
        head: String,
    },
}

/// Checks the chain from the first record; with `head`, also that the log
/// ends where the database says it does.
pub fn verify(path: &Path, head: Option<&AuditHead>) -> Result<Verified, Tamper> {
    let file = std::fs::File::open(path).map_err(|e| Tamper::Read(e.to_string()))?;
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Tamper::Read(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line).map_err(|e| Tamper::Malformed {
            line: i + 1,
            why: e.to_string(),
        })?;
        if hash_of(r.seq, r.ts_ms, &r.event, &r.detail, &r.prev) != r.hash {
            return Err(Tamper::Changed {
                line: i + 1,
                seq: r.seq,
            });
        }
        if r.seq != n + 1 || r.prev != prev {
            return Err(Tamper::Broken {
                line: i + 1,
                seq: r.seq,
                expected: n + 1,
            });
        }
        n = r.seq;
        prev = r.hash;
    }
    if let Some(h) = head
        && (h.seq > n || (h.seq == n && h.hash != prev))
    {
        return Err(Tamper::Truncated {
            found: n,
            expected: h.seq,
            head: h.hash.clone(),
        });
    }
    Ok(Verified {
        records: n,
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: u64) -> (PathBuf, Vec<String>) {
        let dir = std::env::temp_dir().join(format!(
            "sy-audit-{}-{n}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.log");
        let log = Log::open(&path).unwrap();
        for i in 0..n {
            log.append(
                None,
                1000 + i,
                "key.created",
                serde_json::json!({"id": format!("key_{i}")}),
            );
        }
        let lines = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        (path, lines)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sy-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn event(log: &Log, store: &Store, i: u64) {
        log.append(
            Some(store),
            1000 + i,
            "key.created",
            serde_json::json!({"id": i}),
        );
    }

    #[test]
    fn control_planes_sharing_a_database_keep_a_head_per_log() {
        let dir = scratch("per-log");
        let store = Store::open(&dir.join("switchyard.db")).unwrap();
        let (a, b) = (dir.join("a/audit.log"), dir.join("b/audit.log"));
        let (log_a, log_b) = (Log::open(&a).unwrap(), Log::open(&b).unwrap());
        for i in 0..3 {
            event(&log_a, &store, i);
            event(&log_b, &store, i);
        }
        event(&log_a, &store, 9);
        for (path, n) in [(&a, 4), (&b, 3)] {
            let head = store.audit_head(path).unwrap();
            assert_eq!(head.as_ref().map(|h| h.seq), Some(n));
            assert_eq!(verify(path, head.as_ref()).unwrap().records, n);
        }
    }

    #[test]
    fn control_planes_writing_one_log_continue_each_others_chain() {
        let dir = scratch("one-log");
        // Two processes: each its own connection to the database and its own
        // handle on the log.
        let (db, path) = (dir.join("switchyard.db"), dir.join("audit.log"));
        let (store_1, store_2) = (Store::open(&db).unwrap(), Store::open(&db).unwrap());
        let (log_1, log_2) = (Log::open(&path).unwrap(), Log::open(&path).unwrap());
        event(&log_1, &store_1, 1);
        event(&log_2, &store_2, 2);
        event(&log_2, &store_2, 3);
        event(&log_1, &store_1, 4);
        log_1.append_all(
            Some(&store_1),
            2000,
            vec![
                ("request", serde_json::json!({})),
                ("request", serde_json::json!({})),
            ],
        );
        let head = store_2.audit_head(&path).unwrap();
        assert_eq!(verify(&path, head.as_ref()).unwrap().records, 6);
    }

    #[test]
    fn the_chain_catches_changes_removals_and_reordering() {
        let (path, lines) = log_with(4);
        let v = verify(&path, None).unwrap();
        assert_eq!(v.records, 4);
        // Appending after a reopen continues the chain.
        Log::open(&path).unwrap().append(
            None,
            2000,
            "key.revoked",
            serde_json::json!({"id": "key_1"}),
        );
        assert_eq!(verify(&path, None).unwrap().records, 5);
        // A batch chains like single records, in its order.
        let log = Log::open(&path).unwrap();
        log.append_all(
            None,
            2001,
            (0..3)
                .map(|i| {
                    (
                        "request",
                        serde_json::json!({"request_id": format!("r{i}")}),
                    )
                })
                .collect(),
        );
        log.append_all(None, 2002, Vec::new());
        log.append(
            None,
            2003,
            "key.revoked",
            serde_json::json!({"id": "key_2"}),
        );
        let v = verify(&path, None).unwrap();
        assert_eq!(v.records, 9);
        assert_eq!(
            last_record(&path).map(|r| (r.seq, r.hash)),
            Some((9, v.head))
        );

        let write = |ls: &[String]| std::fs::write(&path, ls.join("\n") + "\n").unwrap();
        let mut changed = lines.clone();
        changed[1] = changed[1].replace("key_1", "key_9");
        write(&changed);
        assert!(matches!(
            verify(&path, None),
            Err(Tamper::Changed { line: 2, .. })
        ));

        let mut removed = lines.clone();
        removed.remove(1);
        write(&removed);
        assert!(matches!(
            verify(&path, None),
            Err(Tamper::Broken { line: 2, .. })
        ));

        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        write(&reordered);
        assert!(matches!(
            verify(&path, None),
            Err(Tamper::Broken { line: 2, .. })
        ));

        write(&lines[..3]);
        let head = AuditHead {
            seq: 4,
            hash: "x".into(),
        };
        assert!(matches!(
            verify(&path, Some(&head)),
            Err(Tamper::Truncated { found: 3, .. })
        ));
    }
}
