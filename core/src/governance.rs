//! Governance: virtual keys, teams, what they may use and how much, shared by the
//! filter (which authenticates and admits every request) and the control plane
//! (which stores keys, aggregates usage across the fleet and lends allowance).
//!
//! - A **key** (`sk-sy-…`) is known to filters only by its SHA-256 ([`hash_key`]);
//!   the table ([`Table`]) travels through the fleet exchange and is looked up by
//!   a hash prefix, the full hash compared in constant time ([`Index::find`]).
//! - **Limits** are metered per subject (a key, or its team) in four
//!   [`Dim`]ensions, each with a fixed wall-clock window: requests and tokens per
//!   minute, micro-USD per UTC day and month.
//! - **Allowance is lent, not shared**: the control plane holds each meter's
//!   fleet-wide allowance and grants tokens of it to Envoys on request; an Envoy
//!   admits a request only with tokens in hand ([`Local::admit`]), pre-charging
//!   an estimate that is settled with the real usage when the request ends
//!   ([`Local::settle`]). Before its first grant in a window an Envoy may spend a
//!   small credit (`limit / (2 × envoys)`), which the control plane reserves.
//!   Tokens lost with a report or an answer are lost, never duplicated, so the
//!   fleet cannot admit more than the limit; what it can overshoot by is the
//!   estimates' error on requests in flight. docs/architecture.md has the bound
//!   and the measurement.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Price, Target};
use crate::sigv4::hex;

/// Every Switchyard key starts with this.
pub const KEY_PREFIX: &str = "sk-sy-";

/// Longest credential a client may present that is looked up at all (bytes).
pub const MAX_KEY_BYTES: usize = 256;

/// SHA-256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.finalize().into()
}

/// Parses 64 hex digits (a SHA-256).
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(out)
}

/// Compares two byte strings in time that depends on their length only.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential a client presented: `Authorization: Bearer …` (OpenAI SDKs)
/// or `x-api-key` (Anthropic-style clients).
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|v| {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .or(x_api_key.map(str::trim))
        .filter(|k| !k.is_empty())
}

// === limits ===

/// One meter of a subject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    /// Requests per minute.
    #[default]
    Requests,
    /// Tokens per minute (prompt and completion).
    Tokens,
    /// Micro-USD per UTC day.
    CostDay,
    /// Micro-USD per UTC month.
    CostMonth,
}

impl Dim {
    /// All four, in their fixed order.
    pub const ALL: [Dim; 4] = [Dim::Requests, Dim::Tokens, Dim::CostDay, Dim::CostMonth];

    /// Position in [`Dim::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name in errors and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Requests => "requests",
            Dim::Tokens => "tokens",
            Dim::CostDay => "budget_day",
            Dim::CostMonth => "budget_month",
        }
    }

    /// Whether the limit is a spending budget (not a rate).
    pub fn is_budget(self) -> bool {
        matches!(self, Dim::CostDay | Dim::CostMonth)
    }

    /// The window `now_ms` falls in.
    pub fn window(self, now_ms: u64) -> u64 {
        match self {
            Dim::Requests | Dim::Tokens => now_ms / 60_000,
            Dim::CostDay => now_ms / DAY_MS,
            Dim::CostMonth => {
                let (y, m, _) = civil_from_days((now_ms / DAY_MS) as i64);
                (y * 12 + i64::from(m) - 1).max(0) as u64
            }
        }
    }

    /// When window `w` ends (Unix ms).
    pub fn window_end_ms(self, w: u64) -> u64 {
        match self {
            Dim::Requests | Dim::Tokens => (w + 1) * 60_000,
            Dim::CostDay => (w + 1) * DAY_MS,
            Dim::CostMonth => {
                let next = w as i64 + 1;
                let (y, m) = (next.div_euclid(12), (next.rem_euclid(12) + 1) as u32);
                (days_from_civil(y, m, 1).max(0) as u64) * DAY_MS
            }
        }
    }
}

const DAY_MS: u64 = 86_400_000;

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A subject's limits (none: unlimited).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// USD per UTC day, at the configured `prices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_day_usd: Option<f64>,
    /// USD per UTC month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_month_usd: Option<f64>,
}

impl Limits {
    /// The limit of `d` in its unit (requests, tokens, micro-USD).
    pub fn of(&self, d: Dim) -> Option<u64> {
        let usd = |v: f64| (v * 1e6).round().max(0.0) as u64;
        match d {
            Dim::Requests => self.rpm,
            Dim::Tokens => self.tpm,
            Dim::CostDay => self.budget_day_usd.map(usd),
            Dim::CostMonth => self.budget_month_usd.map(usd),
        }
    }

    /// All four, in [`Dim::ALL`] order.
    pub fn all(&self) -> [Option<u64>; 4] {
        Dim::ALL.map(|d| self.of(d))
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.all().iter().any(Option::is_some)
    }

    /// Problems with the values (`at` prefixes each).
    pub fn check(&self, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in [
            ("budget_day_usd", self.budget_day_usd),
            ("budget_month_usd", self.budget_month_usd),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                out.push(format!("{at}.{name}: expected a non-negative amount"));
            }
        }
        out
    }
}

// === the table filters get ===

/// A key as filters see it: its hash, never the key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Public id (`key_…`), in logs, audit and errors.
    pub id: String,
    /// Human name.
    pub name: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    /// Team whose limits the key's requests also count against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Route aliases it may use; `None`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Targets it may reach (`provider/model`, `provider/*`, `*`); `None`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// Whether it may name `provider/model` targets itself (in `model` or
    /// `fallbacks`), within `targets`.
    #[serde(default)]
    pub direct: bool,
    /// A price ceiling on every target of its requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<Price>,
    /// Its own limits.
    #[serde(default)]
    pub limits: Limits,
    /// Unix ms after which it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Revoked keys stay in the table so refusals are counted against them.
    #[serde(default)]
    pub revoked: bool,
}

/// A team: limits shared by its keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamRecord {
    /// Team name.
    pub name: String,
    /// Limits of all its keys together.
    #[serde(default)]
    pub limits: Limits,
}

/// Everything filters need to authenticate and admit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Keys.
    pub keys: Vec<KeyRecord>,
    /// Teams.
    #[serde(default)]
    pub teams: Vec<TeamRecord>,
}

impl Table {
    /// A content version: equal tables, equal versions (so a control plane that
    /// restarts never makes filters keep a stale table under a reused number).
    pub fn version(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let h = Sha256::digest(&json);
        hex(&h[..8])
    }
}

/// Subject name of a key's meters.
pub fn key_subject(id: &str) -> String {
    format!("k:{id}")
}

/// Subject name of a team's meters.
pub fn team_subject(name: &str) -> String {
    format!("t:{name}")
}

/// A key ready for requests.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The record.
    pub key: KeyRecord,
    /// Its team, when the table has it.
    pub team: Option<TeamRecord>,
    /// The key's subject name ([`key_subject`]).
    pub subject: String,
    /// The team's subject name, when the team has limits ([`team_subject`]).
    pub team_subject: Option<String>,
    hash: [u8; 32],
}

/// The table, indexed by hash prefix.
#[derive(Debug, Default)]
pub struct Index {
    by_prefix: HashMap<u64, Vec<usize>>,
    entries: Vec<Entry>,
}

/// Why a presented key is refused (all are `401 invalid_api_key` for the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No credential.
    Missing,
    /// Not a key of the table.
    Unknown,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

impl KeyRefusal {
    /// Reason in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRefusal::Missing => "missing",
            KeyRefusal::Unknown => "unknown",
            KeyRefusal::Revoked => "revoked",
            KeyRefusal::Expired => "expired",
        }
    }
}

impl Index {
    /// Indexes a table (records with a malformed hash are left out).
    pub fn new(table: &Table) -> Index {
        let teams: HashMap<&str, &TeamRecord> =
            table.teams.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut index = Index::default();
        for k in &table.keys {
            let Some(hash) = parse_sha256(&k.sha256) else {
                continue;
            };
            index
                .by_prefix
                .entry(prefix(&hash))
                .or_default()
                .push(index.entries.len());
            let team = k
                .team
                .as_deref()
                .and_then(|t| teams.get(t))
                .map(|t| (*t).clone());
            index.entries.push(Entry {
                key: k.clone(),
                subject: key_subject(&k.id),
                team_subject: team
                    .as_ref()
                    .filter(|t| t.limits.any())
                    .map(|t| team_subject(&t.name)),
                team,
                hash,
            });
        }
        index
    }

    /// The entry of a subject name (`k:<id>` or `t:<team>`) and the limits it
    /// is metered against.
    pub fn limits_of(&self, subject: &str) -> Option<[Option<u64>; 4]> {
        if let Some(id) = subject.strip_prefix("k:") {
            return self
                .entries
                .iter()
                .find(|e| e.key.id == id)
                .map(|e| e.key.limits.all());
        }
        let name = subject.strip_prefix("t:")?;
        self.entries
            .iter()
            .filter_map(|e| e.team.as_ref())
            .find(|t| t.name == name)
            .map(|t| t.limits.all())
    }

    /// Every key entry.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key a client presented, checked at `now_ms`: one SHA-256 and one map
    /// lookup, the full hash compared in constant time.
    pub fn find(
        &self,
        presented: Option<&str>,
        now_ms: u64,
    ) -> Result<&Entry, (KeyRefusal, Option<&Entry>)> {
        let Some(key) = presented else {
            return Err((KeyRefusal::Missing, None));
        };
        if key.len() > MAX_KEY_BYTES {
            return Err((KeyRefusal::Unknown, None));
        }
        let hash = hash_key(key);
        let found = self
            .by_prefix
            .get(&prefix(&hash))
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(*i))
            .find(|e| ct_eq(&e.hash, &hash));
        match found {
            None => Err((KeyRefusal::Unknown, None)),
            Some(e) if e.key.revoked => Err((KeyRefusal::Revoked, Some(e))),
            Some(e) if e.key.expires_at_ms.is_some_and(|t| now_ms >= t) => {
                Err((KeyRefusal::Expired, Some(e)))
            }
            Some(e) => Ok(e),
        }
    }
}

fn prefix(hash: &[u8; 32]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(p)
}

// === permissions ===

/// Whether `pattern` (`*`, `provider/*`, `provider/model`) covers `t`.
pub fn target_matches(pattern: &str, t: &Target) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.split_once('/') {
        Some((p, "*")) => p == t.provider,
        Some((p, m)) => p == t.provider && m == t.model,
        None => pattern == t.provider,
    }
}

impl KeyRecord {
    /// Whether the key may use route alias `alias`.
    pub fn allows_route(&self, alias: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|r| r.iter().any(|a| a == "*" || a == alias))
    }

    /// Whether the key may reach target `t` (whoever named it).
    pub fn allows_target(&self, t: &Target) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| target_matches(p, t)))
    }
}

/// The targets of `plan` a key may use. A target stays when the key may reach it
/// and one of the request's entries that put it there is allowed: a route alias
/// the key may use, or — for a key allowed to name targets — the target named
/// directly, within the ceiling of the routes the key may use (a key cannot
/// name its way past the price policy of its routes) and its own ceiling.
pub fn permitted(
    cfg: &crate::config::FilterConfig,
    key: &KeyRecord,
    model: &str,
    fallbacks: &[&str],
    plan: Vec<Target>,
) -> Vec<Target> {
    let price_ok = |t: &Target, ceiling: Option<Price>| {
        ceiling.is_none_or(|c| cfg.prices.get(&t.to_string()).is_some_and(|p| p.within(&c)))
    };
    let direct_ceiling = direct_ceiling(cfg, key);
    let mut via: Vec<Target> = Vec::new();
    for entry in std::iter::once(model).chain(fallbacks.iter().copied()) {
        match cfg.routes.get(entry) {
            Some(route) if key.allows_route(entry) => via.extend(route.chain.iter().cloned()),
            Some(_) => {}
            None => {
                if let Some(t) = Target::parse(entry).filter(|_| key.direct)
                    && price_ok(&t, direct_ceiling)
                {
                    via.push(t);
                }
            }
        }
    }
    plan.into_iter()
        .filter(|t| key.allows_target(t) && via.contains(t) && price_ok(t, key.max_price))
        .collect()
}

/// The ceiling on targets a key names itself: the loosest of its routes'
/// ceilings (none when one of them has none, or it may use routes without).
fn direct_ceiling(cfg: &crate::config::FilterConfig, key: &KeyRecord) -> Option<Price> {
    let mut ceiling: Option<Price> = None;
    for (alias, route) in &cfg.routes {
        if !key.allows_route(alias) {
            continue;
        }
        let c = route.max_price?;
        ceiling = Some(match ceiling {
            None => c,
            Some(p) => Price {
                input: p.input.max(c.input),
                output: p.output.max(c.output),
            },
        });
    }
    ceiling
}

// === the fleet exchange ===

/// One meter of a subject, as a filter reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimReport {
    /// Which meter.
    pub d: Dim,
    /// Its window.
    pub w: u64,
    /// Spent on credit since the last report (not from granted tokens).
    #[serde(default)]
    pub credit: u64,
    /// Used since the last report: estimates at admission, corrected with the
    /// real usage at the end (may be negative).
    #[serde(default)]
    pub used: i64,
    /// Tokens given back (the subject went idle here).
    #[serde(default)]
    pub returned: u64,
    /// Tokens wanted for the next interval.
    #[serde(default)]
    pub want: u64,
    /// Tokens held now (negative: used beyond its grants).
    #[serde(default)]
    pub held: i64,
    /// The largest request refused for lack of tokens: a grant smaller than
    /// this is of no use (tokens are not lent in useless crumbs).
    #[serde(default)]
    pub need: u64,
    /// The Envoy gave up the rest of its credit (too little for its requests).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credit_done: bool,
    /// What requests in flight were pre-charged (part of what was used: it
    /// comes back as far as they use less).
    #[serde(default)]
    pub pending: i64,
    /// Some of what is held was lent by a control plane (a control plane that
    /// restarted adopts it as lent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lent: bool,
}

/// One subject in a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectReport {
    /// `k:<key id>` or `t:<team>`.
    pub s: String,
    /// Its limited meters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dims: Vec<DimReport>,
}

/// The governance part of a filter's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovReport {
    /// This Envoy process (random per process: grants and credit are per boot).
    pub boot: String,
    /// Version of the table the filter holds (empty: none).
    #[serde(default)]
    pub table: String,
    /// Subjects with news.
    #[serde(default)]
    pub subjects: Vec<SubjectReport>,
    /// Governance decisions on requests since the last report, one each, for
    /// the audit log (at most [`MAX_DECISIONS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    /// Decisions this Envoy could not keep for a report (its buffer was
    /// full): the control plane records how many, from which node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

// === decisions, for the audit log ===

/// Most decisions one report carries. Reports go every 250 ms, so this is
/// 2 048 decisions a second per reporting worker: several times what a busy
/// worker admits in LLM traffic (requests that last seconds: a few hundred a
/// second), with room for bursts of refusals. Beyond it decisions wait for the
/// next report, and once the Envoy's buffer is full they are counted
/// ([`GovReport::dropped`]) instead of kept.
pub const MAX_DECISIONS: usize = 512;

/// Most bytes of decisions (as JSON) one report carries: half of
/// `fleet::MAX_REPORT_BYTES`. A usual decision (an Envoy request id, a key
/// and team, a cost) is about 170 bytes, so [`MAX_DECISIONS`] of them fit; one
/// with every field at its bound is under 600 bytes, and then fewer go per
/// report.
pub const MAX_DECISION_BYTES: usize = 128 * 1024;

/// Longest request id a decision carries (bytes). Envoy's own ids are 36; a
/// client may send its own `x-request-id` of any length (Envoy keeps it), and
/// such an id is recorded cut to this, marked [`Decision::id_altered`].
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Longest key id or team name (bytes; both are `[a-zA-Z0-9_.-]`).
pub const MAX_NAME_BYTES: usize = 64;

/// Why governance decided as it did on one request. A refusal's reason is the
/// code the client got, with the detail the client is not told (which of the
/// four ways a key was invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Admitted: a valid key, a model it may use, allowance at hand.
    Admitted,
    /// 401 `invalid_api_key`: no key presented.
    KeyMissing,
    /// 401 `invalid_api_key`: not a key of the table.
    KeyUnknown,
    /// 401 `invalid_api_key`: a revoked key.
    KeyRevoked,
    /// 401 `invalid_api_key`: an expired key.
    KeyExpired,
    /// 403 `model_not_allowed`: no target of the request is the key's to use.
    ModelNotAllowed,
    /// 429 `rate_limit_exceeded`: a limit, or this Envoy's share of it, is
    /// used up for now.
    RateLimitExceeded,
    /// 429 `budget_exceeded`: a budget is spent for its window.
    BudgetExceeded,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 8] = [
        Reason::Admitted,
        Reason::KeyMissing,
        Reason::KeyUnknown,
        Reason::KeyRevoked,
        Reason::KeyExpired,
        Reason::ModelNotAllowed,
        Reason::RateLimitExceeded,
        Reason::BudgetExceeded,
    ];

    /// The refusal of a presented key.
    pub fn of_key(why: KeyRefusal) -> Reason {
        match why {
            KeyRefusal::Missing => Reason::KeyMissing,
            KeyRefusal::Unknown => Reason::KeyUnknown,
            KeyRefusal::Revoked => Reason::KeyRevoked,
            KeyRefusal::Expired => Reason::KeyExpired,
        }
    }

    /// The refusal of a limit: `budget_exceeded` only when a budget is spent
    /// fleet-wide, else `rate_limit_exceeded` (allowance may be on its way).
    pub fn of_limit(r: &Refusal) -> Reason {
        if r.dim.is_budget() && r.exhausted {
            Reason::BudgetExceeded
        } else {
            Reason::RateLimitExceeded
        }
    }

    /// Whether the request was admitted.
    pub fn allowed(self) -> bool {
        self == Reason::Admitted
    }

    /// The code the client got (`admitted` for an admitted request).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Admitted => "admitted",
            Reason::KeyMissing | Reason::KeyUnknown | Reason::KeyRevoked | Reason::KeyExpired => {
                "invalid_api_key"
            }
            Reason::ModelNotAllowed => "model_not_allowed",
            Reason::RateLimitExceeded => "rate_limit_exceeded",
            Reason::BudgetExceeded => "budget_exceeded",
        }
    }

    /// The HTTP status the client got (200 for admitted: what the providers
    /// answered is not governance's).
    pub fn status(self) -> u16 {
        match self {
            Reason::Admitted => 200,
            Reason::KeyMissing | Reason::KeyUnknown | Reason::KeyRevoked | Reason::KeyExpired => {
                401
            }
            Reason::ModelNotAllowed => 403,
            Reason::RateLimitExceeded | Reason::BudgetExceeded => 429,
        }
    }

    /// Which way a key was invalid (401s only).
    pub fn key_state(self) -> Option<&'static str> {
        match self {
            Reason::KeyMissing => Some(KeyRefusal::Missing.as_str()),
            Reason::KeyUnknown => Some(KeyRefusal::Unknown.as_str()),
            Reason::KeyRevoked => Some(KeyRefusal::Revoked.as_str()),
            Reason::KeyExpired => Some(KeyRefusal::Expired.as_str()),
            _ => None,
        }
    }
}

/// One request's governance decision, as a filter reports it. Never a key,
/// its hash or the prompt: the key's public id, and the request id the client
/// saw (`x-request-id`, and in error bodies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// When governance decided (Unix ms, the Envoy's clock): admission or
    /// refusal.
    pub at_ms: u64,
    /// The request id the client saw (see [`MAX_REQUEST_ID_BYTES`]).
    pub request_id: String,
    /// The id is not quite the client's: cut to [`MAX_REQUEST_ID_BYTES`], or
    /// bytes other than visible ASCII replaced by `_` ([`audit_request_id`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub id_altered: bool,
    /// The key's id: `None` when no key of the table was presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Admitted, or why not.
    pub reason: Reason,
    /// The meter that refused (429s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Dim>,
    /// The meter is the team's, not the key's (429s).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub team_limit: bool,
    /// Cost charged once the request ended (micro-USD, the cost accounting's
    /// figures); 0 for refusals.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub micros: u64,
    /// Tokens charged once the request ended; 0 for refusals.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u64,
}

impl Decision {
    /// A decision at `at_ms` on request `request_id` (made fit with
    /// [`audit_request_id`]); no key, nothing charged.
    pub fn new(at_ms: u64, request_id: &str, reason: Reason) -> Decision {
        let (request_id, id_altered) = audit_request_id(request_id);
        Decision {
            at_ms,
            request_id,
            id_altered,
            key: None,
            team: None,
            reason,
            limit: None,
            team_limit: false,
            micros: 0,
            tokens: 0,
        }
    }

    /// Why the decision cannot be what a filter reports, if it cannot: a field
    /// beyond its bound, or fields that contradict the reason (a refusal that
    /// charged, an admission without a key, a 429 without its meter).
    pub fn problem(&self) -> Option<String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_NAME_BYTES
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if self.request_id.len() > MAX_REQUEST_ID_BYTES
            || !self.request_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Some(format!(
                "request_id: expected at most {MAX_REQUEST_ID_BYTES} bytes of visible ASCII"
            ));
        }
        if self.key.as_deref().is_some_and(|k| !name_ok(k))
            || self.team.as_deref().is_some_and(|t| !name_ok(t))
        {
            return Some(format!(
                "key, team: expected [a-zA-Z0-9_.-], 1 to {MAX_NAME_BYTES} characters"
            ));
        }
        let anonymous = matches!(self.reason, Reason::KeyMissing | Reason::KeyUnknown);
        if anonymous != self.key.is_none() || (self.key.is_none() && self.team.is_some()) {
            return Some(format!(
                "{}: a key id is expected exactly when the key was found",
                self.reason.code()
            ));
        }
        let limited = self.reason.status() == 429;
        if limited != self.limit.is_some() || (self.team_limit && !limited) {
            return Some(format!(
                "{}: `limit` is expected exactly for a 429",
                self.reason.code()
            ));
        }
        if self.team_limit && self.team.is_none() {
            return Some("team_limit: the key has no team".into());
        }
        if !self.reason.allowed() && (self.micros != 0 || self.tokens != 0) {
            return Some(format!("{}: a refusal charges nothing", self.reason.code()));
        }
        None
    }
}

/// A request id as decisions carry it: visible ASCII, at most
/// [`MAX_REQUEST_ID_BYTES`]; whether it had to be altered to be so (cut, or
/// other bytes replaced by `_`). Envoy's ids and the usual client ids (UUIDs,
/// trace ids) are kept as they are.
pub fn audit_request_id(id: &str) -> (String, bool) {
    let fits = id.len() <= MAX_REQUEST_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic());
    if fits {
        return (id.to_string(), false);
    }
    let kept: String = id
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(MAX_REQUEST_ID_BYTES)
        .collect();
    (kept, true)
}

/// Tokens lent to one Envoy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Subject.
    pub s: String,
    /// Meter.
    pub d: Dim,
    /// Window.
    pub w: u64,
    /// Tokens.
    pub n: u64,
    /// Fleet-wide remaining in the window (limit − used), for rate-limit headers
    /// and to tell an exhausted limit from allowance on its way.
    pub remaining: u64,
    /// The meter is lean (what is left cannot back every Envoy's credit): spend
    /// no credit on it in this window, only granted tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_credit: bool,
}

/// The governance part of the control plane's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GovState {
    /// Version of the current table.
    pub version: String,
    /// The table, when the filter's version differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
    /// Envoys in the fleet (for the credit of subjects without grants).
    pub envoys: u32,
    /// Tokens lent to this Envoy, and remaining allowance, per reported meter.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Most subjects one report may list.
pub const MAX_SUBJECTS: usize = 2048;

/// The credit an Envoy may spend on a meter before its first grant in a window.
pub fn credit(limit: u64, envoys: u32) -> u64 {
    limit / (2 * u64::from(envoys.max(1)))
}

// === local meters (kept by each Envoy, shared by its workers) ===

/// An Envoy's view of one meter in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalDim {
    /// Window (0: never used).
    pub w: u64,
    /// Granted tokens at hand (negative: used beyond them).
    pub held: i64,
    /// Credit left in this window.
    pub credit_left: i64,
    /// The credit this window was given (0: unknown): it shrinks when the
    /// fleet grows or the limit is lowered, as the control plane's reserve does.
    pub credit_cap: i64,
    /// Credit spent since the last report.
    pub credit_spent: i64,
    /// Used since the last report.
    pub used: i64,
    /// Demand since the last report: estimates of requests refused for lack of
    /// tokens.
    pub denied_est: i64,
    /// Fleet-wide remaining as last told (-1: unknown).
    pub remaining: i64,
    /// The largest estimate refused since the last report.
    pub need: i64,
    /// Credit given up since the last report.
    pub credit_done: bool,
    /// What requests really used against their raw estimates, per mille
    /// (smoothed; at least 1000): later estimates are scaled by it, so a
    /// subject whose answers outgrow the estimate is pre-charged what it uses.
    pub ratio: i64,
    /// Pre-charged to requests in flight.
    pub pending: i64,
    /// A grant was received in this window.
    pub lent: bool,
}

impl LocalDim {
    fn roll(&mut self, w: u64, credit: u64) {
        if self.w != w {
            // Unreported use of an earlier window is charged to this one.
            *self = LocalDim {
                w,
                credit_left: credit as i64,
                credit_cap: credit as i64,
                credit_spent: self.credit_spent,
                used: self.used,
                remaining: -1,
                ratio: self.ratio,
                pending: self.pending,
                ..LocalDim::default()
            };
        }
    }
}

/// An Envoy's meters of one subject (stored in shared state as a line of
/// numbers, see [`Local::encode`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// Last admission (Unix ms).
    pub last_ms: u64,
    /// Requests admitted and not settled yet.
    pub inflight: u64,
    /// The four meters.
    pub dims: [LocalDim; 4],
}

/// Near the end of an allowance (less than this many requests' estimates per
/// Envoy left), an Envoy admits one request of a subject at a time: what
/// requests in flight may use beyond their estimates is then one request's
/// worth per Envoy.
pub const LAST_MILE_REQUESTS: u64 = 8;

/// Why a request was refused for its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The meter.
    pub dim: Dim,
    /// The limit is used up for the window (not only this Envoy's share).
    pub exhausted: bool,
    /// When to try again (Unix ms).
    pub retry_at_ms: u64,
}

/// Estimates (at admission) or real usage (at the end) of one request, per meter.
pub type Amounts = [u64; 4];

impl Local {
    /// Admits a request of raw estimate `est` against `limits` at `now_ms`:
    /// every limited meter must have granted tokens (or credit) for it, scaled
    /// by what this subject's requests really used so far; then it is
    /// pre-charged. Returns what was charged (to settle with).
    pub fn admit(
        &mut self,
        limits: &[Option<u64>; 4],
        est: &Amounts,
        now_ms: u64,
        envoys: u32,
    ) -> Result<Amounts, Refusal> {
        let mut from_credit = [false; 4];
        let mut charged = [0u64; 4];
        for d in Dim::ALL {
            let i = d.index();
            let Some(limit) = limits[i] else { continue };
            let m = &mut self.dims[i];
            let c = credit(limit, envoys);
            m.roll(d.window(now_ms), c);
            if m.credit_cap > c as i64 {
                // More Envoys than when the window began (or a lower limit):
                // the control plane reserves the smaller credit now.
                m.credit_left = (m.credit_left - (m.credit_cap - c as i64)).max(0);
                m.credit_cap = c as i64;
            }
            let ratio = m.ratio.max(1000) as u64;
            charged[i] = est[i].saturating_mul(ratio) / 1000;
            let e = charged[i] as i64;
            let end = d.window_end_ms(m.w);
            if e > limit as i64 {
                return Err(self.refuse(d, true, end, e));
            }
            // Only tokens and cost can turn out larger than estimated.
            let last_mile = d != Dim::Requests
                && m.remaining >= 0
                && (m.remaining as u64) < LAST_MILE_REQUESTS * e as u64 * u64::from(envoys.max(1));
            if last_mile && self.inflight > 0 {
                return Err(Refusal {
                    dim: d,
                    exhausted: false,
                    retry_at_ms: (now_ms + 1000).min(end),
                });
            }
            // Tokens at hand were lent for this: using them cannot overshoot.
            if m.held >= e {
                continue;
            }
            if m.remaining == 0 {
                return Err(self.refuse(d, true, end, e));
            }
            if m.credit_left >= e {
                // Near the end of its credit an Envoy admits one request at a
                // time too: what requests in flight use beyond their
                // estimates comes out of the credit left (`settle`), which
                // then covers it but for one request's worth.
                if d != Dim::Requests
                    && self.inflight > 0
                    && (m.credit_left as u64) < LAST_MILE_REQUESTS * e as u64
                {
                    return Err(Refusal {
                        dim: d,
                        exhausted: false,
                        retry_at_ms: (now_ms + 1000).min(end),
                    });
                }
                from_credit[i] = true;
                continue;
            }
            let exhausted = m.remaining >= 0 && m.remaining < e;
            let retry = if exhausted {
                end
            } else {
                (now_ms + 1000).min(end)
            };
            return Err(self.refuse(d, exhausted, retry, e));
        }
        for d in Dim::ALL {
            let i = d.index();
            if limits[i].is_none() {
                continue;
            }
            let m = &mut self.dims[i];
            let e = charged[i] as i64;
            if from_credit[i] {
                m.credit_left -= e;
                m.credit_spent += e;
            } else {
                m.held -= e;
            }
            m.used += e;
            m.pending += e;
        }
        self.inflight += 1;
        self.last_ms = now_ms;
        Ok(charged)
    }

    fn refuse(&mut self, d: Dim, exhausted: bool, retry_at_ms: u64, est: i64) -> Refusal {
        // Reported as demand either way: an exhausted limit that was raised
        // meanwhile is learnt at the next exchange.
        let m = &mut self.dims[d.index()];
        m.denied_est = m.denied_est.saturating_add(est.max(1));
        m.need = m.need.max(est);
        if m.credit_left > 0 {
            // Too little for the requests this Envoy sees: give it back.
            m.credit_left = 0;
            m.credit_done = true;
        }
        Refusal {
            dim: d,
            exhausted,
            retry_at_ms,
        }
    }

    /// Takes back an admission (the request's other subject refused it).
    pub fn undo(&mut self, limits: &[Option<u64>; 4], est: &Amounts) {
        for d in Dim::ALL {
            let i = d.index();
            if limits[i].is_some() {
                self.dims[i].held += est[i] as i64;
                self.dims[i].used -= est[i] as i64;
                self.dims[i].pending = (self.dims[i].pending - est[i] as i64).max(0);
            }
        }
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// Settles a request admitted in the windows of `admitted_ms`, charged
    /// `est` (raw estimate `raw`), which really used `actual`.
    pub fn settle(
        &mut self,
        limits: &[Option<u64>; 4],
        est: &Amounts,
        raw: &Amounts,
        actual: &Amounts,
        admitted_ms: u64,
        now_ms: u64,
    ) {
        for d in Dim::ALL {
            let i = d.index();
            if limits[i].is_none() {
                continue;
            }
            let m = &mut self.dims[i];
            m.pending = (m.pending - est[i] as i64).max(0);
            if raw[i] > 0 && actual[i] > 0 {
                // Smoothed (new weighs 1/4), never below the raw estimate.
                let r = (actual[i].saturating_mul(1000) / raw[i]).min(1_000_000) as i64;
                let old = m.ratio.max(1000);
                m.ratio = ((3 * old + r) / 4).max(1000);
            }
            let delta = if m.w == d.window(admitted_ms) {
                actual[i] as i64 - est[i] as i64
            } else {
                // Admitted in a window that is over: the use counts in this one.
                m.roll(d.window(now_ms), 0);
                actual[i] as i64
            };
            m.held -= delta;
            m.used += delta;
            if m.held < 0 && m.credit_left > 0 {
                // Used beyond what was pre-charged and lent: paid with credit
                // first, so credit bounds what requests use, not only their
                // estimates. What is left is the control plane's to cover.
                let x = (-m.held).min(m.credit_left);
                m.held += x;
                m.credit_left -= x;
                m.credit_spent += x;
            }
        }
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// Takes what the next report carries (and zeroes it): per limited meter its
    /// use, credit spent and demand. Tokens are given back when the subject has
    /// been idle for `idle_ms`, or when what is held is too little for the
    /// requests refused (so the fleet can pool them).
    pub fn take(
        &mut self,
        s: &str,
        limits: &[Option<u64>; 4],
        now_ms: u64,
        idle_ms: u64,
    ) -> Option<SubjectReport> {
        let idle = now_ms.saturating_sub(self.last_ms) >= idle_ms;
        let mut dims = Vec::new();
        for d in Dim::ALL {
            let i = d.index();
            let m = &mut self.dims[i];
            if limits[i].is_none() || m.w == 0 {
                continue;
            }
            let current = m.w == d.window(now_ms);
            let crumbs = m.held > 0 && m.held < m.need;
            let unused = idle && m.denied_est == 0 && m.held > 0;
            let returned = if current && (crumbs || unused) {
                m.held
            } else {
                0
            };
            // Demand: what was refused, and about a second of the recent use.
            let want = if current {
                (m.denied_est + 4 * m.used.max(0)).max(0) as u64
            } else {
                0
            };
            let r = DimReport {
                d,
                w: m.w,
                credit: m.credit_spent.max(0) as u64,
                used: m.used,
                returned: returned as u64,
                want,
                held: m.held - returned,
                need: m.need.max(0) as u64,
                credit_done: m.credit_done,
                pending: m.pending,
                lent: m.lent,
            };
            m.held -= returned;
            m.credit_spent = 0;
            m.used = 0;
            m.denied_est = 0;
            m.need = 0;
            m.credit_done = false;
            if r.credit != 0 || r.used != 0 || r.returned != 0 || r.want != 0 || r.credit_done {
                dims.push(r);
            }
        }
        (!dims.is_empty()).then(|| SubjectReport {
            s: s.to_string(),
            dims,
        })
    }

    /// Puts back what a report that failed carried (given-back tokens are not
    /// restored: they may have reached the control plane, and tokens must never
    /// be counted twice).
    pub fn restore(&mut self, r: &SubjectReport) {
        for dr in &r.dims {
            let m = &mut self.dims[dr.d.index()];
            if m.w == dr.w {
                m.credit_spent += dr.credit as i64;
                m.used += dr.used;
            }
        }
    }

    /// Adds a grant from the control plane.
    pub fn grant(&mut self, g: &Grant) {
        let m = &mut self.dims[g.d.index()];
        if g.w > m.w {
            // The control plane is in a newer window: start it (no credit: the
            // grant is what this Envoy gets).
            *m = LocalDim {
                w: g.w,
                credit_spent: m.credit_spent,
                used: m.used,
                ratio: m.ratio,
                pending: m.pending,
                ..LocalDim::default()
            };
        }
        if g.w == m.w {
            if g.no_credit {
                m.credit_left = 0;
            }
            m.lent |= g.n > 0;
            m.held = m.held.saturating_add(g.n as i64);
            m.remaining = i64::try_from(g.remaining).unwrap_or(i64::MAX);
        }
    }

    /// Fleet-wide remaining of `d` in the current window, when known.
    pub fn remaining(&self, d: Dim, now_ms: u64) -> Option<u64> {
        let m = &self.dims[d.index()];
        (m.w == d.window(now_ms) && m.remaining >= 0).then_some(m.remaining as u64)
    }

    /// The record as one line of numbers.
    ///
    /// The line starts with seven zeros: those places held per-subject request
    /// counters before decisions were reported one by one. They stay so that a
    /// line one build wrote reads right in another (shared state outlives a
    /// filter config: a new build can take over in a running Envoy).
    pub fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(160);
        let _ = write!(s, "0,0,0,0,0,0,0,{},{}", self.last_ms, self.inflight);
        for m in &self.dims {
            let _ = write!(
                s,
                ";{},{},{},{},{},{},{},{},{},{},{},{},{}",
                m.w,
                m.held,
                m.credit_left,
                m.credit_spent,
                m.used,
                m.denied_est,
                m.remaining,
                m.need,
                u8::from(m.credit_done),
                m.ratio,
                m.pending,
                u8::from(m.lent),
                m.credit_cap
            );
        }
        s
    }

    /// Parses [`Local::encode`]'s line (anything else is an empty record).
    pub fn decode(s: &[u8]) -> Local {
        let s = std::str::from_utf8(s).unwrap_or_default();
        let mut parts = s.split(';');
        let head: Vec<u64> = parts
            .next()
            .unwrap_or_default()
            .split(',')
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        let h = |i: usize| head.get(i).copied().unwrap_or(0);
        let mut l = Local {
            last_ms: h(7),
            inflight: h(8),
            dims: [LocalDim::default(); 4],
        };
        for (m, part) in l.dims.iter_mut().zip(parts) {
            let v: Vec<i64> = part.split(',').map(|n| n.parse().unwrap_or(0)).collect();
            let g = |i: usize| v.get(i).copied().unwrap_or(0);
            *m = LocalDim {
                w: g(0).max(0) as u64,
                held: g(1),
                credit_left: g(2),
                credit_spent: g(3),
                used: g(4),
                denied_est: g(5),
                remaining: if v.len() > 6 { g(6) } else { -1 },
                need: g(7),
                credit_done: g(8) != 0,
                ratio: g(9),
                pending: g(10),
                lent: g(11) != 0,
                credit_cap: g(12),
            };
        }
        l
    }
}

/// The wire form of a reset time in OpenAI's `x-ratelimit-reset-*` headers
/// (`1s`, `6m0s`, `1h2m3s`).
pub fn reset_header(ms: u64) -> String {
    let s = ms.div_ceil(1000).max(1);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_lookup() {
        let key = "sk-sy-abc";
        let table = Table {
            keys: vec![KeyRecord {
                id: "key_1".into(),
                name: "one".into(),
                sha256: hex(&hash_key(key)),
                team: Some("t".into()),
                routes: None,
                targets: None,
                direct: false,
                max_price: None,
                limits: Limits::default(),
                expires_at_ms: Some(2000),
                revoked: false,
            }],
            teams: vec![TeamRecord {
                name: "t".into(),
                limits: Limits {
                    rpm: Some(5),
                    ..Limits::default()
                },
            }],
        };
        let index = Index::new(&table);
        let e = index.find(Some(key), 1000).unwrap();
        assert_eq!(e.key.id, "key_1");
        assert_eq!(e.team.as_ref().unwrap().limits.rpm, Some(5));
        assert_eq!(
            index.find(Some("sk-sy-abd"), 1000).unwrap_err().0,
            KeyRefusal::Unknown
        );
        assert_eq!(index.find(None, 1000).unwrap_err().0, KeyRefusal::Missing);
        assert_eq!(
            index.find(Some(key), 2000).unwrap_err().0,
            KeyRefusal::Expired
        );
        assert_eq!(parse_sha256(&table.keys[0].sha256), Some(hash_key(key)));
        assert_ne!(table.version(), Table::default().version());
        assert_eq!(
            presented_key(Some("Bearer  sk-sy-x "), None),
            Some("sk-sy-x")
        );
        assert_eq!(
            presented_key(Some("Basic x"), Some("sk-sy-y")),
            Some("sk-sy-y")
        );
        assert_eq!(presented_key(None, Some("  ")), None);
    }

    #[test]
    fn windows_follow_the_utc_calendar() {
        // 2026-01-31T23:59:59.999Z and the next millisecond.
        let t = days_from_civil(2026, 2, 1) as u64 * DAY_MS - 1;
        assert_eq!(civil_from_days((t / DAY_MS) as i64), (2026, 1, 31));
        let (m0, m1) = (Dim::CostMonth.window(t), Dim::CostMonth.window(t + 1));
        assert_eq!(m1, m0 + 1);
        assert_eq!(Dim::CostMonth.window_end_ms(m0), t + 1);
        assert_eq!(Dim::CostDay.window_end_ms(Dim::CostDay.window(t)), t + 1);
        assert_eq!(Dim::Requests.window_end_ms(Dim::Requests.window(t)), t + 1);
        // December rolls into the next year.
        let dec = days_from_civil(2026, 12, 15) as u64 * DAY_MS;
        assert_eq!(
            Dim::CostMonth.window_end_ms(Dim::CostMonth.window(dec)),
            days_from_civil(2027, 1, 1) as u64 * DAY_MS
        );
        assert_eq!(reset_header(500), "1s");
        assert_eq!(reset_header(360_000), "6m0s");
        assert_eq!(reset_header(3_723_000), "1h2m3s");
    }

    #[test]
    fn admission_spends_credit_then_grants_and_settles() {
        let limits = [Some(10), None, None, None];
        let now = 60_000 * 100 + 5;
        let mut l = Local::default();
        // 3 Envoys: credit 10 / 6 = 1 request.
        assert!(l.admit(&limits, &[1, 0, 0, 0], now, 3).is_ok());
        let r = l.admit(&limits, &[1, 0, 0, 0], now, 3).unwrap_err();
        assert!(!r.exhausted, "allowance is on its way");
        assert_eq!(r.retry_at_ms, now + 1000);
        let rep = l.take("k:a", &limits, now, 2000).unwrap();
        assert_eq!(rep.dims[0].credit, 1);
        assert_eq!(rep.dims[0].want, 1 + 4);
        l.grant(&Grant {
            s: "k:a".into(),
            d: Dim::Requests,
            w: 100,
            n: 3,
            remaining: 9,
            no_credit: false,
        });
        for _ in 0..3 {
            assert!(l.admit(&limits, &[1, 0, 0, 0], now, 3).is_ok());
        }
        assert!(l.admit(&limits, &[1, 0, 0, 0], now, 3).is_err());
        // Exhausted fleet-wide: retry at the window's end.
        l.grant(&Grant {
            s: "k:a".into(),
            d: Dim::Requests,
            w: 100,
            n: 0,
            remaining: 0,
            no_credit: false,
        });
        let r = l.admit(&limits, &[1, 0, 0, 0], now, 3).unwrap_err();
        assert!(r.exhausted);
        assert_eq!(r.retry_at_ms, 101 * 60_000);
        // A new window starts with credit again.
        assert!(l.admit(&limits, &[1, 0, 0, 0], now + 60_000, 3).is_ok());
        let round = Local::decode(l.encode().as_bytes());
        assert_eq!(round, l);
    }

    /// Credit bounds what requests use: use beyond the pre-charge is paid
    /// out of credit, the last 8 requests' worth of credit is spent one
    /// request at a time, and credit shrinks when more Envoys are told.
    #[test]
    fn credit_pays_for_use_beyond_estimates_and_follows_the_fleet() {
        let limits = [None, None, Some(4000), None];
        let now = 1_700_000_000_000;
        let mut l = Local::default();
        // 1 Envoy: credit 2000. Ten requests of estimate 100 at once.
        let charged: Vec<Amounts> = (0..10)
            .map(|_| l.admit(&limits, &[1, 0, 100, 0], now, 1).unwrap())
            .collect();
        assert_eq!(l.dims[2].credit_left, 1000);
        // Each used 150: the 500 beyond the estimates comes out of credit.
        for c in &charged {
            l.settle(&limits, c, &[1, 0, 100, 0], &[1, 0, 150, 0], now, now + 5);
        }
        assert_eq!((l.dims[2].held, l.dims[2].credit_left), (0, 500));
        assert_eq!(l.dims[2].credit_spent, 1500);
        // Estimates now scale by what requests used (~1.47x after ten of
        // 1.5x); 500 left is less than 8 of them: one at a time.
        let first = l.admit(&limits, &[1, 0, 100, 0], now + 6, 1).unwrap();
        assert!(first[2] > 100, "{first:?}");
        let r = l.admit(&limits, &[1, 0, 100, 0], now + 6, 1).unwrap_err();
        assert!(!r.exhausted);
        // Told of 3 Envoys: the window's credit drops from 2000 to 666, of
        // which more than 1500 was spent: nothing is left.
        l.settle(
            &limits,
            &first,
            &[1, 0, 100, 0],
            &[1, 0, 150, 0],
            now,
            now + 7,
        );
        assert!(l.admit(&limits, &[1, 0, 100, 0], now + 8, 3).is_err());
        assert_eq!(l.dims[2].credit_left, 0);
        assert_eq!(Local::decode(l.encode().as_bytes()), l);
    }

    #[test]
    fn settling_charges_the_real_use() {
        let limits = [None, Some(1000), Some(500), None];
        let now = 1_700_000_000_000;
        let mut l = Local::default();
        l.grant(&Grant {
            s: "t:x".into(),
            d: Dim::Tokens,
            w: Dim::Tokens.window(now),
            n: 100,
            remaining: 1000,
            no_credit: false,
        });
        l.grant(&Grant {
            s: "t:x".into(),
            d: Dim::CostDay,
            w: Dim::CostDay.window(now),
            n: 100,
            remaining: 500,
            no_credit: false,
        });
        let charged = l.admit(&limits, &[1, 60, 30, 30], now, 1).unwrap();
        assert_eq!(charged, [0, 60, 30, 0], "only limited meters are charged");
        l.settle(
            &limits,
            &charged,
            &[1, 60, 30, 30],
            &[1, 80, 40, 40],
            now,
            now + 10,
        );
        assert_eq!(l.dims[1].held, 100 - 80);
        assert_eq!(l.dims[2].held, 100 - 40);
        let rep = l.take("t:x", &limits, now + 10, 2000).unwrap();
        assert_eq!(
            rep.dims.iter().map(|d| d.used).collect::<Vec<_>>(),
            vec![80, 40]
        );

        // Idle: the tokens go back.
        let rep = l.take("t:x", &limits, now + 10_000, 2000).unwrap();
        assert_eq!(rep.dims[0].returned, 20);
        assert_eq!(l.dims[1].held, 0);
        // The next estimate is scaled by what the answer really used (80/60,
        // smoothed): 60 → 64 tokens.
        assert_eq!(l.dims[1].ratio, (3 * 1000 + 1333) / 4);
        l.dims[1].held = 1000;
        l.dims[2].held = 1000;
        assert_eq!(
            l.admit(&limits, &[1, 60, 30, 30], now + 20, 1).unwrap()[1],
            64
        );
    }

    fn cfg_with(prices: &[(&str, f64)], ceiling: Option<f64>) -> crate::config::FilterConfig {
        let mut c: crate::config::FilterConfig = serde_json::from_value(serde_json::json!({
            "version": "1", "role": "planner", "max_request_bytes": 1000, "max_attempts": 4,
            "providers": {
                "a": {"dialect": "openai", "cluster": "ca", "authority": "h", "base_path": "/v1"},
                "b": {"dialect": "openai", "cluster": "cb", "authority": "h", "base_path": "/v1"}
            },
            "routes": {"chat": {"chain": [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}]}}
        }))
        .unwrap();
        for (t, p) in prices {
            c.prices.insert(
                t.to_string(),
                Price {
                    input: *p,
                    output: *p,
                },
            );
        }
        if let Some(x) = ceiling {
            c.routes.get_mut("chat").unwrap().max_price = Some(Price {
                input: x,
                output: x,
            });
        }
        c
    }

    #[test]
    fn permissions_filter_routes_fallbacks_and_direct_targets() {
        let cfg = cfg_with(&[("a/m", 1.0), ("b/m", 1.0), ("b/big", 10.0)], Some(2.0));
        let t = |s: &str| Target::parse(s).unwrap();
        let mut key = KeyRecord {
            id: "k".into(),
            name: "k".into(),
            sha256: String::new(),
            team: None,
            routes: None,
            targets: Some(vec!["a/*".into()]),
            direct: false,
            max_price: None,
            limits: Limits::default(),
            expires_at_ms: None,
            revoked: false,
        };
        let plan = vec![t("a/m"), t("b/m"), t("b/big")];
        // Only provider a, whatever the fallbacks name.
        assert_eq!(
            permitted(&cfg, &key, "chat", &["b/big"], plan.clone()),
            vec![t("a/m")]
        );
        // Direct targets need the permission…
        key.targets = None;
        assert_eq!(permitted(&cfg, &key, "b/m", &[], vec![t("b/m")]), vec![]);
        key.direct = true;
        assert_eq!(
            permitted(&cfg, &key, "b/m", &[], vec![t("b/m")]),
            vec![t("b/m")]
        );
        // …and stay within the ceiling of the key's routes.
        assert_eq!(
            permitted(&cfg, &key, "b/big", &[], vec![t("b/big")]),
            vec![]
        );
        // A route the key may not use brings nothing.
        key.routes = Some(vec!["other".into()]);
        assert_eq!(permitted(&cfg, &key, "chat", &[], plan), vec![]);
    }

    fn longest_decision() -> Decision {
        Decision {
            at_ms: u64::MAX,
            request_id: "\\".repeat(MAX_REQUEST_ID_BYTES),
            id_altered: true,
            key: Some("k".repeat(MAX_NAME_BYTES)),
            team: Some("t".repeat(MAX_NAME_BYTES)),
            reason: Reason::RateLimitExceeded,
            limit: Some(Dim::CostMonth),
            team_limit: true,
            micros: 0,
            tokens: 0,
        }
    }

    #[test]
    fn decisions_are_bounded_and_consistent() {
        // Every field at its bound (escapes included): under 600 bytes.
        let longest = longest_decision();
        assert_eq!(longest.problem(), None);
        let admitted = Decision {
            reason: Reason::Admitted,
            limit: None,
            team_limit: false,
            micros: u64::MAX,
            tokens: u64::MAX,
            ..longest.clone()
        };
        assert_eq!(admitted.problem(), None);
        let worst = serde_json::to_vec(&longest)
            .unwrap()
            .len()
            .max(serde_json::to_vec(&admitted).unwrap().len());
        assert!(worst < 600, "{worst} bytes");
        // A usual one: a full report's worth fits in the byte bound.
        let usual = Decision {
            at_ms: 1_790_000_000_000,
            request_id: "5f0c7a4e-3b1d-4c4e-9a57-0d8f6b2e1c3a".into(),
            id_altered: false,
            key: Some("key_0123456789ab".into()),
            team: Some("research".into()),
            reason: Reason::Admitted,
            limit: None,
            team_limit: false,
            micros: 1_234,
            tokens: 1_500,
        };
        let usual = serde_json::to_vec(&usual).unwrap().len();
        assert!(MAX_DECISIONS * usual < MAX_DECISION_BYTES, "{usual} bytes");

        // Each contradiction or overlong field is named.
        let bad = |f: &dyn Fn(&mut Decision)| {
            let mut d = longest.clone();
            f(&mut d);
            d.problem()
        };
        for (what, f) in [
            (
                "request_id",
                &(|d: &mut Decision| d.request_id.push('x')) as &dyn Fn(&mut Decision),
            ),
            ("request_id", &|d| d.request_id = "a b".into()),
            ("key, team", &|d| {
                d.key = Some("k".repeat(MAX_NAME_BYTES + 1))
            }),
            ("key, team", &|d| d.team = Some("a/b".into())),
            ("a key id is expected", &|d| d.key = None),
            ("a key id is expected", &|d| d.reason = Reason::KeyUnknown),
            ("`limit` is expected", &|d| d.limit = None),
            ("`limit` is expected", &|d| d.reason = Reason::KeyRevoked),
            ("a refusal charges nothing", &|d| d.micros = 1),
            ("team_limit", &|d| d.team = None),
        ] {
            let p = bad(f).unwrap_or_default();
            assert!(p.contains(what), "{what}: {p:?}");
        }
        let unknown = Decision::new(5, "r1", Reason::KeyUnknown);
        assert_eq!(unknown.problem(), None);
        assert_eq!(
            (unknown.reason.status(), unknown.reason.code()),
            (401, "invalid_api_key")
        );
        assert_eq!(unknown.reason.key_state(), Some("unknown"));
        // Unknown reasons and fields are not decisions.
        let json = serde_json::to_value(&unknown).unwrap();
        let mut odd = json.clone();
        odd["reason"] = "because".into();
        assert!(serde_json::from_value::<Decision>(odd).is_err());
        let mut extra = json;
        extra["prompt"] = "hello".into();
        assert!(serde_json::from_value::<Decision>(extra).is_err());
    }

    #[test]
    fn request_ids_are_kept_or_visibly_altered() {
        let uuid = "5f0c7a4e-3b1d-4c4e-9a57-0d8f6b2e1c3a";
        assert_eq!(audit_request_id(uuid), (uuid.to_string(), false));
        assert_eq!(audit_request_id(""), (String::new(), false));
        let (id, altered) = audit_request_id(&"x".repeat(300));
        assert!(altered && id.len() == MAX_REQUEST_ID_BYTES);
        assert_eq!(audit_request_id("a b\u{e9}\n"), ("a_b__".to_string(), true));
        assert_eq!(Decision::new(1, "a b", Reason::KeyMissing).problem(), None);
    }

    #[test]
    fn refusal_reasons_follow_the_clients_code() {
        let r = |dim, exhausted| Refusal {
            dim,
            exhausted,
            retry_at_ms: 0,
        };
        assert_eq!(
            Reason::of_limit(&r(Dim::CostDay, true)),
            Reason::BudgetExceeded
        );
        assert_eq!(
            Reason::of_limit(&r(Dim::CostDay, false)),
            Reason::RateLimitExceeded
        );
        assert_eq!(
            Reason::of_limit(&r(Dim::Requests, true)),
            Reason::RateLimitExceeded
        );
        for reason in Reason::ALL {
            assert_eq!(reason.allowed(), reason.status() == 200);
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
        assert_eq!(Reason::of_key(KeyRefusal::Revoked), Reason::KeyRevoked);
    }

    #[test]
    fn a_meter_line_keeps_its_layout_across_builds() {
        let mut l = Local {
            last_ms: 7,
            inflight: 2,
            ..Local::default()
        };
        l.dims[0].held = 3;
        let line = l.encode();
        assert!(line.starts_with("0,0,0,0,0,0,0,7,2;"), "{line}");
        // A line written before (counters in front) reads the same.
        let before = line.replacen("0,0,0,0,0,0,0,", "4,1,0,2,0,900,60,", 1);
        assert_eq!(Local::decode(before.as_bytes()), l);
    }
}
