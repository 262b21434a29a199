//! A real Prometheus for a test: Debian's `prometheus` (installed by `make
//! setup`; `PROMETHEUS_BIN` overrides), on a loopback port of its own, scraping
//! Envoys' `/stats/prometheus` (admin or stats-only listener) every second,
//! queried over its HTTP API.
//! Also a parser for Prometheus' text exposition format, to read
//! `/stats/prometheus` directly.

// Test support: a set-up step that cannot complete must fail the test loudly.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Proc;

/// Scrape and rule evaluation interval of the test Prometheus.
pub const INTERVAL: &str = "1s";

/// The Prometheus binary: `PROMETHEUS_BIN`, else Debian's.
pub fn binary() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}

/// `promtool`, next to the Prometheus binary.
pub fn promtool() -> PathBuf {
    binary().with_file_name("promtool")
}

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its configuration file.
    pub config: PathBuf,
    proc: Proc,
}

/// One sample of a query result or an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (`__name__`; empty for a query result without one).
    pub name: String,
    /// Labels, `__name__` excluded.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k` (empty when absent).
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// A free loopback port (bound then released: Prometheus cannot report the
/// port it got for `:0`).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `/stats/prometheus` of each address
    /// (an Envoy's admin or its stats-only listener; `http://host:port` or
    /// `host:port`), with `rule_files` loaded.
    pub async fn start(dir: &Path, admins: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let bin = binary();
        assert!(
            bin.exists(),
            "Prometheus not found at {}: run `make setup` (Debian's prometheus package) or set PROMETHEUS_BIN",
            bin.display()
        );
        let mut yaml = String::new();
        let _ = writeln!(
            yaml,
            "global: {{ scrape_interval: {INTERVAL}, evaluation_interval: {INTERVAL}, scrape_timeout: {INTERVAL} }}"
        );
        if !rule_files.is_empty() {
            let _ = writeln!(yaml, "rule_files:");
            for f in rule_files {
                let _ = writeln!(yaml, "  - \"{}\"", f.display());
            }
        }
        let targets: Vec<String> = admins
            .iter()
            .map(|a| format!("'{}'", a.trim_start_matches("http://")))
            .collect();
        let _ = writeln!(
            yaml,
            "scrape_configs:\n  - job_name: switchyard\n    metrics_path: /stats/prometheus\n    static_configs: [{{ targets: [{}] }}]",
            targets.join(", ")
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        // A port taken between the probe and Prometheus' bind: try another.
        for attempt in 0..5 {
            let port = free_port();
            let data = dir.join(format!("prometheus-data-{attempt}"));
            let mut proc = Proc::spawn(
                &format!("prometheus-{attempt}"),
                dir,
                Command::new(&bin)
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--storage.tsdb.retention.time=1h")
                    .arg("--log.level=warn"),
            );
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            let client = reqwest::Client::new();
            while proc.is_running() && Instant::now() < deadline {
                if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
                    && r.status().is_success()
                {
                    return Prometheus { url, config, proc };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!proc.is_running(), "Prometheus not ready in 30 s:\n{}", proc.output());
        }
        panic!("Prometheus did not start (5 ports tried)");
    }

    /// Evaluates `promql` now (instant query). `Err` holds Prometheus' error.
    pub async fn query(&self, promql: &str) -> Result<Value, String> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query?query={}", self.url, url_encode(promql)))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    /// The samples of an instant vector (or a scalar, as one unlabelled sample).
    pub async fn samples(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.query(promql).await?;
        let number = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let mut labels: BTreeMap<String, String> = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Sample {
                        name: labels.remove("__name__").unwrap_or_default(),
                        labels,
                        value: number(&s["value"][1]),
                    }
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                name: String::new(),
                labels: BTreeMap::new(),
                value: number(&data["result"][1]),
            }]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// Polls `promql` until `done` accepts its samples; returns them. Panics
    /// after `timeout` with the last answer.
    pub async fn wait_for(&self, promql: &str, timeout: Duration, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.samples(promql).await;
            if let Ok(s) = &got
                && done(s)
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "`{promql}` did not reach the expected value in {timeout:?}; last answer: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `GET /api/v1/rules`: the rule groups with each rule's health.
    pub async fn rules(&self) -> Value {
        reqwest::get(format!("{}/api/v1/rules", self.url))
            .await
            .expect("prometheus rules")
            .json::<Value>()
            .await
            .expect("rules json")["data"]
            .clone()
    }

    /// The log so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// One metric of the contract (docs/metrics.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contract {
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// Label names, in order.
    pub labels: Vec<String>,
}

/// The metrics docs/metrics.md lists, by name: its table's rows, the label
/// names being, in the third column split at the commas outside parentheses,
/// the first backticked word of each piece.
pub fn contract() -> BTreeMap<String, Contract> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    for row in doc.lines().filter(|l| l.starts_with("| `switchyard_")) {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(name), Some(kind), Some(labels)) = (cols.get(1), cols.get(2), cols.get(3)) else {
            continue;
        };
        let (mut depth, mut piece, mut pieces) = (0, String::new(), Vec::new());
        for c in labels.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => pieces.push(std::mem::take(&mut piece)),
                c => piece.push(c),
            }
        }
        pieces.push(piece);
        let labels = pieces
            .iter()
            .filter_map(|p| p.split('`').nth(1).filter(|w| !w.is_empty()))
            .map(str::to_string)
            .collect();
        out.insert(
            name.trim_matches('`').to_string(),
            Contract {
                kind: kind.to_string(),
                labels,
            },
        );
    }
    out
}

/// Percent-encodes a query parameter value.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Parses Prometheus' text exposition format (what Envoy's `/stats/prometheus`
/// answers): one [`Sample`] per line that is not a comment.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().unwrap_or(f64::NAN),
        });
    }
    out
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_string();
        if key.is_empty() {
            return out;
        }
        if chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(e) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_become_samples() {
        let text = "# TYPE x counter\nswitchyard_attempts_total{provider=\"a\",model=\"gpt-4_1\",result=\"success\"} 3\nplain{} 1.5\nhist_bucket{le=\"+Inf\",x=\"q\\\"uo,te\"} 7\n";
        let s = parse_exposition(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "switchyard_attempts_total");
        assert_eq!(s[0].label("model"), "gpt-4_1");
        assert_eq!(s[0].value, 3.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].label("x"), "q\"uo,te");
        assert_eq!(s[2].label("le"), "+Inf");
    }
}
