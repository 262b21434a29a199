//! The key store: an embedded SQLite database (`<data dir>/switchyard.db` by
//! default). Keys are stored by their SHA-256 only. Several control planes on one
//! host may share the file (WAL, a busy timeout, and a revision counter each
//! polls to pick up the others' changes); control planes on several hosts would
//! put a server database behind the same methods.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use switchyard_core::governance::Dim;

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
";

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
        Ok(Store { db: Mutex::new(db) })
    }

    /// A store in memory (tests).
    pub fn memory() -> Result<Store, StoreError> {
        let db = Connection::open_in_memory()?;
        db.execute_batch(SCHEMA)?;
        Ok(Store { db: Mutex::new(db) })
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

    /// Use of a budget meter in a window, as last saved.
    pub fn usage(&self, subject: &str, d: Dim, w: u64) -> Result<i64, StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        Ok(db
            .query_row(
                "SELECT used FROM usage WHERE subject = ?1 AND dim = ?2 AND win = ?3",
                params![subject, d.as_str(), w as i64],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Saves budget meters' use (one transaction).
    pub fn save_usage(&self, rows: &[(String, Dim, u64, i64)]) -> Result<(), StoreError> {
        let mut db = self.db.lock().map_err(db_err)?;
        let tx = db.transaction()?;
        for (s, d, w, used) in rows {
            tx.execute(
                "INSERT INTO usage (subject, dim, win, used) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(subject, dim, win) DO UPDATE SET used = excluded.used",
                params![s, d.as_str(), *w as i64, used],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The audit chain's head as last recorded.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        Ok(meta(&db, "audit_head")?.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Records the audit chain's head.
    pub fn set_audit_head(&self, head: &AuditHead) -> Result<(), StoreError> {
        let db = self.db.lock().map_err(db_err)?;
        db.execute(
            "INSERT INTO meta (k, v) VALUES ('audit_head', ?1)
             ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            params![serde_json::to_string(head)?],
        )?;
        Ok(())
    }
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
