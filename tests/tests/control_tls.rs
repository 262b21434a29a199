//! The control channel over mutual TLS (docs/security.md): Envoys with a valid
//! client certificate get their config and exchange fleet state; a client
//! without a certificate, with one from another CA, or asking as a node its
//! certificate does not name gets nothing (over xDS, the fleet stream and the
//! HTTP fleet exchange); certificates and CA rotate without a
//! restart; plain TCP off loopback needs `--insecure-plaintext`; `/ready` turns
//! 200 once the control plane serves. Certificates are made here with rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use switchyard_tests::harness::{
    ControlTls, Dialect, Gateway, Mock, Paths, Proc, Scratch, chat_body, spawn_control_plane,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, pki_types::ServerName};

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

// === certificates ===

/// A CA made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and its key (PEM): a server certificate for
    /// `localhost` and 127.0.0.1, or a client certificate with CN `cn` and
    /// the URI SANs given.
    fn leaf(&self, cn: &str, server: bool, uris: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if server {
            params.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` the way Kubernetes and cert-manager do: a new
/// file moved over the old one.
fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The control plane's files: its certificate (from `server_ca`) and the CA
/// its clients' certificates come from.
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

impl ServerFiles {
    fn write(dir: &Path, server_ca: &Ca, client_ca: &Ca) -> ServerFiles {
        let (cert, key) = server_ca.leaf("switchyard-control-plane", true, &[]);
        ServerFiles {
            cert: put(dir, "server.crt", &cert),
            key: put(dir, "server.key", &key),
            client_ca: put(dir, "client-ca.crt", &client_ca.pem()),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-client-ca".into(),
            self.client_ca.display().to_string(),
        ]
    }
}

/// The control channel's TLS for a gateway whose Envoys share one fleet
/// certificate, as the Helm chart issues it (the rule lets it be served as any
/// test Envoy's node id), dialling the control plane by name (the fleet
/// cluster is LOGICAL_DNS, its DNS SAN checked); files under `dir`.
fn fleet_tls(dir: &Path, cp_ca: &Ca, fleet_ca: &Ca) -> ControlTls {
    let server = ServerFiles::write(dir, cp_ca, fleet_ca);
    let (cert, key) = fleet_ca.leaf("test-fleet", false, &[]);
    let envoy_dir = dir.join("envoy-tls");
    std::fs::create_dir_all(&envoy_dir).unwrap();
    ControlTls {
        server_cert: server.cert.clone(),
        server_key: server.key.clone(),
        client_ca: server.client_ca.clone(),
        node_rules: vec!["test-fleet=test-envoy-*".into()],
        serve_args: vec!["--advertise-addr".into(), "localhost:0".into()],
        envoy_cert: put(&envoy_dir, "tls.crt", &cert),
        envoy_key: put(&envoy_dir, "tls.key", &key),
        envoy_ca: put(&envoy_dir, "ca.crt", &cp_ca.pem()),
        host: "localhost".into(),
    }
}

/// A rustls client trusting `server_ca`, presenting `identity` (cert, key PEM).
fn client(server_ca: &Ca, identity: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

// === clients ===

/// Connects tonic over rustls to `addr`, checking the server certificate for
/// `localhost`.
#[derive(Clone)]
struct Connector {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let (addr, config) = (self.addr, self.config.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// A gRPC channel over TLS to `addr`.
async fn channel(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(Connector { addr, config })
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The first message of a stream just opened, or what ended it (connection,
/// handshake or the server's status), within 10 s. The request side stays
/// open, as Envoy's does.
async fn first_message<T>(
    open: impl std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, String>>,
) -> Result<T, String> {
    let attempt = async {
        let mut stream = open.await?.into_inner();
        match stream.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err("stream ended".to_string()),
            Err(s) => Err(status(&s)),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer in 10 s".into()))
}

/// Opens an ADS stream as `node` and waits for the first answer: the
/// listener, or the error that ended the attempt.
async fn ask_for_listener(
    xds: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    node: &str,
) -> Result<DiscoveryResponse, String> {
    first_message(async {
        let first = DiscoveryRequest {
            node: Some(Node {
                id: node.to_string(),
                ..Default::default()
            }),
            type_url: LISTENER.to_string(),
            ..Default::default()
        };
        let requests =
            futures_util::stream::iter(vec![first]).chain(futures_util::stream::pending::<DiscoveryRequest>());
        AggregatedDiscoveryServiceClient::new(channel(xds, config).await?)
            .stream_aggregated_resources(requests)
            .await
            .map_err(|s| status(&s))
    })
    .await
}

use futures_util::StreamExt as _;

/// Opens the fleet stream (`switchyard.fleet.v1.Fleet/Stream`, on the xDS
/// port) as `node` and waits for the answer to its first report: the state, or
/// the error that ended the attempt.
async fn open_fleet_stream(
    xds: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    node: &str,
) -> Result<switchyard_proto::fleet::v1::State, String> {
    use switchyard_proto::fleet::v1::{Report, fleet_client::FleetClient};
    first_message(async {
        let first = Report {
            node: node.to_string(),
            seq: 1,
            ..Default::default()
        };
        let reports = futures_util::stream::iter(vec![first]).chain(futures_util::stream::pending::<Report>());
        FleetClient::new(channel(xds, config).await?)
            .stream(reports)
            .await
            .map_err(|s| status(&s))
    })
    .await
}

/// One HTTP/1.1 call over TLS to the status port: `(status, body)`, or the
/// error that prevented it.
async fn https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let read = tls.read_to_end(&mut raw).await;
    if raw.is_empty() {
        return Err(format!("no answer: {read:?}"));
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_string()))
}

// === a control plane on its own ===

struct ControlPlane {
    proc: Proc,
    xds: SocketAddr,
    status: SocketAddr,
    token: String,
}

const CONFIG: &str = "providers:\n  - { name: a, dialect: openai, base_url: 'http://127.0.0.1:9/v1', api_key: { value: sk-test } }\nroutes:\n  - { model: chat, chain: [a/m] }\n";

/// Starts `switchyard serve` with `config` and `args` on ephemeral loopback
/// ports.
fn serve(paths: &Paths, dir: &Path, name: &str, config: &str, args: &[String]) -> ControlPlane {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, config).unwrap();
    let data = dir.join(format!("{name}-data"));
    let (proc, xds, status, _) = spawn_control_plane(paths, dir, name, &file, &data, args);
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    ControlPlane {
        proc,
        xds,
        status,
        token,
    }
}

// === tests ===

/// (a) Two Envoys with certificates from the fleet CA get their config over
/// mTLS (xDS dialled by host name), serve, and exchange fleet state over the
/// TLS fleet cluster: a circuit opened by one Envoy's failures is honoured by
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_get_config_and_share_fleet_state_over_mutual_tls() {
    let paths = Paths::discover();
    let dir = Scratch::new("control-tls");
    let (cp_ca, fleet_ca) = (Ca::new("control-plane CA"), Ca::new("fleet CA"));
    let tls = fleet_tls(&dir.0, &cp_ca, &fleet_ca);
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let b = Mock::start(&paths, &dir.0, "b", Dialect::Anthropic, &[]);
    let mut gw = Gateway::builder()
        .provider(&a)
        .provider(&b)
        .route("chat", &["a/m-a", "b/m-b"])
        .yaml("circuit_breaker: { consecutive_failures: 2, base_open_ms: 20000, max_open_ms: 20000 }\n")
        .control_tls(tls)
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    assert!(gw.cp.output().contains("mutual TLS on xDS and status"));

    let r = gw.chat(&chat_body("chat"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "a");

    // a fails twice behind Envoy 0 (b answers); the fleet opens a's circuit.
    for _ in 0..2 {
        let r = gw.chat(&chat_body("chat"), &[("x-mock", "a:status=503")]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-provider"], "b");
    }
    // Envoy 1 never saw a fail: it leaves a out once the fleet state reaches it
    // (a request it sent to a before that would succeed and close the circuit).
    let anonymous = client(&cp_ca, None);
    let token = gw.admin_token();
    let started = Instant::now();
    loop {
        let (code, body) = https(gw.status, anonymous.clone(), "GET", "/status", Some(&token), "")
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["targets"]["a/m-a"]["open_until_ms"].as_u64() > Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a's fleet circuit never opened: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three fleet intervals (250 ms each) later Envoy 1 has exchanged.
    tokio::time::sleep(Duration::from_millis(750)).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.urls[1]))
        .json(&chat_body("chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    assert_eq!(r.headers()["x-switchyard-attempts"], "1", "a was not tried");
    println!("fleet state crossed over mTLS in {:?}", started.elapsed());

    // The status port is TLS: readable with the admin token, both nodes there.
    let (code, body) = https(gw.status, anonymous.clone(), "GET", "/status", Some(&token), "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["nodes"].as_object().unwrap().len(), 2, "{status}");
    assert!(
        status["targets"]["a/m-a"]["reporters"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    let (code, _) = https(gw.status, anonymous, "GET", "/status", None, "").await.unwrap();
    assert_eq!(code, 401, "neither a certificate nor the token");
    // The CLI speaks TLS too.
    let out = Command::new(&paths.switchyard)
        .args(["status", "--status-addr", &format!("localhost:{}", gw.status.port())])
        .arg("--tls-ca")
        .arg(dir.0.join("envoy-tls/ca.crt"))
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("test-envoy-"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (b) No client certificate, or one from another CA: no config. (c) A
/// certificate naming node X gets X's config, not Y's, and its fleet reports
/// count only as X.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_certificate_of_the_ca_naming_the_node_gets_config_and_reports() {
    let paths = Paths::discover();
    let dir = Scratch::new("control-tls-refuse");
    let (cp_ca, fleet_ca, other_ca) = (Ca::new("cp CA"), Ca::new("fleet CA"), Ca::new("other CA"));
    let server = ServerFiles::write(&dir.0, &cp_ca, &fleet_ca);
    let cp = serve(&paths, &dir.0, "switchyard", CONFIG, &server.args());

    let x = fleet_ca.leaf("node-x", false, &[]);
    let spiffe = fleet_ca.leaf("whatever", false, &["spiffe://example.org/ns/sy/node/node-s"]);
    let stranger = other_ca.leaf("node-x", false, &[]);

    let listener = ask_for_listener(cp.xds, client(&cp_ca, Some(&x)), "node-x")
        .await
        .unwrap();
    assert_eq!(listener.resources.len(), 1, "node-x gets its listener");
    ask_for_listener(cp.xds, client(&cp_ca, Some(&spiffe)), "node-s")
        .await
        .expect("the SPIFFE URI names node-s");

    let refused = ask_for_listener(cp.xds, client(&cp_ca, None), "node-x")
        .await
        .expect_err("no client certificate");
    println!("without a certificate: {refused}");
    let refused = ask_for_listener(cp.xds, client(&cp_ca, Some(&stranger)), "node-x")
        .await
        .expect_err("a certificate from another CA");
    println!("another CA: {refused}");
    let refused = ask_for_listener(cp.xds, client(&cp_ca, Some(&x)), "node-y")
        .await
        .expect_err("node-x's certificate asking as node-y");
    assert!(refused.starts_with("PermissionDenied"), "{refused}");
    assert!(refused.contains("node-y"), "{refused}");
    assert!(cp.proc.output().contains("xDS stream refused"));

    // The fleet stream: node-x's certificate opens it as node-x only.
    let state = open_fleet_stream(cp.xds, client(&cp_ca, Some(&x)), "node-x")
        .await
        .expect("node-x's stream");
    assert_eq!(state.answers, 1, "its first report is answered");
    let refused = open_fleet_stream(cp.xds, client(&cp_ca, Some(&x)), "node-s")
        .await
        .expect_err("node-x's certificate streaming as node-s");
    assert!(refused.starts_with("PermissionDenied"), "{refused}");
    let refused = open_fleet_stream(cp.xds, client(&cp_ca, None), "node-x")
        .await
        .expect_err("a stream without a certificate");
    println!("a stream without a certificate: {refused}");

    // The fleet exchange: node-x has had an xDS stream; its certificate
    // reports as node-x only.
    let report = |node: &str| format!(r#"{{"node":"{node}","outcomes":[]}}"#);
    let exchange = switchyard_core::fleet::EXCHANGE_PATH;
    let (code, body) = https(
        cp.status,
        client(&cp_ca, Some(&x)),
        "POST",
        exchange,
        None,
        &report("node-x"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = https(
        cp.status,
        client(&cp_ca, Some(&x)),
        "POST",
        exchange,
        None,
        &report("node-s"),
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "node-x reporting as node-s: {body}");
    assert!(body.contains("may not be served as node `node-s`"), "{body}");
    let (code, body) = https(
        cp.status,
        client(&cp_ca, None),
        "POST",
        exchange,
        None,
        &report("node-x"),
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "a report without a certificate: {body}");
    // Even the admin token does not make a report without a certificate count.
    let (code, _) = https(
        cp.status,
        client(&cp_ca, None),
        "POST",
        exchange,
        Some(&cp.token),
        &report("node-x"),
    )
    .await
    .unwrap();
    assert_eq!(code, 403);
    let answer = https(cp.status, client(&cp_ca, Some(&stranger)), "GET", "/status", None, "").await;
    assert!(
        !matches!(answer, Ok((200, _))),
        "another CA's certificate reads nothing: {answer:?}"
    );
    let (code, _) = https(cp.status, client(&cp_ca, Some(&x)), "GET", "/status", None, "")
        .await
        .unwrap();
    assert_eq!(code, 200, "a fleet certificate reads the status");
}

/// (c') Gateways whose xDS server is another (istiod, in-mesh): with
/// `--fleet-without-xds` (mutual TLS only) a certificate-named node that never
/// opened an xDS stream here gets fleet state, provider credentials included,
/// over the stream and the HTTP exchange; nodes its certificate does not name,
/// and every such node without the flag, get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_an_xds_stream_get_fleet_state_only_when_asked_and_named() {
    let paths = Paths::discover();
    let dir = Scratch::new("control-tls-no-xds");
    let (cp_ca, fleet_ca) = (Ca::new("cp CA"), Ca::new("fleet CA"));
    let server = ServerFiles::write(&dir.0, &cp_ca, &fleet_ca);
    // Istio's proxy ids: router~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local.
    let mut args = server.args();
    args.extend(["--tls-node-rule".into(), "switchyard-gateway=router~*".into()]);
    let gateway = fleet_ca.leaf("switchyard-gateway", false, &[]);
    let node = "router~10.0.0.7~istio-ingressgateway-5d9f-x2k.istio-system~istio-system.svc.cluster.local";
    let report = |node: &str| format!(r#"{{"node":"{node}","outcomes":[]}}"#);
    let exchange = switchyard_core::fleet::EXCHANGE_PATH;

    // Without the flag: such a node is not served.
    let plain = serve(&paths, &dir.0, "without", CONFIG, &args);
    let (code, body) = https(
        plain.status,
        client(&cp_ca, Some(&gateway)),
        "POST",
        exchange,
        None,
        &report(node),
    )
    .await
    .unwrap();
    assert_eq!(code, 403, "{body}");
    drop(plain);

    let mut with = args.clone();
    with.push("--fleet-without-xds".into());
    let cp = serve(&paths, &dir.0, "with", CONFIG, &with);
    let state = open_fleet_stream(cp.xds, client(&cp_ca, Some(&gateway)), node)
        .await
        .expect("the in-mesh node's stream");
    assert_eq!(state.answers, 1);
    let credentials = state.credentials.expect("provider credentials on the stream");
    assert!(credentials.providers.contains_key("a"), "{credentials:?}");
    let (code, body) = https(
        cp.status,
        client(&cp_ca, Some(&gateway)),
        "POST",
        exchange,
        None,
        &report(node),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    // A node the certificate does not name is refused, on both.
    let refused = open_fleet_stream(cp.xds, client(&cp_ca, Some(&gateway)), "envoy-1")
        .await
        .expect_err("a node the rule does not name");
    assert!(refused.starts_with("PermissionDenied"), "{refused}");
    let (code, _) = https(
        cp.status,
        client(&cp_ca, Some(&gateway)),
        "POST",
        exchange,
        None,
        &report("envoy-1"),
    )
    .await
    .unwrap();
    assert_eq!(code, 403);

    // Only with mutual TLS: without a certificate nobody is anybody.
    let config = dir.0.join("plain.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(&paths.switchyard)
        .args(["serve", "--fleet-without-xds", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--fleet-without-xds needs mutual TLS"), "{err}");
}

/// The listener, route and clusters istiod would give an ingress gateway from
/// `deploy/istio/in-mesh`: the `EnvoyFilter`'s patches with `planner` and
/// `adapter` as the two filter configs, the providers' clusters at `openai`
/// and `anthropic`, the control plane's at `xds` (mutual TLS with the files
/// of `tls`: cert, key, CA). An Envoy bootstrap for node `node`, listening on
/// `port`.
fn in_mesh_bootstrap(
    paths: &Paths,
    (planner, adapter): (&str, &str),
    (openai, anthropic, xds): (SocketAddr, SocketAddr, SocketAddr),
    tls: [&Path; 3],
    node: &str,
    port: u16,
) -> serde_json::Value {
    use serde_json::json;
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/istio/in-mesh/envoyfilter.yaml"))
            .unwrap();
    let ef: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let patches = ef["spec"]["configPatches"].as_array().unwrap();
    let patch = |applies: &str| -> Vec<serde_json::Value> {
        patches
            .iter()
            .filter(|p| p["applyTo"] == applies)
            .map(|p| p["patch"]["value"].clone())
            .collect()
    };
    let filters = patch("HTTP_FILTER");
    let (mut planner_filter, mut router) = (filters[0].clone(), filters[1].clone());
    let code = json!({ "local": { "filename": paths.wasm.display().to_string() } });
    planner_filter["typed_config"]["config"]["vm_config"]["code"] = code.clone();
    planner_filter["typed_config"]["config"]["configuration"]["value"] = json!(planner);
    let adapter_filter = &mut router["typed_config"]["upstream_http_filters"][0]["typed_config"]["config"];
    adapter_filter["vm_config"]["code"] = code;
    adapter_filter["configuration"]["value"] = json!(adapter);
    let mut vhost = patch("VIRTUAL_HOST")[0].clone();
    vhost["name"] = json!("llm.example.com:80");
    vhost["domains"] = json!(["*"]);
    vhost["routes"] = json!([{ "match": { "prefix": "/" }, "route": patch("HTTP_ROUTE")[0]["route"] }]);
    router["name"] = json!("envoy.filters.http.router");
    let fixed = |name: &str, at: SocketAddr| {
        json!({
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address":
                { "socket_address": { "address": at.ip().to_string(), "port_value": at.port() } } } }] }] }
        })
    };
    let fleet_cluster = serde_json::from_str::<serde_json::Value>(planner).unwrap()["fleet"]["cluster"]
        .as_str()
        .unwrap()
        .to_string();
    let mut fleet = fixed(&fleet_cluster, xds);
    fleet["typed_extension_protocol_options"] = json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": { "http2_protocol_options": {} } } });
    let file = |p: &Path| json!({ "filename": p.display().to_string() });
    // What the DestinationRule's MUTUAL mode with credentialName becomes.
    fleet["transport_socket"] = json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "switchyard-control-plane.switchyard.svc.cluster.local",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [{ "certificate_chain": file(tls[0]), "private_key": file(tls[1]) }],
            "validation_context": { "trusted_ca": file(tls[2]) } } } });
    json!({
        "node": { "id": node, "cluster": "istio-ingressgateway.istio-system" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
                "per_connection_buffer_limit_bytes": patch("LISTENER")[0]["per_connection_buffer_limit_bytes"],
                "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "gateway",
                    "route_config": { "virtual_hosts": [vhost] },
                    "http_filters": [planner_filter, router],
                } }] }],
            }],
            "clusters": [
                fixed("outbound|80||api.openai.com", openai),
                fixed("outbound|80||api.anthropic.com", anthropic),
                fleet,
            ],
        },
    })
}

/// (c'') In-mesh, end to end on Envoy: two gateways assembled from
/// `deploy/istio/in-mesh` as istiod would configure them (no xDS from
/// Switchyard), with the filter configs `switchyard filter-config --istio`
/// prints; their fleet streams, admitted by certificate (`--fleet-without-xds`),
/// bring the provider keys (nowhere in their config) and carry a circuit one
/// gateway opens to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_mesh_gateways_get_keys_and_fleet_circuits_from_a_control_plane_that_is_not_their_xds_server() {
    let paths = Paths::discover();
    if paths.host != switchyard_tests::harness::FilterHost::Wasm {
        println!("skipped: in-mesh is the Wasm build's (istio-proxy cannot load the native module)");
        return;
    }
    let dir = Scratch::new("control-tls-in-mesh");
    let openai = Mock::start(&paths, &dir.0, "openai", Dialect::Openai, &[]);
    let anthropic = Mock::start(&paths, &dir.0, "anthropic", Dialect::Anthropic, &[]);
    let config = format!(
        "filter: {{ wasm: {} }}\nproviders:\n  - {{ name: openai, dialect: openai, base_url: 'http://api.openai.com/v1', api_key: {{ value: {} }} }}\n  - {{ name: anthropic, dialect: anthropic, base_url: 'http://api.anthropic.com/v1', api_key: {{ value: {} }} }}\nroutes:\n  - {{ model: chat, chain: [openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest] }}\ncircuit_breaker: {{ consecutive_failures: 3, base_open_ms: 10000, max_open_ms: 60000 }}\nforward_headers: [x-mock]\n",
        paths.wasm.display(),
        openai.api_key,
        anthropic.api_key
    );
    let (cp_ca, fleet_ca) = (Ca::new("cp CA"), Ca::new("fleet CA"));
    let server = ServerFiles::write(&dir.0, &cp_ca, &fleet_ca);
    let mut args = server.args();
    args.extend([
        "--tls-node-rule".into(),
        "switchyard-gateway=router~*".into(),
        "--fleet-without-xds".into(),
    ]);
    let cp = serve(&paths, &dir.0, "switchyard", &config, &args);
    let generate = |role: &str| {
        let out = Command::new(&paths.switchyard)
            .args(["filter-config", "--config"])
            .arg(dir.0.join("switchyard.yaml"))
            .args([
                "--role",
                role,
                "--istio",
                "--fleet",
                "switchyard-control-plane.switchyard.svc.cluster.local:18000",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (planner, adapter) = (generate("planner"), generate("adapter"));
    assert!(
        !planner.contains(&openai.api_key) && !adapter.contains(&openai.api_key),
        "keys in a filter config"
    );
    let (cert, key) = fleet_ca.leaf("switchyard-gateway", false, &[]);
    let tls = [
        put(&dir.0, "gw.crt", &cert),
        put(&dir.0, "gw.key", &key),
        put(&dir.0, "cp-ca.crt", &cp_ca.pem()),
    ];
    let mut urls = Vec::new();
    let mut envoys = Vec::new();
    for i in 0..2u32 {
        let node = format!("router~127.0.0.1~istio-ingressgateway-{i}.istio-system~istio-system.svc.cluster.local");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bootstrap = in_mesh_bootstrap(
            &paths,
            (&planner, &adapter),
            (openai.addr, anthropic.addr, cp.xds),
            [&tls[0], &tls[1], &tls[2]],
            &node,
            port,
        );
        let file = dir.0.join(format!("in-mesh-{i}.json"));
        std::fs::write(&file, serde_json::to_vec(&bootstrap).unwrap()).unwrap();
        let base_id = (std::process::id() % 400_000) * 10 + 7 + i;
        envoys.push(Proc::spawn(
            &format!("gateway-{i}"),
            &dir.0,
            Command::new(&paths.envoy).arg("-c").arg(&file).args([
                "--base-id",
                &base_id.to_string(),
                "--concurrency",
                "2",
                "--log-level",
                "info",
            ]),
        ));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    // Served once the stream brought the keys (503 gateway_not_ready until then).
    let chat = |url: String, headers: Vec<(&'static str, &'static str)>| async move {
        switchyard_tests::harness::chat_at(&url, &chat_body("chat"), &headers).await
    };
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for url in &urls {
        let t = Instant::now();
        loop {
            let r = probe
                .post(format!("{url}/v1/chat/completions"))
                .json(&chat_body("chat"))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{url} never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let seen = openai.requests().await;
    assert!(!seen.is_empty(), "openai served the first requests");
    // Those successes go up in their own reports (a report's counts carry no
    // order: successes beside failures would break the failures' run).
    tokio::time::sleep(Duration::from_millis(750)).await;
    // Gateway 0 sees openai fail three times; gateway 1 never does, yet skips it.
    let failing = vec![("x-mock", "openai:status=503")];
    for _ in 0..3 {
        let r = chat(urls[0].clone(), failing.clone()).await;
        assert_eq!(switchyard_tests::harness::served(&r).0, "anthropic");
    }
    let before = openai.requests().await.len();
    // The control plane learns it from gateway 0's next report, and pushes it.
    let gateway = (cert.clone(), key.clone());
    let t = Instant::now();
    loop {
        let (_, body) = https(cp.status, client(&cp_ca, Some(&gateway)), "GET", "/status", None, "")
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status["targets"]["openai/gpt-4o-mini"]["open_until_ms"].as_u64() > Some(0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the circuit never opened fleet-wide: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = chat(urls[1].clone(), failing.clone()).await;
    assert_eq!(
        switchyard_tests::harness::served(&r),
        ("anthropic".to_string(), "1".to_string()),
        "gateway 1 still tried openai"
    );
    assert_eq!(
        openai.requests().await.len(),
        before,
        "only gateway 0's attempts reached openai"
    );
    // Both streams are the control plane's, under the proxies' own node ids.
    let (code, body) = https(
        cp.status,
        client(&cp_ca, Some(&(cert, key))),
        "GET",
        "/status",
        None,
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let streams: Vec<u64> = status["nodes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with("router~"))
        .map(|(_, s)| s["fleet_streams"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(streams, vec![1, 1], "{body}");
    drop(envoys);
}

/// (d) New server certificate (from a new CA) and a new client CA, written
/// while it runs: new connections use them; a half-written set (a key that
/// does not match) is not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_ca_rotate_without_a_restart() {
    let paths = Paths::discover();
    let dir = Scratch::new("control-tls-rotate");
    let (cp_ca, fleet_ca) = (Ca::new("cp CA 1"), Ca::new("fleet CA 1"));
    let server = ServerFiles::write(&dir.0, &cp_ca, &fleet_ca);
    let cp = serve(&paths, &dir.0, "switchyard", CONFIG, &server.args());
    let old = fleet_ca.leaf("node-x", false, &[]);
    ask_for_listener(cp.xds, client(&cp_ca, Some(&old)), "node-x")
        .await
        .unwrap();

    let (cp_ca2, fleet_ca2) = (Ca::new("cp CA 2"), Ca::new("fleet CA 2"));
    let (cert2, key2) = cp_ca2.leaf("switchyard-control-plane", true, &[]);
    // Halfway: the new certificate with the old key. Refused, the old set serves.
    put(&dir.0, "server.crt", &cert2);
    ask_for_listener(cp.xds, client(&cp_ca, Some(&old)), "node-x")
        .await
        .expect("the last good set keeps serving");
    assert!(cp.proc.output().contains("keeping the previous certificates"));

    put(&dir.0, "server.key", &key2);
    put(&dir.0, "client-ca.crt", &fleet_ca2.pem());
    let new = fleet_ca2.leaf("node-x", false, &[]);
    let started = Instant::now();
    ask_for_listener(cp.xds, client(&cp_ca2, Some(&new)), "node-x")
        .await
        .expect("the new server certificate and client CA are in force");
    println!("rotation applied on the next connection ({:?})", started.elapsed());
    assert!(cp.proc.output().contains("TLS: reloaded"));
    ask_for_listener(cp.xds, client(&cp_ca, Some(&old)), "node-x")
        .await
        .expect_err("the old server certificate is gone");
    ask_for_listener(cp.xds, client(&cp_ca2, Some(&old)), "node-x")
        .await
        .expect_err("the old client CA is no longer trusted");
    // The status port rotated with it.
    let (code, _) = https(cp.status, client(&cp_ca2, Some(&new)), "GET", "/status", None, "")
        .await
        .unwrap();
    assert_eq!(code, 200);
}

/// (e) Plain TCP off loopback is refused without `--insecure-plaintext`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_off_loopback_needs_insecure_plaintext() {
    let paths = Paths::discover();
    let dir = Scratch::new("control-tls-plain");
    let config = dir.0.join("switchyard.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let run = |extra: &[&str]| {
        Command::new(&paths.switchyard)
            .args(["serve", "--config"])
            .arg(&config)
            .args([
                "--admin-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.0.join("data"))
            .args(extra)
            .output()
            .unwrap()
    };
    for addrs in [
        ["--xds-addr", "0.0.0.0:0", "--status-addr", "127.0.0.1:0"],
        ["--xds-addr", "127.0.0.1:0", "--status-addr", "0.0.0.0:0"],
    ] {
        let out = run(&addrs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--insecure-plaintext") && err.contains("not a loopback address"),
            "{err}"
        );
    }
    // Explicitly insecure: it starts (and warns).
    let mut cp = Proc::spawn(
        "switchyard-insecure",
        &dir.0,
        Command::new(&paths.switchyard)
            .args(["serve", "--config"])
            .arg(&config)
            .args([
                "--xds-addr",
                "0.0.0.0:0",
                "--status-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
                "--insecure-plaintext",
                "--data-dir",
            ])
            .arg(dir.0.join("data")),
    );
    cp.wait_for_line("listening on", Duration::from_secs(10));
    assert!(cp.output().contains("--insecure-plaintext"));
    // A status port on every address needs the address Envoys dial.
    let out = run(&[
        "--status-addr",
        "0.0.0.0:0",
        "--xds-addr",
        "127.0.0.1:0",
        "--insecure-plaintext",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--advertise-addr"));
}

/// (f) `/ready` answers 503 while the config loads (a credential command takes
/// a second), then 200; `/live` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_200_once_the_control_plane_serves() {
    let paths = Paths::discover();
    let dir = Scratch::new("control-tls-ready");
    let config = dir.0.join("switchyard.yaml");
    std::fs::write(
        &config,
        "providers:\n  - { name: a, dialect: openai, base_url: 'http://127.0.0.1:9/v1', api_key: { command: [sh, -c, 'sleep 1.5; echo sk-test'] } }\nroutes:\n  - { model: chat, chain: [a/m] }\n",
    )
    .unwrap();
    let mut cp = Proc::spawn(
        "switchyard",
        &dir.0,
        Command::new(&paths.switchyard)
            .args(["serve", "--config"])
            .arg(&config)
            .args([
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
            .arg(dir.0.join("data")),
    );
    let health = cp.wait_for_line("health on http://", Duration::from_secs(10));
    let base = format!("http://{}", health.trim_end_matches("/ready"));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).timeout(Duration::from_secs(2)).send();
    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let code = get("/ready").await.unwrap().status().as_u16();
        if seen.last() != Some(&code) {
            seen.push(code);
        }
        if code == 200 {
            break;
        }
        assert_eq!(get("/live").await.unwrap().status(), 200);
        assert!(started.elapsed() < Duration::from_secs(15), "never ready: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, vec![503, 200]);
    // Ready means the xDS port takes connections.
    let xds: SocketAddr = cp
        .wait_for_line("listening on", Duration::from_secs(1))
        .parse()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(xds).await.is_ok());
    assert_eq!(get("/nope").await.unwrap().status(), 404);
}

/// (f) The filter served by the control plane (`filter: { wasm, serve: true }`)
/// reaches two Envoys over the mutual-TLS fleet cluster, checked by SHA-256;
/// the status port gives it only to certified clients (or the admin token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_fetch_the_served_filter_over_mutual_tls() {
    let mut paths = Paths::discover();
    // Served filters are Wasm only (the native module is refused).
    paths.host = switchyard_tests::harness::FilterHost::Wasm;
    let dir = Scratch::new("control-tls-served");
    let (cp_ca, fleet_ca) = (Ca::new("control-plane CA"), Ca::new("fleet CA"));
    let tls = fleet_tls(&dir.0, &cp_ca, &fleet_ca);
    let wasm = std::fs::read(&paths.wasm).unwrap();
    let served = dir.0.join("switchyard_filter.wasm");
    std::fs::write(&served, &wasm).unwrap();
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    let mut gw = Gateway::builder()
        .filter_yaml(&format!("filter: {{ wasm: \"{}\", serve: true }}", served.display()))
        .provider(&a)
        .route("chat", &["a/m-a"])
        .control_tls(tls)
        .start(&paths, &dir)
        .await;
    gw.add_envoy(&paths).await;
    for url in &gw.urls {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat_body("chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The listeners name the build on the TLS status port by host name.
    let sha = switchyard_core::sigv4::sha256_hex(&wasm);
    let path = format!("/filter/v1/{sha}.wasm");
    let dump = reqwest::get(format!("{}/config_dump?resource=dynamic_listeners", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dump.contains(&format!("http://localhost:{}{path}", gw.status.port())) && dump.contains(&sha),
        "no remote code source in the listener"
    );
    assert!(!dump.contains("\"filename\""), "a filter still names a local file");
    let certified = client(&cp_ca, Some(&fleet_ca.leaf("test-fleet", false, &[])));
    let (code, body) = https(gw.status, certified, "GET", &path, None, "").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.len() >= wasm.len() / 2, "a filter build, {} bytes", body.len());
    let anonymous = client(&cp_ca, None);
    let (code, _) = https(gw.status, anonymous, "GET", &path, None, "").await.unwrap();
    assert_eq!(code, 401, "the filter to a client without a certificate");
}
