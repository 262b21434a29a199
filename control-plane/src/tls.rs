//! Mutual TLS on the control channel (docs/security.md): the xDS server and the
//! status/fleet endpoint accept TLS connections whose client certificate was
//! issued by the `--tls-client-ca`; the certificate's identity names the node
//! ids its holder may be served as ([`NodePolicy`]).
//!
//! Certificates rotate without a restart: every accepted connection first
//! compares the three files' change stamps (mtime, size, inode) with those of
//! the loaded ones, and rebuilds both server configs (certificate and client
//! verifier) when one changed. A set that does not load (a key not matching its
//! certificate halfway through a rotation, an empty CA file) is refused with a
//! warning and the last good set keeps serving until the files change again.
//!
//! The CLI's side (`switchyard status`, `switchyard drill` against a TLS status
//! port) is [`ClientFiles`] and [`dial`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, ServerConfig};
use x509_cert::der::oid::{AssociatedOid, ObjectIdentifier};
use x509_cert::der::{Decode, asn1};

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The subject attribute `commonName` (RFC 4519).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the set (e.g. a key that does not match the certificate).
    #[error("TLS: {0}")]
    Config(String),
    /// A `--tls-node-rule` that is not `IDENTITY=NODES`.
    #[error("--tls-node-rule `{0}`: expected IDENTITY=NODE or IDENTITY=PREFIX*")]
    Rule(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

// === identities ===

/// What a verified client certificate says about its holder: its subject's
/// common names and its DNS and URI subject alternative names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Subject CN values.
    pub common_names: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// URI SANs (e.g. `spiffe://example.org/ns/x/node/envoy-1`).
    pub uris: Vec<String>,
}

impl Peer {
    /// Reads the identities of a DER certificate (one the TLS handshake has
    /// verified already).
    pub fn from_der(der: &[u8]) -> Result<Peer, String> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
        let mut peer = Peer::default();
        for rdn in &cert.tbs_certificate.subject.0 {
            for atv in rdn.0.iter() {
                if atv.oid != COMMON_NAME {
                    continue;
                }
                let v = &atv.value;
                let text = v
                    .decode_as::<asn1::Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        v.decode_as::<asn1::PrintableStringRef<'_>>()
                            .map(|s| s.as_str().to_string())
                    })
                    .or_else(|_| {
                        v.decode_as::<asn1::Ia5StringRef<'_>>()
                            .map(|s| s.as_str().to_string())
                    });
                if let Ok(t) = text {
                    peer.common_names.push(t);
                }
            }
        }
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            if ext.extn_id != x509_cert::ext::pkix::SubjectAltName::OID {
                continue;
            }
            let san = x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|e| format!("subjectAltName: {e}"))?;
            for name in san.0 {
                match name {
                    x509_cert::ext::pkix::name::GeneralName::DnsName(d) => {
                        peer.dns_names.push(d.as_str().to_string())
                    }
                    x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(u) => {
                        peer.uris.push(u.as_str().to_string())
                    }
                    _ => {}
                }
            }
        }
        Ok(peer)
    }

    /// Every identity, for rules and messages.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.common_names
            .iter()
            .chain(&self.dns_names)
            .chain(&self.uris)
            .map(String::as_str)
    }

    /// The node a SPIFFE-style URI names: `spiffe://<trust domain>/…/node/<id>`.
    fn spiffe_nodes(&self) -> impl Iterator<Item = &str> {
        self.uris.iter().filter_map(|u| {
            let path = u.strip_prefix("spiffe://")?.split_once('/')?.1;
            let mut segments = path.rsplit('/');
            let id = segments.next()?;
            (segments.next()? == "node" && !id.is_empty()).then_some(id)
        })
    }

    /// A short description for logs and refusals.
    pub fn describe(&self) -> String {
        let ids: Vec<&str> = self.identities().collect();
        if ids.is_empty() {
            "a certificate without CN or DNS/URI names".to_string()
        } else {
            format!("certificate [{}]", ids.join(", "))
        }
    }
}

/// Which node ids a client certificate may be served as. Always: the node
/// its SPIFFE URI names (`spiffe://…/node/<id>`), and a node id equal to its
/// CN or one of its DNS names. Besides, each rule `IDENTITY=NODES` lets a
/// certificate with that CN, DNS or URI name serve the node `NODES`, or every
/// node id starting with `PREFIX` when `NODES` is `PREFIX*` (`*` alone: any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePolicy {
    rules: Vec<(String, String)>,
}

impl NodePolicy {
    /// A policy from `--tls-node-rule` values.
    pub fn new<S: AsRef<str>>(rules: &[S]) -> Result<NodePolicy, TlsError> {
        let mut out = Vec::new();
        for r in rules {
            let r = r.as_ref();
            match r.split_once('=') {
                Some((id, nodes)) if !id.is_empty() && !nodes.is_empty() => {
                    let star = nodes.find('*');
                    if star.is_some_and(|i| i + 1 != nodes.len()) {
                        return Err(TlsError::Rule(r.to_string()));
                    }
                    out.push((id.to_string(), nodes.to_string()));
                }
                _ => return Err(TlsError::Rule(r.to_string())),
            }
        }
        Ok(NodePolicy { rules: out })
    }

    /// Whether `peer` may be served as node `node`.
    pub fn allows(&self, peer: &Peer, node: &str) -> bool {
        if node.is_empty() {
            return false;
        }
        if peer.spiffe_nodes().any(|n| n == node)
            || peer.common_names.iter().any(|n| n == node)
            || peer.dns_names.iter().any(|n| n == node)
        {
            return true;
        }
        self.rules.iter().any(|(id, nodes)| {
            peer.identities().any(|i| i == id)
                && match nodes.strip_suffix('*') {
                    Some(prefix) => node.starts_with(prefix),
                    None => node == nodes,
                }
        })
    }
}

/// Who is on the other end of a connection, as handlers see it (a tonic
/// request extension on the xDS port).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The client's address.
    pub addr: Option<SocketAddr>,
    /// Its verified certificate's identities; `None`: no certificate (the
    /// status port lets clients without one ask for `/status` with the admin
    /// token).
    pub peer: Option<Arc<Peer>>,
}

// === server ===

/// The certificate, key and client CA files of `serve`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The control plane's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA(s) whose client certificates are accepted (PEM, one or more).
    pub client_ca: PathBuf,
}

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// xDS (gRPC over HTTP/2): a client certificate is required.
    Xds,
    /// Status and fleet exchange (HTTP/1.1): a client certificate is checked
    /// when presented; each path decides whether it needs one.
    Status,
}

/// What identifies one version of a file: a rotation changes at least one.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

#[derive(Debug)]
struct Loaded {
    stamps: [Stamp; 3],
    xds: Arc<ServerConfig>,
    status: Arc<ServerConfig>,
}

/// The TLS side of `serve`: the current server configs, reloaded when the
/// files change, and the node policy.
#[derive(Debug)]
pub struct Server {
    files: TlsFiles,
    policy: NodePolicy,
    loaded: Mutex<Loaded>,
}

impl Server {
    /// Loads the files (an error when they do not make a working set).
    pub fn load(files: TlsFiles, policy: NodePolicy) -> Result<Arc<Server>, TlsError> {
        let loaded = Self::build(&files)?;
        Ok(Arc::new(Server {
            files,
            policy,
            loaded: Mutex::new(loaded),
        }))
    }

    fn stamps(files: &TlsFiles) -> [Stamp; 3] {
        [
            stamp(&files.cert),
            stamp(&files.key),
            stamp(&files.client_ca),
        ]
    }

    fn build(files: &TlsFiles) -> Result<Loaded, TlsError> {
        // Stamps first: a file replaced while it is read is read again next time.
        let stamps = Self::stamps(files);
        let certs = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let roots = Arc::new(read_roots(&files.client_ca)?);
        let config = |port: Port| -> Result<Arc<ServerConfig>, TlsError> {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let verifier = match port {
                Port::Xds => verifier.build(),
                Port::Status => verifier.allow_unauthenticated().build(),
            }
            .map_err(|e| file_error(&files.client_ca, e))?;
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| {
                    TlsError::Config(format!(
                        "{} and {}: {e}",
                        files.cert.display(),
                        files.key.display()
                    ))
                })?;
            c.alpn_protocols = match port {
                Port::Xds => vec![b"h2".to_vec()],
                Port::Status => vec![b"http/1.1".to_vec()],
            };
            Ok(Arc::new(c))
        };
        Ok(Loaded {
            stamps,
            xds: config(Port::Xds)?,
            status: config(Port::Status)?,
        })
    }

    /// The node policy.
    pub fn policy(&self) -> &NodePolicy {
        &self.policy
    }

    /// The server config for `port`, rebuilt first when a file changed.
    pub fn config(&self, port: Port) -> Option<Arc<ServerConfig>> {
        let now = Self::stamps(&self.files);
        let mut loaded = self.loaded.lock().ok()?;
        if now != loaded.stamps {
            match Self::build(&self.files) {
                Ok(fresh) => {
                    tracing::info!(
                        "TLS: reloaded {}, {} and {}",
                        self.files.cert.display(),
                        self.files.key.display(),
                        self.files.client_ca.display()
                    );
                    *loaded = fresh;
                }
                Err(e) => {
                    // Not again until the files change once more.
                    tracing::warn!("TLS: keeping the previous certificates: {e}");
                    loaded.stamps = now;
                }
            }
        }
        Some(match port {
            Port::Xds => loaded.xds.clone(),
            Port::Status => loaded.status.clone(),
        })
    }

    /// Completes the TLS handshake of an accepted connection.
    pub async fn accept(&self, tcp: TcpStream, port: Port) -> io::Result<TlsConn> {
        let config = self
            .config(port)
            .ok_or_else(|| io::Error::other("TLS state poisoned"))?;
        let addr = tcp.peer_addr().ok();
        let stream = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsAcceptor::from(config).accept(tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Peer::from_der(c.as_ref()))
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .map(Arc::new);
        Ok(TlsConn {
            inner: stream,
            info: PeerInfo { addr, peer },
        })
    }

    /// Accepts connections on `listener` and hands over those whose handshake
    /// succeeds (each handshake runs on its own task: a slow client delays no one).
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
        port: Port,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
        let (tx, rx) = mpsc::channel(64);
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (server, tx) = (server.clone(), tx.clone());
                tokio::spawn(async move {
                    match server.accept(tcp, port).await {
                        Ok(conn) => {
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Err(e) => tracing::info!("TLS handshake refused ({port:?} port): {e}"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A TLS connection and who is on the other end.
#[derive(Debug)]
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConn {
    /// The peer.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

// === client (the CLI) ===

/// TLS for the CLI's calls to a status port that runs TLS.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    /// The CA that issued the control plane's certificate.
    pub ca: PathBuf,
    /// A client certificate and key to present (optional).
    pub cert_key: Option<(PathBuf, PathBuf)>,
}

/// A rustls client config from `files`.
pub fn client_config(files: &ClientFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(&files.ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &files.cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A blocking byte stream to the status port (plain or TLS).
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Connects to `host:port` (the host is checked against the server's
/// certificate when `tls` is given), with `timeout` for connecting and reads.
pub fn dial(
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> io::Result<Box<dyn Stream>> {
    use std::net::ToSocketAddrs as _;
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))?;
    let tcp = StdTcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .to_owned();
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6) into host and port.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cn: &[&str], dns: &[&str], uris: &[&str]) -> Peer {
        let v = |s: &[&str]| s.iter().map(ToString::to_string).collect();
        Peer {
            common_names: v(cn),
            dns_names: v(dns),
            uris: v(uris),
        }
    }

    #[test]
    fn identities_map_to_nodes() {
        let none = NodePolicy::default();
        let p = peer(&["envoy-1"], &["gw.example"], &[]);
        assert!(none.allows(&p, "envoy-1"));
        assert!(none.allows(&p, "gw.example"));
        assert!(!none.allows(&p, "envoy-2"));
        assert!(!none.allows(&p, ""));
        let s = peer(&[], &[], &["spiffe://example.org/ns/sy/node/envoy-7"]);
        assert!(none.allows(&s, "envoy-7"));
        assert!(!none.allows(&s, "node"));
        assert!(!none.allows(&peer(&[], &[], &["spiffe://example.org/node/"]), ""));
        assert!(!none.allows(&peer(&[], &[], &["https://example.org/node/x"]), "x"));
        let rules = NodePolicy::new(&["gw=gw-*", "spiffe://example.org/sa/gw=edge"]).unwrap();
        let gw = peer(&["gw"], &[], &[]);
        assert!(rules.allows(&gw, "gw-7f9c-abcde"));
        assert!(!rules.allows(&gw, "other-1"));
        assert!(rules.allows(&peer(&[], &[], &["spiffe://example.org/sa/gw"]), "edge"));
        assert!(!rules.allows(&peer(&["gx"], &[], &[]), "gw-1"));
        let any = NodePolicy::new(&["fleet=*"]).unwrap();
        assert!(any.allows(&peer(&["fleet"], &[], &[]), "anything"));
        for bad in ["gw", "=x", "gw=", "gw=a*b"] {
            assert!(NodePolicy::new(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_port_splits() {
        assert_eq!(
            split_host_port("cp.example:18000"),
            Some(("cp.example".into(), 18000))
        );
        assert_eq!(split_host_port("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(split_host_port("x"), None);
        assert_eq!(split_host_port(":1"), None);
    }
}
