//! `switchyard`: the control plane's command line.
//!
//! - `switchyard serve [--config FILE] [--xds-addr ADDR] [--tls-cert F --tls-key F
//!   --tls-client-ca F]`: serve ADS (mutual TLS with the certificate flags, plain
//!   TCP on loopback only unless `--insecure-plaintext`); without `--config`,
//!   the built-in default (real providers when keys are set, else mocks).
//! - `switchyard validate FILE`: check a config; exit 0 when valid, 1 when not.
//! - `switchyard drill --target PROVIDER/MODEL …`: a fail-over drill against the
//!   live fleet (`switchyard drill help`).
//! - `switchyard bootstrap [--node ID] [--xds HOST:PORT] [--admin ADDR] [--config FILE]
//!   [--tls-cert F --tls-key F --tls-ca F --sds-dir DIR] [--stats-addr ADDR]`: print
//!   an Envoy bootstrap that points at this control plane (with the connection and
//!   heap limits of FILE's `limits:`, else the defaults; with mutual TLS through
//!   file-based SDS, whose two files it writes into DIR or `--sds-out`; with a
//!   listener on ADDR that serves the admin's `/stats/prometheus` and nothing else).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use switchyard_control_plane::{bootstrap, config, governance, xds};

const USAGE: &str = "usage:
  switchyard serve [--config FILE] [--xds-addr 127.0.0.1:18000] [--status-addr 127.0.0.1:18001]
                   [--health-addr 127.0.0.1:18003] [--advertise-addr HOST:PORT]
                   [--data-dir .switchyard/data] [--admin-addr 127.0.0.1:18002] [--admin-token-file FILE]
                   [--tls-cert FILE --tls-key FILE --tls-client-ca FILE [--tls-node-rule IDENTITY=NODES]...]
                   [--fleet-without-xds]   (fleet state for certificate-named nodes with another xDS server)
                   [--insecure-plaintext]   (plain TCP on a non-loopback address)
  switchyard keys create|list|show|update|revoke|generate …   (switchyard keys help)
  switchyard teams set|list …
  switchyard audit verify [--file FILE] [--data-dir .switchyard/data]
  switchyard status [--status-addr 127.0.0.1:18001] [--json]
                    [--tls-ca FILE [--tls-cert FILE --tls-key FILE]] [--token-file FILE | --data-dir DIR]
  switchyard drill --target PROVIDER/MODEL [--share 100] [--duration 30] …   (switchyard drill help)
  switchyard validate FILE
  switchyard filter-config --config FILE --role planner|adapter [--istio [--fleet HOST:PORT]]
                       (a filter's JSON config for Envoys configured by istiod: docs/deploy.md)
  switchyard bootstrap [--node envoy-1] [--xds 127.0.0.1:18000] [--admin 127.0.0.1:9901] [--delta] [--config FILE]
                       [--tls-cert FILE --tls-key FILE --tls-ca FILE --sds-dir DIR [--sds-out DIR]]
                       [--stats-addr 0.0.0.0:9902]   (GET /stats/prometheus only, for Prometheus)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "drill" {
        return drill(&args[1..]);
    }
    // The admin commands have flags of their own.
    let admin = match cmd.as_str() {
        "keys" => Some(governance::client::keys(&args[1..])),
        "teams" => Some(governance::client::teams(&args[1..])),
        "audit" => Some(audit(&args[1..])),
        _ => None,
    };
    if let Some(result) = admin {
        return match result {
            Ok(out) => {
                print!("{out}");
                if !out.ends_with('\n') {
                    println!();
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard {cmd}: {e}");
                ExitCode::from(1)
            }
        };
    }
    let flags = match Flags::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("switchyard: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd.as_str() {
        "serve" => serve(flags),
        "validate" => validate(flags),
        "bootstrap" => print_bootstrap(flags),
        "filter-config" => print_filter_config(flags),
        "status" => status(flags),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("switchyard: unknown command `{other}`\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Default)]
struct Flags {
    positional: Vec<String>,
    config: Option<PathBuf>,
    xds_addr: Option<String>,
    node: Option<String>,
    admin: Option<String>,
    status_addr: Option<String>,
    data_dir: Option<PathBuf>,
    admin_addr: Option<String>,
    admin_token_file: Option<PathBuf>,
    json: bool,
    delta: bool,
    health_addr: Option<String>,
    advertise_addr: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_node_rules: Vec<String>,
    insecure_plaintext: bool,
    fleet_without_xds: bool,
    role: Option<String>,
    istio: bool,
    fleet: Option<String>,
    sds_dir: Option<String>,
    sds_out: Option<PathBuf>,
    token_file: Option<PathBuf>,
    stats_addr: Option<String>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut f = Flags::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--config" | "-c" => f.config = Some(PathBuf::from(value()?)),
                "--xds-addr" | "--xds" => f.xds_addr = Some(value()?),
                "--node" => f.node = Some(value()?),
                "--admin" => f.admin = Some(value()?),
                "--status-addr" => f.status_addr = Some(value()?),
                "--data-dir" => f.data_dir = Some(PathBuf::from(value()?)),
                "--admin-addr" => f.admin_addr = Some(value()?),
                "--admin-token-file" => f.admin_token_file = Some(PathBuf::from(value()?)),
                "--json" => f.json = true,
                "--delta" => f.delta = true,
                "--health-addr" => f.health_addr = Some(value()?),
                "--advertise-addr" => f.advertise_addr = Some(value()?),
                "--tls-cert" => f.tls_cert = Some(PathBuf::from(value()?)),
                "--tls-key" => f.tls_key = Some(PathBuf::from(value()?)),
                "--tls-client-ca" => f.tls_client_ca = Some(PathBuf::from(value()?)),
                "--tls-ca" => f.tls_ca = Some(PathBuf::from(value()?)),
                "--tls-node-rule" => f.tls_node_rules.push(value()?),
                "--insecure-plaintext" => f.insecure_plaintext = true,
                "--fleet-without-xds" => f.fleet_without_xds = true,
                "--role" => f.role = Some(value()?),
                "--istio" => f.istio = true,
                "--fleet" => f.fleet = Some(value()?),
                "--sds-dir" => f.sds_dir = Some(value()?),
                "--sds-out" => f.sds_out = Some(PathBuf::from(value()?)),
                "--token-file" => f.token_file = Some(PathBuf::from(value()?)),
                "--stats-addr" => f.stats_addr = Some(value()?),
                s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
                s => f.positional.push(s.to_string()),
            }
        }
        Ok(f)
    }
}

fn addr(s: Option<&str>, default: &str) -> Result<SocketAddr, String> {
    let s = s.unwrap_or(default);
    s.parse()
        .map_err(|_| format!("`{s}` is not an IP:port address"))
}

fn validate(flags: Flags) -> ExitCode {
    let Some(file) = flags.positional.first().map(PathBuf::from).or(flags.config) else {
        eprintln!("switchyard validate: which file?\n{USAGE}");
        return ExitCode::from(2);
    };
    match config::load(&file) {
        Ok(cfg) => {
            println!(
                "{}: ok (version {}, {} providers, {} routes)",
                file.display(),
                cfg.version,
                cfg.providers.len(),
                cfg.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Prints the JSON config of one filter role for Envoys whose xDS server is
/// another (istiod), to paste into an `EnvoyFilter` (docs/deploy.md, In-mesh).
fn print_filter_config(flags: Flags) -> ExitCode {
    let usage = |e: &str| {
        eprintln!("switchyard filter-config: {e}\n{USAGE}");
        ExitCode::from(2)
    };
    let Some(file) = flags.config else {
        return usage("which config? (--config FILE)");
    };
    let role = match flags.role.as_deref() {
        Some("planner") => switchyard_core::config::Role::Planner,
        Some("adapter") => switchyard_core::config::Role::Adapter,
        _ => return usage("--role planner or --role adapter"),
    };
    if !flags.istio {
        return usage(
            "only --istio configs are made here (Envoys configured by `switchyard serve` get theirs over xDS)",
        );
    }
    let fleet = match flags.fleet.as_deref().map(bootstrap::Endpoint::parse) {
        None => None,
        Some(Ok(ep)) => Some(ep),
        Some(Err(e)) => return usage(&format!("--fleet: {e}")),
    };
    let cfg = match config::load(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let fc = xds::resources::mesh_filter_config(
        &cfg,
        role,
        fleet.as_ref().map(|ep| (ep.host.as_str(), ep.port)),
    );
    match serde_json::to_string_pretty(&fc) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard filter-config: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_bootstrap(flags: Flags) -> ExitCode {
    let parsed = bootstrap::Endpoint::parse(flags.xds_addr.as_deref().unwrap_or("127.0.0.1:18000"))
        .and_then(|x| addr(flags.admin.as_deref(), "127.0.0.1:9901").map(|a| (x, a)));
    let (xds, admin) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchyard bootstrap: {e}");
            return ExitCode::from(2);
        }
    };
    // Off unless asked for: the local bootstrap keeps the admin as the only
    // way to the stats.
    let stats = match flags.stats_addr.as_deref() {
        None => None,
        Some(s) => match addr(Some(s), "")
            .and_then(|stats| bootstrap::check_stats_addr(stats, admin).map(|()| stats))
        {
            Ok(stats) => Some(stats),
            Err(e) => {
                eprintln!("switchyard bootstrap: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let tls = match (
        &flags.tls_cert,
        &flags.tls_key,
        &flags.tls_ca,
        &flags.sds_dir,
    ) {
        (None, None, None, None) => None,
        (Some(cert), Some(key), Some(ca), Some(dir)) => Some(bootstrap::Tls {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            sds_dir: dir.clone(),
        }),
        _ => {
            eprintln!(
                "switchyard bootstrap: mutual TLS needs --tls-cert, --tls-key, --tls-ca and --sds-dir together"
            );
            return ExitCode::from(2);
        }
    };
    let limits = match &flags.config {
        Some(file) => match config::load_bootstrap_limits(file) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
        None => config::BootstrapLimits::default(),
    };
    if let Some(t) = &tls {
        // The two SDS files go where the Envoy will read them, or to --sds-out
        // (e.g. to become a ConfigMap mounted at --sds-dir).
        let out = flags
            .sds_out
            .clone()
            .unwrap_or_else(|| PathBuf::from(&t.sds_dir));
        let written = std::fs::create_dir_all(&out)
            .and_then(|()| {
                std::fs::write(
                    out.join(bootstrap::CLIENT_SDS_FILE),
                    bootstrap::client_sds(t),
                )
            })
            .and_then(|()| std::fs::write(out.join(bootstrap::CA_SDS_FILE), bootstrap::ca_sds(t)));
        if let Err(e) = written {
            eprintln!(
                "switchyard bootstrap: cannot write the SDS files into {}: {e}",
                out.display()
            );
            return ExitCode::from(1);
        }
    }
    print!(
        "{}",
        bootstrap::render(
            flags.node.as_deref().unwrap_or("envoy-1"),
            &xds,
            admin,
            flags.delta,
            &limits,
            tls.as_ref(),
            stats,
        )
    );
    ExitCode::SUCCESS
}

fn status(flags: Flags) -> ExitCode {
    use switchyard_control_plane::status;
    let tls = status::client_tls(
        flags.tls_ca.as_deref().and_then(|p| p.to_str()),
        flags.tls_cert.as_deref().and_then(|p| p.to_str()),
        flags.tls_key.as_deref().and_then(|p| p.to_str()),
    );
    // With TLS the status needs a client certificate or the admin token: send
    // the token when one is at hand.
    let token_file = flags.token_file.clone().unwrap_or_else(|| {
        flags
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(governance::client::DEFAULT_DATA_DIR))
            .join("admin-token")
    });
    let token = std::env::var(governance::client::TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty() && flags.token_file.is_none())
        .or_else(|| std::fs::read_to_string(&token_file).ok())
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let client = tls.and_then(|tls| {
        status::Client::new(
            flags.status_addr.as_deref().unwrap_or("127.0.0.1:18001"),
            tls.as_ref(),
            token,
        )
    });
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard status: {e}");
            return ExitCode::from(2);
        }
    };
    match status::fetch(&client) {
        Ok(s) if flags.json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", switchyard_control_plane::status::render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard status: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(flags: Flags) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let options = match serve_options(flags) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("switchyard serve: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard serve: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(xds::serve::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard serve: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve_options(flags: Flags) -> Result<xds::serve::ServeOptions, String> {
    use switchyard_control_plane::tls;
    let tls = match (flags.tls_cert, flags.tls_key, flags.tls_client_ca) {
        (None, None, None) if flags.tls_node_rules.is_empty() => None,
        (Some(cert), Some(key), Some(client_ca)) => Some((
            tls::TlsFiles {
                cert,
                key,
                client_ca,
            },
            tls::NodePolicy::new(&flags.tls_node_rules).map_err(|e| e.to_string())?,
        )),
        _ => {
            return Err(
                "mutual TLS needs --tls-cert, --tls-key and --tls-client-ca together (and --tls-node-rule only with them)"
                    .into(),
            );
        }
    };
    if tls.is_some() && flags.insecure_plaintext {
        return Err("--insecure-plaintext contradicts the --tls-* flags".into());
    }
    if flags.fleet_without_xds && tls.is_none() {
        // Without an xDS stream, only a certificate says who a node is.
        return Err(
            "--fleet-without-xds needs mutual TLS (--tls-cert, --tls-key, --tls-client-ca)".into(),
        );
    }
    Ok(xds::serve::ServeOptions {
        config_path: flags.config,
        xds_addr: addr(flags.xds_addr.as_deref(), "127.0.0.1:18000")?,
        status_addr: addr(flags.status_addr.as_deref(), "127.0.0.1:18001")?,
        health_addr: addr(flags.health_addr.as_deref(), "127.0.0.1:18003")?,
        advertise: flags
            .advertise_addr
            .as_deref()
            .map(bootstrap::Endpoint::parse)
            .transpose()
            .map_err(|e| format!("--advertise-addr: {e}"))?,
        tls,
        insecure_plaintext: flags.insecure_plaintext,
        fleet_without_xds: flags.fleet_without_xds,
        governance: xds::serve::GovernanceOptions {
            data_dir: flags
                .data_dir
                .unwrap_or_else(|| PathBuf::from(governance::client::DEFAULT_DATA_DIR)),
            admin_addr: addr(
                flags.admin_addr.as_deref(),
                governance::client::DEFAULT_ADMIN_ADDR,
            )?,
            admin_token_file: flags.admin_token_file,
        },
    })
}

/// `switchyard audit verify [--file FILE] [--data-dir DIR]`: checks the audit
/// log's hash chain, and that it ends at the head the key database recorded.
fn audit(args: &[String]) -> Result<String, String> {
    let a = governance::client::Args::parse(args)?;
    if a.positional.first().map(String::as_str) != Some("verify") {
        return Err("usage: switchyard audit verify [--file FILE] [--data-dir .switchyard/data] [--db FILE]".into());
    }
    let dir = PathBuf::from(
        a.flags
            .get("--data-dir")
            .map(String::as_str)
            .unwrap_or(governance::client::DEFAULT_DATA_DIR),
    );
    let file = a
        .flags
        .get("--file")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("audit.log"));
    let db = a
        .flags
        .get("--db")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("switchyard.db"));
    let head = if db.exists() {
        governance::store::Store::open(&db)
            .and_then(|s| s.audit_head(&file))
            .map_err(|e| e.to_string())?
    } else {
        None
    };
    match governance::audit::verify(&file, head.as_ref()) {
        Ok(v) => Ok(format!(
            "{}: {} records, chain intact{}, head {}",
            file.display(),
            v.records,
            if head.is_some() { " and complete" } else { "" },
            v.head
        )),
        Err(e) => Err(format!("{}: TAMPERED: {e}", file.display())),
    }
}

/// `switchyard drill …`: exit 0 when the drill passed, 1 when it failed or was
/// aborted (or the control plane refused it), 2 on a usage error.
fn drill(args: &[String]) -> ExitCode {
    if args.first().is_some_and(|a| a == "help" || a == "--help") {
        println!("{}", switchyard_control_plane::drill::USAGE);
        return ExitCode::SUCCESS;
    }
    match switchyard_control_plane::drill::cli(args) {
        Ok(r) => {
            println!("{}", r.output.trim_end());
            if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!(
                "switchyard drill: {e}\n{}",
                switchyard_control_plane::drill::USAGE
            );
            ExitCode::from(1)
        }
    }
}
