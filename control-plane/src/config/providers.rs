//! `providers:`: where each provider is, which dialect it speaks, its
//! credentials and the headers sent to it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use switchyard_core::dialect::Dialect;

use super::secrets::{RawSecret, resolve_secret};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) name: String,
    pub(super) dialect: Dialect,
    pub(super) base_url: String,
    #[serde(default)]
    pub(super) api_key: Option<RawSecret>,
    /// Several credentials, tried in turn before leaving the provider.
    #[serde(default)]
    pub(super) api_keys: Option<Vec<RawSecret>>,
    #[serde(default = "default_connect_timeout_ms")]
    pub(super) connect_timeout_ms: u64,
    /// Azure OpenAI `api-version` (only for `dialect: azure_openai`).
    #[serde(default)]
    pub(super) api_version: Option<String>,
    /// AWS credentials for SigV4 (only for `dialect: bedrock`).
    #[serde(default)]
    pub(super) aws: Option<RawAws>,
    /// Re-resolve this provider's credentials on this interval (rotated keys,
    /// short-lived tokens); 300 s by default when a credential is a `command`.
    #[serde(default)]
    pub(super) credentials_refresh_s: Option<u64>,
    /// OpenAI `OpenAI-Organization` header (only for `dialect: openai`).
    #[serde(default)]
    pub(super) organization: Option<String>,
    /// OpenAI `OpenAI-Project` header (only for `dialect: openai`).
    #[serde(default)]
    pub(super) project: Option<String>,
    /// More headers sent with every request to this provider (e.g. OpenRouter's
    /// `HTTP-Referer` and `X-Title`).
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    /// Client request headers forwarded to this provider only (e.g.
    /// `anthropic-beta`).
    #[serde(default)]
    pub(super) forward_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    /// Region; inferred from a `bedrock-runtime.<region>.amazonaws.com` host.
    #[serde(default)]
    pub(super) region: Option<String>,
    pub(super) access_key_id: RawSecret,
    pub(super) secret_access_key: RawSecret,
    #[serde(default)]
    pub(super) session_token: Option<RawSecret>,
}

/// Refresh interval for credentials that come from a command, unless configured.
const DEFAULT_COMMAND_REFRESH_S: u64 = 300;

fn default_connect_timeout_ms() -> u64 {
    2000
}

/// A validated provider.
#[derive(Clone, PartialEq)]
pub struct Provider {
    /// Unique name.
    pub name: String,
    /// Dialect.
    pub dialect: Dialect,
    /// `http` or `https`.
    pub tls: bool,
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path prefix, e.g. `/v1` (no trailing slash).
    pub base_path: String,
    /// Resolved credentials, in rotation order (possibly none).
    pub api_keys: Vec<String>,
    /// Upstream connect timeout.
    pub connect_timeout_ms: u64,
    /// Azure OpenAI `api-version`.
    pub api_version: Option<String>,
    /// SigV4 credentials (Bedrock).
    pub aws: Option<switchyard_core::config::AwsAuth>,
    /// How often credentials are re-resolved.
    pub credentials_refresh_s: Option<u64>,
    /// Headers sent with every request (lower-case names), organization and
    /// project included.
    pub headers: Vec<(String, String)>,
    /// Client request headers forwarded to this provider only (lower-case).
    pub forward_headers: Vec<String>,
}

impl fmt::Debug for Provider {
    // Hand-written so that a credential can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("dialect", &self.dialect)
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("base_path", &self.base_path)
            .field("api_keys", &format!("<{} redacted>", self.api_keys.len()))
            .finish()
    }
}

impl Provider {
    /// `:authority` for requests: the host, with the port when not the scheme's default.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Whether `host` is an IP literal (static cluster) rather than a DNS name.
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Checks the providers and resolves their credentials; returns them and their
/// names.
pub(super) fn check(
    raw: &[RawProvider],
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> (Vec<Provider>, BTreeSet<String>) {
    if raw.is_empty() {
        problems.push("providers: expected at least one provider".to_string());
    }
    let mut providers = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in raw.iter().enumerate() {
        let at = format!("providers[{i}]");
        if p.name.is_empty()
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            problems.push(format!(
                "{at}.name: expected lower-case letters, digits, `-` or `_`, got `{}`",
                p.name
            ));
        }
        if !names.insert(p.name.clone()) {
            problems.push(format!(
                "{at}.name: `{}` is already used by another provider",
                p.name
            ));
        }
        if let Some(provider) = check_one(p, &at, base, env, problems) {
            providers.push(provider);
        }
    }
    (providers, names)
}

/// Checks one provider (`at` is its place in the file) and resolves its
/// credentials; `None` when its base URL is unusable.
fn check_one(
    p: &RawProvider,
    at: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Provider> {
    let url = match parse_base_url(&p.base_url) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("{at}.base_url: {e}"));
            return None;
        }
    };
    let secrets: Vec<(String, &RawSecret)> = match (&p.api_key, &p.api_keys) {
        (Some(_), Some(_)) => {
            problems.push(format!("{at}: expected `api_key` or `api_keys`, not both"));
            Vec::new()
        }
        (Some(k), None) => vec![(format!("{at}.api_key"), k)],
        (None, Some(ks)) => ks
            .iter()
            .enumerate()
            .map(|(j, k)| (format!("{at}.api_keys[{j}]"), k))
            .collect(),
        (None, None) => Vec::new(),
    };
    let api_keys: Vec<String> = secrets
        .iter()
        .filter_map(|(path, secret)| resolve_secret(secret, path, base, env, problems))
        .collect();
    let aws = match (&p.aws, p.dialect) {
        (Some(_), d) if d != Dialect::Bedrock => {
            problems.push(format!("{at}.aws: only meaningful with `dialect: bedrock`"));
            None
        }
        (Some(a), _) => {
            let region = a.region.clone().or_else(|| bedrock_region(&url.host));
            if region.is_none() {
                problems.push(format!(
                    "{at}.aws.region: expected a region (it cannot be inferred from host `{}`)",
                    url.host
                ));
            }
            let mut secret = |s: &RawSecret, name: &str| {
                resolve_secret(s, &format!("{at}.aws.{name}"), base, env, problems)
            };
            let access_key_id = secret(&a.access_key_id, "access_key_id");
            let secret_access_key = secret(&a.secret_access_key, "secret_access_key");
            let session_token = a
                .session_token
                .as_ref()
                .and_then(|s| secret(s, "session_token"));
            // A secret that did not resolve is already a problem: the config is
            // rejected, whatever is built here.
            match (region, access_key_id, secret_access_key) {
                (Some(region), Some(access_key_id), Some(secret_access_key)) => {
                    Some(switchyard_core::config::AwsAuth {
                        region,
                        access_key_id,
                        secret_access_key,
                        session_token,
                    })
                }
                _ => None,
            }
        }
        (None, Dialect::Bedrock) if secrets.is_empty() => {
            problems.push(format!(
                "{at}: a bedrock provider needs `aws` credentials (SigV4) or an `api_key` (Bedrock API key)"
            ));
            None
        }
        (None, _) => None,
    };
    if p.dialect == Dialect::Vertex && secrets.is_empty() {
        problems.push(format!(
            "{at}.api_key: a vertex provider needs an OAuth access token, e.g. `{{ command: [gcloud, auth, print-access-token] }}`"
        ));
    }
    let has_command = secrets.iter().any(|(_, s)| s.command.is_some());
    let credentials_refresh_s = p
        .credentials_refresh_s
        .or(has_command.then_some(DEFAULT_COMMAND_REFRESH_S));
    if credentials_refresh_s == Some(0) {
        problems.push(format!("{at}.credentials_refresh_s: expected > 0"));
    }
    if (p.organization.is_some() || p.project.is_some()) && p.dialect != Dialect::Openai {
        problems.push(format!(
            "{at}: `organization` and `project` are only meaningful with `dialect: openai`"
        ));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in p
        .organization
        .iter()
        .map(|o| ("openai-organization", o))
        .chain(p.project.iter().map(|v| ("openai-project", v)))
        .chain(p.headers.iter().map(|(k, v)| (k.as_str(), v)))
    {
        let lower = name.to_ascii_lowercase();
        if let Some(why) = switchyard_core::headers::reserved(&lower) {
            problems.push(format!(
                "{at}.headers: `{name}` cannot be set by configuration ({why})"
            ));
            continue;
        }
        if value.contains(['\r', '\n']) {
            problems.push(format!("{at}.headers.{name}: expected one line"));
            continue;
        }
        headers.push((lower, value.clone()));
    }
    let forward_headers = check_forward_headers(
        &p.forward_headers,
        &format!("{at}.forward_headers"),
        problems,
    );
    if p.api_version.is_some() && p.dialect != Dialect::AzureOpenai {
        problems.push(format!(
            "{at}.api_version: only meaningful with `dialect: azure_openai`"
        ));
    }
    if p.connect_timeout_ms == 0 {
        problems.push(format!("{at}.connect_timeout_ms: expected > 0"));
    }
    Some(Provider {
        name: p.name.clone(),
        dialect: p.dialect,
        tls: url.tls,
        host: url.host,
        port: url.port,
        base_path: url.path,
        api_keys,
        connect_timeout_ms: p.connect_timeout_ms,
        api_version: p.api_version.clone(),
        aws,
        credentials_refresh_s,
        headers,
        forward_headers,
    })
}

/// Lower-cased header names a config forwards from clients; reserved names are
/// problems.
pub(super) fn check_forward_headers(
    names: &[String],
    at: &str,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        match switchyard_core::headers::reserved(&lower) {
            Some(why) => problems.push(format!("{at}: `{name}` cannot be forwarded ({why})")),
            None if switchyard_core::headers::ALWAYS_FORWARDED.contains(&lower.as_str()) => {}
            None if !out.contains(&lower) => out.push(lower),
            None => {}
        }
    }
    out
}

/// The region of a `bedrock-runtime.<region>.amazonaws.com` host.
fn bedrock_region(host: &str) -> Option<String> {
    host.strip_prefix("bedrock-runtime.")
        .and_then(|r| r.strip_suffix(".amazonaws.com"))
        .filter(|r| !r.is_empty() && !r.contains('.'))
        .map(str::to_string)
}

struct BaseUrl {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_base_url(s: &str) -> Result<BaseUrl, String> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("expected an http:// or https:// URL, got `{s}`"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{s}`"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Err(format!("expected a host in `{s}`"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("bad port `{p}` in `{s}`"))?,
        None if tls => 443,
        None => 80,
    };
    if path.contains(['?', '#']) {
        return Err(format!("expected no query or fragment in `{s}`"));
    }
    Ok(BaseUrl {
        tls,
        host,
        port,
        path: path.trim_end_matches('/').to_string(),
    })
}
