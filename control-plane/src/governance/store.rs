//! The key store: an embedded SQLite database (`<data dir>/switchyard.db` by
//! default). Keys are stored by their SHA-256 only. Several control planes on one
//! host may share the file (WAL, a busy timeout, and a revision counter each
//! polls to pick up the others' changes); they lend the meters' allowance
//! between them through it ([`Store::lend`], `pool.rs`). Control planes on
//! several hosts would put a server database behind the same methods (SQLite's
//! locking is not safe over network file systems).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use switchyard_core::governance::Dim;

use super::pool::{Replica, Slice, Window};
use super::{KeyDoc, TeamDoc};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("key database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored document did not parse.
    #[error("key database: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The folder could not be made.
    #[error("key database: {0}")]
    Io(#[from] std::io::Error),
}

/// The database.
#[derive(Debug)]
pub struct Store {
    db: Mutex<Connection>,
    /// Lending transactions so far ([`Store::lend`]).
    lends: AtomicU64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY,
  sha256 TEXT NOT NULL UNIQUE,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS teams (
  name TEXT PRIMARY KEY,
  doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
  subject TEXT NOT NULL,
  dim TEXT NOT NULL,
  win INTEGER NOT NULL,
  used INTEGER NOT NULL,
  PRIMARY KEY (subject, dim, win)
);
CREATE TABLE IF NOT EXISTS meta (
  k TEXT PRIMARY KEY,
  v TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS allowance (
  subject TEXT NOT NULL,
  dim TEXT NOT NULL,
  win INTEGER NOT NULL,
  lim INTEGER NOT NULL,
  unlent INTEGER NOT NULL,
  used INTEGER NOT NULL,
  need INTEGER NOT NULL DEFAULT 0,
  need_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (subject, dim, win)
);
CREATE TABLE IF NOT EXISTS slices (
  subject TEXT NOT NULL,
  dim TEXT NOT NULL,
  win INTEGER NOT NULL,
  replica TEXT NOT NULL,
  taken INTEGER NOT NULL,
  used INTEGER NOT NULL,
  kept INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (subject, dim, win, replica)
);
CREATE TABLE IF NOT EXISTS replicas (
  id TEXT PRIMARY KEY,
  seen_ms INTEGER NOT NULL,
  envoys INTEGER NOT NULL,
  told INTEGER NOT NULL
);
";

/// A meter window's name: subject, meter, window.
pub type WindowKey = (String, Dim, u64);

fn dim_named(s: &str) -> Option<Dim> {
    Dim::ALL.into_iter().find(|d| d.as_str() == s)
}

/// The head of the audit chain, kept beside the keys so that cutting records
/// off the end of the log is noticed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last record.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

fn db_err<T>(r: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Io(std::io::Error::other(r.to_string()))
}

impl Store {
    /// Opens (and creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Store {
            db: Mutex::new(db),
            lends: AtomicU64::new(0),
        })
    }

    /// A store in memory (tests).
    pub fn memory() -> Result<Store, StoreError> {
        let db = Connection::open_in_memory()?;
        db.execute_batch(SCHEMA)?;
        Ok(Store {
            db: Mutex::new(db),
            lends: AtomicU64::new(0),
        })
    }

    /// Every stored key.
    pub fn keys(&self) -> Result<Vec<KeyDoc>, StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        let mut q = db.prepare("SELECT doc FROM keys ORDER BY id")?;
        let docs = q
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(StoreError::from))
            .collect()
    }

    /// Every stored team.
    pub fn teams(&self) -> Result<Vec<TeamDoc>, StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        let mut q = db.prepare("SELECT doc FROM teams ORDER BY name")?;
        let docs = q
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(StoreError::from))
            .collect()
    }

    /// Inserts or replaces a key (by id); bumps the revision.
    pub fn put_key(&self, k: &KeyDoc) -> Result<(), StoreError> {
        let doc = serde_json::to_string(k)?;
        let mut db = self.db.lock().map_err(db_err)?;
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO keys (id, sha256, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
            params![k.id, k.sha256, doc],
        )?;
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts or replaces a team; bumps the revision.
    pub fn put_team(&self, t: &TeamDoc) -> Result<(), StoreError> {
        let doc = serde_json::to_string(t)?;
        let mut db = self.db.lock().map_err(db_err)?;
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO teams (name, doc) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
            params![t.name, doc],
        )?;
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// A counter every change bumps (control planes sharing the file poll it).
    pub fn revision(&self) -> Result<u64, StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        Ok(meta(&db, "revision")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Runs `f` on the shared allowance in one transaction, begun
    /// `IMMEDIATE` (the write lock first: another control plane's transaction
    /// waits, up to the busy timeout) and committed when `f` returns `Ok`.
    pub fn lend<T>(
        &self,
        f: impl FnOnce(&Ledger<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = self.db.lock().map_err(db_err)?;
        self.lends.fetch_add(1, Ordering::Relaxed);
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&Ledger { db: &tx })?;
        tx.commit()?;
        Ok(out)
    }

    /// Lending transactions so far.
    pub fn lends(&self) -> u64 {
        self.lends.load(Ordering::Relaxed)
    }

    /// The audit chain's head as last recorded.
    pub fn audit_head(&self, log: &Path) -> Result<Option<AuditHead>, StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        // A database from before heads were kept per log has one for its only log.
        let v = match meta(&db, &audit_key(log))? {
            Some(v) => Some(v),
            None => meta(&db, "audit_head")?,
        };
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Appends to the audit log at `log` under the database's write lock:
    /// `append` is given the head the database has for that log and returns the
    /// new one, recorded in the same transaction. Control planes sharing the
    /// database each keep the head of their own log; control planes writing
    /// one log file take turns, each continuing the chain from the last record
    /// any of them wrote.
    pub fn append_audit(
        &self,
        log: &Path,
        append: impl FnOnce(Option<AuditHead>) -> Option<AuditHead>,
    ) -> Result<(), StoreError> {
        let mut db = self.db.lock().map_err(db_err)?;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key = audit_key(log);
        let head = meta(&tx, &key)?.and_then(|v| serde_json::from_str(&v).ok());
        if let Some(new) = append(head) {
            tx.execute(
                "INSERT INTO meta (k, v) VALUES (?1, ?2)
                 ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                params![key, serde_json::to_string(&new)?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The shared allowance inside one transaction ([`Store::lend`]).
#[derive(Debug)]
pub struct Ledger<'a> {
    db: &'a Connection,
}

/// `(dim, window)` of every meter's current window at `now_ms`.
fn current_windows(now_ms: u64) -> [(&'static str, i64); 4] {
    Dim::ALL.map(|d| (d.as_str(), d.window(now_ms) as i64))
}

impl Ledger<'_> {
    /// Every control plane that said it is alive, with when it last did.
    pub fn replicas(&self) -> Result<Vec<(Replica, u64)>, StoreError> {
        let mut q = self
            .db
            .prepare_cached("SELECT id, envoys, told, seen_ms FROM replicas")?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    Replica {
                        id: r.get(0)?,
                        envoys: r.get(1)?,
                        told: r.get(2)?,
                    },
                    r.get::<_, i64>(3)?.max(0) as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Says `r` is alive at `now_ms`; returns whether it was on record.
    pub fn heartbeat(&self, r: &Replica, now_ms: u64) -> Result<bool, StoreError> {
        let n = self.db.execute(
            "UPDATE replicas SET seen_ms = ?2, envoys = ?3, told = ?4 WHERE id = ?1",
            params![r.id, now_ms as i64, r.envoys, r.told],
        )?;
        if n == 0 {
            self.db.execute(
                "INSERT INTO replicas (id, seen_ms, envoys, told) VALUES (?1, ?2, ?3, ?4)",
                params![r.id, now_ms as i64, r.envoys, r.told],
            )?;
        }
        Ok(n > 0)
    }

    /// Takes a gone control plane off the record.
    pub fn forget(&self, id: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM replicas WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// The windows in which `id` holds a slice.
    pub fn slices_of(&self, id: &str) -> Result<Vec<WindowKey>, StoreError> {
        let mut q = self
            .db
            .prepare_cached("SELECT subject, dim, win FROM slices WHERE replica = ?1")?;
        let rows = q
            .query_map(params![id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, d, w)| Some((s, dim_named(&d)?, w.max(0) as u64)))
            .collect())
    }

    /// One window, if anyone opened it.
    pub fn window(&self, k: &WindowKey) -> Result<Option<Window>, StoreError> {
        let (s, d, w) = (&k.0, k.1.as_str(), k.2 as i64);
        let row = self
            .db
            .prepare_cached(
                "SELECT lim, unlent, used, need, need_ms FROM allowance
                 WHERE subject = ?1 AND dim = ?2 AND win = ?3",
            )?
            .query_row(params![s, d, w], |r| {
                Ok(Window {
                    limit: r.get::<_, i64>(0)?.max(0) as u64,
                    unlent: r.get(1)?,
                    used: r.get(2)?,
                    need: r.get(3)?,
                    need_ms: r.get::<_, i64>(4)?.max(0) as u64,
                    slices: Default::default(),
                })
            })
            .optional()?;
        let Some(mut win) = row else {
            return Ok(None);
        };
        let mut q = self.db.prepare_cached(
            "SELECT replica, taken, used, kept FROM slices
             WHERE subject = ?1 AND dim = ?2 AND win = ?3",
        )?;
        for r in q.query_map(params![s, d, w], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Slice {
                    taken: r.get(1)?,
                    used: r.get(2)?,
                    kept: r.get(3)?,
                },
            ))
        })? {
            let (id, slice) = r?;
            win.slices.insert(id, slice);
        }
        Ok(Some(win))
    }

    /// A window of `limit` as it starts: a budget's use saved before its
    /// window was shared (by an earlier version) counts as used.
    pub fn open(&self, k: &WindowKey, limit: u64) -> Result<Window, StoreError> {
        let saved: i64 = if k.1.is_budget() {
            self.db
                .prepare_cached(
                    "SELECT used FROM usage WHERE subject = ?1 AND dim = ?2 AND win = ?3",
                )?
                .query_row(params![k.0, k.1.as_str(), k.2 as i64], |r| r.get(0))
                .optional()?
                .unwrap_or(0)
        } else {
            0
        };
        Ok(Window::new(limit, saved))
    }

    /// Writes a window back; a budget's use is also saved where a restart
    /// (or an earlier version) reads it.
    pub fn put(&self, k: &WindowKey, win: &Window) -> Result<(), StoreError> {
        let (s, d, w) = (&k.0, k.1.as_str(), k.2 as i64);
        self.db
            .prepare_cached(
                "INSERT INTO allowance (subject, dim, win, lim, unlent, used, need, need_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(subject, dim, win) DO UPDATE SET lim = excluded.lim,
                   unlent = excluded.unlent, used = excluded.used, need = excluded.need,
                   need_ms = excluded.need_ms",
            )?
            .execute(params![
                s,
                d,
                w,
                win.limit as i64,
                win.unlent,
                win.used,
                win.need,
                win.need_ms as i64
            ])?;
        self.db
            .prepare_cached("DELETE FROM slices WHERE subject = ?1 AND dim = ?2 AND win = ?3")?
            .execute(params![s, d, w])?;
        let mut ins = self.db.prepare_cached(
            "INSERT INTO slices (subject, dim, win, replica, taken, used, kept)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (id, sl) in &win.slices {
            ins.execute(params![s, d, w, id, sl.taken, sl.used, sl.kept])?;
        }
        if k.1.is_budget() {
            self.db
                .prepare_cached(
                    "INSERT INTO usage (subject, dim, win, used) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(subject, dim, win) DO UPDATE SET used = excluded.used",
                )?
                .execute(params![s, d, w, win.used])?;
        }
        Ok(())
    }

    /// Every window that is current at `now_ms`.
    pub fn current(&self, now_ms: u64) -> Result<Vec<(WindowKey, Window)>, StoreError> {
        let c = current_windows(now_ms);
        let args = params![
            c[0].0, c[0].1, c[1].0, c[1].1, c[2].0, c[2].1, c[3].0, c[3].1
        ];
        const NOW: &str = "(dim = ?1 AND win = ?2) OR (dim = ?3 AND win = ?4)
             OR (dim = ?5 AND win = ?6) OR (dim = ?7 AND win = ?8)";
        let mut out: std::collections::BTreeMap<(String, String, i64), Window> = Default::default();
        let mut q = self.db.prepare_cached(&format!(
            "SELECT subject, dim, win, lim, unlent, used, need, need_ms FROM allowance WHERE {NOW}"
        ))?;
        for r in q.query_map(args, |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?),
                Window {
                    limit: r.get::<_, i64>(3)?.max(0) as u64,
                    unlent: r.get(4)?,
                    used: r.get(5)?,
                    need: r.get(6)?,
                    need_ms: r.get::<_, i64>(7)?.max(0) as u64,
                    slices: Default::default(),
                },
            ))
        })? {
            let (k, w) = r?;
            out.insert(k, w);
        }
        let mut q = self.db.prepare_cached(&format!(
            "SELECT subject, dim, win, replica, taken, used, kept FROM slices WHERE {NOW}"
        ))?;
        for r in q.query_map(args, |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?),
                r.get::<_, String>(3)?,
                Slice {
                    taken: r.get(4)?,
                    used: r.get(5)?,
                    kept: r.get(6)?,
                },
            ))
        })? {
            let (k, id, sl) = r?;
            if let Some(w) = out.get_mut(&k) {
                w.slices.insert(id, sl);
            }
        }
        Ok(out
            .into_iter()
            .filter_map(|((s, d, w), win)| Some(((s, dim_named(&d)?, w.max(0) as u64), win)))
            .collect())
    }

    /// Drops windows that are over: a minute's entirely, a budget's slices (its
    /// use stays: it is the saved use).
    pub fn cleanup(&self, now_ms: u64) -> Result<(), StoreError> {
        let c = current_windows(now_ms);
        let args = params![
            c[0].0, c[0].1, c[1].0, c[1].1, c[2].0, c[2].1, c[3].0, c[3].1
        ];
        self.db
            .prepare_cached(
                "DELETE FROM allowance WHERE (dim = ?1 AND win < ?2) OR (dim = ?3 AND win < ?4)",
            )?
            .execute(params![c[0].0, c[0].1, c[1].0, c[1].1])?;
        self.db
            .prepare_cached(
                "DELETE FROM slices WHERE (dim = ?1 AND win < ?2) OR (dim = ?3 AND win < ?4)
                 OR (dim = ?5 AND win < ?6) OR (dim = ?7 AND win < ?8)",
            )?
            .execute(args)?;
        Ok(())
    }
}

/// The `meta` key of the head of the audit log at `log` (its canonical path
/// when it exists).
fn audit_key(log: &Path) -> String {
    let path = std::fs::canonicalize(log).unwrap_or_else(|_| log.to_path_buf());
    format!("audit_head:{}", path.display())
}

fn meta(db: &Connection, k: &str) -> Result<Option<String>, rusqlite::Error> {
    db.query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))
        .optional()
}

fn bump(db: &Connection) -> Result<(), rusqlite::Error> {
    db.execute(
        "INSERT INTO meta (k, v) VALUES ('revision', '1')
         ON CONFLICT(k) DO UPDATE SET v = CAST(CAST(v AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}
