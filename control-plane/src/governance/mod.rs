//! Governance on the control plane: the key store, the table sent to filters,
//! the fleet's meters (allowance lent to Envoys), the audit log, and the
//! operations of the admin API.
//!
//! Keys and teams come from the database (managed at run time through the
//! admin API, `switchyard keys …`) and from the config file's `governance:`
//! section (declared by hash, read-only at run time). A change rebuilds the
//! table; filters get it with their next fleet exchange (every 250 ms), so it is
//! in force on every Envoy within about half a second.

pub mod admin;
pub mod audit;
pub mod client;
pub mod meter;
pub mod pool;
pub mod store;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_core::config::Price;
use switchyard_core::governance::{
    Decision, GovReport, GovState, KEY_PREFIX, KeyRecord, Limits, Table, TeamRecord, hash_key,
    key_subject, team_subject,
};
use switchyard_core::sigv4::hex;

use crate::config;
use meter::{MeterView, Meters};
use store::{Store, StoreError};

/// Where a key or team is defined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The admin API (stored in the database).
    #[default]
    Api,
    /// The config file (read-only at run time).
    Config,
}

/// A key as the control plane keeps it (the key itself is never stored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyDoc {
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// SHA-256 of the key (hex).
    pub sha256: String,
    /// Team.
    #[serde(default)]
    pub team: Option<String>,
    /// Owner (a person, a service).
    #[serde(default)]
    pub owner: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Route aliases it may use (`None`: all).
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Targets it may reach (`None`: all).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// May name `provider/model` targets itself.
    #[serde(default)]
    pub direct: bool,
    /// Price ceiling on its targets.
    #[serde(default)]
    pub max_price: Option<Price>,
    /// Its limits.
    #[serde(default)]
    pub limits: Limits,
    /// Expiry (Unix ms).
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// When it was revoked (Unix ms).
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
    /// Created (Unix ms).
    #[serde(default)]
    pub created_ms: u64,
    /// Last changed (Unix ms).
    #[serde(default)]
    pub updated_ms: u64,
    /// Where it is defined.
    #[serde(default)]
    pub source: Source,
}

impl KeyDoc {
    /// The filters' view.
    pub fn record(&self) -> KeyRecord {
        KeyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            team: self.team.clone(),
            routes: self.routes.clone(),
            targets: self.targets.clone(),
            direct: self.direct,
            max_price: self.max_price,
            limits: self.limits.clone(),
            expires_at_ms: self.expires_at_ms,
            revoked: self.revoked_at_ms.is_some(),
        }
    }

    /// What the admin API shows (everything but the hash).
    pub fn public(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("sha256");
        }
        v
    }

    /// What audit records show of it.
    fn audited(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "team": self.team, "owner": self.owner,
            "routes": self.routes, "targets": self.targets, "direct": self.direct,
            "max_price": self.max_price, "limits": self.limits,
            "expires_at_ms": self.expires_at_ms,
        })
    }
}

/// A team as the control plane keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamDoc {
    /// Name.
    pub name: String,
    /// Limits of all its keys together.
    #[serde(default)]
    pub limits: Limits,
    /// Owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// Last changed (Unix ms).
    #[serde(default)]
    pub updated_ms: u64,
    /// Where it is defined.
    #[serde(default)]
    pub source: Source,
}

/// Why an admin operation failed (the HTTP status is [`AdminError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such key or team.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Defined in the config file: change it there.
    #[error("{0} is declared in the config file: change it there")]
    Declared(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::NotFound(_) => 404,
            AdminError::Invalid(_) => 400,
            AdminError::Declared(_) => 409,
            AdminError::Store(_) => 500,
        }
    }
}

/// Why governance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

#[derive(Debug)]
struct State {
    cfg: config::Governance,
    keys: Vec<KeyDoc>,
    teams: Vec<TeamDoc>,
    table: Table,
    version: String,
    meters: Meters,
    revision: u64,
}

/// Governance, shared by the fleet exchange, the admin API and `serve`.
#[derive(Clone, Debug)]
pub struct Governance(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    audit: audit::Log,
    db_path: PathBuf,
    state: Mutex<State>,
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `n` bytes from the operating system's random source.
fn random(n: usize) -> Result<Vec<u8>, AdminError> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| AdminError::Store(StoreError::Io(e)))?;
    Ok(buf)
}

/// Base64url without padding.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let chars = c.len() + 1;
        for i in 0..chars {
            s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

/// A new key (256 random bits) and its hash.
pub fn new_key() -> Result<(String, String), AdminError> {
    let key = format!("{KEY_PREFIX}{}", b64url(&random(32)?));
    let sha = hex(&hash_key(&key));
    Ok((key, sha))
}

/// The fields a key's create and update requests may carry.
const EDITABLE: &[&str] = &[
    "name",
    "team",
    "owner",
    "metadata",
    "routes",
    "targets",
    "direct",
    "max_price",
    "limits",
    "expires_at_ms",
];

impl Governance {
    /// Opens the database and the audit log (`<data_dir>/switchyard.db`,
    /// `<data_dir>/audit.log` unless the config names others).
    pub fn open(data_dir: &Path, cfg: &config::Governance) -> Result<Governance, StartError> {
        let db_path = cfg
            .database
            .clone()
            .unwrap_or_else(|| data_dir.join("switchyard.db"));
        let store = Store::open(&db_path)?;
        let audit_path = cfg
            .audit_log
            .clone()
            .unwrap_or_else(|| data_dir.join("audit.log"));
        let audit = audit::Log::open(&audit_path)?;
        let keys = store.keys()?;
        let teams = store.teams()?;
        let revision = store.revision()?;
        let g = Governance(Arc::new(Inner {
            store,
            audit,
            db_path,
            state: Mutex::new(State {
                cfg: cfg.clone(),
                keys,
                teams,
                table: Table::default(),
                version: String::new(),
                meters: Meters::default(),
                revision,
            }),
        }));
        if let Ok(mut s) = g.0.state.lock() {
            rebuild(&mut s);
        }
        Ok(g)
    }

    /// The database file.
    pub fn database(&self) -> &Path {
        &self.0.db_path
    }

    /// The audit log file.
    pub fn audit_log(&self) -> &Path {
        self.0.audit.path()
    }

    /// Whether filters require keys: any key exists (revoked ones too: revoking
    /// the last key never opens the gateway), or the config requires them.
    pub fn enabled(&self) -> bool {
        self.0
            .state
            .lock()
            .is_ok_and(|s| s.cfg.require_keys || !s.table.keys.is_empty())
    }

    fn audit(&self, event: &str, detail: Value) {
        self.0
            .audit
            .append(Some(&self.0.store), now_ms(), event, detail);
    }

    /// Takes a newly loaded config's `governance:` section.
    pub fn apply_config(&self, cfg: &config::Governance, version: &str) {
        let (keys, teams) = {
            let Ok(mut s) = self.0.state.lock() else {
                return;
            };
            s.cfg = cfg.clone();
            rebuild(&mut s);
            (cfg.keys.len(), cfg.teams.len())
        };
        self.audit(
            "config.applied",
            json!({"version": version, "declared_keys": keys, "declared_teams": teams}),
        );
    }

    /// The version of the key table filters should hold.
    pub fn version(&self) -> String {
        self.0
            .state
            .lock()
            .map(|s| s.version.clone())
            .unwrap_or_default()
    }

    /// The key table for a filter that holds version `held`, when that is
    /// stale (pushed on the fleet stream between reports, so that a revoked
    /// key stops working at once); no grants. `None`: nothing to say.
    pub fn table_for(&self, held: &str) -> Option<GovState> {
        let s = self.0.state.lock().ok()?;
        if !s.cfg.require_keys && s.table.keys.is_empty() {
            // No keys: filters that had a table stop requiring keys.
            return (!held.is_empty()).then(GovState::default);
        }
        (held != s.version).then(|| GovState {
            version: s.version.clone(),
            table: Some(s.table.clone()),
            envoys: s.meters.envoys(),
            grants: Vec::new(),
        })
    }

    /// Grows whenever a meter is found lean: streams then push withdrawals.
    pub fn lean_serial(&self) -> u64 {
        self.0
            .state
            .lock()
            .map(|s| s.meters.lean_serial())
            .unwrap_or_default()
    }

    /// Credit withdrawals for the Envoy `boot` on meters found lean that it
    /// has not been told of (pushed on the fleet stream between reports, so
    /// that an Envoy without news need not report to hear them); `None`:
    /// nothing to withdraw.
    pub fn withdrawals_for(&self, boot: &str, now: u64) -> Option<GovState> {
        let mut s = self.0.state.lock().ok()?;
        if s.table.keys.is_empty() {
            return None;
        }
        let grants = s.meters.withdrawals(boot, now);
        (!grants.is_empty()).then(|| GovState {
            version: s.version.clone(),
            table: None,
            envoys: s.meters.envoys(),
            grants,
        })
    }

    /// The governance part of the answer to an Envoy's fleet report: the table
    /// when its copy is stale, grants for what it asked, credit withdrawals.
    pub fn exchange(&self, r: &GovReport, now: u64) -> Option<GovState> {
        let Ok(mut s) = self.0.state.lock() else {
            return None;
        };
        let s = &mut *s;
        tracing::debug!(
            "governance report from {}: {} subjects, {} decisions",
            r.boot,
            r.subjects.len(),
            r.decisions.len()
        );
        // Every reporting Envoy counts, keys or not yet: when the first key
        // comes, the table pushed to silent streams tells every Envoy the
        // fleet's size (its credit), and the credit of each is reserved.
        if s.meters.seen(&r.boot, now)
            && let Err(e) = s.meters.sync(&self.0.store, now, true)
        {
            tracing::error!("meters: a new Envoy: {e}");
        }
        if !s.cfg.require_keys && s.table.keys.is_empty() {
            // No keys: filters that had a table stop requiring keys.
            return (!r.table.is_empty()).then(GovState::default);
        }
        let mut grants = Vec::new();
        for sr in &r.subjects {
            let limits = limits_of(&s.table, &sr.s);
            let Some(limits) = limits else {
                continue;
            };
            for dr in &sr.dims {
                let Some(limit) = limits.of(dr.d) else {
                    continue;
                };
                if let Some(g) = s
                    .meters
                    .report(&self.0.store, &r.boot, &sr.s, dr, limit, now)
                {
                    grants.push(g);
                }
            }
        }
        grants.extend(s.meters.withdrawals(&r.boot, now));
        Some(GovState {
            version: s.version.clone(),
            table: (r.table != s.version).then(|| s.table.clone()),
            envoys: s.meters.envoys(),
            grants,
        })
    }

    /// Names this control plane on the database (its status address: a
    /// restart on the same address resumes what it held) and says it is
    /// there, so that control planes sharing the database lend between them.
    pub fn set_replica(&self, id: &str) {
        if let Ok(mut s) = self.0.state.lock() {
            s.meters.set_replica(id);
            if let Err(e) = s.meters.sync(&self.0.store, now_ms(), false) {
                tracing::error!("meters: {e}");
            }
        }
    }

    /// Once a second: saves the meters' use and lends with the control planes
    /// sharing the database (`meter::Meters::sync`), picks up changes they
    /// made to keys and teams.
    pub fn tick(&self) {
        let Ok(mut s) = self.0.state.lock() else {
            return;
        };
        let s = &mut *s;
        if let Err(e) = s.meters.sync(&self.0.store, now_ms(), false) {
            tracing::error!("meters: {e}");
        }
        if let Ok(rev) = self.0.store.revision()
            && rev != s.revision
        {
            s.revision = rev;
            if let (Ok(keys), Ok(teams)) = (self.0.store.keys(), self.0.store.teams()) {
                s.keys = keys;
                s.teams = teams;
                rebuild(s);
            }
        }
    }

    /// Appends the governance decisions one report of `node` carried to the
    /// audit log, one `request` record each, in one write; then, when the
    /// filter could not keep some (`dropped`), one `requests.unrecorded`
    /// record saying how many. The decisions were checked with the report
    /// (`fleet::check`).
    pub fn record(&self, node: &str, decisions: &[Decision], dropped: u64) {
        let mut records: Vec<(&str, Value)> = decisions
            .iter()
            .map(|d| ("request", decision_detail(node, d)))
            .collect();
        if dropped > 0 {
            records.push((
                "requests.unrecorded",
                json!({
                    "node": node, "count": dropped,
                    "why": "the Envoy's buffer of decisions was full, or a report carrying them was refused",
                }),
            ));
        }
        self.0
            .audit
            .append_all(Some(&self.0.store), now_ms(), records);
    }

    // === admin operations ===

    /// Every key (the hash left out).
    pub fn keys(&self) -> Vec<KeyDoc> {
        self.0
            .state
            .lock()
            .map(|s| merged_keys(&s))
            .unwrap_or_default()
    }

    /// One key.
    pub fn key(&self, id: &str) -> Result<KeyDoc, AdminError> {
        self.keys()
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| AdminError::NotFound(format!("key `{id}`")))
    }

    /// Every team.
    pub fn teams(&self) -> Vec<TeamDoc> {
        self.0
            .state
            .lock()
            .map(|s| merged_teams(&s))
            .unwrap_or_default()
    }

    /// The meters of the current windows.
    pub fn meters(&self) -> Vec<MeterView> {
        self.0
            .state
            .lock()
            .map(|s| s.meters.view(now_ms()))
            .unwrap_or_default()
    }

    /// Creates a key from `spec` (the editable fields, `name` required); returns
    /// it and the key itself, shown this once.
    pub fn create_key(&self, spec: &Value, actor: &str) -> Result<(KeyDoc, String), AdminError> {
        let (key, sha256) = new_key()?;
        let id = format!("key_{}", hex(&random(6)?));
        let now = now_ms();
        let blank = KeyDoc {
            id: id.clone(),
            name: String::new(),
            sha256,
            team: None,
            owner: None,
            metadata: BTreeMap::new(),
            routes: None,
            targets: None,
            direct: false,
            max_price: None,
            limits: Limits::default(),
            expires_at_ms: None,
            revoked_at_ms: None,
            created_ms: now,
            updated_ms: now,
            source: Source::Api,
        };
        let doc = patched(&blank, spec)?;
        if doc.name.is_empty() {
            return Err(AdminError::Invalid("`name` is required".into()));
        }
        self.0.store.put_key(&doc)?;
        self.changed(|s| s.keys.push(doc.clone()));
        self.audit("key.created", json!({"actor": actor, "key": doc.audited()}));
        Ok((doc, key))
    }

    /// Changes a key's editable fields (a JSON merge patch).
    pub fn update_key(&self, id: &str, patch: &Value, actor: &str) -> Result<KeyDoc, AdminError> {
        let current = self.key(id)?;
        if current.source == Source::Config {
            return Err(AdminError::Declared(format!("key `{id}`")));
        }
        let mut doc = patched(&current, patch)?;
        doc.updated_ms = now_ms();
        self.0.store.put_key(&doc)?;
        self.changed(|s| {
            if let Some(k) = s.keys.iter_mut().find(|k| k.id == doc.id) {
                *k = doc.clone();
            }
        });
        let fields: Vec<&String> = patch
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        self.audit(
            "key.updated",
            json!({"actor": actor, "changed": fields, "key": doc.audited()}),
        );
        Ok(doc)
    }

    /// Revokes a key (it stays listed, refused everywhere).
    pub fn revoke_key(&self, id: &str, actor: &str) -> Result<KeyDoc, AdminError> {
        let current = self.key(id)?;
        if current.source == Source::Config {
            return Err(AdminError::Declared(format!("key `{id}`")));
        }
        if current.revoked_at_ms.is_some() {
            return Ok(current);
        }
        let mut doc = current;
        let now = now_ms();
        doc.revoked_at_ms = Some(now);
        doc.updated_ms = now;
        self.0.store.put_key(&doc)?;
        self.changed(|s| {
            if let Some(k) = s.keys.iter_mut().find(|k| k.id == doc.id) {
                *k = doc.clone();
            }
        });
        self.audit(
            "key.revoked",
            json!({"actor": actor, "key": {"id": doc.id, "name": doc.name}}),
        );
        Ok(doc)
    }

    /// Creates or replaces a team's limits and owner.
    pub fn put_team(&self, name: &str, spec: &Value, actor: &str) -> Result<TeamDoc, AdminError> {
        if !config::valid_name(name) {
            return Err(AdminError::Invalid(
                "a team name is [a-zA-Z0-9_.-], 1 to 64 characters".into(),
            ));
        }
        if self
            .teams()
            .iter()
            .any(|t| t.name == name && t.source == Source::Config)
        {
            return Err(AdminError::Declared(format!("team `{name}`")));
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            #[serde(default)]
            limits: Limits,
            #[serde(default)]
            owner: Option<String>,
        }
        let spec: Spec = serde_json::from_value(spec.clone())
            .map_err(|e| AdminError::Invalid(format!("team: {e}")))?;
        let problems = spec.limits.check("limits");
        if !problems.is_empty() {
            return Err(AdminError::Invalid(problems.join("; ")));
        }
        let doc = TeamDoc {
            name: name.to_string(),
            limits: spec.limits,
            owner: spec.owner,
            updated_ms: now_ms(),
            source: Source::Api,
        };
        self.0.store.put_team(&doc)?;
        self.changed(|s| {
            s.teams.retain(|t| t.name != doc.name);
            s.teams.push(doc.clone());
        });
        self.audit(
            "team.set",
            json!({"actor": actor, "team": {"name": doc.name, "limits": doc.limits, "owner": doc.owner}}),
        );
        Ok(doc)
    }

    fn changed(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.0.state.lock() {
            f(&mut s);
            if let Ok(rev) = self.0.store.revision() {
                s.revision = rev;
            }
            rebuild(&mut s);
        }
    }
}

/// Applies the editable fields of `patch` (a JSON merge patch) to `doc`.
fn patched(doc: &KeyDoc, patch: &Value) -> Result<KeyDoc, AdminError> {
    let Some(fields) = patch.as_object() else {
        return Err(AdminError::Invalid("expected a JSON object".into()));
    };
    let mut v = serde_json::to_value(doc).map_err(|e| AdminError::Invalid(e.to_string()))?;
    for (k, val) in fields {
        if !EDITABLE.contains(&k.as_str()) {
            return Err(AdminError::Invalid(format!(
                "`{k}` cannot be set (editable: {})",
                EDITABLE.join(", ")
            )));
        }
        if k == "limits" && val.is_object() {
            // Limits merge too: `{"limits": {"rpm": null}}` removes one.
            let limits = v["limits"]
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut merged = serde_json::Map::from_iter(limits);
            for (lk, lv) in val.as_object().into_iter().flatten() {
                if lv.is_null() {
                    merged.remove(lk);
                } else {
                    merged.insert(lk.clone(), lv.clone());
                }
            }
            v["limits"] = Value::Object(merged);
        } else {
            v[k] = val.clone();
        }
    }
    let out: KeyDoc =
        serde_json::from_value(v).map_err(|e| AdminError::Invalid(format!("key: {e}")))?;
    let mut problems = out.limits.check("limits");
    if let Some(t) = &out.team
        && !config::valid_name(t)
    {
        problems.push("team: expected [a-zA-Z0-9_.-], 1 to 64 characters".into());
    }
    for p in out.targets.iter().flatten() {
        if p != "*" && !p.contains('/') && p.is_empty() {
            problems.push(format!(
                "targets: `{p}` is not `*`, `provider/*` or `provider/model`"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(AdminError::Invalid(problems.join("; ")));
    }
    Ok(out)
}

fn merged_keys(s: &State) -> Vec<KeyDoc> {
    let mut out: Vec<KeyDoc> = s
        .cfg
        .keys
        .iter()
        .map(|(k, owner)| KeyDoc {
            id: k.id.clone(),
            name: k.name.clone(),
            sha256: k.sha256.clone(),
            team: k.team.clone(),
            owner: owner.clone(),
            metadata: BTreeMap::new(),
            routes: k.routes.clone(),
            targets: k.targets.clone(),
            direct: k.direct,
            max_price: k.max_price,
            limits: k.limits.clone(),
            expires_at_ms: k.expires_at_ms,
            revoked_at_ms: None,
            created_ms: 0,
            updated_ms: 0,
            source: Source::Config,
        })
        .collect();
    for k in &s.keys {
        if out.iter().any(|d| d.id == k.id) {
            tracing::warn!(
                "key `{}` is declared in the config file and stored: the file's wins",
                k.id
            );
            continue;
        }
        out.push(k.clone());
    }
    out
}

fn merged_teams(s: &State) -> Vec<TeamDoc> {
    let mut out: Vec<TeamDoc> = s
        .cfg
        .teams
        .iter()
        .map(|t| TeamDoc {
            name: t.name.clone(),
            limits: t.limits.clone(),
            owner: None,
            updated_ms: 0,
            source: Source::Config,
        })
        .collect();
    for t in &s.teams {
        if !out.iter().any(|d| d.name == t.name) {
            out.push(t.clone());
        }
    }
    out
}

/// Rebuilds the filters' table (and its version) from the keys and teams.
fn rebuild(s: &mut State) {
    let table = Table {
        keys: merged_keys(s).iter().map(KeyDoc::record).collect(),
        teams: merged_teams(s)
            .into_iter()
            .map(|t| TeamRecord {
                name: t.name,
                limits: t.limits,
            })
            .collect(),
    };
    s.version = table.version();
    s.table = table;
}

/// The limits a subject is metered against (`k:<id>`, `t:<team>`).
fn limits_of(table: &Table, subject: &str) -> Option<Limits> {
    if let Some(id) = subject.strip_prefix("k:") {
        return table
            .keys
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.limits.clone());
    }
    let name = subject.strip_prefix("t:")?;
    table
        .teams
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.limits.clone())
}

/// The audit record of one request's decision: never the key or the prompt.
fn decision_detail(node: &str, d: &Decision) -> Value {
    let mut v = json!({
        "node": node,
        "at_ms": d.at_ms,
        "request_id": d.request_id,
        "key": d.key,
        "team": d.team,
        "outcome": if d.reason.allowed() { "allowed" } else { "denied" },
        "reason": d.reason.code(),
        "cost_usd": d.micros as f64 / 1e6,
    });
    if let Some(o) = v.as_object_mut() {
        if d.id_altered {
            o.insert("request_id_altered".into(), true.into());
        }
        if let Some(state) = d.reason.key_state() {
            o.insert("key_state".into(), state.into());
        }
        if let Some(dim) = d.limit {
            o.insert("limit".into(), dim.as_str().into());
            let of = if d.team_limit { "team" } else { "key" };
            o.insert("limit_of".into(), of.into());
        }
        if d.reason.allowed() {
            o.insert("tokens".into(), d.tokens.into());
        }
    }
    v
}

/// Subject names of a key and its team (for `status`).
pub fn subjects_of(k: &KeyDoc) -> (String, Option<String>) {
    (key_subject(&k.id), k.team.as_deref().map(team_subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_shown_once() {
        let (a, ha) = new_key().unwrap();
        let (b, _) = new_key().unwrap();
        assert!(a.starts_with("sk-sy-") && a.len() == 6 + 43, "{a}");
        assert_ne!(a, b);
        assert_eq!(ha, hex(&hash_key(&a)));
        assert_eq!(b64url(b"\xff\xff\xff\x00"), "____AA");
    }

    #[test]
    fn create_update_revoke_rebuild_the_table_and_are_audited() {
        let dir = std::env::temp_dir().join(format!("sy-gov-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = Governance::open(&dir, &config::Governance::default()).unwrap();
        assert!(!g.enabled());
        let (doc, key) = g
            .create_key(
                &json!({"name": "ci", "team": "research", "limits": {"rpm": 5}}),
                "test",
            )
            .unwrap();
        assert!(g.enabled());
        assert!(
            !std::fs::read_to_string(g.audit_log())
                .unwrap()
                .contains(&key)
        );
        let state = g
            .exchange(
                &GovReport {
                    boot: "b".into(),
                    ..GovReport::default()
                },
                now_ms(),
            )
            .unwrap();
        let table = state.table.unwrap();
        assert_eq!(table.keys[0].sha256, hex(&hash_key(&key)));
        let doc2 = g
            .update_key(&doc.id, &json!({"limits": {"tpm": 100}}), "test")
            .unwrap();
        assert_eq!((doc2.limits.rpm, doc2.limits.tpm), (Some(5), Some(100)));
        assert!(
            g.update_key(&doc.id, &json!({"sha256": "x"}), "test")
                .is_err()
        );
        g.revoke_key(&doc.id, "test").unwrap();
        assert!(g.key(&doc.id).unwrap().revoked_at_ms.is_some());
        assert!(
            g.enabled(),
            "revoking the last key does not open the gateway"
        );
        // Reopened from the database.
        drop(g);
        let g = Governance::open(&dir, &config::Governance::default()).unwrap();
        assert_eq!(g.keys().len(), 1);
        let v = audit::verify(&dir.join("audit.log"), None).unwrap();
        assert_eq!(v.records, 3);
    }

    /// Envoys that reported before the first key count: the table pushed to
    /// them when it comes tells each the fleet's size (so its credit), and
    /// the control plane reserves every one's credit.
    #[test]
    fn envoys_reporting_before_the_first_key_count_for_credit() {
        let dir = std::env::temp_dir().join(format!("sy-gov-boots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = Governance::open(&dir, &config::Governance::default()).unwrap();
        for boot in ["b1", "b2", "b3"] {
            let r = GovReport {
                boot: boot.into(),
                ..GovReport::default()
            };
            assert!(
                g.exchange(&r, now_ms()).is_none(),
                "no keys: nothing to say"
            );
        }
        g.create_key(&json!({"name": "k"}), "test").unwrap();
        let pushed = g.table_for("").expect("the table");
        assert_eq!(pushed.envoys, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_declared_in_the_config_are_read_only() {
        let dir = std::env::temp_dir().join(format!("sy-gov-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (key, sha) = new_key().unwrap();
        let cfg = config::Governance {
            keys: vec![(
                KeyRecord {
                    id: "key_ci".into(),
                    name: "ci".into(),
                    sha256: sha,
                    team: None,
                    routes: None,
                    targets: None,
                    direct: false,
                    max_price: None,
                    limits: Limits::default(),
                    expires_at_ms: None,
                    revoked: false,
                },
                Some("platform".into()),
            )],
            ..config::Governance::default()
        };
        let g = Governance::open(&dir, &cfg).unwrap();
        assert!(g.enabled());
        assert_eq!(g.key("key_ci").unwrap().source, Source::Config);
        assert_eq!(
            g.revoke_key("key_ci", "test").unwrap_err().status(),
            409,
            "change it in the file"
        );
        let state = g
            .exchange(
                &GovReport {
                    boot: "b".into(),
                    ..GovReport::default()
                },
                now_ms(),
            )
            .unwrap();
        let index = switchyard_core::governance::Index::new(&state.table.unwrap());
        assert!(index.find(Some(&key), now_ms()).is_ok());
        // The file drops it: the gateway is open again (nothing else exists).
        g.apply_config(&config::Governance::default(), "v2");
        assert!(!g.enabled());
    }

    #[test]
    fn each_decision_is_one_audit_record_and_drops_are_said() {
        use switchyard_core::governance::{Dim, Reason};
        let dir = std::env::temp_dir().join(format!("sy-gov-dec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = Governance::open(&dir, &config::Governance::default()).unwrap();
        let admitted = Decision {
            key: Some("key_a".into()),
            team: Some("research".into()),
            micros: 1_250,
            tokens: 42,
            ..Decision::new(10, "r-1", Reason::Admitted)
        };
        let refused = Decision {
            key: Some("key_a".into()),
            team: Some("research".into()),
            limit: Some(Dim::CostDay),
            team_limit: true,
            ..Decision::new(11, "r-2", Reason::BudgetExceeded)
        };
        let unknown = Decision::new(12, &"x".repeat(300), Reason::KeyUnknown);
        g.record("envoy-0", &[admitted, refused, unknown], 0);
        g.record("envoy-1", &[], 7);
        let text = std::fs::read_to_string(g.audit_log()).unwrap();
        let records: Vec<audit::Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            events,
            ["request", "request", "request", "requests.unrecorded"]
        );
        assert_eq!(
            records[0].detail,
            json!({"node": "envoy-0", "at_ms": 10, "request_id": "r-1", "key": "key_a",
                   "team": "research", "outcome": "allowed", "reason": "admitted",
                   "cost_usd": 0.00125, "tokens": 42})
        );
        assert_eq!(
            records[1].detail,
            json!({"node": "envoy-0", "at_ms": 11, "request_id": "r-2", "key": "key_a",
                   "team": "research", "outcome": "denied", "reason": "budget_exceeded",
                   "limit": "budget_day", "limit_of": "team", "cost_usd": 0.0})
        );
        let d = &records[2].detail;
        assert_eq!(
            (&d["key"], &d["key_state"]),
            (&Value::Null, &json!("unknown"))
        );
        assert_eq!(d["request_id_altered"], true);
        assert_eq!(d["request_id"].as_str().map(str::len), Some(128));
        assert_eq!(records[3].detail["node"], "envoy-1");
        assert_eq!(records[3].detail["count"], 7);
        // One chain with the rest, its head recorded.
        let head = g.0.store.audit_head(g.audit_log()).unwrap();
        let v = audit::verify(g.audit_log(), head.as_ref()).unwrap();
        assert_eq!(v.records, 4);
    }
}
