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
) -> Result<(), ServeError> {
    let cfg = load(config_path.as_deref())?;
    tracing::info!("{}", describe(&cfg));
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
    let (tx, rx) = watch::channel(Arc::new(Snapshot::from_config(&cfg, 1)));
    let registry = Registry::default();
    let fleet = crate::fleet::Fleet::default();
    tokio::spawn(crate::status::serve(
        status_listener,
        registry.clone(),
        rx.clone(),
        fleet,
    ));

    if let Some(path) = config_path.clone() {
        tokio::spawn(watch_file(path, cfg, tx, status_bound));
    } else {
        // Keep the sender alive: sessions end when it is dropped.
        tokio::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
    }

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    // Tests and scripts read this line to learn the port.
    println!("switchyard: status on http://{status_bound}/status");
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

/// Polls the config file; a valid change becomes a new snapshot, an invalid one is
/// reported and the last good config keeps serving.
async fn watch_file(
    path: PathBuf,
    mut current: Config,
    tx: watch::Sender<Arc<Snapshot>>,
    fleet_addr: SocketAddr,
) {
    let mut serial = 1;
    let mut last_text = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut refreshed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let text = std::fs::read(&path).ok();
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
            c
        }) {
            Ok(cfg) if cfg == current => {}
            Ok(cfg) => {
                serial += 1;
                tracing::info!("reloaded {}: {}", path.display(), describe(&cfg));
                current = cfg;
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
