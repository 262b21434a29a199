//! The user-facing config file (YAML): raw serde types, then `validate()` into
//! checked types. Errors name the file, the path inside it and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_core::config::{Dialect, Price, Route};
use switchyard_core::plan::Target;
use switchyard_core::policy::Policy;

/// Default path of the built proxy-wasm filter, relative to the working directory.
pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/wasm-release/switchyard_filter.wasm";
/// Default path of the built native module, relative to the working directory.
pub const DEFAULT_MODULE: &str = "target/release/libswitchyard_native.so";

/// Which build of the filter the fleet's Envoys load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterBuild {
    /// The proxy-wasm module (`filter: { wasm: PATH }`): sandboxed, runs in any
    /// Envoy with V8 and in Istio's `WasmPlugin`.
    Wasm(PathBuf),
    /// The native dynamic module (`filter: { module: PATH }`): in-process, several
    /// times cheaper per host call; needs Envoy 1.40 (its ABI `v0.2.0`).
    Native(PathBuf),
}

impl FilterBuild {
    /// The file Envoy loads.
    pub fn path(&self) -> &Path {
        match self {
            FilterBuild::Wasm(p) | FilterBuild::Native(p) => p,
        }
    }

    /// The name under which route matchers read filter state `key` set by the filter.
    pub fn state_key(&self, key: &str) -> String {
        match self {
            FilterBuild::Wasm(_) => format!("wasm.{key}"),
            FilterBuild::Native(_) => key.to_string(),
        }
    }
}

// === raw ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    listener: RawListener,
    #[serde(default)]
    filter: RawFilter,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    retry: RawRetry,
    /// Policy for requests naming `provider/model` directly.
    #[serde(default)]
    policy: Policy,
    /// Circuit breakers per target (off when absent).
    #[serde(default)]
    circuit_breaker: Option<switchyard_core::circuit::Settings>,
    /// Prices per `provider/model`, per million tokens.
    #[serde(default)]
    prices: BTreeMap<String, Price>,
    /// Active health checks of every provider (off when absent).
    #[serde(default)]
    health_check: Option<switchyard_core::config::HealthCheck>,
    /// Effective weights from fleet-wide error rate and latency (off when absent).
    #[serde(default)]
    adaptive_weights: Option<switchyard_core::fleet::AdaptiveWeights>,
    /// Client request headers forwarded to every provider (beyond content
    /// negotiation, user agent and request id).
    #[serde(default)]
    forward_headers: Vec<String>,
    providers: Vec<RawProvider>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    #[serde(default = "default_address")]
    address: String,
    #[serde(default = "default_port")]
    port: u16,
}

impl Default for RawListener {
    fn default() -> Self {
        RawListener {
            address: default_address(),
            port: default_port(),
        }
    }
}

fn default_address() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    wasm: Option<PathBuf>,
    #[serde(default)]
    module: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: usize,
    #[serde(default = "default_max_attempts")]
    max_attempts: usize,
    /// An attempt with no bytes from its provider for this long fails: retried
    /// before the answer started, reset after. None: Envoy's 5-minute stream idle.
    #[serde(default)]
    stream_idle_timeout_ms: Option<u64>,
    /// A request's headers must arrive within this time of their first byte.
    #[serde(default = "default_request_headers_timeout_ms")]
    request_headers_timeout_ms: u64,
    /// A request (headers and body) must arrive within this time; answers are
    /// not limited by it.
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
    /// A client connection with no request in flight for this long is closed.
    #[serde(default = "default_connection_idle_timeout_ms")]
    connection_idle_timeout_ms: u64,
    /// Client connections one Envoy holds at once (bootstrap: Envoy's global
    /// downstream connection monitor); more are closed on accept.
    #[serde(default = "default_max_connections")]
    max_connections: u64,
    /// Envoy's heap (bootstrap: fixed heap monitor of the overload manager):
    /// near it, the streams holding the most memory are reset, then new
    /// requests are refused.
    #[serde(default = "default_max_heap_bytes")]
    max_heap_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_request_bytes: default_max_request_bytes(),
            max_attempts: default_max_attempts(),
            stream_idle_timeout_ms: None,
            request_headers_timeout_ms: default_request_headers_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            connection_idle_timeout_ms: default_connection_idle_timeout_ms(),
            max_connections: default_max_connections(),
            max_heap_bytes: default_max_heap_bytes(),
        }
    }
}

fn default_max_request_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_attempts() -> usize {
    4
}
fn default_request_headers_timeout_ms() -> u64 {
    10_000
}
// A 10 MiB body takes 17 s at 5 Mbit/s.
fn default_request_timeout_ms() -> u64 {
    60_000
}
fn default_connection_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> u64 {
    10_000
}
fn default_max_heap_bytes() -> u64 {
    1024 * 1024 * 1024
}

/// Smallest heap limit accepted: Envoy with the Wasm runtime needs tens of MiB
/// before it serves anything.
const MIN_HEAP_BYTES: u64 = 64 * 1024 * 1024;

/// The limits only Envoy's bootstrap can set (read once at Envoy's start):
/// `switchyard bootstrap --config FILE` takes them from the file's `limits:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootstrapLimits {
    /// Client connections one Envoy holds at once.
    pub max_connections: u64,
    /// Heap size the overload manager measures against.
    pub max_heap_bytes: u64,
}

impl Default for BootstrapLimits {
    fn default() -> Self {
        BootstrapLimits {
            max_connections: default_max_connections(),
            max_heap_bytes: default_max_heap_bytes(),
        }
    }
}

/// Checks the `limits:` section; problems are added to `problems`.
fn check_limits(l: &RawLimits, problems: &mut Vec<String>) {
    if l.max_attempts == 0 || l.max_attempts > 16 {
        problems.push(format!(
            "limits.max_attempts: expected 1..=16, got {}",
            l.max_attempts
        ));
    }
    if l.stream_idle_timeout_ms == Some(0) {
        problems.push("limits.stream_idle_timeout_ms: expected > 0".to_string());
    }
    if l.max_request_bytes < 1024 {
        problems.push(format!(
            "limits.max_request_bytes: expected at least 1024, got {}",
            l.max_request_bytes
        ));
    }
    for (name, v) in [
        ("request_headers_timeout_ms", l.request_headers_timeout_ms),
        ("request_timeout_ms", l.request_timeout_ms),
        ("connection_idle_timeout_ms", l.connection_idle_timeout_ms),
        ("max_connections", l.max_connections),
    ] {
        if v == 0 {
            problems.push(format!("limits.{name}: expected > 0"));
        }
    }
    if l.request_headers_timeout_ms > l.request_timeout_ms {
        problems.push(format!(
            "limits.request_headers_timeout_ms ({}) exceeds limits.request_timeout_ms ({}): the headers are part of the request",
            l.request_headers_timeout_ms, l.request_timeout_ms
        ));
    }
    if l.max_connections > u64::from(u32::MAX) {
        problems.push(format!(
            "limits.max_connections: expected at most {}, got {}",
            u32::MAX,
            l.max_connections
        ));
    }
    if l.max_heap_bytes < MIN_HEAP_BYTES {
        problems.push(format!(
            "limits.max_heap_bytes: expected at least {MIN_HEAP_BYTES} (64 MiB), got {}",
            l.max_heap_bytes
        ));
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_backoff_base_ms")]
    backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    backoff_max_ms: u64,
    /// Envoy retry budget: retries may be at most this share (%) of the requests
    /// active on the first target's cluster. Off by default: fail-over to another
    /// provider adds no load to the failing one (plans never repeat a target).
    #[serde(default)]
    budget_percent: Option<f64>,
    #[serde(default)]
    min_retry_concurrency: Option<u32>,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            budget_percent: None,
            min_retry_concurrency: None,
        }
    }
}

// Every retry today goes to another target (plans hold no duplicates): keep
// Envoy's jittered back-off short so fail-over is not delayed for nothing.
fn default_backoff_base_ms() -> u64 {
    1
}
fn default_backoff_max_ms() -> u64 {
    25
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    dialect: Dialect,
    base_url: String,
    #[serde(default)]
    api_key: Option<RawSecret>,
    /// Several credentials, tried in turn before leaving the provider.
    #[serde(default)]
    api_keys: Option<Vec<RawSecret>>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    /// Azure OpenAI `api-version` (only for `dialect: azure_openai`).
    #[serde(default)]
    api_version: Option<String>,
    /// AWS credentials for SigV4 (only for `dialect: bedrock`).
    #[serde(default)]
    aws: Option<RawAws>,
    /// Re-resolve this provider's credentials on this interval (rotated keys,
    /// short-lived tokens); 300 s by default when a credential is a `command`.
    #[serde(default)]
    credentials_refresh_s: Option<u64>,
    /// OpenAI `OpenAI-Organization` header (only for `dialect: openai`).
    #[serde(default)]
    organization: Option<String>,
    /// OpenAI `OpenAI-Project` header (only for `dialect: openai`).
    #[serde(default)]
    project: Option<String>,
    /// More headers sent with every request to this provider (e.g. OpenRouter's
    /// `HTTP-Referer` and `X-Title`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Client request headers forwarded to this provider only (e.g.
    /// `anthropic-beta`).
    #[serde(default)]
    forward_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    /// Region; inferred from a `bedrock-runtime.<region>.amazonaws.com` host.
    #[serde(default)]
    region: Option<String>,
    access_key_id: RawSecret,
    secret_access_key: RawSecret,
    #[serde(default)]
    session_token: Option<RawSecret>,
}

/// Refresh interval for credentials that come from a command, unless configured.
const DEFAULT_COMMAND_REFRESH_S: u64 = 300;

fn default_connect_timeout_ms() -> u64 {
    2000
}

/// Where a secret comes from: exactly one of `env`, `file`, `value` (inline values
/// are meant for local mock providers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    value: Option<String>,
    /// A command whose standard output is the secret (e.g. `[gcloud, auth,
    /// print-access-token]`), run at load and on every refresh.
    #[serde(default)]
    command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    model: String,
    #[serde(default)]
    chain: Vec<String>,
    /// The chain declared as tiers (same quality, then cheaper, then self-hosted):
    /// flattened in order.
    #[serde(default)]
    tiers: Option<Vec<Vec<String>>>,
    /// Cost ceiling for every attempt of this route's requests.
    #[serde(default)]
    max_price: Option<Price>,
    #[serde(default)]
    policy: Policy,
    /// One weight per chain entry: the first target is drawn by weight.
    #[serde(default)]
    weights: Option<Vec<u32>>,
}

// === checked ===

/// A validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Version string sent to filters (given, or derived from the content).
    pub version: String,
    /// Listener address.
    pub listener_address: String,
    /// Listener port (0 = ephemeral).
    pub listener_port: u16,
    /// The filter build the Envoys load (absolute path on the Envoy hosts).
    pub filter: FilterBuild,
    /// Largest request body accepted.
    pub max_request_bytes: usize,
    /// Most targets in one plan.
    pub max_attempts: usize,
    /// Per-attempt idle limit (no bytes from the provider).
    pub stream_idle_timeout_ms: Option<u64>,
    /// Time for a request's headers to arrive.
    pub request_headers_timeout_ms: u64,
    /// Time for a whole request (headers and body) to arrive.
    pub request_timeout_ms: u64,
    /// Time a client connection may stay open without a request.
    pub connection_idle_timeout_ms: u64,
    /// The limits of Envoy's bootstrap (connections, heap).
    pub bootstrap: BootstrapLimits,
    /// Retry back-off base interval.
    pub backoff_base_ms: u64,
    /// Retry back-off maximum interval.
    pub backoff_max_ms: u64,
    /// Retry budget `(percent of active requests, minimum concurrent retries)`.
    pub retry_budget: Option<(f64, u32)>,
    /// Providers in file order.
    pub providers: Vec<Provider>,
    /// Model alias → chain and policy.
    pub routes: BTreeMap<String, Route>,
    /// Policy for requests that name `provider/model` directly.
    pub default_policy: Policy,
    /// Circuit breakers per target.
    pub circuit_breaker: Option<switchyard_core::circuit::Settings>,
    /// Prices per `provider/model`.
    pub prices: BTreeMap<String, Price>,
    /// Active health checks.
    pub health_check: Option<switchyard_core::config::HealthCheck>,
    /// Adaptive weights bounds.
    pub adaptive_weights: Option<switchyard_core::fleet::AdaptiveWeights>,
    /// Where filters reach the control plane's fleet exchange (set by `serve`,
    /// not by the file).
    pub fleet_addr: Option<std::net::SocketAddr>,
    /// Client request headers forwarded to every provider (lower-case).
    pub forward_headers: Vec<String>,
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

/// Everything wrong with a config file, each problem with its location.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// YAML syntax or shape error (serde's message names the field and line).
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// Parser message, with line and column.
        message: String,
    },
    /// One or more semantic problems.
    #[error("{}", .problems.iter().map(|p| format!("{}: {p}", .file)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: String,
        /// `path: what was expected` lines.
        problems: Vec<String>,
    },
}

/// Loads and validates a config file. Relative paths resolve against the file's folder.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &file, &base, &|k| std::env::var(k).ok())
}

/// The bootstrap limits of a config file: only its `limits:` section is checked
/// (credentials are neither needed nor resolved to write a bootstrap).
pub fn load_bootstrap_limits(path: &Path) -> Result<BootstrapLimits, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse_bootstrap_limits(&text, &file)
}

/// [`load_bootstrap_limits`] on config text.
pub fn parse_bootstrap_limits(text: &str, file: &str) -> Result<BootstrapLimits, ConfigError> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let mut problems = Vec::new();
    check_limits(&raw.limits, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            problems,
        });
    }
    Ok(BootstrapLimits {
        max_connections: raw.limits.max_connections,
        max_heap_bytes: raw.limits.max_heap_bytes,
    })
}

/// Parses and validates config text. `env` resolves `api_key: {env: NAME}`.
pub fn parse(
    text: &str,
    file: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let mut problems = Vec::new();
    for (i, r) in raw.routes.iter_mut().enumerate() {
        if let Some(tiers) = r.tiers.take() {
            if !r.chain.is_empty() {
                problems.push(format!(
                    "routes[{i}]: expected `chain` or `tiers`, not both"
                ));
            }
            r.chain = tiers.concat();
        }
    }
    for (key, price) in &raw.prices {
        let known =
            Target::parse(key).is_some_and(|t| raw.providers.iter().any(|p| p.name == t.provider));
        if !known {
            problems.push(format!(
                "prices.{key}: expected `provider/model` of a configured provider"
            ));
        }
        if !(price.input >= 0.0 && price.output >= 0.0) {
            problems.push(format!("prices.{key}: expected non-negative prices"));
        }
    }

    check_limits(&raw.limits, &mut problems);
    if raw.retry.backoff_base_ms == 0 || raw.retry.backoff_max_ms < raw.retry.backoff_base_ms {
        problems.push("retry: expected 0 < backoff_base_ms <= backoff_max_ms".to_string());
    }
    if let Some(b) = raw.retry.budget_percent
        && !(0.0..=100.0).contains(&b)
    {
        problems.push(format!("retry.budget_percent: expected 0..=100, got {b}"));
    }
    if raw.retry.min_retry_concurrency.is_some() && raw.retry.budget_percent.is_none() {
        problems.push(
            "retry.min_retry_concurrency: only meaningful with retry.budget_percent".to_string(),
        );
    }
    if raw.listener.address.parse::<std::net::IpAddr>().is_err() {
        problems.push(format!(
            "listener.address: expected an IP address, got `{}`",
            raw.listener.address
        ));
    }
    if raw.providers.is_empty() {
        problems.push("providers: expected at least one provider".to_string());
    }

    let mut providers = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in raw.providers.iter().enumerate() {
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
        let url = match parse_base_url(&p.base_url) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("{at}.base_url: {e}"));
                continue;
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
            .filter_map(|(path, secret)| resolve_secret(secret, path, base, env, &mut problems))
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
                    resolve_secret(s, &format!("{at}.aws.{name}"), base, env, &mut problems)
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
            &mut problems,
        );
        if p.api_version.is_some() && p.dialect != Dialect::AzureOpenai {
            problems.push(format!(
                "{at}.api_version: only meaningful with `dialect: azure_openai`"
            ));
        }
        if p.connect_timeout_ms == 0 {
            problems.push(format!("{at}.connect_timeout_ms: expected > 0"));
        }
        providers.push(Provider {
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
        });
    }

    let mut routes = BTreeMap::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.model.is_empty() || r.model.contains('/') {
            problems.push(format!(
                "{at}.model: expected an alias without `/`, got `{}`",
                r.model
            ));
        }
        if r.chain.is_empty() {
            problems.push(format!(
                "{at}.chain: expected at least one `provider/model`"
            ));
        }
        if r.chain.len() > raw.limits.max_attempts {
            problems.push(format!(
                "{at}.chain: has {} targets, limits.max_attempts is {}",
                r.chain.len(),
                raw.limits.max_attempts
            ));
        }
        let mut chain = Vec::new();
        for (j, t) in r.chain.iter().enumerate() {
            match Target::parse(t) {
                Some(target) if names.contains(&target.provider) => {
                    let dialect = providers
                        .iter()
                        .find(|p: &&Provider| p.name == target.provider)
                        .map(|p| p.dialect);
                    if let Some(Err(e)) = dialect.map(|d| d.check_model(&target.model)) {
                        problems.push(format!("{at}.chain[{j}]: `{t}`: {e}"));
                    }
                    chain.push(target)
                }
                Some(target) => problems.push(format!(
                    "{at}.chain[{j}]: unknown provider `{}`",
                    target.provider
                )),
                None => problems.push(format!(
                    "{at}.chain[{j}]: expected `provider/model`, got `{t}`"
                )),
            }
        }
        check_policy(&r.policy, &format!("{at}.policy"), &mut problems);
        let weights = r.weights.clone().unwrap_or_default();
        if r.weights.is_some()
            && (weights.len() != r.chain.len() || weights.iter().all(|w| *w == 0))
        {
            problems.push(format!(
                "{at}.weights: expected one weight per chain entry ({}), not all zero",
                r.chain.len()
            ));
        }
        if routes
            .insert(
                r.model.clone(),
                Route {
                    hedge_cluster: r
                        .policy
                        .hedge_after_ms
                        .map(|_| switchyard_core::wire::chain_cluster(&r.model)),
                    chain,
                    policy: r.policy.clone(),
                    weights,
                    max_price: r.max_price,
                },
            )
            .is_some()
        {
            problems.push(format!("{at}.model: `{}` is defined twice", r.model));
        }
    }

    check_policy(&raw.policy, "policy", &mut problems);
    let forward_headers =
        check_forward_headers(&raw.forward_headers, "forward_headers", &mut problems);
    if let Some(hc) = &raw.health_check
        && (hc.interval_ms == 0
            || hc.timeout_ms == 0
            || hc.unhealthy_after == 0
            || hc.healthy_after == 0)
    {
        problems.push(
            "health_check: expected interval_ms, timeout_ms, unhealthy_after, healthy_after > 0"
                .to_string(),
        );
    }
    if let Some(a) = &raw.adaptive_weights
        && !(0.0..=1.0).contains(&a.min_factor)
    {
        problems.push(format!(
            "adaptive_weights.min_factor: expected 0..=1, got {}",
            a.min_factor
        ));
    }
    if raw.adaptive_weights.is_some() && raw.circuit_breaker.is_none() {
        problems.push(
            "adaptive_weights: needs `circuit_breaker` (outcomes are reported with it)".to_string(),
        );
    }
    if let Some(cb) = &raw.circuit_breaker
        && (cb.consecutive_failures == 0
            || cb.base_open_ms == 0
            || cb.max_open_ms < cb.base_open_ms)
    {
        problems.push(
            "circuit_breaker: expected consecutive_failures > 0 and 0 < base_open_ms <= max_open_ms".to_string(),
        );
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            problems,
        });
    }
    let absolute = |p: PathBuf| {
        let p = if p.is_relative() { base.join(p) } else { p };
        std::path::absolute(&p).unwrap_or(p)
    };
    let filter = match (raw.filter.wasm, raw.filter.module) {
        (Some(w), None) => FilterBuild::Wasm(absolute(w)),
        (None, Some(m)) => FilterBuild::Native(absolute(m)),
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                problems: vec!["filter: expected `wasm` or `module`, not both".to_string()],
            });
        }
        // Unspecified: the faster build when it was built, else the portable one.
        (None, None) => {
            let module = absolute(PathBuf::from(DEFAULT_MODULE));
            if module.exists() {
                FilterBuild::Native(module)
            } else {
                FilterBuild::Wasm(absolute(PathBuf::from(DEFAULT_WASM)))
            }
        }
    };
    let version = raw
        .version
        .unwrap_or_else(|| format!("{:016x}", fnv1a(text.as_bytes())));
    Ok(Config {
        version,
        listener_address: raw.listener.address,
        listener_port: raw.listener.port,
        filter,
        max_request_bytes: raw.limits.max_request_bytes,
        stream_idle_timeout_ms: raw.limits.stream_idle_timeout_ms,
        request_headers_timeout_ms: raw.limits.request_headers_timeout_ms,
        request_timeout_ms: raw.limits.request_timeout_ms,
        connection_idle_timeout_ms: raw.limits.connection_idle_timeout_ms,
        bootstrap: BootstrapLimits {
            max_connections: raw.limits.max_connections,
            max_heap_bytes: raw.limits.max_heap_bytes,
        },
        max_attempts: raw.limits.max_attempts,
        backoff_base_ms: raw.retry.backoff_base_ms,
        backoff_max_ms: raw.retry.backoff_max_ms,
        retry_budget: raw
            .retry
            .budget_percent
            .map(|b| (b, raw.retry.min_retry_concurrency.unwrap_or(3))),
        providers,
        routes,
        default_policy: raw.policy,
        circuit_breaker: raw.circuit_breaker,
        prices: raw.prices.clone(),
        health_check: raw.health_check.clone(),
        adaptive_weights: raw.adaptive_weights.clone(),
        fleet_addr: None,
        forward_headers,
    })
}

/// Lower-cased header names a config forwards from clients; reserved names are
/// problems.
fn check_forward_headers(names: &[String], at: &str, problems: &mut Vec<String>) -> Vec<String> {
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

fn check_policy(p: &Policy, at: &str, problems: &mut Vec<String>) {
    if p.fail_over_on
        .contains(&switchyard_core::failure::FailureClass::BadRequest)
    {
        problems.push(format!(
            "{at}.fail_over_on: `bad_request` cannot fall over: the request fails everywhere"
        ));
    }
    for (name, v) in [
        ("first_byte_timeout_ms", p.first_byte_timeout_ms),
        ("first_token_timeout_ms", p.first_token_timeout_ms),
        ("deadline_ms", p.deadline_ms),
    ] {
        if v == Some(0) {
            problems.push(format!("{at}.{name}: expected > 0"));
        }
    }
    if p.hedge_after_ms == Some(0) {
        problems.push(format!("{at}.hedge_after_ms: expected > 0"));
    }
    if let (Some(fb), Some(d)) = (p.first_byte_timeout_ms, p.deadline_ms)
        && fb > d
    {
        problems.push(format!(
            "{at}: first_byte_timeout_ms ({fb}) exceeds deadline_ms ({d})"
        ));
    }
}

/// Resolves one secret reference; problems are reported under `path`.
fn resolve_secret(
    secret: &RawSecret,
    path: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match (&secret.env, &secret.file, &secret.value, &secret.command) {
        (None, None, None, Some(argv)) => {
            let Some((program, args)) = argv.split_first() else {
                problems.push(format!(
                    "{path}.command: expected a program and its arguments"
                ));
                return None;
            };
            match run_command(program, args, base) {
                Ok(out)
                    if out.status.success()
                        && !String::from_utf8_lossy(&out.stdout).trim().is_empty() =>
                {
                    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
                }
                Ok(out) => {
                    problems.push(format!(
                        "{path}.command: `{}` failed ({}): {}",
                        argv.join(" "),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("{path}.command: cannot run `{program}`: {e}"));
                    None
                }
            }
        }
        (None, None, Some(v), None) => Some(v.clone()),
        (Some(name), None, None, None) => {
            let v = env(name).filter(|v| !v.is_empty());
            if v.is_none() {
                problems.push(format!("{path}: environment variable {name} is not set"));
            }
            v
        }
        (None, Some(f), None, None) => {
            let f = if f.is_relative() {
                base.join(f)
            } else {
                f.clone()
            };
            match std::fs::read_to_string(&f) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Ok(_) => {
                    problems.push(format!("{path}: file {} is empty", f.display()));
                    None
                }
                Err(e) => {
                    problems.push(format!("{path}: cannot read {}: {e}", f.display()));
                    None
                }
            }
        }
        _ => {
            problems.push(format!(
                "{path}: expected exactly one of `env`, `file`, `value`, `command`"
            ));
            None
        }
    }
}

/// How long a credential command may run before it is killed.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs a credential command with a time limit: a hung `gcloud` must not hold a
/// reload forever.
fn run_command(
    program: &str,
    args: &[String],
    dir: &Path,
) -> std::io::Result<std::process::Output> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output()
}

/// The region of a `bedrock-runtime.<region>.amazonaws.com` host.
fn bedrock_region(host: &str) -> Option<String> {
    host.strip_prefix("bedrock-runtime.")
        .and_then(|r| r.strip_suffix(".amazonaws.com"))
        .filter(|r| !r.is_empty() && !r.contains('.'))
        .map(str::to_string)
}

/// FNV-1a: a stable content hash for versions (no extra dependency).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listener: { port: 0 }
providers:
  - name: openai
    dialect: openai
    base_url: https://api.openai.com/v1
    api_key: { env: OPENAI_API_KEY }
  - name: local
    dialect: anthropic
    base_url: http://127.0.0.1:9000/v1/
routes:
  - model: chat
    chain: [openai/gpt-4o-mini, local/claude-x]
"#;

    fn env(k: &str) -> Option<String> {
        (k == "OPENAI_API_KEY").then(|| "sk-test".to_string())
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD, "c.yaml", Path::new("/etc/sy"), &env).unwrap();
        assert_eq!(c.providers[0].authority(), "api.openai.com");
        assert!(c.providers[0].tls && !c.providers[0].host_is_ip());
        assert_eq!(c.providers[1].authority(), "127.0.0.1:9000");
        assert_eq!(c.providers[1].base_path, "/v1");
        assert_eq!(c.routes["chat"].chain.len(), 2);
        assert!(c.filter.path().starts_with("/etc/sy"));
        assert!(
            !format!("{:?}", c.providers[0]).contains("sk-test"),
            "secrets never in Debug"
        );
    }

    #[test]
    fn bedrock_and_vertex_credentials() {
        let text = "providers:
  - name: br
    dialect: bedrock
    base_url: https://bedrock-runtime.eu-west-3.amazonaws.com
    aws: { access_key_id: { value: AKID }, secret_access_key: { value: s3cr3t } }
  - name: vx
    dialect: vertex
    base_url: https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google
    api_key: { command: [echo, ya29.token] }
";
        let c = parse(text, "c.yaml", Path::new("/"), &env).unwrap();
        let aws = c.providers[0].aws.as_ref().unwrap();
        assert_eq!(aws.region, "eu-west-3", "inferred from the host");
        assert_eq!(aws.secret_access_key, "s3cr3t");
        assert!(!format!("{:?}", c.providers[0]).contains("s3cr3t"));
        assert_eq!(c.providers[1].api_keys, vec!["ya29.token".to_string()]);
        assert_eq!(
            c.providers[1].credentials_refresh_s,
            Some(300),
            "commands are re-run"
        );

        let e = error_of(&text.replace(
            "    aws: { access_key_id: { value: AKID }, secret_access_key: { value: s3cr3t } }\n",
            "",
        ));
        assert!(
            e.contains("providers[0]: a bedrock provider needs `aws` credentials"),
            "{e}"
        );
        let e = error_of(&text.replace("bedrock-runtime.eu-west-3.amazonaws.com", "10.0.0.1:8080"));
        assert!(
            e.contains("providers[0].aws.region: expected a region"),
            "{e}"
        );
        let e = error_of(&text.replace("[echo, ya29.token]", "[no-such-program-here]"));
        assert!(
            e.contains("providers[1].api_key.command: cannot run `no-such-program-here`"),
            "{e}"
        );
        let e = error_of(&text.replace("[echo, ya29.token]", "[false]"));
        assert!(
            e.contains("providers[1].api_key.command: `false` failed"),
            "{e}"
        );
        let e = error_of(&text.replace("    api_key: { command: [echo, ya29.token] }\n", ""));
        assert!(
            e.contains("providers[1].api_key: a vertex provider needs an OAuth access token"),
            "{e}"
        );
        let e = error_of(&text.replace(
            "dialect: vertex",
            "dialect: vertex\n    organization: org-1\n    headers: { \":path\": /x, x-ok: y }",
        ));
        assert!(
            e.contains("providers[1]: `organization` and `project` are only meaningful"),
            "{e}"
        );
        assert!(
            e.contains("providers[1].headers: `:path` cannot be set by configuration"),
            "{e}"
        );
        assert!(!e.contains("x-ok"), "{e}");
        let e = error_of(&text.replace("dialect: bedrock", "dialect: openai"));
        assert!(
            e.contains("providers[0].aws: only meaningful with `dialect: bedrock`"),
            "{e}"
        );
    }

    #[test]
    fn limits_have_defaults_and_precise_errors() {
        let c = parse(GOOD, "c.yaml", Path::new("/"), &env).unwrap();
        assert_eq!(
            (
                c.request_headers_timeout_ms,
                c.request_timeout_ms,
                c.connection_idle_timeout_ms
            ),
            (10_000, 60_000, 60_000)
        );
        assert_eq!(c.bootstrap, BootstrapLimits::default());
        let text = format!(
            "{GOOD}limits: {{ request_headers_timeout_ms: 5000, request_timeout_ms: 4000, connection_idle_timeout_ms: 0, max_connections: 0, max_heap_bytes: 1000 }}\n"
        );
        let e = error_of(&text);
        for expected in [
            "c.yaml: limits.request_headers_timeout_ms (5000) exceeds limits.request_timeout_ms (4000)",
            "c.yaml: limits.connection_idle_timeout_ms: expected > 0",
            "c.yaml: limits.max_connections: expected > 0",
            "c.yaml: limits.max_heap_bytes: expected at least 67108864 (64 MiB), got 1000",
        ] {
            assert!(e.contains(expected), "{expected}\n{e}");
        }
        // The bootstrap reads the same section without resolving credentials.
        let text = format!(
            "{}limits: {{ max_connections: 20, max_heap_bytes: 134217728 }}\n",
            GOOD.replace("OPENAI_API_KEY", "UNSET_HERE")
        );
        assert_eq!(
            parse_bootstrap_limits(&text, "c.yaml").unwrap(),
            BootstrapLimits {
                max_connections: 20,
                max_heap_bytes: 128 * 1024 * 1024
            }
        );
        let e = parse_bootstrap_limits(&text.replace("20,", "0,"), "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml: limits.max_connections: expected > 0"),
            "{e}"
        );
    }

    fn error_of(text: &str) -> String {
        parse(text, "c.yaml", Path::new("."), &env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn precise_errors() {
        let e = error_of(
            &GOOD
                .replace("local/claude-x", "nope/x")
                .replace("OPENAI_API_KEY", "MISSING_KEY"),
        );
        assert!(
            e.contains("c.yaml: providers[0].api_key: environment variable MISSING_KEY is not set"),
            "{e}"
        );
        assert!(
            e.contains("c.yaml: routes[0].chain[1]: unknown provider `nope`"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("dialect: openai", "dialect: opnai"));
        assert!(
            e.contains("providers[0].dialect: unknown variant `opnai`") && e.contains("line 5"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("base_url: http://", "base_url: ftp://"));
        assert!(
            e.contains("providers[1].base_url: expected an http:// or https:// URL"),
            "{e}"
        );
        let e = error_of(&format!("{GOOD}\nextra: 1\n"));
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = error_of(&GOOD.replace(
            "api_key: { env: OPENAI_API_KEY }",
            "api_key: { env: OPENAI_API_KEY, value: x }",
        ));
        assert!(
            e.contains("providers[0].api_key: expected exactly one of `env`, `file`, `value`"),
            "{e}"
        );
    }
}
