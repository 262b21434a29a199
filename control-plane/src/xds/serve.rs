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
use crate::fleet::stream::Hub;
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

/// Where and how `serve` listens.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The config file (`None`: the built-in default).
    pub config_path: Option<PathBuf>,
    /// The xDS (ADS) address.
    pub xds_addr: SocketAddr,
    /// The status and fleet-exchange address.
    pub status_addr: SocketAddr,
    /// The plain health port (`/live`, `/ready`).
    pub health_addr: SocketAddr,
    /// The address filters reach the fleet exchange at (`--advertise-addr`;
    /// default: the status listener's bound address).
    pub advertise: Option<crate::bootstrap::Endpoint>,
    /// Mutual TLS on the xDS and status ports, and which nodes a client
    /// certificate may be served as.
    pub tls: Option<(crate::tls::TlsFiles, crate::tls::NodePolicy)>,
    /// Plain TCP on a non-loopback address was asked for explicitly.
    pub insecure_plaintext: bool,
    /// Fleet reports and streams are taken from nodes with no xDS stream to
    /// this control plane (gateways configured by istiod), their certificate
    /// naming them (only with `tls`).
    pub fleet_without_xds: bool,
    /// Governance state and admin API.
    pub governance: GovernanceOptions,
}

impl ServeOptions {
    /// Refuses plaintext xDS or status on an address other hosts can reach,
    /// unless `--insecure-plaintext` says so (docs/security.md). The health
    /// port carries nothing but readiness and may be reached by anyone.
    pub fn check_plaintext(&self) -> Result<(), ServeError> {
        if self.tls.is_some() || self.insecure_plaintext {
            return Ok(());
        }
        for (flag, addr) in [
            ("--xds-addr", self.xds_addr),
            ("--status-addr", self.status_addr),
        ] {
            if !addr.ip().is_loopback() {
                return Err(ServeError::Plaintext(format!(
                    "{flag} {addr} is not a loopback address: give --tls-cert, --tls-key and --tls-client-ca \
                     (mutual TLS), or --insecure-plaintext to serve provider keys and fleet state to anyone who reaches it"
                )));
            }
        }
        Ok(())
    }
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
    /// Plain TCP on a non-loopback address without `--insecure-plaintext`.
    #[error("{0}")]
    Plaintext(String),
    /// The certificates could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The status port binds every address and no `--advertise-addr` says
    /// which one Envoys should dial.
    #[error(
        "--status-addr {0} binds every address: give --advertise-addr HOST:PORT, the address Envoys reach the fleet exchange at"
    )]
    Advertise(SocketAddr),
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
        match &cfg.served_filter {
            Some(s) => format!(
                "{} (served to the Envoys, sha256 {})",
                cfg.filter.path().display(),
                s.sha256
            ),
            None => cfg.filter.path().display().to_string(),
        }
    )
}

/// Size and modification time of the filter file the control plane serves: a
/// new build written in its place is a reload, like a change of the config.
fn served_stamp(cfg: &Config) -> Option<(u64, Option<std::time::SystemTime>)> {
    cfg.served_filter.as_ref()?;
    let meta = std::fs::metadata(cfg.filter.path()).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn run(opts: ServeOptions) -> Result<(), ServeError> {
    opts.check_plaintext()?;
    if opts.status_addr.ip().is_unspecified() && opts.advertise.is_none() {
        return Err(ServeError::Advertise(opts.status_addr));
    }
    // The health port first: probes see 503 while the rest starts.
    let ready = crate::health::Readiness::default();
    let (health_listener, health_bound) = bind(opts.health_addr).await?;
    tokio::spawn(crate::health::serve(health_listener, ready.clone()));
    println!("switchyard: health on http://{health_bound}/ready");
    {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    let tls = match opts.tls.clone() {
        Some((files, policy)) => {
            let server = crate::tls::Server::load(files.clone(), policy)?;
            tracing::info!(
                "mutual TLS on xDS and status: certificate {}, client CA {}",
                files.cert.display(),
                files.client_ca.display()
            );
            Some(server)
        }
        None => {
            if opts.insecure_plaintext {
                tracing::warn!(
                    "plaintext xDS and status (--insecure-plaintext): whoever reaches them gets every provider key"
                );
            }
            None
        }
    };
    let ServeOptions {
        config_path,
        xds_addr: addr,
        status_addr,
        governance: options,
        advertise,
        ..
    } = opts;
    // Loading may run credential commands: off the async workers (the health
    // port answers 503 meanwhile).
    let cfg = {
        let path = config_path.clone();
        tokio::task::spawn_blocking(move || load(path.as_deref()))
            .await
            .map_err(|e| {
                ServeError::Config(ConfigError::Invalid {
                    file: config_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    problems: vec![format!("loading stopped: {e}")],
                })
            })??
    };
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
    if !admin_bound.ip().is_loopback() {
        tracing::warn!(
            "the admin API on {admin_bound} is plain HTTP: its bearer token crosses the network in clear (docs/security.md)"
        );
    }
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
                let _ = tokio::task::spawn_blocking(move || g.tick()).await;
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
    let (status_listener, status_bound) = bind(status_addr).await?;
    // Control planes sharing the database lend the meters between them, each
    // known by its status address (a restart on it resumes what it held).
    {
        let g = governance.clone();
        let id = status_bound.to_string();
        let _ = tokio::task::spawn_blocking(move || g.set_replica(&id)).await;
    }
    let fleet_endpoint = crate::config::FleetEndpoint {
        host: advertise
            .as_ref()
            .map_or_else(|| status_bound.ip().to_string(), |a| a.host.clone()),
        // Port 0 (as in `--status-addr HOST:0`): the port the listener got.
        port: advertise
            .as_ref()
            .map(|a| a.port)
            .filter(|p| *p != 0)
            .unwrap_or(status_bound.port()),
        tls: tls.is_some(),
    };
    let mut cfg = cfg;
    cfg.fleet = Some(fleet_endpoint.clone());
    cfg.governance_on = governance.enabled();
    let (tx, rx) = watch::channel(Arc::new(Snapshot::from_config(&cfg, 1)));
    let registry = Registry::default();
    if opts.fleet_without_xds {
        registry.admit_without_xds();
    }
    let exchange = crate::fleet::answer::Exchange {
        fleet: crate::fleet::Fleet::default(),
        governance: governance.clone(),
        snapshots: rx.clone(),
        rates: crate::rates::Window::default(),
        drills: crate::drill::Drills::default(),
    };
    // The fleet stream (gRPC, on the xDS port) answers reports as the HTTP
    // exchange does: one `Exchange` for both.
    tokio::spawn(crate::status::serve(
        status_listener,
        registry.clone(),
        exchange.clone(),
        // Drills take the admin API's token.
        token,
        tls.clone(),
    ));
    // The config watcher holds the snapshots' only sender: aborting it on
    // shutdown ends every xDS stream (an Envoy's ADS stream never ends by
    // itself), so the server below stops at once instead of waiting for them
    // until the kubelet's grace period is over and it kills the pod.
    let watcher = tokio::spawn(watch_file(
        config_path.clone(),
        cfg,
        tx,
        fleet_endpoint,
        governance,
    ));

    let (listener, bound) = bind(addr).await?;
    // Tests and scripts read these lines to learn the ports.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("switchyard: status on {scheme}://{status_bound}/status");
    println!("switchyard: admin API on http://{admin_bound}/admin/v1");
    println!("switchyard: xDS (ADS) listening on {bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let mut server =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    // Ready from here: the listener is bound (connections wait in its backlog)
    // and the server below starts accepting them at once.
    let stopping = {
        let ready = ready.clone();
        async move {
            shutdown().await;
            ready.set(false);
            watcher.abort();
        }
    };
    ready.set(true);
    match tls {
        Some(tls) => {
            let hub = Hub::new(exchange, registry.clone(), Some(tls.policy().clone()));
            hub.spawn_refresh();
            let ads = Ads::new(rx, registry).with_node_policy(tls.policy().clone());
            server
                .add_service(ads.into_service())
                .add_service(hub.into_service())
                .serve_with_incoming_shutdown(
                    tls.incoming(listener, crate::tls::Port::Xds),
                    stopping,
                )
                .await?
        }
        None => {
            let hub = Hub::new(exchange, registry.clone(), None);
            hub.spawn_refresh();
            server
                .add_service(Ads::new(rx, registry).into_service())
                .add_service(hub.into_service())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
                .await?
        }
    }
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
    fleet: crate::config::FleetEndpoint,
    governance: Governance,
) {
    let mut serial = 1;
    let mut last_text = path.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut last_stamp = served_stamp(&current);
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
        let stamp = served_stamp(&current);
        if text.is_none() || (text == last_text && !refresh_due && stamp == last_stamp) {
            continue;
        }
        refreshed = tokio::time::Instant::now();
        last_text = text;
        last_stamp = stamp;
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
            c.fleet = Some(fleet.clone());
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
