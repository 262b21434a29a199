//! The user-facing config file (YAML): raw serde types, then checks into the
//! validated [`Config`]. Errors name the file, the path inside it and what was
//! expected. One module per section, each type's limits next to the type.

mod governance;
mod limits;
mod listener;
mod observe;
mod providers;
mod retry;
mod routes;
mod secrets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_core::config::{ModelInfo, Price, Route};
use switchyard_core::policy::Policy;

pub use governance::{AdminToken, Governance, valid_name};
pub use limits::BootstrapLimits;
pub use observe::{DecisionLog, Tracing};
pub use providers::Provider;

use governance::RawGovernance;
use limits::RawLimits;
use listener::{RawFilter, RawListener};
use observe::{RawDecisionLog, RawTracing};
use providers::RawProvider;
use retry::RawRetry;
use routes::RawRoute;

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

/// Path under which the control plane's status port serves [`ServedFilter`]s:
/// `/filter/v1/<sha256>.wasm`.
pub const SERVED_FILTER_PATH: &str = "/filter/v1/";

/// A Wasm build the control plane serves to its Envoys (`filter: { wasm: PATH,
/// serve: true }`): they fetch it over HTTP from the status port, through the
/// fleet cluster (mutual TLS when the control channel has it), and load it only
/// when its SHA-256 is the one in their listener, as Istio delivers Wasm.
#[derive(Clone, Debug)]
pub struct ServedFilter {
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
    /// The file as read when the config was loaded.
    pub bytes: std::sync::Arc<Vec<u8>>,
}

impl PartialEq for ServedFilter {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

impl ServedFilter {
    /// Reads the file and computes its digest.
    pub fn read(path: &Path) -> std::io::Result<ServedFilter> {
        let bytes = std::fs::read(path)?;
        Ok(ServedFilter {
            sha256: switchyard_core::sigv4::sha256_hex(&bytes),
            bytes: std::sync::Arc::new(bytes),
        })
    }

    /// The path Envoys fetch it from.
    pub fn url_path(&self) -> String {
        format!("{SERVED_FILTER_PATH}{}.wasm", self.sha256)
    }
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
    /// What is known of each `provider/model`: context window, owner, release.
    #[serde(default)]
    models: BTreeMap<String, ModelInfo>,
    /// Active health checks of every provider (off when absent).
    #[serde(default)]
    health_check: Option<switchyard_core::config::HealthCheck>,
    /// Effective weights from fleet-wide error rate and latency (off when absent).
    #[serde(default)]
    adaptive_weights: Option<switchyard_core::fleet::AdaptiveWeights>,
    /// How filters exchange fleet state: `grpc` (one stream per Envoy on the
    /// xDS port, state pushed on change; the default) or `http` (each worker
    /// polls the status port).
    #[serde(default = "stream_transport")]
    fleet_transport: switchyard_core::config::Transport,
    /// Client request headers forwarded to every provider (beyond content
    /// negotiation, user agent and request id).
    #[serde(default)]
    forward_headers: Vec<String>,
    providers: Vec<RawProvider>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    /// Virtual keys, teams, budgets and limits.
    #[serde(default)]
    governance: RawGovernance,
    /// Envoy's OpenTelemetry tracer (off when absent).
    #[serde(default)]
    tracing: Option<RawTracing>,
    /// One JSON line per request from an Envoy access log (off when absent).
    #[serde(default)]
    decision_log: Option<RawDecisionLog>,
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
    /// With `filter.serve`: the Wasm file the control plane serves (the path in
    /// `filter` is then the control plane's, not the Envoys').
    pub served_filter: Option<ServedFilter>,
    /// With `filter.ecds`: the listener references the filters, whose configs
    /// are their own xDS resources (`TypedExtensionConfig`, as istiod sends a
    /// `WasmPlugin`): a new filter config or build replaces them in place,
    /// without a new listener.
    pub filter_ecds: bool,
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
    /// Model facts per `provider/model`.
    pub models: BTreeMap<String, ModelInfo>,
    /// Active health checks.
    pub health_check: Option<switchyard_core::config::HealthCheck>,
    /// Adaptive weights bounds.
    pub adaptive_weights: Option<switchyard_core::fleet::AdaptiveWeights>,
    /// The fleet exchange's transport (`fleet_transport:`, default `grpc`).
    pub fleet_transport: switchyard_core::config::Transport,
    /// The node's cluster to the xDS port that the fleet stream goes through
    /// (not from the file: the node's bootstrap names it, see
    /// [`crate::bootstrap::XDS_CLUSTER_METADATA`]).
    pub fleet_stream_cluster: String,
    /// Where filters reach the control plane's fleet exchange (set by `serve`,
    /// not by the file).
    pub fleet: Option<FleetEndpoint>,
    /// Client request headers forwarded to every provider (lower-case).
    pub forward_headers: Vec<String>,
    /// The `governance:` section.
    pub governance: Governance,
    /// Whether filters require keys: the control plane holds some (or the
    /// file requires them). Set by `serve`, not by the file.
    pub governance_on: bool,
    /// The `tracing:` section.
    pub tracing: Option<Tracing>,
    /// The `decision_log:` section.
    pub decision_log: Option<DecisionLog>,
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

/// The fleet exchange's default transport: the stream.
fn stream_transport() -> switchyard_core::config::Transport {
    switchyard_core::config::Transport::Grpc
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
    raw.limits.check(&mut problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            problems,
        });
    }
    Ok(raw.limits.bootstrap())
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
    routes::flatten_tiers(&mut raw.routes, &mut problems);
    raw.limits.check(&mut problems);
    raw.retry.check(&mut problems);
    raw.listener.check(&mut problems);
    let (providers, names) = providers::check(&raw.providers, base, env, &mut problems);
    routes::check_prices(&raw.prices, &names, &mut problems);
    routes::check_models(&raw.models, &names, &mut problems);
    let routes = routes::check(
        &raw.routes,
        &providers,
        &names,
        raw.limits.max_attempts,
        &mut problems,
    );
    routes::check_policy(&raw.policy, "policy", &mut problems);
    let forward_headers =
        providers::check_forward_headers(&raw.forward_headers, "forward_headers", &mut problems);
    check_resilience(&raw, &mut problems);
    let governance = governance::check(&raw.governance, base, env, &mut problems);
    let tracing = raw.tracing.as_ref().and_then(|t| t.check(&mut problems));
    let decision_log = raw
        .decision_log
        .as_ref()
        .and_then(|d| d.check(base, &mut problems));
    let filter = raw.filter.resolve(base).unwrap_or_else(|e| {
        problems.push(e);
        FilterBuild::Wasm(PathBuf::from(DEFAULT_WASM))
    });
    let served_filter = raw.filter.served(&filter).unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            problems,
        });
    }
    let version = raw
        .version
        .unwrap_or_else(|| format!("{:016x}", fnv1a(text.as_bytes())));
    Ok(Config {
        version,
        listener_address: raw.listener.address,
        listener_port: raw.listener.port,
        filter,
        served_filter,
        filter_ecds: raw.filter.ecds,
        max_request_bytes: raw.limits.max_request_bytes,
        stream_idle_timeout_ms: raw.limits.stream_idle_timeout_ms,
        request_headers_timeout_ms: raw.limits.request_headers_timeout_ms,
        request_timeout_ms: raw.limits.request_timeout_ms,
        connection_idle_timeout_ms: raw.limits.connection_idle_timeout_ms,
        bootstrap: raw.limits.bootstrap(),
        max_attempts: raw.limits.max_attempts,
        backoff_base_ms: raw.retry.backoff_base_ms,
        backoff_max_ms: raw.retry.backoff_max_ms,
        retry_budget: raw.retry.budget(),
        providers,
        routes,
        default_policy: raw.policy,
        circuit_breaker: raw.circuit_breaker,
        prices: raw.prices,
        models: raw.models,
        health_check: raw.health_check,
        adaptive_weights: raw.adaptive_weights,
        fleet_transport: raw.fleet_transport,
        fleet_stream_cluster: crate::xds::resources::XDS_CLUSTER.to_string(),
        fleet: None,
        forward_headers,
        governance,
        governance_on: false,
        tracing,
        decision_log,
    })
}

/// Checks `circuit_breaker:`, `health_check:` and `adaptive_weights:`.
fn check_resilience(raw: &RawConfig, problems: &mut Vec<String>) {
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
}

/// FNV-1a: a stable content hash for versions (no extra dependency).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Where filters reach the control plane's fleet exchange: the status
/// listener's address, or `serve --advertise-addr` (a DNS name makes the fleet
/// cluster `LOGICAL_DNS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetEndpoint {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the status port runs mutual TLS: the fleet cluster then
    /// presents each Envoy's client certificate (docs/security.md).
    pub tls: bool,
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
    fn a_served_filter_is_read_with_its_digest_and_refused_for_the_module() {
        let dir = std::env::temp_dir().join(format!("sy-served-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let providers = "providers:\n  - { name: a, dialect: openai, base_url: \"http://127.0.0.1:9/v1\", api_key: { value: k } }\n";
        let text = format!("filter: {{ wasm: f.wasm, serve: true }}\n{providers}");
        let c = parse(&text, "c.yaml", &dir, &env).unwrap();
        let served = c.served_filter.unwrap();
        // sha256 of the 8 bytes above.
        assert_eq!(
            served.sha256,
            "93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476"
        );
        assert_eq!(
            served.url_path(),
            format!("/filter/v1/{}.wasm", served.sha256)
        );
        let plain = parse(
            &format!("filter: {{ wasm: f.wasm }}\n{providers}"),
            "c.yaml",
            &dir,
            &env,
        )
        .unwrap();
        assert!(plain.served_filter.is_none());
        let module = format!("filter: {{ module: f.so, serve: true }}\n{providers}");
        let e = parse(&module, "c.yaml", &dir, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("filter.serve: only for `wasm`"), "{e}");
        let both = format!("filter: {{ wasm: f.wasm, serve: true, ecds: true }}\n{providers}");
        let e = parse(&both, "c.yaml", &dir, &env).unwrap_err().to_string();
        assert!(
            e.contains("`serve` and `ecds` together are not supported"),
            "{e}"
        );
        let ecds = parse(
            &format!("filter: {{ wasm: f.wasm, ecds: true }}\n{providers}"),
            "c.yaml",
            &dir,
            &env,
        )
        .unwrap();
        assert!(ecds.filter_ecds && ecds.served_filter.is_none());
        let missing = format!("filter: {{ wasm: nope.wasm, serve: true }}\n{providers}");
        let e = parse(&missing, "c.yaml", &dir, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read it to serve it"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
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
