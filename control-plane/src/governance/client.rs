//! `switchyard keys …` and `switchyard teams …`: the admin API from the command
//! line (a blocking one-shot HTTP/1.1 client, like `switchyard status`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// Default admin API address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:18002";

/// Default data directory (database, audit log, generated admin token).
pub const DEFAULT_DATA_DIR: &str = ".switchyard/data";

/// Environment variable that may hold the admin token.
pub const TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

/// `--flag value` pairs and bare `--flag`s of a command line.
#[derive(Debug, Default)]
pub struct Args {
    /// Positional arguments.
    pub positional: Vec<String>,
    /// Flags with their value (`""` for bare flags).
    pub flags: BTreeMap<String, String>,
}

/// Flags that take no value.
const BARE: &[&str] = &["--json", "--direct", "--no-direct", "--no-expiry", "--help"];

impl Args {
    /// Parses `args`.
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a.starts_with("--") {
                if BARE.contains(&a.as_str()) {
                    out.flags.insert(a.clone(), String::new());
                } else {
                    let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                    out.flags.insert(a.clone(), v.clone());
                }
            } else {
                out.positional.push(a.clone());
            }
        }
        Ok(out)
    }

    fn get(&self, f: &str) -> Option<&str> {
        self.flags.get(f).map(String::as_str)
    }

    fn has(&self, f: &str) -> bool {
        self.flags.contains_key(f)
    }
}

/// Where the admin API is and how to authenticate.
#[derive(Debug)]
pub struct Target {
    addr: SocketAddr,
    token: String,
}

impl Target {
    /// From `--admin-addr`, `--token-file` or `$SWITCHYARD_ADMIN_TOKEN`, else the
    /// token `serve` generated in `--data-dir` (default `.switchyard/data`).
    pub fn from_args(a: &Args) -> Result<Target, String> {
        let addr = a
            .get("--admin-addr")
            .unwrap_or(DEFAULT_ADMIN_ADDR)
            .parse()
            .map_err(|_| "--admin-addr: expected IP:port".to_string())?;
        let token = match (a.get("--token-file"), std::env::var(TOKEN_ENV).ok()) {
            (Some(f), _) => read_token(&PathBuf::from(f))?,
            (None, Some(t)) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let dir = PathBuf::from(a.get("--data-dir").unwrap_or(DEFAULT_DATA_DIR));
                read_token(&dir.join("admin-token")).map_err(|e| {
                    format!("{e} (give --token-file, set {TOKEN_ENV}, or --data-dir of the control plane)")
                })?
            }
        };
        Ok(Target { addr, token })
    }

    /// One request; `Ok` holds the status and the JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.addr))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("admin API: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("admin API: {e}"))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("admin API: not an HTTP answer")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let v = serde_json::from_str(body).unwrap_or(Value::Null);
        Ok((status, v))
    }
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("cannot read the admin token {}: {e}", path.display()))
}

/// `--expires-in 30d` (s, m, h, d) → Unix ms.
fn expiry(a: &Args) -> Result<Option<Value>, String> {
    if a.has("--no-expiry") {
        return Ok(Some(Value::Null));
    }
    if let Some(ms) = a.get("--expires-at-ms") {
        return ms
            .parse::<u64>()
            .map(|v| Some(json!(v)))
            .map_err(|_| "--expires-at-ms: expected Unix milliseconds".into());
    }
    let Some(d) = a.get("--expires-in") else {
        return Ok(None);
    };
    let (n, unit) = d.split_at(d.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .map_err(|_| "--expires-in: expected e.g. 90s, 30m, 12h, 30d".to_string())?;
    let ms = match unit {
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err("--expires-in: expected a unit s, m, h or d".into()),
    };
    Ok(Some(json!(super::now_ms() + ms)))
}

fn list(v: &str) -> Value {
    json!(
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    )
}

/// The key fields a command line sets.
fn spec(a: &Args) -> Result<Value, String> {
    let mut s = serde_json::Map::new();
    for (flag, field) in [("--name", "name"), ("--team", "team"), ("--owner", "owner")] {
        if let Some(v) = a.get(flag) {
            s.insert(
                field.into(),
                if v.is_empty() { Value::Null } else { json!(v) },
            );
        }
    }
    for (flag, field) in [("--routes", "routes"), ("--targets", "targets")] {
        if let Some(v) = a.get(flag) {
            s.insert(field.into(), if v == "all" { Value::Null } else { list(v) });
        }
    }
    if a.has("--direct") {
        s.insert("direct".into(), json!(true));
    }
    if a.has("--no-direct") {
        s.insert("direct".into(), json!(false));
    }
    if let Some(p) = a.get("--max-price") {
        let (i, o) = p
            .split_once(',')
            .and_then(|(i, o)| Some((i.parse::<f64>().ok()?, o.parse::<f64>().ok()?)))
            .ok_or("--max-price: expected INPUT,OUTPUT (per million tokens)")?;
        s.insert("max_price".into(), json!({"input": i, "output": o}));
    }
    let limits = limits(a)?;
    if !limits.is_empty() {
        s.insert("limits".into(), Value::Object(limits));
    }
    if let Some(e) = expiry(a)? {
        s.insert("expires_at_ms".into(), e);
    }
    Ok(Value::Object(s))
}

fn limits(a: &Args) -> Result<serde_json::Map<String, Value>, String> {
    let mut l = serde_json::Map::new();
    for (flag, field, int) in [
        ("--rpm", "rpm", true),
        ("--tpm", "tpm", true),
        ("--budget-day", "budget_day_usd", false),
        ("--budget-month", "budget_month_usd", false),
    ] {
        if let Some(v) = a.get(flag) {
            let value = if v == "none" {
                Value::Null
            } else if int {
                json!(
                    v.parse::<u64>()
                        .map_err(|_| format!("{flag}: expected a whole number or `none`"))?
                )
            } else {
                json!(
                    v.parse::<f64>()
                        .map_err(|_| format!("{flag}: expected USD or `none`"))?
                )
            };
            l.insert(field.into(), value);
        }
    }
    Ok(l)
}

fn show(
    status: u16,
    v: &Value,
    json_out: bool,
    human: impl FnOnce(&Value) -> String,
) -> Result<String, String> {
    if !(200..300).contains(&status) {
        let msg = v["error"]["message"].as_str().unwrap_or("request failed");
        return Err(format!("{status}: {msg}"));
    }
    Ok(if json_out {
        serde_json::to_string_pretty(v).unwrap_or_default()
    } else {
        human(v)
    })
}

fn key_line(k: &Value) -> String {
    let limits = &k["limits"];
    let mut l = Vec::new();
    for (f, label) in [
        ("rpm", "rpm"),
        ("tpm", "tpm"),
        ("budget_day_usd", "$/day"),
        ("budget_month_usd", "$/month"),
    ] {
        if let Some(v) = limits.get(f).filter(|v| !v.is_null()) {
            l.push(format!("{label} {v}"));
        }
    }
    let state = if !k["revoked_at_ms"].is_null() {
        "revoked"
    } else if k["expires_at_ms"]
        .as_u64()
        .is_some_and(|t| t <= super::now_ms())
    {
        "expired"
    } else {
        "active"
    };
    format!(
        "{:<18} {:<16} {:<12} {:<8} {:<7} {}",
        k["id"].as_str().unwrap_or(""),
        k["name"].as_str().unwrap_or(""),
        k["team"].as_str().unwrap_or("-"),
        state,
        k["source"].as_str().unwrap_or(""),
        if l.is_empty() {
            "unlimited".to_string()
        } else {
            l.join(", ")
        }
    )
}

/// `switchyard keys <create|list|show|update|revoke|generate> …`
pub fn keys(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args)?;
    let sub = a.positional.first().map(String::as_str).unwrap_or("help");
    if sub == "generate" {
        // Offline: a key and its hash, to declare in the config file.
        let (key, sha) = super::new_key().map_err(|e| e.to_string())?;
        return Ok(format!(
            "key:    {key}\nsha256: {sha}\n(declare the sha256 under governance.keys; give the key to its user)"
        ));
    }
    if sub == "help" || a.has("--help") {
        return Err(KEYS_USAGE.to_string());
    }
    let t = Target::from_args(&a)?;
    let json_out = a.has("--json");
    let id = || {
        a.positional
            .get(1)
            .cloned()
            .ok_or_else(|| format!("switchyard keys {sub}: which key id?"))
    };
    match sub {
        "create" => {
            let spec = spec(&a)?;
            let (s, v) = t.call("POST", "/admin/v1/keys", Some(&spec))?;
            show(s, &v, json_out, |v| {
                format!(
                    "created {} ({})\n\n  {}\n\nThis is the only time the key is shown: store it now.\n",
                    v["record"]["id"].as_str().unwrap_or(""),
                    v["record"]["name"].as_str().unwrap_or(""),
                    v["key"].as_str().unwrap_or("")
                )
            })
        }
        "list" => {
            let (s, v) = t.call("GET", "/admin/v1/keys", None)?;
            show(s, &v, json_out, |v| {
                let mut out = format!(
                    "{:<18} {:<16} {:<12} {:<8} {:<7} LIMITS\n",
                    "ID", "NAME", "TEAM", "STATE", "SOURCE"
                );
                for k in v["keys"].as_array().into_iter().flatten() {
                    out.push_str(&key_line(k));
                    out.push('\n');
                }
                out
            })
        }
        "show" => {
            let (s, v) = t.call("GET", &format!("/admin/v1/keys/{}", id()?), None)?;
            show(s, &v, true, |_| String::new())
        }
        "update" => {
            let spec = spec(&a)?;
            let (s, v) = t.call("PATCH", &format!("/admin/v1/keys/{}", id()?), Some(&spec))?;
            show(s, &v, json_out, |v| {
                format!("updated\n{}\n", key_line(&v["record"]))
            })
        }
        "revoke" => {
            let (s, v) = t.call("POST", &format!("/admin/v1/keys/{}/revoke", id()?), None)?;
            show(s, &v, json_out, |v| {
                format!("revoked\n{}\n", key_line(&v["record"]))
            })
        }
        other => Err(format!(
            "switchyard keys: unknown command `{other}`\n{KEYS_USAGE}"
        )),
    }
}

/// `switchyard teams <set|list> …`
pub fn teams(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args)?;
    let sub = a.positional.first().map(String::as_str).unwrap_or("help");
    if sub == "help" || a.has("--help") {
        return Err(KEYS_USAGE.to_string());
    }
    let t = Target::from_args(&a)?;
    let json_out = a.has("--json");
    match sub {
        "set" => {
            let name = a
                .positional
                .get(1)
                .ok_or("switchyard teams set: which team?")?;
            let mut spec = json!({"limits": Value::Object(limits(&a)?)});
            if let Some(o) = a.get("--owner") {
                spec["owner"] = json!(o);
            }
            let (s, v) = t.call("PUT", &format!("/admin/v1/teams/{name}"), Some(&spec))?;
            show(s, &v, json_out, |v| {
                format!("team {} set: {}\n", name, v["team"]["limits"])
            })
        }
        "list" => {
            let (s, v) = t.call("GET", "/admin/v1/teams", None)?;
            show(s, &v, json_out, |v| {
                let mut out = String::new();
                for t in v["teams"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<16} {:<7} {}\n",
                        t["name"].as_str().unwrap_or(""),
                        t["source"].as_str().unwrap_or(""),
                        t["limits"]
                    ));
                }
                out
            })
        }
        other => Err(format!(
            "switchyard teams: unknown command `{other}`\n{KEYS_USAGE}"
        )),
    }
}

/// Usage of `keys` and `teams`.
pub const KEYS_USAGE: &str = "usage:
  switchyard keys create --name NAME [--team T] [--owner O] [--routes a,b|all] [--targets 'openai/*,p/m'|all]
                         [--direct] [--max-price IN,OUT] [--rpm N] [--tpm N] [--budget-day USD] [--budget-month USD]
                         [--expires-in 30d | --expires-at-ms MS]
  switchyard keys list [--json]
  switchyard keys show ID
  switchyard keys update ID [the create flags; `none` clears a limit, --no-direct, --no-expiry]
  switchyard keys revoke ID
  switchyard keys generate            (offline: a key and its sha256 for governance.keys in the config)
  switchyard teams set NAME [--rpm N] [--tpm N] [--budget-day USD] [--budget-month USD] [--owner O]
  switchyard teams list
  common: [--admin-addr 127.0.0.1:18002] [--token-file FILE | $SWITCHYARD_ADMIN_TOKEN | --data-dir .switchyard/data]";
