//! `switchyard`: the control plane's command line.
//!
//! - `switchyard serve [--config FILE] [--xds-addr ADDR]`: serve ADS; without
//!   `--config`, the built-in default (real providers when keys are set, else mocks).
//! - `switchyard validate FILE`: check a config; exit 0 when valid, 1 when not.
//! - `switchyard bootstrap [--node ID] [--xds ADDR] [--admin ADDR] [--config FILE]`:
//!   print an Envoy bootstrap that points at this control plane (with the
//!   connection and heap limits of FILE's `limits:`, else the defaults).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use switchyard_control_plane::{bootstrap, config, xds};

const USAGE: &str = "usage:
  switchyard serve [--config FILE] [--xds-addr 127.0.0.1:18000] [--status-addr 127.0.0.1:18001]
  switchyard status [--status-addr 127.0.0.1:18001] [--json]
  switchyard validate FILE
  switchyard bootstrap [--node envoy-1] [--xds 127.0.0.1:18000] [--admin 127.0.0.1:9901] [--delta] [--config FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
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
    json: bool,
    delta: bool,
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
                "--json" => f.json = true,
                "--delta" => f.delta = true,
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

fn print_bootstrap(flags: Flags) -> ExitCode {
    let parsed = addr(flags.xds_addr.as_deref(), "127.0.0.1:18000")
        .and_then(|x| addr(flags.admin.as_deref(), "127.0.0.1:9901").map(|a| (x, a)));
    let (xds, admin) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchyard bootstrap: {e}");
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
    print!(
        "{}",
        bootstrap::render(
            flags.node.as_deref().unwrap_or("envoy-1"),
            xds,
            admin,
            flags.delta,
            &limits
        )
    );
    ExitCode::SUCCESS
}

fn status(flags: Flags) -> ExitCode {
    let addr = match addr(flags.status_addr.as_deref(), "127.0.0.1:18001") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchyard status: {e}");
            return ExitCode::from(2);
        }
    };
    match switchyard_control_plane::status::fetch(addr) {
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
    let xds_addr = match addr(flags.xds_addr.as_deref(), "127.0.0.1:18000") {
        Ok(a) => a,
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
    let status_addr = match addr(flags.status_addr.as_deref(), "127.0.0.1:18001") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchyard serve: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(xds::serve::run(flags.config, xds_addr, status_addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard serve: {e}");
            ExitCode::from(1)
        }
    }
}
