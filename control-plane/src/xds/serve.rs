//! `switchyard serve`: load the config, publish snapshots, serve ADS, hot-reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use super::server::{Ads, Registry, Snapshot};
use crate::config::{self, Config, ConfigError};
use crate::defaults;
use crate::governance::{self, Governance};

/// Where governance keeps its state and serves its admin API.
#[derive(Clone, Debug)]
pub struct GovernanceOptions {
    /// Database, audit log and generated admin token live here (unless the
    /// config names other paths).
    pub data_dir: PathBuf,
    /// The admin API's address (loopback by default).
    pub admin_addr: SocketAddr,
    /// A file holding the admin token (else the config's, else a generated one).
    pub admin_token_file: Option<PathBuf>,
}

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The initial config is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The xDS address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("xDS server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The key database or audit log could not be opened.
    #[error("{0}")]
    Governance(#[from] governance::StartError),
    /// The admin token could not be read or made.
    #[error("admin token: {0}")]
    Token(String),
}

fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => config::load(p),
        None => {
            let cwd = std::env::current_dir().unwrap_or_default();
            defaults::config(&cwd, &|k| std::env::var(k).ok())
        }
    }
}

fn describe(cfg: &Config) -> String {
    let providers: Vec<String> = cfg
        .providers
        .iter()
        .map(|p| format!("{} ({}, {})", p.name, p.dialect.as_str(), p.authority()))
        .collect();
    format!(
        "config version {}: listener {}:{}, providers [{}], routes [{}], filter {}",
        cfg.version,
        cfg.listener_address,
        cfg.listener_port,
        providers.join(", "),
        cfg.routes.keys().cloned().collect::<Vec<_>>().join(", "),
        cfg.filter.path().display()
    )
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn run(
    config_path: Option<PathBuf>,
    addr: SocketAddr,
    status_addr: SocketAddr,
    options: GovernanceOptions,
) -> Result<(), ServeError> {
    let cfg = load(config_path.as_deref())?;
    tracing::info!("{}", describe(&cfg));
    let governance = Governance::open(&options.data_dir, &cfg.governance)?;
    governance.apply_config(&cfg.governance, &cfg.version);
    let token = admin_token(&options, &cfg)?;
    let admin_listener = tokio::net::TcpListener::bind(options.admin_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.admin_addr,
            source,
        })?;
    let admin_bound = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: options.admin_addr,
            source,
        })?;
    tokio::spawn(governance::admin::serve(
        admin_listener,
        governance.clone(),
        token.clone(),
    ));
    {
        let g = governance.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let g = g.clone();
                let _ = tokio::task::spawn_blocking(move || g.tick(governance::now_ms())).await;
            }
        });
    }
    tracing::info!(
        "governance: {} (keys in {}, audit log {})",
        if governance.enabled() {
            "keys required"
        } else {
            "no keys: the gateway is open to anyone who can reach it"
        },
        governance.database().display(),
        governance.audit_log().display()
    );
    if !cfg.filter.path().exists() {
        tracing::warn!(
            "filter {} does not exist yet: Envoy will reject the listener until it does (run `make build`)",
            cfg.filter.path().display()
        );
    }
    // The status/fleet endpoint is bound first: its address goes into the config
    // the filters get (the cluster through which they report outcomes).
    let status_listener = tokio::net::TcpListener::bind(status_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: status_addr,
            source,
        })?;
    let status_bound = status_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: status_addr,
            source,
        })?;
    let mut cfg = cfg;
    cfg.fleet_addr = Some(status_bound);
    cfg.governance_on = governance.enabled();
    let (tx, rx) = watch::channel(Arc::new(Snapshot::from_config(&cfg, 1)));
    let registry = Registry::default();
    let fleet = crate::fleet::Fleet::default();
    tokio::spawn(crate::status::serve(
        status_listener,
        registry.clone(),
        rx.clone(),
        fleet,
        governance.clone(),
        // Drills take the admin API's token.
        token,
    ));
    tokio::spawn(watch_file(
        config_path.clone(),
        cfg,
        tx,
        status_bound,
        governance,
    ));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Tests and scripts read this line to learn the port.
    println!("switchyard: status on http://{status_bound}/status");
    println!("switchyard: admin API on http://{admin_bound}/admin/v1");
    println!("switchyard: xDS (ADS) listening on {bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(Ads::new(rx, registry).into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// The admin token: `--admin-token-file`, else the config's
/// `governance.admin_token`, else `<data dir>/admin-token`, generated (mode 0600)
/// on first start.
fn admin_token(options: &GovernanceOptions, cfg: &Config) -> Result<String, ServeError> {
    if let Some(f) = &options.admin_token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| ServeError::Token(format!("{}: {e}", f.display())))?;
        return Ok(t.trim().to_string());
    }
    if let Some(t) = &cfg.governance.admin_token {
        return Ok(t.0.clone());
    }
    let path = options.data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let (token, _) = governance::new_key().map_err(|e| ServeError::Token(e.to_string()))?;
    let token = token.replacen("sk-sy-", "sy-admin-", 1);
    std::fs::create_dir_all(&options.data_dir)
        .and_then(|()| {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new();
            f.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
            f.open(&path)?.write_all(token.as_bytes())
        })
        .map_err(|e| ServeError::Token(format!("{}: {e}", path.display())))?;
    tracing::info!("admin token generated in {}", path.display());
    Ok(token)
}

/// Polls the config file (when there is one) and governance; a valid change of
/// the file becomes a new snapshot, an invalid one is reported and the last good
/// config keeps serving. When keys start or stop being required, the filters'
/// config changes too.
async fn watch_file(
    path: Option<PathBuf>,
    mut current: Config,
    tx: watch::Sender<Arc<Snapshot>>,
    fleet_addr: SocketAddr,
    governance: Governance,
) {
    let mut serial = 1;
    let mut last_text = path.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut refreshed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let on = governance.enabled();
        if on != current.governance_on {
            current.governance_on = on;
            serial += 1;
            tracing::info!(
                "governance: {}",
                if on {
                    "keys are now required"
                } else {
                    "keys are no longer required"
                }
            );
            if tx
                .send(Arc::new(Snapshot::from_config(&current, serial)))
                .is_err()
            {
                return;
            }
        }
        let Some(path) = &path else {
            continue;
        };
        let text = std::fs::read(path).ok();
        // Credentials that expire (tokens from a command, rotated key files) are
        // re-resolved on their provider's interval even when the file is unchanged.
        let refresh_due = current
            .providers
            .iter()
            .filter_map(|p| p.credentials_refresh_s)
            .min()
            .is_some_and(|s| refreshed.elapsed() >= Duration::from_secs(s));
        if text.is_none() || (text == last_text && !refresh_due) {
            continue;
        }
        refreshed = tokio::time::Instant::now();
        last_text = text;
        // Loading may run credential commands: off the async workers.
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&load_path))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Invalid {
                    file: path.display().to_string(),
                    problems: vec![format!("loading stopped: {e}")],
                })
            });
        match loaded.map(|mut c| {
            c.fleet_addr = Some(fleet_addr);
            c.governance_on = current.governance_on;
            c
        }) {
            Ok(cfg) if cfg == current => {}
            Ok(cfg) => {
                serial += 1;
                tracing::info!("reloaded {}: {}", path.display(), describe(&cfg));
                let g = governance.clone();
                let (section, version) = (cfg.governance.clone(), cfg.version.clone());
                let _ =
                    tokio::task::spawn_blocking(move || g.apply_config(&section, &version)).await;
                current = cfg;
                current.governance_on = governance.enabled();
                if tx
                    .send(Arc::new(Snapshot::from_config(&current, serial)))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::error!(
                "rejected new config, still serving version {}:\n{e}",
                current.version
            ),
        }
    }
}
