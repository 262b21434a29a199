//! `governance:` — virtual keys, teams, budgets and limits. Keys are normally
//! managed at run time (`switchyard keys …`, stored in the control plane's
//! database); the file may also declare teams and keys for GitOps, keys by
//! their SHA-256 only (`switchyard keys generate` prints a key and its hash).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_core::config::Price;
use switchyard_core::governance::{KeyRecord, Limits, TeamRecord, parse_sha256};

use super::secrets::{RawSecret, resolve_secret};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGovernance {
    /// Require keys even before any exists (every request is refused until one does).
    #[serde(default)]
    require_keys: bool,
    /// The key database (SQLite); several control planes on one host may share it.
    #[serde(default)]
    database: Option<PathBuf>,
    /// The audit log (hash-chained JSON lines).
    #[serde(default)]
    audit_log: Option<PathBuf>,
    /// The admin API's token (`env` or `file`); default: a token generated into
    /// the data directory (`admin-token`).
    #[serde(default)]
    admin_token: Option<RawSecret>,
    /// Completion tokens assumed at admission when a request sets no `max_tokens`.
    #[serde(default = "default_completion_estimate")]
    completion_estimate: u64,
    /// Once the seconds between per-key request summaries in the audit log;
    /// every request's decision is recorded now, as filters report it. Still
    /// read so that files which set it load; it changes nothing.
    #[serde(default)]
    audit_flush_s: Option<u64>,
    #[serde(default)]
    teams: Vec<RawTeam>,
    #[serde(default)]
    keys: Vec<RawKey>,
}

impl Default for RawGovernance {
    fn default() -> Self {
        RawGovernance {
            require_keys: false,
            database: None,
            audit_log: None,
            admin_token: None,
            completion_estimate: default_completion_estimate(),
            audit_flush_s: None,
            teams: Vec::new(),
            keys: Vec::new(),
        }
    }
}

fn default_completion_estimate() -> u64 {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    name: String,
    #[serde(flatten)]
    limits: Limits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    name: String,
    /// SHA-256 of the key (hex): the key itself never appears in the file.
    sha256: String,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    routes: Option<Vec<String>>,
    #[serde(default)]
    targets: Option<Vec<String>>,
    #[serde(default)]
    direct: bool,
    #[serde(default)]
    max_price: Option<Price>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    budget_day_usd: Option<f64>,
    #[serde(default)]
    budget_month_usd: Option<f64>,
}

/// The checked `governance:` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Governance {
    /// Keys are required even when none exists.
    pub require_keys: bool,
    /// Database path (absolute), when the file names one.
    pub database: Option<PathBuf>,
    /// Audit log path (absolute), when the file names one.
    pub audit_log: Option<PathBuf>,
    /// The admin token, when the file names its source.
    pub admin_token: Option<AdminToken>,
    /// Completion tokens assumed at admission without `max_tokens`.
    pub completion_estimate: u64,
    /// Teams declared in the file.
    pub teams: Vec<TeamRecord>,
    /// Keys declared in the file (hash only), with their owner.
    pub keys: Vec<(KeyRecord, Option<String>)>,
}

/// The admin API's token (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// Checks the section; paths resolve against `base`.
pub(super) fn check(
    raw: &RawGovernance,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Governance {
    let at = "governance";
    let absolute = |p: &PathBuf| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.clone()
        }
    };
    let admin_token = raw.admin_token.as_ref().and_then(|s| {
        resolve_secret(s, &format!("{at}.admin_token"), base, env, problems).map(AdminToken)
    });
    if admin_token.as_ref().is_some_and(|t| t.0.len() < 16) {
        problems.push(format!("{at}.admin_token: expected at least 16 characters"));
    }
    if raw.audit_flush_s.is_some() {
        tracing::warn!(
            "{at}.audit_flush_s is no longer used: every request's governance decision is recorded in the audit log as filters report it"
        );
    }
    let mut teams = Vec::new();
    for (i, t) in raw.teams.iter().enumerate() {
        let at = format!("{at}.teams[{i}]");
        if !valid_name(&t.name) {
            problems.push(format!(
                "{at}.name: expected [a-zA-Z0-9_.-], 1 to 64 characters"
            ));
        }
        problems.extend(t.limits.check(&at));
        if teams.iter().any(|x: &TeamRecord| x.name == t.name) {
            problems.push(format!("{at}.name: `{}` is declared twice", t.name));
        }
        teams.push(TeamRecord {
            name: t.name.clone(),
            limits: t.limits.clone(),
        });
    }
    let mut keys: Vec<(KeyRecord, Option<String>)> = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let at = format!("{at}.keys[{i}]");
        if !valid_name(&k.id) {
            problems.push(format!(
                "{at}.id: expected [a-zA-Z0-9_.-], 1 to 64 characters"
            ));
        }
        if parse_sha256(&k.sha256.to_ascii_lowercase()).is_none() {
            problems.push(format!(
                "{at}.sha256: expected the key's SHA-256 as 64 hex digits (`switchyard keys generate` prints one); never the key itself"
            ));
        }
        if keys.iter().any(|(x, _)| x.id == k.id) {
            problems.push(format!("{at}.id: `{}` is declared twice", k.id));
        }
        let limits = Limits {
            rpm: k.rpm,
            tpm: k.tpm,
            budget_day_usd: k.budget_day_usd,
            budget_month_usd: k.budget_month_usd,
        };
        problems.extend(limits.check(&at));
        keys.push((
            KeyRecord {
                id: k.id.clone(),
                name: k.name.clone(),
                sha256: k.sha256.to_ascii_lowercase(),
                team: k.team.clone(),
                routes: k.routes.clone(),
                targets: k.targets.clone(),
                direct: k.direct,
                max_price: k.max_price,
                limits,
                expires_at_ms: k.expires_at_ms,
                revoked: false,
            },
            k.owner.clone(),
        ));
    }
    Governance {
        require_keys: raw.require_keys,
        database: raw.database.as_ref().map(absolute),
        audit_log: raw.audit_log.as_ref().map(absolute),
        admin_token,
        completion_estimate: raw.completion_estimate,
        teams,
        keys,
    }
}

/// Ids and team names: `[a-zA-Z0-9_.-]{1,64}`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(governance: &str) -> Result<super::super::Config, String> {
        let text = format!(
            "providers:\n  - {{ name: a, dialect: openai, base_url: http://127.0.0.1:9/v1, api_key: {{ value: k }} }}\nroutes:\n  - {{ model: chat, chain: [a/m] }}\n{governance}"
        );
        super::super::parse(&text, "c.yaml", Path::new("/etc/sy"), &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_declared_by_hash_only() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let c = parse(&format!(
            "governance:\n  audit_log: audit.log\n  teams: [{{ name: research, budget_day_usd: 5 }}]\n  keys:\n    - {{ id: key_ci, name: ci, sha256: \"{sha}\", team: research, rpm: 60, routes: [chat] }}\n"
        ))
        .unwrap();
        let g = &c.governance;
        assert_eq!(g.keys[0].0.limits.rpm, Some(60));
        assert_eq!(g.teams[0].limits.budget_day_usd, Some(5.0));
        assert_eq!(g.audit_log.as_deref(), Some(Path::new("/etc/sy/audit.log")));
        assert_eq!(g.completion_estimate, 256);
        // A file written for the per-key summaries still loads.
        assert!(parse("governance:\n  audit_flush_s: 10\n").is_ok());

        let e = parse("governance:\n  keys:\n    - { id: k, name: k, sha256: sk-sy-oops }\n")
            .unwrap_err();
        assert!(
            e.contains("governance.keys[0].sha256: expected the key's SHA-256"),
            "{e}"
        );
        let e = parse(&format!(
            "governance:\n  keys:\n    - {{ id: k, name: k, sha256: \"{sha}\" }}\n    - {{ id: k, name: j, sha256: \"{sha}\" }}\n  teams: [{{ name: \"a b\" }}]\n  admin_token: {{ value: short }}\n"
        ))
        .unwrap_err();
        for expected in [
            "governance.keys[1].id: `k` is declared twice",
            "governance.teams[0].name: expected",
            "governance.admin_token: expected at least 16 characters",
        ] {
            assert!(e.contains(expected), "{expected}\n{e}");
        }
        assert!(
            !format!(
                "{:?}",
                parse("governance:\n  admin_token: { value: a-long-secret-token }\n").unwrap()
            )
            .contains("a-long-secret")
        );
    }
}
