//! Runs a real gateway for a test: mock providers, the `switchyard` control plane
//! binary and Envoy with the built filter, on ephemeral loopback ports.
//!
//! Everything is killed when the [`Gateway`] (or [`Mock`]) is dropped; the
//! processes' logs are printed only when the test is failing.

// Test support: a set-up step that cannot complete must fail the test loudly.
#![allow(clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::mock::Dialect;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Paths of everything a gateway needs; built by `make test` (or `make build`).
#[derive(Clone, Debug)]
pub struct Paths {
    /// The control plane binary.
    pub switchyard: PathBuf,
    /// The mock provider binary.
    pub mock_provider: PathBuf,
    /// Envoy 1.40 (the project's virtualenv, or `ENVOY_BIN`).
    pub envoy: PathBuf,
    /// The built proxy-wasm filter.
    pub wasm: PathBuf,
    /// The built native module.
    pub native: PathBuf,
    /// Which of the two the gateways of this test run load (`SWITCHYARD_HOST`).
    pub host: FilterHost,
}

/// Which build of the filter a test run exercises: `SWITCHYARD_HOST=wasm` (the
/// default) or `SWITCHYARD_HOST=native`; `make test` runs the suite with both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterHost {
    /// The proxy-wasm module on V8.
    Wasm,
    /// The native dynamic module.
    Native,
}

impl FilterHost {
    /// The host named by `SWITCHYARD_HOST`.
    pub fn from_env() -> FilterHost {
        match std::env::var("SWITCHYARD_HOST").as_deref() {
            Ok("native") => FilterHost::Native,
            Ok("wasm") | Err(_) => FilterHost::Wasm,
            Ok(other) => panic!("SWITCHYARD_HOST={other}: expected wasm or native"),
        }
    }

    /// The prefix Envoy gives the filter's own stats.
    pub fn stat_prefix(self) -> &'static str {
        match self {
            FilterHost::Wasm => "wasmcustom.",
            FilterHost::Native => "switchyard.",
        }
    }
}

impl Paths {
    /// Finds the binaries next to the running test executable.
    pub fn discover() -> Paths {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let exe = std::env::current_exe().unwrap_or_default();
        // target/<profile>/deps/<test-binary>
        let bin_dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("target/debug"));
        let target = bin_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("target"));
        let paths = Paths {
            host: FilterHost::from_env(),
            native: std::env::var_os("SWITCHYARD_NATIVE")
                .map(PathBuf::from)
                .unwrap_or_else(|| target.join("release/libswitchyard_native.so")),
            switchyard: bin_dir.join("switchyard"),
            mock_provider: bin_dir.join("mock-provider"),
            envoy: std::env::var_os("ENVOY_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".venv/bin/envoy")),
            wasm: std::env::var_os("SWITCHYARD_WASM")
                .map(PathBuf::from)
                .unwrap_or_else(|| target.join("wasm32-wasip1/wasm-release/switchyard_filter.wasm")),
        };
        for (what, p) in [
            ("switchyard", &paths.switchyard),
            ("mock-provider", &paths.mock_provider),
            ("envoy", &paths.envoy),
            ("filter", &paths.filter().to_path_buf()),
        ] {
            assert!(
                p.exists(),
                "{what} not found at {}: run the tests with `make test`",
                p.display()
            );
        }
        paths
    }
}

impl Paths {
    /// The filter build this run exercises.
    pub fn filter(&self) -> &Path {
        match self.host {
            FilterHost::Wasm => &self.wasm,
            FilterHost::Native => &self.native,
        }
    }

    /// The `filter:` line of a gateway config for this run's build.
    pub fn filter_yaml(&self) -> String {
        let key = match self.host {
            FilterHost::Wasm => "wasm",
            FilterHost::Native => "module",
        };
        format!("filter: {{ {key}: \"{}\" }}", self.filter().display())
    }
}

/// A scratch directory removed on drop (kept when the test fails).
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory.
    pub fn new(tag: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("switchyard-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process whose output goes to a log file; killed on drop.
#[derive(Debug)]
pub struct Proc {
    /// Name used in failure output.
    pub name: String,
    /// Combined stdout/stderr log.
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with output to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            log,
            child,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `marker`; returns the text after it.
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(marker)) {
                return line[line.find(marker).unwrap_or(0) + marker.len()..].trim().to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing `{marker}`:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print `{marker}` in {timeout:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process as the kubelet stops a container: SIGTERM, then
    /// SIGKILL if it is still running after `grace`. Its exit status, or `None`
    /// when it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn dump(&self) -> String {
        let out = self.output();
        let lines: Vec<&str> = out.lines().collect();
        let tail = &lines[lines.len().saturating_sub(150)..];
        format!(
            "----- {} ({}) last {} lines -----\n{}\n",
            self.name,
            self.log.display(),
            tail.len(),
            tail.join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

/// A running mock provider.
#[derive(Debug)]
pub struct Mock {
    /// Instance name (as used in `x-mock` headers).
    pub name: String,
    /// Its dialect.
    pub dialect: Dialect,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Credential it requires.
    pub api_key: String,
    proc: Proc,
}

impl Mock {
    /// Starts a mock requiring `api_key = "key-<name>"`; `extra` are more CLI flags.
    pub fn start(paths: &Paths, dir: &Path, name: &str, dialect: Dialect, extra: &[&str]) -> Mock {
        // Bedrock's credential is an AWS key pair: `ACCESS_KEY_ID/SECRET`.
        let api_key = match dialect {
            Dialect::Bedrock => format!("AKIDMOCK{}/secret-{name}", name.to_uppercase()),
            _ => format!("key-{name}"),
        };
        let d = dialect.as_str();
        let mut cmd = Command::new(&paths.mock_provider);
        cmd.args([
            "--name",
            name,
            "--dialect",
            d,
            "--addr",
            "127.0.0.1:0",
            "--api-key",
            &api_key,
        ])
        .args(extra);
        let mut proc = Proc::spawn(&format!("mock-{name}"), dir, &mut cmd);
        let addr = proc
            .wait_for_line("listening on", Duration::from_secs(10))
            .parse()
            .expect("mock address");
        Mock {
            name: name.to_string(),
            dialect,
            addr,
            api_key,
            proc,
        }
    }

    /// Requests the mock received, in order.
    pub async fn requests(&self) -> Vec<Value> {
        let url = format!("http://{}/_mock/requests", self.addr);
        let v: Value = reqwest::get(&url)
            .await
            .expect("mock admin")
            .json()
            .await
            .expect("mock admin json");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Stops the mock (its port then refuses connections).
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

/// A provider entry for the gateway config.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// Provider name.
    pub name: String,
    /// Dialect.
    pub dialect: Dialect,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Keys the gateway injects, in rotation order.
    pub api_keys: Vec<String>,
    /// Raw YAML for the provider's credentials, instead of `api_keys`.
    pub credentials: Option<String>,
}

impl From<&Mock> for ProviderSpec {
    fn from(m: &Mock) -> Self {
        ProviderSpec {
            name: m.name.clone(),
            dialect: m.dialect,
            addr: m.addr,
            api_keys: vec![m.api_key.clone()],
            credentials: None,
        }
    }
}

/// Mutual TLS on the control channel (tests/tests/control_tls.rs), from files
/// the test made. Each Envoy gets its own SDS directory (`<node>-sds`).
#[derive(Clone, Debug)]
pub struct ControlTls {
    /// `serve --tls-cert`.
    pub server_cert: PathBuf,
    /// `serve --tls-key`.
    pub server_key: PathBuf,
    /// `serve --tls-client-ca`.
    pub client_ca: PathBuf,
    /// `serve --tls-node-rule` values.
    pub node_rules: Vec<String>,
    /// Further `serve` flags (e.g. `--advertise-addr`).
    pub serve_args: Vec<String>,
    /// The Envoys' client certificate (`bootstrap --tls-cert`).
    pub envoy_cert: PathBuf,
    /// Its key (`bootstrap --tls-key`).
    pub envoy_key: PathBuf,
    /// The CA the Envoys trust for the control plane (`bootstrap --tls-ca`).
    pub envoy_ca: PathBuf,
    /// The host name the Envoys dial for xDS (in the server certificate).
    pub host: String,
}

impl ControlTls {
    fn serve_args(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![
            "--tls-cert".into(),
            self.server_cert.display().to_string(),
            "--tls-key".into(),
            self.server_key.display().to_string(),
            "--tls-client-ca".into(),
            self.client_ca.display().to_string(),
        ];
        for r in &self.node_rules {
            out.extend(["--tls-node-rule".to_string(), r.clone()]);
        }
        out.extend(self.serve_args.iter().cloned());
        out
    }
}

/// Builds a gateway config and starts it.
#[derive(Debug, Default)]
pub struct GatewayBuilder {
    providers: Vec<ProviderSpec>,
    routes: Vec<(String, Vec<String>)>,
    extra_yaml: String,
    workers: u32,
    delta: bool,
    tls: Option<ControlTls>,
    filter: Option<String>,
    stats_listener: bool,
}

impl GatewayBuilder {
    /// The config's `filter:` line, instead of this run's build (`paths.filter_yaml()`).
    pub fn filter_yaml(mut self, line: &str) -> Self {
        self.filter = Some(line.to_string());
        self
    }

    /// Adds a provider.
    pub fn provider(mut self, p: impl Into<ProviderSpec>) -> Self {
        self.providers.push(p.into());
        self
    }

    /// Replaces the keys the gateway injects for provider `name`.
    pub fn keys(mut self, name: &str, keys: &[&str]) -> Self {
        for p in self.providers.iter_mut().filter(|p| p.name == name) {
            p.api_keys = keys.iter().map(|k| k.to_string()).collect();
        }
        self
    }

    /// Replaces provider `name`'s credentials with raw YAML (e.g.
    /// `api_key: { command: [cat, token] }, credentials_refresh_s: 1`).
    pub fn credentials(mut self, name: &str, yaml: &str) -> Self {
        for p in self.providers.iter_mut().filter(|p| p.name == name) {
            p.credentials = Some(yaml.to_string());
        }
        self
    }

    /// Adds a route alias with its chain (`provider/model` entries).
    pub fn route(mut self, model: &str, chain: &[&str]) -> Self {
        self.routes
            .push((model.to_string(), chain.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// Envoy uses incremental (delta) xDS.
    pub fn delta(mut self) -> Self {
        self.delta = true;
        self
    }

    /// Envoy worker threads (default 1).
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    /// The first Envoy's bootstrap gets the stats-only listener for Prometheus
    /// (`switchyard bootstrap --stats-addr`, on an ephemeral loopback port:
    /// [`Gateway::stats`]), and with it an admin on a fixed port, which that
    /// listener's cluster dials.
    pub fn stats_listener(mut self) -> Self {
        self.stats_listener = true;
        self
    }

    /// Mutual TLS between the Envoys and the control plane.
    pub fn control_tls(mut self, tls: ControlTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Appends raw YAML (e.g. a `limits:` section).
    pub fn yaml(mut self, extra: &str) -> Self {
        self.extra_yaml.push_str(extra);
        self
    }

    /// The config file text.
    pub fn config_text(&self, paths: &Paths) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "listener: {{ address: 127.0.0.1, port: 0 }}");
        let _ = writeln!(y, "{}", self.filter.clone().unwrap_or_else(|| paths.filter_yaml()));
        // The mock providers take their misbehaviour from the client's `x-mock`
        // header, which (like any client header) only reaches them when forwarded.
        let _ = writeln!(y, "forward_headers: [x-mock]");
        let _ = writeln!(y, "providers:");
        for p in &self.providers {
            let keys: Vec<String> = p.api_keys.iter().map(|k| format!("{{ value: \"{k}\" }}")).collect();
            let credentials = match p.api_keys.first().and_then(|k| k.split_once('/')) {
                _ if p.credentials.is_some() => p.credentials.clone().unwrap_or_default(),
                // An AWS key pair: SigV4 signing.
                Some((id, secret)) if p.dialect == Dialect::Bedrock => format!(
                    "aws: {{ region: us-east-1, access_key_id: {{ value: \"{id}\" }}, secret_access_key: {{ value: \"{secret}\" }} }}"
                ),
                _ => format!("api_keys: [{}]", keys.join(", ")),
            };
            let _ = writeln!(
                y,
                "  - {{ name: {}, dialect: {}, base_url: \"http://{}{}\", {credentials}, connect_timeout_ms: 500 }}",
                p.name,
                p.dialect.as_str(),
                p.addr,
                p.dialect.base_path(),
            );
        }
        if !self.routes.is_empty() {
            let _ = writeln!(y, "routes:");
            for (m, chain) in &self.routes {
                let _ = writeln!(y, "  - {{ model: {m}, chain: [{}] }}", chain.join(", "));
            }
        }
        y.push_str(&self.extra_yaml);
        // The whole suite over the HTTP fleet exchange instead of the gRPC
        // stream (the default): SWITCHYARD_FLEET_TRANSPORT=http.
        if let Ok(t) = std::env::var("SWITCHYARD_FLEET_TRANSPORT")
            && !y.contains("fleet_transport:")
        {
            let _ = writeln!(y, "fleet_transport: {t}");
        }
        y
    }

    /// Starts control plane and Envoy and waits until the listener serves.
    pub async fn start(self, paths: &Paths, scratch: &Scratch) -> Gateway {
        let dir = &scratch.0;
        let config = dir.join("switchyard.yaml");
        std::fs::write(&config, self.config_text(paths)).expect("write config");
        let data_dir = dir.join("data");
        let tls_args = self.tls.as_ref().map(ControlTls::serve_args).unwrap_or_default();
        let (cp, xds, status, admin_api) = spawn_control_plane(paths, dir, "switchyard", &config, &data_dir, &tls_args);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let node = format!("test-envoy-{n}");
        let envoy = start_envoy(
            paths,
            dir,
            &config,
            &node,
            xds,
            n,
            self.workers.max(1),
            self.delta,
            self.tls.as_ref(),
            self.stats_listener,
        );
        let mut gw = Gateway {
            host: paths.host,
            filter_file: paths
                .filter()
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            url: String::new(),
            admin: String::new(),
            stats: String::new(),
            config,
            xds,
            status,
            admin_api,
            data_dir,
            envoys: vec![envoy],
            urls: Vec::new(),
            cp,
            tls: self.tls,
        };
        gw.wait_ready(0).await;
        gw
    }
}

/// Starts `switchyard serve` on ephemeral loopback ports with `config`,
/// `data_dir` and `extra` arguments (e.g. [`ControlTls`]'s); returns it with its
/// xDS, status and admin API addresses.
pub fn spawn_control_plane(
    paths: &Paths,
    dir: &Path,
    name: &str,
    config: &Path,
    data_dir: &Path,
    extra: &[String],
) -> (Proc, SocketAddr, SocketAddr, SocketAddr) {
    let mut cp = Proc::spawn(
        name,
        dir,
        Command::new(&paths.switchyard)
            .args([
                "serve",
                "--xds-addr",
                "127.0.0.1:0",
                "--status-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .args(extra),
    );
    let xds: SocketAddr = cp
        .wait_for_line("listening on", Duration::from_secs(10))
        .parse()
        .expect("xds address");
    let status = cp.wait_for_line("status on ", Duration::from_secs(1));
    let status: SocketAddr = status
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches("/status")
        .parse()
        .expect("status address");
    let admin_api = cp.wait_for_line("admin API on http://", Duration::from_secs(1));
    let admin_api: SocketAddr = admin_api
        .trim_end_matches("/admin/v1")
        .parse()
        .expect("admin API address");
    (cp, xds, status, admin_api)
}

/// Starts one Envoy from a bootstrap generated for the gateway's config file
/// (its `limits:` set the bootstrap's connection and heap limits).
#[allow(clippy::too_many_arguments)]
fn start_envoy(
    paths: &Paths,
    dir: &Path,
    config: &Path,
    node: &str,
    xds: SocketAddr,
    n: u32,
    workers: u32,
    delta: bool,
    tls: Option<&ControlTls>,
    stats_listener: bool,
) -> Proc {
    let mut cmd = Command::new(&paths.switchyard);
    cmd.args(["bootstrap", "--node", node]);
    if stats_listener {
        // The stats listener's cluster must know the admin's port: a free one,
        // not Envoy's choice (`:0`).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        cmd.args(["--admin", &format!("127.0.0.1:{port}"), "--stats-addr", "127.0.0.1:0"]);
    } else {
        cmd.args(["--admin", "127.0.0.1:0"]);
    }
    cmd.arg("--xds");
    match tls {
        None => cmd.arg(xds.to_string()),
        Some(t) => cmd
            .arg(format!("{}:{}", t.host, xds.port()))
            .arg("--tls-cert")
            .arg(&t.envoy_cert)
            .arg("--tls-key")
            .arg(&t.envoy_key)
            .arg("--tls-ca")
            .arg(&t.envoy_ca)
            .arg("--sds-dir")
            .arg(dir.join(format!("{node}-sds"))),
    };
    let out = cmd
        .arg("--config")
        .arg(config)
        .args(if delta { &["--delta"][..] } else { &[][..] })
        .output()
        .expect("switchyard bootstrap");
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = dir.join(format!("{node}.bootstrap.yaml"));
    std::fs::write(&bootstrap, &out.stdout).expect("write bootstrap");
    // Unique per test process and Envoy, so concurrent test binaries never share
    // Envoy's shared-memory region.
    let base_id = (std::process::id() % 400_000) * 10 + n % 10;
    Proc::spawn(
        node,
        dir,
        Command::new(&paths.envoy)
            .arg("-c")
            .arg(&bootstrap)
            .args([
                "--base-id",
                &base_id.to_string(),
                "--concurrency",
                &workers.to_string(),
                "--log-level",
                "info",
            ])
            .arg("--admin-address-path")
            .arg(dir.join(format!("{node}.admin"))),
    )
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The filter build it runs.
    pub host: FilterHost,
    /// The file name of that build (to break a config on purpose).
    pub filter_file: String,
    /// `http://127.0.0.1:PORT` of the first Envoy's listener.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the first Envoy's admin.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of the first Envoy's stats-only listener
    /// ([`GatewayBuilder::stats_listener`]), else empty.
    pub stats: String,
    /// The control plane's config file (rewrite it to hot-reload).
    pub config: PathBuf,
    /// The control plane's ADS address.
    pub xds: SocketAddr,
    /// The control plane's status endpoint.
    pub status: SocketAddr,
    /// The control plane's admin API.
    pub admin_api: SocketAddr,
    /// The control plane's data directory (key database, audit log, admin token).
    pub data_dir: PathBuf,
    /// Envoy processes.
    pub envoys: Vec<Proc>,
    /// Listener URL of each Envoy (`urls[0] == url`).
    pub urls: Vec<String>,
    /// The control plane process.
    pub cp: Proc,
    /// Mutual TLS on the control channel, when the builder asked for it.
    pub tls: Option<ControlTls>,
}

impl Gateway {
    /// A builder.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    async fn wait_ready(&mut self, i: usize) {
        let admin_file = self.envoys[i].log.with_extension("").with_extension("admin");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            assert!(
                self.envoys[i].is_running(),
                "envoy exited:\n{}",
                self.envoys[i].output()
            );
            assert!(Instant::now() < deadline, "gateway not ready in 30 s");
            if let Ok(admin) = std::fs::read_to_string(&admin_file)
                && !admin.trim().is_empty()
            {
                let admin = format!("http://{}", admin.trim());
                // The port shows up while the listener is still warming: wait until it
                // accepts connections.
                if let Some(port) = listener_port(&client, &admin, "switchyard").await
                    && tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                    && gateway_ready(&client, &admin, self.host).await
                {
                    let url = format!("http://127.0.0.1:{port}");
                    if i == 0 {
                        self.url = url.clone();
                        // A static listener: bound before the one from the control plane.
                        if let Some(stats) = listener_port(&client, &admin, STATS_LISTENER).await {
                            self.stats = format!("http://127.0.0.1:{stats}");
                        }
                        self.admin = admin;
                    }
                    if self.urls.len() <= i {
                        self.urls.resize(i + 1, String::new());
                    }
                    self.urls[i] = url;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts one more Envoy on the same control plane; returns its index.
    pub async fn add_envoy(&mut self, paths: &Paths) -> usize {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let node = format!("test-envoy-{n}");
        let dir = self.config.parent().map(Path::to_path_buf).unwrap_or_default();
        self.envoys.push(start_envoy(
            paths,
            &dir,
            &self.config,
            &node,
            self.xds,
            n,
            1,
            false,
            self.tls.as_ref(),
            false,
        ));
        let i = self.envoys.len() - 1;
        self.wait_ready(i).await;
        i
    }

    /// Starts a second control plane on the same config file, with its own
    /// data directory and ports (`data-<n>`: its own audit log and admin
    /// token; a `governance: { database: … }` in the config makes the two share
    /// the key database), and one Envoy of its own: another gateway.
    pub async fn start_replica(&self, paths: &Paths) -> Gateway {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.config.parent().map(Path::to_path_buf).unwrap_or_default();
        let data_dir = dir.join(format!("data-{n}"));
        let (cp, xds, status, admin_api) = spawn_control_plane(
            paths,
            &dir,
            &format!("switchyard-{n}"),
            &self.config,
            &data_dir,
            &self.tls.as_ref().map(ControlTls::serve_args).unwrap_or_default(),
        );
        let mut gw = Gateway {
            host: self.host,
            filter_file: self.filter_file.clone(),
            url: String::new(),
            admin: String::new(),
            stats: String::new(),
            config: self.config.clone(),
            xds,
            status,
            admin_api,
            data_dir,
            envoys: Vec::new(),
            urls: Vec::new(),
            cp,
            tls: self.tls.clone(),
        };
        gw.add_envoy(paths).await;
        gw
    }

    /// Kills the control plane (Envoys keep their last config).
    pub fn stop_control_plane(&mut self) {
        self.cp.kill();
    }

    /// Starts the control plane again on the same ports and config file.
    pub fn restart_control_plane(&mut self, paths: &Paths) {
        self.cp.kill();
        let dir = self.config.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut cp = Proc::spawn(
            "switchyard-restarted",
            &dir,
            Command::new(&paths.switchyard)
                .args([
                    "serve",
                    "--xds-addr",
                    &self.xds.to_string(),
                    "--status-addr",
                    &self.status.to_string(),
                    "--admin-addr",
                    &self.admin_api.to_string(),
                    "--health-addr",
                    "127.0.0.1:0",
                    "--data-dir",
                ])
                .arg(&self.data_dir)
                .arg("--config")
                .arg(&self.config)
                .args(self.tls.as_ref().map(ControlTls::serve_args).unwrap_or_default()),
        );
        cp.wait_for_line("listening on", Duration::from_secs(10));
        self.cp = cp;
    }

    /// The admin token the control plane generated.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// Calls the admin API with the admin token; `(status, JSON body)`.
    pub async fn admin_call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("http://{}{path}", self.admin_api);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(self.admin_token());
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("admin API");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a key through the admin API; returns `(id, key)`.
    pub async fn create_key(&self, spec: &Value) -> (String, String) {
        let (status, v) = self.admin_call("POST", "/admin/v1/keys", Some(spec)).await;
        assert_eq!(status, 200, "create key: {v}");
        (
            v["record"]["id"].as_str().expect("id").to_string(),
            v["key"].as_str().expect("key").to_string(),
        )
    }

    /// Runs the `switchyard` CLI against this control plane (its admin address
    /// and data directory are passed); `(exit code, stdout, stderr)`.
    pub fn cli(&self, paths: &Paths, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(&paths.switchyard);
        cmd.args(args);
        if matches!(args.first(), Some(&"keys") | Some(&"teams")) {
            cmd.arg("--admin-addr").arg(self.admin_api.to_string());
        }
        cmd.arg("--data-dir").arg(&self.data_dir);
        let out = cmd
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .output()
            .expect("switchyard CLI");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits until every Envoy serves `key` on route `model` (the first key
    /// turns authentication on: a listener update, then the key table with the
    /// next fleet exchange).
    pub async fn wait_for_key(&self, key: &str, model: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = reqwest::Client::new();
        for url in &self.urls {
            loop {
                // Authentication is on (a request without a key is refused)…
                let anonymous = client
                    .get(format!("{url}/v1/models"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                // …and this key is known.
                let r = client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&chat_body(model))
                    .send()
                    .await;
                if anonymous.is_ok_and(|s| s == 401) && r.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                assert!(Instant::now() < deadline, "key not in force on {url} within 15 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The full URL of a path on the gateway.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A counter or gauge from Envoy's admin `/stats`.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let text = reqwest::get(format!("{}/stats?filter=^{}$", self.admin, regex_escape(name)))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok()))
    }

    /// A counter of the filter's own (`switchyard_…`), whichever host emits it.
    pub async fn filter_stat(&self, name: &str) -> Option<u64> {
        self.stat(&format!("{}{name}", self.host.stat_prefix())).await
    }

    /// POSTs a chat-completions body (with optional extra headers).
    pub async fn chat(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        chat_at(&self.url, body, headers).await
    }
}

/// POSTs a chat-completions body (with optional extra headers) to the gateway
/// listening at `url` (one of [`Gateway::urls`]).
pub async fn chat_at(url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request to gateway")
}

/// Whether the gateway has what it needs to serve: provider credentials come
/// with its first fleet exchange (until then every request gets 503
/// `gateway_not_ready`); the filter says so in a gauge.
async fn gateway_ready(client: &reqwest::Client, admin: &str, host: FilterHost) -> bool {
    let name = format!("{}switchyard_credentials_ready", host.stat_prefix());
    let Ok(r) = client
        .get(format!("{admin}/stats?filter=^{}$", regex_escape(&name)))
        .send()
        .await
    else {
        return false;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == format!("{name}: 1"))
}

/// The name of the bootstrap's stats-only listener (`switchyard bootstrap --stats-addr`).
pub const STATS_LISTENER: &str = "switchyard_prometheus";

/// The port Envoy `admin`'s listener `name` is bound to.
async fn listener_port(client: &reqwest::Client, admin: &str, name: &str) -> Option<u16> {
    let v: Value = client
        .get(format!("{admin}/listeners?format=json"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v.get("listener_statuses")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(name))?
        .pointer("/local_address/socket_address/port_value")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

// === the served filter ===

/// The Wasm build with a custom section appended: another build (another
/// SHA-256), the same behaviour.
pub fn wasm_rebuilt(wasm: &[u8], tag: &[u8]) -> Vec<u8> {
    let name = b"switchyard-test";
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    let size = 1 + name.len() + tag.len();
    assert!(size < 128 && name.len() < 128, "one-byte LEB128 lengths");
    out.push(size as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(tag);
    out
}

/// The code sources of the filters in Envoy `admin`'s active listener (not one
/// still warming or draining): `(uri, sha256)` of each remote one, and whether
/// any filter names a local file.
pub async fn listener_code(admin: &str) -> (Vec<(String, String)>, bool) {
    let dump: Value = reqwest::get(format!("{admin}/config_dump?resource=dynamic_listeners"))
        .await
        .expect("Envoy admin")
        .json()
        .await
        .expect("config dump JSON");
    let mut remote = Vec::new();
    collect_remote(&dump, &mut remote);
    (remote, dump.to_string().contains("\"filename\""))
}

fn collect_remote(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(active) = m.get("active_state") {
                collect_remote(active, out);
                return;
            }
            if let (Some(uri), Some(sha)) = (
                m.get("http_uri").and_then(|u| u.get("uri")).and_then(Value::as_str),
                m.get("sha256").and_then(Value::as_str),
            ) {
                out.push((uri.to_string(), sha.to_string()));
            }
            for x in m.values() {
                collect_remote(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_remote(x, out)),
        _ => {}
    }
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(|d| d.trim().to_string())
        .collect()
}

/// `(x-switchyard-provider, x-switchyard-attempts)` of a gateway response.
pub fn served(r: &reqwest::Response) -> (String, String) {
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (h("x-switchyard-provider"), h("x-switchyard-attempts"))
}

/// Values of header `name` in a request the mock provider recorded.
pub fn recorded_header(req: &Value, name: &str) -> Vec<String> {
    req["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0] == name)
                .filter_map(|h| h[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A minimal chat request.
pub fn chat_body(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// Clients sending `chat` completions in a loop until stopped, counting what was
/// served and keeping every failure: the "no request failed while …" of the
/// rollout and reload tests.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` loops. Turn `n` of client `i` posts to
    /// `target(i, n)` = (a label for failures, the gateway's base URL); an
    /// answer counts as served when it is a 200 and `served(label, &answer)`
    /// holds, anything else as a failure (`"<ms since start> ms <label>: <status>
    /// <body>"`).
    pub fn start<T, S>(clients: usize, target: T, served: S) -> Load
    where
        T: Fn(usize, usize) -> (String, String) + Send + Sync + 'static,
        S: Fn(&str, &reqwest::Response) -> bool + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (target, served) = (Arc::new(target), Arc::new(served));
        let t0 = Instant::now();
        let tasks = (0..clients)
            .map(|i| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let (target, served) = (target.clone(), served.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut turn = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (label, url) = target(i, turn);
                        turn += 1;
                        let r = client
                            .post(format!("{url}/v1/chat/completions"))
                            .timeout(Duration::from_secs(10))
                            .json(&chat_body("chat"))
                            .send()
                            .await;
                        let at = t0.elapsed().as_millis();
                        let failure = match r {
                            Ok(r) if r.status() == 200 && served(&label, &r) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                format!("{at} ms {label}: {status} {body}")
                            }
                            Err(e) => format!("{at} ms {label}: {e:?}"),
                        };
                        if let Ok(mut f) = failed.lock() {
                            f.push(failure);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops every client; the requests served and the failures.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.lock().map(|f| f.clone()).unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}
