//! The local fleet test (docs/deploy.md): what the Helm chart's rendered
//! manifests describe, run on this machine for real. The chart is rendered with
//! `deploy/kubernetes/render.sh` (`filter.delivery: remote`, mTLS, cert-manager
//! certificates, as installed) and everything below is read from that render:
//!
//! - the control plane is the `switchyard` binary started with its Deployment
//!   container's own args and env, each volume mount a directory laid out as the
//!   kubelet mounts it (a ConfigMap's or Secret's keys one file each, behind
//!   `..data`), the data PVC a directory that outlives the pod, the filter
//!   emptyDir filled by running the init container's own `cp`;
//! - the certificates are made from the chart's cert-manager `Certificate`s
//!   (their issuers, common names, DNS names and usages);
//! - each gateway pod is Envoy started with the gateway container's command,
//!   args and env (`--service-node $(POD_NAME)`, a pod name as the Deployment
//!   controller makes it), from the bootstrap ConfigMap; it is ready when the
//!   chart's readiness probe (`envoy-admin.sh ready`) says so, and it goes with
//!   the chart's preStop hook (`envoy-admin.sh drain`) and SIGTERM; its
//!   Prometheus port (`http-envoy-prom`, the bootstrap's stats listener) serves
//!   the filter's metrics and nothing else, and still does once the preStop
//!   has stopped the gateway's listener;
//! - the Services' DNS names resolve through a small DNS server standing in for
//!   the cluster's.
//!
//! Under continuous load through the OpenAI API on every ready gateway, (a) a
//! new filter image rolls out as the chart does it (a new control-plane pod,
//! `Recreate`, that serves the new build; every Envoy fetches it over mTLS by
//! URL and SHA-256) and (b) the gateways roll (`kubectl rollout restart`:
//! `maxSurge: 1`, `maxUnavailable: 0`): no request may fail, and the new build
//! and the new pods must serve.
//!
//! What had to change to run pods as processes on one host, and nothing else:
//! paths (each mount path maps to its directory here), ports (every pod would
//! have the same ports in its own network namespace; here each gets ephemeral
//! loopback ports, and Envoy `--admin-address-path` to say which it took; the
//! admin's is a free port picked here, as the stats listener's cluster dials
//! it), the providers' addresses (the mock providers instead), and the DNS
//! resolver Envoy asks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::Deserialize as _;
use serde_json::{Value, json};
use switchyard_core::sigv4::sha256_hex as sha256;
use switchyard_tests::harness::{Dialect, Load, Mock, Paths, Proc, Scratch, listener_code, wasm_rebuilt};
use switchyard_tests::prometheus::parse_exposition;

/// The namespace render.sh installs into.
const NAMESPACE: &str = "switchyard";
/// The chart's default `clusterDomain`, named in the render so the DNS names
/// below are certainly the chart's.
const CLUSTER_DOMAIN: &str = "cluster.local";
/// `gateway.drainTimeSeconds` (15 by default): a shorter drain keeps the test
/// short; Envoy's `--drain-time-s` and the preStop hook both take it from there.
const DRAIN_TIME_S: u32 = 2;
/// The kubelet's probes run every 5 s (`periodSeconds`); polled faster here.
const PROBE_PERIOD: Duration = Duration::from_millis(200);

// === the render ===

/// The objects of one render of the chart.
struct Manifests(Vec<Value>);

impl Manifests {
    /// deploy/kubernetes/render.sh (the Helm `make setup` installs) with the
    /// values every render here shares, then `extra`.
    fn render(extra: &[&str]) -> Manifests {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(root.join("deploy/kubernetes/render.sh"))
            .env_remove("RELEASE")
            .args(["--set", "filter.delivery=remote"])
            .args(["--set", &format!("gateway.drainTimeSeconds={DRAIN_TIME_S}")])
            .args(["--set", &format!("clusterDomain={CLUSTER_DOMAIN}")])
            .args(extra)
            .output()
            .expect("deploy/kubernetes/render.sh");
        assert!(
            out.status.success(),
            "render.sh failed (`make setup` installs Helm): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        Manifests(
            serde_yaml::Deserializer::from_str(&text)
                .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
                .filter(|v| !v.is_null())
                .collect(),
        )
    }

    fn all<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let kind = kind.to_string();
        self.0.iter().filter(move |o| o["kind"] == kind.as_str())
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the render has no {kind} {name}"))
    }

    /// The Deployment of `component` (`control-plane`, `gateway`).
    fn deployment(&self, component: &str) -> &Value {
        self.all("Deployment")
            .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
            .unwrap_or_else(|| panic!("the render has no {component} Deployment"))
    }

    /// The control plane's config, from the ConfigMap its pod mounts at the
    /// directory of `--config`.
    fn config(&self) -> Value {
        let deploy = self.deployment("control-plane");
        let file = flag(&args_of(container(deploy)), "--config").to_string();
        let (volume, key) = volume_at(deploy, &file);
        let cm = volume["configMap"]["name"]
            .as_str()
            .expect("--config is in a ConfigMap");
        serde_yaml::from_str(self.get("ConfigMap", cm)["data"][&key].as_str().unwrap()).unwrap()
    }

    /// Every name the Services of the render have in the cluster's DNS.
    fn dns_names(&self) -> BTreeSet<String> {
        self.all("Service")
            .flat_map(|s| {
                let n = s["metadata"]["name"].as_str().unwrap();
                [
                    format!("{n}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"),
                    format!("{n}.{NAMESPACE}.svc"),
                ]
            })
            .collect()
    }
}

/// The pod's (one) main container.
fn container(deploy: &Value) -> &Value {
    let cs = deploy["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs.len(), 1, "one container per pod");
    &cs[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("a string").to_string()).collect())
        .unwrap_or_default()
}

/// `command` + `args` of a container (without `command`, the image's
/// entrypoint comes first: see [`program`]).
fn args_of(c: &Value) -> Vec<String> {
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    argv
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("no {name}"));
    &args[i + 1]
}

/// The volume a path in the (main) container is in, and the path inside it.
fn volume_at<'a>(deploy: &'a Value, path: &str) -> (&'a Value, String) {
    let c = container(deploy);
    let m = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| under(path, m["mountPath"].as_str().unwrap()).is_some())
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{path} is in no volume"));
    let rest = under(path, m["mountPath"].as_str().unwrap()).unwrap().to_string();
    let volume = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap();
    (volume, rest)
}

/// `path` relative to `dir` when it is `dir` or below it.
fn under<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    let dir = dir.trim_end_matches('/');
    if path == dir {
        Some("")
    } else {
        path.strip_prefix(dir)?.strip_prefix('/')
    }
}

/// `/a/b/../c` → `/a/c`.
fn normalize(path: &Path) -> String {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    out.display().to_string()
}

/// A pod name shaped as the Deployment controller makes it:
/// `<deployment>-<pod-template-hash>-<5 characters>`, the hash an FNV-1a of
/// the pod template whose digits are spelt in the controller's alphabet (so a
/// new template is a new ReplicaSet's name, and `--tls-node-rule`'s pattern
/// must admit both).
fn pod_name(deploy: &Value, n: u32) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let fnv = |bytes: &[u8]| {
        bytes
            .iter()
            .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
    };
    let spell = |n: u32| -> String {
        n.to_string()
            .bytes()
            .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
            .collect()
    };
    let template = deploy["spec"]["template"].to_string();
    let suffix = spell(fnv(format!("{}-{n}", std::process::id()).as_bytes()));
    format!(
        "{}-{}-{}",
        deploy["metadata"]["name"].as_str().unwrap(),
        spell(fnv(template.as_bytes())),
        &suffix[suffix.len() - 5..]
    )
}

// === the cluster ===

/// What the cluster holds besides the manifests: the Secrets (cert-manager's
/// and the operator's), the images' files, persistent volumes, and its DNS.
struct Cluster {
    dir: PathBuf,
    paths: Paths,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Image reference → the directory holding that image's filesystem.
    images: BTreeMap<String, PathBuf>,
    dns: ClusterDns,
    /// The mock provider standing in for each provider of the config.
    mocks: BTreeMap<String, Mock>,
}

/// A container's view of its volumes: mount path → the directory here.
#[derive(Clone, Debug, Default)]
struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    /// Where an absolute path of the container is here, if it is on a volume.
    fn local(&self, path: &str) -> Option<PathBuf> {
        self.0
            .iter()
            .filter_map(|(m, dir)| under(path, m).map(|rest| (m.len(), dir, rest)))
            .max_by_key(|(len, ..)| *len)
            .map(|(_, dir, rest)| if rest.is_empty() { dir.clone() } else { dir.join(rest) })
    }

    /// Every string in `v` that is a path on a volume, mapped.
    fn map_strings(&self, v: &mut Value) {
        match v {
            Value::String(s) if s.starts_with('/') => {
                if let Some(p) = self.local(s) {
                    *s = p.display().to_string();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.map_strings(x)),
            Value::Object(m) => m.values_mut().for_each(|x| self.map_strings(x)),
            _ => {}
        }
    }
}

/// Writes a ConfigMap's or Secret's keys into `dir` the way the kubelet's
/// atomic writer does: the files in a timestamped directory, `..data` a link
/// to it, each key a link through `..data` (what lets rotation be one rename).
fn kubelet_volume(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let stamp = "..2026_12_01_12_00_00.000000001";
    std::fs::create_dir_all(dir.join(stamp)).unwrap();
    for (key, bytes) in files {
        std::fs::write(dir.join(stamp).join(key), bytes).unwrap();
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
    }
    std::os::unix::fs::symlink(stamp, dir.join("..data")).unwrap();
}

/// The host program for a container's program: the image's binary built here.
fn program(paths: &Paths, image: &str, argv0: Option<&str>) -> PathBuf {
    match argv0 {
        // deploy/container/Containerfile.control-plane's ENTRYPOINT.
        None if image.contains("/switchyard/control-plane") => paths.switchyard.clone(),
        Some("/usr/local/bin/envoy") => paths.envoy.clone(),
        // busybox's (the filter image) and the Envoy image's.
        Some("cp") => PathBuf::from("cp"),
        Some("/bin/bash") => PathBuf::from("bash"),
        other => panic!("no program here for {other:?} in image {image}"),
    }
}

/// A pod's container started (or to start) as a process here.
struct Pod {
    name: String,
    /// The pod's directory (its volumes; Envoy's admin address file).
    root: PathBuf,
    /// The main container's spec.
    spec: Value,
    mounts: Mounts,
    env: BTreeMap<String, String>,
    proc: Option<Proc>,
    paths: Paths,
}

impl Cluster {
    /// Creates pod `name` of `deploy` from render `m`: its volumes, then its
    /// init containers, run to completion. `edit` sees each ConfigMap file
    /// (name, key, text) with the main container's mounts and returns what to
    /// write.
    fn create_pod(
        &self,
        m: &Manifests,
        deploy: &Value,
        name: &str,
        edit: &dyn Fn(&str, &str, &str, &Mounts) -> String,
    ) -> Pod {
        let root = self.dir.join("pods").join(name);
        let spec = &deploy["spec"]["template"]["spec"];
        let main = container(deploy);
        // A volume's directory: where the main container mounts it (so that
        // relative paths between its mounts resolve as in the pod).
        let mut dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
        for vm in main["volumeMounts"].as_array().unwrap() {
            let p = vm["mountPath"].as_str().unwrap().trim_start_matches('/');
            dirs.insert(vm["name"].as_str().unwrap().to_string(), root.join(p));
        }
        let mounts_of = |c: &Value| {
            Mounts(
                c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|vm| {
                        let v = vm["name"].as_str().unwrap();
                        let dir = dirs.get(v).cloned().unwrap_or_else(|| root.join("volumes").join(v));
                        (vm["mountPath"].as_str().unwrap().to_string(), dir)
                    })
                    .collect(),
            )
        };
        let mounts = mounts_of(main);
        for vol in spec["volumes"].as_array().unwrap() {
            let vname = vol["name"].as_str().unwrap();
            let dir = dirs
                .get(vname)
                .cloned()
                .unwrap_or_else(|| root.join("volumes").join(vname));
            if let Some(cm) = vol["configMap"]["name"].as_str() {
                let data = m.get("ConfigMap", cm)["data"].as_object().unwrap();
                let files = data
                    .iter()
                    .map(|(k, text)| (k.clone(), edit(cm, k, text.as_str().unwrap(), &mounts).into_bytes()))
                    .collect();
                kubelet_volume(&dir, &files);
            } else if let Some(secret) = vol["secret"]["secretName"].as_str() {
                let files = self
                    .secrets
                    .get(secret)
                    .unwrap_or_else(|| panic!("Secret {secret}: made by neither cert-manager nor the operator"));
                kubelet_volume(&dir, files);
            } else if vol.get("emptyDir").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
            } else if let Some(claim) = vol["persistentVolumeClaim"]["claimName"].as_str() {
                m.get("PersistentVolumeClaim", claim); // the chart makes the claim
                let pv = self.dir.join("persistent-volumes").join(claim);
                std::fs::create_dir_all(&pv).unwrap();
                std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(&pv, &dir).unwrap();
            } else {
                panic!("volume {vname}: a kind this test does not mount: {vol}");
            }
        }
        // Init containers: their own command, paths outside their mounts
        // being the image's files.
        for init in spec["initContainers"].as_array().into_iter().flatten() {
            let image = init["image"].as_str().unwrap();
            let image_root = self
                .images
                .get(image)
                .unwrap_or_else(|| panic!("no files for image {image}"));
            let mounts = mounts_of(init);
            let argv = args_of(init);
            let args: Vec<String> = argv[1..]
                .iter()
                .map(|a| match mounts.local(a) {
                    Some(p) => p.display().to_string() + if a.ends_with('/') { "/" } else { "" },
                    None if a.starts_with('/') => image_root.join(&a[1..]).display().to_string(),
                    None => a.clone(),
                })
                .collect();
            let out = Command::new(program(&self.paths, image, Some(&argv[0])))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "init container {} of {name}: {}",
                init["name"],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = main["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let value = match (&e["value"], e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                    (Value::String(v), _) => v.clone(),
                    (_, Some("metadata.name")) => name.to_string(),
                    (_, Some("metadata.namespace")) => NAMESPACE.to_string(),
                    _ => panic!("env {e}: not something the test provides"),
                };
                (e["name"].as_str().unwrap().to_string(), value)
            })
            .collect();
        Pod {
            name: name.to_string(),
            root,
            spec: main.clone(),
            mounts,
            env,
            proc: None,
            paths: self.paths.clone(),
        }
    }
}

impl Pod {
    /// The container's argv as the kubelet runs it: `$(VAR)` expanded from its
    /// env; each path on a volume mapped, each `IP:PORT` and `SERVICE:PORT`
    /// whose port is in `ports` (container port → the port here) mapped.
    fn argv(&self, argv: &[String], ports: &BTreeMap<u16, u16>, names: &BTreeSet<String>) -> Vec<String> {
        argv.iter()
            .map(|a| {
                let mut a = a.clone();
                for (k, v) in &self.env {
                    a = a.replace(&format!("$({k})"), v);
                }
                if let Some(p) = self.mounts.local(&a) {
                    return p.display().to_string();
                }
                if let Some((host, port)) = a.rsplit_once(':')
                    && let Some(local) = port.parse::<u16>().ok().and_then(|p| ports.get(&p))
                {
                    if host.parse::<std::net::IpAddr>().is_ok() {
                        // Every address of the pod is its own; here, loopback.
                        return format!("127.0.0.1:{local}");
                    }
                    if names.contains(host) {
                        return format!("{host}:{local}");
                    }
                }
                a
            })
            .collect()
    }

    /// Runs an exec probe or hook (`command`) in the container, with its env
    /// (`env_map` maps values, e.g. pod ports to the ports here).
    async fn exec(&self, command: &Value, env_map: &BTreeMap<String, String>) -> std::process::Output {
        let argv = self.argv(&strings(command), &BTreeMap::new(), &BTreeSet::new());
        let mut cmd = tokio::process::Command::new(program(
            &self.paths,
            self.spec["image"].as_str().unwrap(),
            Some(&argv[0]),
        ));
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, env_map.get(v).unwrap_or(v));
        }
        cmd.output().await.unwrap()
    }
}

// === certificates ===

/// The Secrets cert-manager would write for the render's `Certificate`s:
/// `tls.crt`, `tls.key` and `ca.crt`, each certificate with the common name,
/// DNS names, URIs, usages and key type its spec asks for, signed by its
/// issuer (a self-signed one, or a CA issuer whose Secret is another
/// Certificate's).
fn cert_manager(m: &Manifests) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut cas: BTreeMap<String, CertifiedIssuer<'static, KeyPair>> = BTreeMap::new();
    let mut pending: Vec<&Value> = m.all("Certificate").collect();
    assert!(!pending.is_empty(), "the render has no Certificate");
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|cert| {
            let spec = &cert["spec"];
            assert_eq!(spec["issuerRef"]["kind"], "Issuer", "{cert}");
            let issuer = m.get("Issuer", spec["issuerRef"]["name"].as_str().unwrap());
            let self_signed = issuer["spec"].get("selfSigned").is_some();
            let ca_secret = issuer["spec"]["ca"]["secretName"].as_str();
            if !self_signed && !ca_secret.is_some_and(|s| cas.contains_key(s)) {
                return true; // its CA first
            }
            assert_eq!(spec["privateKey"]["algorithm"], "ECDSA", "{cert}");
            assert_eq!(spec["privateKey"]["size"], 256, "{cert}");
            let is_ca = spec["isCA"] == true;
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = DistinguishedName::new();
            if let Some(cn) = spec["commonName"].as_str() {
                params.distinguished_name.push(DnType::CommonName, cn);
            }
            params.subject_alt_names = strings(&spec["dnsNames"])
                .into_iter()
                .map(|d| SanType::DnsName(d.try_into().unwrap()))
                .chain(
                    strings(&spec["uris"])
                        .into_iter()
                        .map(|u| SanType::URI(u.try_into().unwrap())),
                )
                .collect();
            // cert-manager's default usages; a CA also signs certificates.
            let mut usages = strings(&spec["usages"]);
            if usages.is_empty() {
                usages = vec!["digital signature".into(), "key encipherment".into()];
            }
            if is_ca {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                usages.push("cert sign".into());
            }
            for u in usages {
                match u.as_str() {
                    "server auth" => params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth),
                    "client auth" => params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth),
                    "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
                    "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                    "cert sign" => params.key_usages.push(KeyUsagePurpose::KeyCertSign),
                    other => panic!("usage {other}: not mapped here"),
                }
            }
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let key_pem = key.serialize_pem();
            let secret = spec["secretName"].as_str().unwrap().to_string();
            let (cert_pem, ca_pem) = match ca_secret.filter(|_| !self_signed) {
                Some(ca) => {
                    let issuer = &cas[ca];
                    (params.signed_by(&key, issuer).unwrap().pem(), issuer.pem())
                }
                None => {
                    let issuer = CertifiedIssuer::self_signed(params, key).unwrap();
                    let pem = issuer.pem();
                    if is_ca {
                        cas.insert(secret.clone(), issuer);
                    }
                    (pem.clone(), pem)
                }
            };
            out.insert(
                secret,
                BTreeMap::from([
                    ("tls.crt".to_string(), cert_pem.into_bytes()),
                    ("tls.key".to_string(), key_pem.into_bytes()),
                    ("ca.crt".to_string(), ca_pem.into_bytes()),
                ]),
            );
            false
        });
        assert!(
            pending.len() < before,
            "Certificates whose issuer nobody makes: {pending:?}"
        );
    }
    out
}

// === the cluster's DNS ===

/// The cluster's DNS for the render's Service names: each resolves to
/// 127.0.0.1, where the pods behind it listen here. A pod's resolv.conf points
/// at the cluster DNS; an Envoy here is told by its bootstrap's
/// `typed_dns_resolver_config` (the one thing added to the bootstrap).
struct ClusterDns {
    addr: SocketAddr,
    names: BTreeSet<String>,
    asked: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterDns {
    async fn start(names: BTreeSet<String>) -> ClusterDns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn({
            let (names, asked) = (names.clone(), asked.clone());
            async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    if let Some((answer, name)) = dns_answer(&buf[..n], &names) {
                        asked.lock().unwrap().insert(name);
                        let _ = socket.send_to(&answer, from).await;
                    }
                }
            }
        });
        ClusterDns {
            addr,
            names,
            asked,
            task,
        }
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to one DNS query: an A record 127.0.0.1 for a known name (no
/// AAAA record), NXDOMAIN for any other; and the name asked.
fn dns_answer(q: &[u8], names: &BTreeSet<String>) -> Option<(Vec<u8>, String)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let n = usize::from(*q.get(i)?);
        if n == 0 {
            break;
        }
        labels.push(std::str::from_utf8(q.get(i + 1..i + 1 + n)?).ok()?.to_ascii_lowercase());
        i += 1 + n;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let end = i + 5;
    let name = labels.join(".");
    let known = names.contains(&name);
    let a = known && qtype == 1;
    let mut out = q.get(..2)?.to_vec(); // the query's id
    out.push(0x84 | (q[2] & 0x01)); // an authoritative answer; recursion as asked
    out.push(if known { 0x80 } else { 0x83 }); // NOERROR or NXDOMAIN
    out.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    out.extend_from_slice(q.get(12..end)?);
    if a {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some((out, name))
}

// === the control plane ===

/// The control plane pod: its process and its ports (container port → here).
struct ControlPlane {
    pod: Pod,
    ports: BTreeMap<u16, u16>,
}

/// The container's ports by name.
fn named_ports(c: &Value) -> BTreeMap<String, u16> {
    c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect()
}

impl ControlPlane {
    /// Creates and starts a control-plane pod of render `m` and waits until
    /// its readiness probe passes. `ports`: the ports to listen on here (a
    /// new pod behind the same Service), or none (ephemeral ones).
    async fn start(cluster: &Cluster, m: &Manifests, n: u32, ports: Option<&BTreeMap<u16, u16>>) -> ControlPlane {
        let deploy = m.deployment("control-plane");
        let name = pod_name(deploy, n);
        let pod = cluster.create_pod(m, deploy, &name, &|_, key, text, mounts| {
            assert_eq!(key, "switchyard.yaml", "the config ConfigMap's one file");
            control_plane_config(text, mounts, &cluster.mocks)
        });
        let named = named_ports(&pod.spec);
        let ports = ports
            .cloned()
            .unwrap_or_else(|| named.values().map(|p| (*p, 0)).collect());
        assert!(pod.spec.get("command").is_none(), "the image's entrypoint runs");
        let argv = pod.argv(&args_of(&pod.spec), &ports, &cluster.dns.names);
        let mut cmd = Command::new(program(&cluster.paths, pod.spec["image"].as_str().unwrap(), None));
        cmd.args(&argv).env_clear().envs(&pod.env);
        let mut proc = Proc::spawn(&name, &cluster.dir, &mut cmd);
        let addr = |line: String| -> u16 {
            let a = line
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .to_string();
            a.parse::<SocketAddr>().unwrap().port()
        };
        let t = Duration::from_secs(10);
        let health = addr(proc.wait_for_line("health on ", t));
        let xds = addr(proc.wait_for_line("listening on ", t));
        let status = addr(proc.wait_for_line("status on ", t));
        let admin = addr(proc.wait_for_line("admin API on ", t));
        let bound: BTreeMap<u16, u16> = [
            (named["xds"], xds),
            (named["status"], status),
            (named["admin"], admin),
            (named["health"], health),
        ]
        .into();
        for (p, want) in &ports {
            assert!(
                *want == 0 || bound[p] == *want,
                "port {p}: {want} wanted, {} bound",
                bound[p]
            );
        }
        // readinessProbe: httpGet on a named port.
        let probe = &pod.spec["readinessProbe"]["httpGet"];
        let url = format!(
            "http://127.0.0.1:{}{}",
            bound[&named[probe["port"].as_str().unwrap()]],
            probe["path"].as_str().unwrap()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = reqwest::get(&url).await.map(|r| r.status().as_u16());
            if r.as_ref().is_ok_and(|s| *s == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "{name} not ready: {r:?}\n{}", proc.output());
            tokio::time::sleep(PROBE_PERIOD).await;
        }
        let mut pod = pod;
        pod.proc = Some(proc);
        ControlPlane { pod, ports: bound }
    }
}

/// The control plane's config as the ConfigMap holds it, with what a pod
/// running as a process here needs rewritten, and nothing else:
/// - each provider's `base_url` points at its mock provider (plain HTTP on
///   loopback: the providers' hosts are not reachable from here, and the test
///   must see every request), its path kept;
/// - `listener` (0.0.0.0:8080, the gateway's container port): every gateway
///   pod has that port in its own network namespace; here the pods share one,
///   so each Envoy takes an ephemeral loopback port;
/// - the filter's path (an absolute path in the control plane pod: its
///   emptyDir) maps to that volume's directory here.
fn control_plane_config(text: &str, mounts: &Mounts, mocks: &BTreeMap<String, Mock>) -> String {
    let mut c: Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(c["filter"]["serve"], true, "filter.delivery remote serves the build");
    c["listener"] = json!({ "address": "127.0.0.1", "port": 0 });
    for p in c["providers"].as_array_mut().unwrap() {
        let mock = &mocks[p["name"].as_str().unwrap()];
        let url = p["base_url"].as_str().unwrap();
        let path = url.splitn(4, '/').nth(3).unwrap_or("");
        p["base_url"] = json!(format!("http://{}/{path}", mock.addr));
    }
    mounts.map_strings(&mut c);
    serde_yaml::to_string(&c).unwrap()
}

/// The Secrets the operator makes before installing (docs/deploy.md,
/// "Install"): each provider key file the config names (a mock's key), and the
/// admin token `--admin-token-file` names.
fn operator_secrets(m: &Manifests, mocks: &BTreeMap<String, Mock>) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let deploy = m.deployment("control-plane");
    let args = args_of(container(deploy));
    let config_dir = Path::new(flag(&args, "--config")).parent().unwrap().to_path_buf();
    let mut out: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut put = |path: &str, value: &str| {
        let (volume, key) = volume_at(deploy, path);
        let secret = volume["secret"]["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: not in a Secret"));
        out.entry(secret.to_string())
            .or_default()
            .insert(key, value.as_bytes().to_vec());
    };
    for p in m.config()["providers"].as_array().unwrap() {
        let file = p["api_key"]["file"]
            .as_str()
            .unwrap_or_else(|| panic!("provider {}: a key file expected", p["name"]));
        put(
            &normalize(&config_dir.join(file)),
            &mocks[p["name"].as_str().unwrap()].api_key,
        );
    }
    put(flag(&args, "--admin-token-file"), "sy-admin-chart-fleet-test");
    out
}

// === gateways ===

/// A gateway pod: Envoy, its admin, listener and stats listener addresses here.
struct GatewayPod {
    pod: Pod,
    admin: String,
    url: String,
    /// `http://127.0.0.1:PORT` of the Prometheus port (`http-envoy-prom`).
    stats: String,
    /// `ADMIN_PORT` and `LISTENER_PORT` as the pod has them → the ports here.
    port_env: BTreeMap<String, String>,
}

impl GatewayPod {
    /// Creates and starts a gateway pod of render `m` and waits until the
    /// chart's readiness probe passes; how long that took.
    async fn start(cluster: &Cluster, m: &Manifests, n: u32, cp: &ControlPlane) -> (GatewayPod, Duration) {
        let t = Instant::now();
        let deploy = m.deployment("gateway");
        let name = pod_name(deploy, n);
        let service_ports = service_ports(m, cp);
        let admin_port = std::cell::Cell::new(None);
        let pod = cluster.create_pod(m, deploy, &name, &|_, key, text, mounts| {
            if key == "bootstrap.yaml" {
                let (b, admin) = bootstrap(text, mounts, &service_ports, &cluster.dns);
                admin_port.set(Some(admin));
                b
            } else if key.ends_with(".yaml") {
                let mut v: Value = serde_yaml::from_str(text).unwrap();
                mounts.map_strings(&mut v);
                serde_yaml::to_string(&v).unwrap()
            } else {
                text.to_string()
            }
        });
        let pod_admin_port = admin_port.get().expect("a bootstrap in the ConfigMap");
        let named = named_ports(&pod.spec);
        let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(named["http-envoy-prom"].to_string().as_str()),
            "Prometheus scrapes the stats port"
        );
        let argv = pod.argv(&args_of(&pod.spec), &BTreeMap::new(), &BTreeSet::new());
        let admin_file = pod.root.join("admin.address");
        let mut cmd = Command::new(program(
            &cluster.paths,
            pod.spec["image"].as_str().unwrap(),
            Some(&argv[0]),
        ));
        cmd.args(&argv[1..])
            // The one flag added: where Envoy writes its admin address.
            .arg("--admin-address-path")
            .arg(&admin_file)
            .env_clear()
            .envs(&pod.env);
        let proc = Proc::spawn(&name, &cluster.dir, &mut cmd);
        let pod_listener_port = named["http"];
        let mut gw = GatewayPod {
            pod: Pod {
                proc: Some(proc),
                ..pod
            },
            admin: String::new(),
            url: String::new(),
            stats: String::new(),
            port_env: BTreeMap::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let proc = gw.pod.proc.as_mut().unwrap();
            assert!(proc.is_running(), "{name} exited:\n{}", proc.output());
            assert!(Instant::now() < deadline, "{name} not ready in 30 s");
            if let Ok(a) = std::fs::read_to_string(&admin_file)
                && !a.trim().is_empty()
            {
                gw.admin = format!("http://{}", a.trim());
                if let Some(port) = listener_port(&gw.admin, "switchyard").await
                    && let Some(stats) = listener_port(&gw.admin, "switchyard_prometheus").await
                {
                    gw.url = format!("http://127.0.0.1:{port}");
                    gw.stats = format!("http://127.0.0.1:{stats}");
                    gw.port_env = BTreeMap::from([
                        (
                            pod_admin_port.to_string(),
                            a.trim().rsplit(':').next().unwrap().to_string(),
                        ),
                        (pod_listener_port.to_string(), port.to_string()),
                    ]);
                    if gw.probe("readinessProbe").await {
                        return (gw, t.elapsed());
                    }
                }
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
    }

    /// Scrapes the pod's Prometheus port as Prometheus does (the annotations'
    /// path): Envoy's stats in Prometheus' text format, the filter's among
    /// them; every other path is 404 there. `switchyard_requests_total` by
    /// outcome (`served`…), summed over the other labels.
    async fn scrape(&self) -> BTreeMap<String, f64> {
        let r = reqwest::get(format!("{}/stats/prometheus", self.stats))
            .await
            .unwrap_or_else(|e| panic!("{}: scrape: {e}", self.pod.name));
        assert_eq!(r.status(), 200, "{}: scrape", self.pod.name);
        let samples = parse_exposition(&r.text().await.unwrap());
        assert!(
            samples
                .iter()
                .any(|s| s.name == "switchyard_credentials_ready" && s.value == 1.0),
            "{}: the filter's gauges are in the scrape",
            self.pod.name
        );
        for path in ["/config_dump", "/quitquitquit", "/stats", "/"] {
            let r = reqwest::get(format!("{}{path}", self.stats)).await.unwrap();
            assert_eq!(r.status(), 404, "{}: {path} on the stats port", self.pod.name);
        }
        let mut out = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == "switchyard_requests_total") {
            *out.entry(s.label("outcome").to_string()).or_default() += s.value;
        }
        out
    }

    /// Whether the chart's exec probe `which` passes.
    async fn probe(&self, which: &str) -> bool {
        let command = &self.pod.spec[which]["exec"]["command"];
        self.pod.exec(command, &self.port_env).await.status.success()
    }

    /// The pod goes, as the kubelet ends it: the preStop hook, while (after
    /// `unlisted` has run: the endpoints controller takes the pod out of the
    /// Service) clients move to the other pods, then SIGTERM within what is
    /// left of `terminationGracePeriodSeconds`. How long the hook ran.
    async fn terminate(mut self, grace: Duration, unlisted: impl std::future::Future<Output = ()>) -> Duration {
        let t = Instant::now();
        let hook = self.pod.spec["lifecycle"]["preStop"]["exec"]["command"].clone();
        let (out, ()) = tokio::join!(self.pod.exec(&hook, &self.port_env), unlisted);
        let hook_time = t.elapsed();
        assert!(
            out.status.success(),
            "{}: preStop failed: {}",
            self.pod.name,
            String::from_utf8_lossy(&out.stderr)
        );
        // The drain stopped the gateway's listener (INBOUND), not the stats
        // listener: Prometheus reads the last counters until the pod is gone.
        let port = self.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "{}: the gateway's listener still takes connections after the preStop",
                self.pod.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let served = self.scrape().await.get("served").copied().unwrap_or(0.0);
        assert!(served > 0.0, "{}: served {served} by the last scrape", self.pod.name);
        let left = grace.saturating_sub(hook_time);
        let proc = self.pod.proc.as_mut().unwrap();
        let status = tokio::task::block_in_place(|| proc.terminate(left));
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: Envoy did not exit cleanly on SIGTERM: {status:?}",
            self.pod.name
        );
        hook_time
    }
}

/// Service name and port → the port here, for the render's Services in front
/// of the control plane (port → targetPort → the container port → here).
fn service_ports(m: &Manifests, cp: &ControlPlane) -> BTreeMap<(String, u16), u16> {
    let deploy = m.deployment("control-plane");
    let named = named_ports(container(deploy));
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    let mut out = BTreeMap::new();
    for svc in m.all("Service").filter(|s| &s["spec"]["selector"] == selector) {
        let n = svc["metadata"]["name"].as_str().unwrap();
        for p in svc["spec"]["ports"].as_array().unwrap() {
            let target = match &p["targetPort"] {
                Value::String(name) => named[name.as_str()],
                v => u16::try_from(v.as_u64().unwrap()).unwrap(),
            };
            let port = u16::try_from(p["port"].as_u64().unwrap()).unwrap();
            for host in [
                format!("{n}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"),
                format!("{n}.{NAMESPACE}.svc"),
            ] {
                out.insert((host, port), cp.ports[&target]);
            }
        }
    }
    out
}

/// The gateway bootstrap as the ConfigMap holds it, with what an Envoy
/// here needs rewritten: the admin port (every pod's is 9901 in its own
/// network namespace; here each takes a free one, which the stats listener's
/// cluster dials as it dials the pod's admin), the stats listener's address
/// (the pod's addresses: here an ephemeral loopback port), the port of each
/// Service address (where that Service's pod listens here; the name stays
/// and the cluster DNS answers it), the paths on volumes, and the cluster DNS
/// as resolver. Returns it and the pod's admin port.
fn bootstrap(
    text: &str,
    mounts: &Mounts,
    service_ports: &BTreeMap<(String, u16), u16>,
    dns: &ClusterDns,
) -> (String, u16) {
    let mut b: Value = serde_yaml::from_str(text).unwrap();
    let admin = b.pointer_mut("/admin/address/socket_address").unwrap();
    assert_eq!(admin["address"], "127.0.0.1");
    let pod_admin = u16::try_from(admin["port_value"].as_u64().unwrap()).unwrap();
    let local_admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    admin["port_value"] = json!(local_admin);
    let listeners = b["static_resources"]["listeners"].as_array_mut().unwrap();
    assert_eq!(listeners.len(), 1, "one static listener: Prometheus' port");
    let stats = &mut listeners[0]["address"]["socket_address"];
    assert_eq!(stats["address"], "0.0.0.0", "the pod's addresses");
    *stats = json!({ "address": "127.0.0.1", "port_value": 0 });
    let mut dialled = 0;
    for cluster in b["static_resources"]["clusters"].as_array_mut().unwrap() {
        for e in cluster["load_assignment"]["endpoints"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for lb in e["lb_endpoints"].as_array_mut().into_iter().flatten() {
                let sock = &mut lb["endpoint"]["address"]["socket_address"];
                let key = (
                    sock["address"].as_str().unwrap().to_string(),
                    u16::try_from(sock["port_value"].as_u64().unwrap()).unwrap(),
                );
                if key == ("127.0.0.1".to_string(), pod_admin) {
                    // The pod's own admin (the stats listener's cluster).
                    sock["port_value"] = json!(local_admin);
                    continue;
                }
                let local = *service_ports
                    .get(&key)
                    .unwrap_or_else(|| panic!("the bootstrap dials {key:?}, no Service port of the control plane"));
                sock["port_value"] = json!(local);
                dialled += 1;
            }
        }
    }
    assert_eq!(dialled, 1, "one xDS endpoint");
    assert!(
        b.get("typed_dns_resolver_config").is_none(),
        "the chart chose a resolver"
    );
    b["typed_dns_resolver_config"] = json!({
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{ "socket_address": { "address": "127.0.0.1", "port_value": dns.addr.port() } }],
            "dns_resolver_options": { "no_default_search_domain": true },
        },
    });
    mounts.map_strings(&mut b);
    (serde_yaml::to_string(&b).unwrap(), pod_admin)
}

/// The port Envoy `admin`'s listener `name` is bound to.
async fn listener_port(admin: &str, name: &str) -> Option<u16> {
    let v: Value = reqwest::get(format!("{admin}/listeners?format=json"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["listener_statuses"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)?
        .pointer("/local_address/socket_address/port_value")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// A stat of Envoy `admin` (0 when absent).
async fn stat(admin: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{admin}/stats?filter=^{}$", name.replace('.', "\\.")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// === load ===

/// The gateway Service: the ready pods clients reach, and what each served.
#[derive(Default)]
struct Service {
    /// `(pod, url)` of each endpoint.
    endpoints: RwLock<Vec<(String, String)>>,
    served: Mutex<BTreeMap<String, u64>>,
}

impl Service {
    fn add(&self, gw: &GatewayPod) {
        self.endpoints
            .write()
            .unwrap()
            .push((gw.pod.name.clone(), gw.url.clone()));
    }

    fn remove(&self, pod: &str) {
        self.endpoints.write().unwrap().retain(|(p, _)| p != pod);
    }

    fn served(&self, pod: &str) -> u64 {
        self.served.lock().unwrap().get(pod).copied().unwrap_or(0)
    }
}

/// Clients sending chat requests through the OpenAI API to the Service's
/// endpoints in turn, until stopped; an answer counts only when the mock
/// provider served it, and per pod.
fn load(service: &Arc<Service>, clients: usize) -> Load {
    let (to, by) = (service.clone(), service.clone());
    Load::start(
        clients,
        move |i, turn| {
            let eps = to.endpoints.read().unwrap();
            eps[(i + turn) % eps.len()].clone()
        },
        move |pod, r| {
            let ours = r.headers().get("x-switchyard-provider").is_some_and(|p| p == "openai");
            if ours {
                *by.served.lock().unwrap().entry(pod.to_string()).or_default() += 1;
            }
            ours
        },
    )
}

/// Waits until the active listener of every gateway in `gws` fetches build
/// `sha` from the control plane's Service `url_prefix`; how long it took.
async fn wait_for_build(gws: &[GatewayPod], url_prefix: &str, sha: &str) -> Duration {
    let t = Instant::now();
    for gw in gws {
        loop {
            let (remote, local) = listener_code(&gw.admin).await;
            assert!(!local, "{}: a filter names a local file", gw.pod.name);
            if !remote.is_empty()
                && remote
                    .iter()
                    .all(|(uri, s)| s == sha && *uri == format!("{url_prefix}/filter/v1/{sha}.wasm"))
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{} did not load build {sha}: {remote:?}",
                gw.pod.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t.elapsed()
}

/// Waits until no gateway in `gws` has a listener or filter chain draining
/// (the old build's: a new build is a new filter chain, updated in place).
async fn wait_drained(gws: &[GatewayPod]) -> Duration {
    let t = Instant::now();
    for gw in gws {
        while stat(&gw.admin, "listener_manager.total_listeners_draining").await
            + stat(&gw.admin, "listener_manager.total_filter_chains_draining").await
            > 0
        {
            assert!(t.elapsed() < Duration::from_secs(30), "{}: still draining", gw.pod.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t.elapsed()
}

static POD: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    POD.fetch_add(1, Ordering::Relaxed)
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_fleet_rolls_a_new_filter_and_new_gateways_without_a_failed_request() {
    let t0 = Instant::now();
    let paths = Paths::discover();
    let dir = Scratch::new("chart-fleet");

    // The release as installed; a new filter image; then `kubectl rollout
    // restart` of the gateways (the annotation it sets on the pod template).
    let v1 = Manifests::render(&[]);
    let v2 = Manifests::render(&["--set", "images.filter.tag=0.1.1"]);
    let v3 = Manifests::render(&[
        "--set",
        "images.filter.tag=0.1.1",
        "--set-string",
        "gateway.podAnnotations.kubectl\\.kubernetes\\.io/restartedAt=2026-12-01T12:00:00Z",
    ]);
    let filter_image = |m: &Manifests| {
        m.deployment("control-plane")["spec"]["template"]["spec"]["initContainers"][0]["image"]
            .as_str()
            .expect("filter.delivery remote: the filter's init container is in the control plane pod")
            .to_string()
    };
    assert!(
        m_gateway_has_no_filter(&v1),
        "filter.delivery remote: the gateways have no filter volume"
    );

    // The filter images: the build in /switchyard/filter (Containerfile.filter).
    let build1 = std::fs::read(&paths.wasm).unwrap();
    let build2 = wasm_rebuilt(&build1, b"0.1.1");
    let mut images = BTreeMap::new();
    for (m, build) in [(&v1, &build1), (&v2, &build2)] {
        let root = dir.0.join("images").join(sha256(build));
        std::fs::create_dir_all(root.join("switchyard/filter")).unwrap();
        std::fs::write(root.join("switchyard/filter/switchyard_filter.wasm"), build).unwrap();
        images.insert(filter_image(m), root);
    }
    assert_eq!(images.len(), 2, "a new filter tag is a new image");

    // A mock provider for each provider of the chart's config.
    let mut mocks = BTreeMap::new();
    for p in v1.config()["providers"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let dialect = Dialect::parse(p["dialect"].as_str().unwrap()).unwrap();
        mocks.insert(name.to_string(), Mock::start(&paths, &dir.0, name, dialect, &[]));
    }
    let mut secrets = cert_manager(&v1);
    secrets.extend(operator_secrets(&v1, &mocks));
    let cluster = Cluster {
        dir: dir.0.clone(),
        paths: paths.clone(),
        secrets,
        images,
        dns: ClusterDns::start(v1.dns_names()).await,
        mocks,
    };

    // The release: the control plane, then the gateways' two replicas.
    let mut cp = ControlPlane::start(&cluster, &v1, next(), None).await;
    let cp_host = flag(&args_of(container(v1.deployment("control-plane"))), "--advertise-addr")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let status_port = named_ports(&cp.pod.spec)["status"];
    let served_at = format!("http://{cp_host}:{}", cp.ports[&status_port]);
    let gw_deploy = v1.deployment("gateway");
    assert_eq!(
        gw_deploy["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| *a == "$(POD_NAME)")
            .count(),
        1
    );
    let replicas = v1.get(
        "HorizontalPodAutoscaler",
        gw_deploy["metadata"]["name"].as_str().unwrap(),
    )["spec"]["minReplicas"]
        .as_u64()
        .unwrap();
    assert_eq!(replicas, 2, "the chart's minimum fleet");
    let mut gateways = Vec::new();
    let mut first_ready = Vec::new();
    for _ in 0..replicas {
        let (gw, ready) = GatewayPod::start(&cluster, &v1, next(), &cp).await;
        first_ready.push(ready);
        gateways.push(gw);
    }
    let sha1 = sha256(&build1);
    for gw in &gateways {
        let info: Value = reqwest::get(format!("{}/server_info", gw.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["node"]["id"], gw.pod.name.as_str(), "the pod name is the node id");
    }
    wait_for_build(&gateways, &served_at, &sha1).await;
    let asked = cluster.dns.asked.lock().unwrap().clone();
    assert!(
        asked.contains(&cp_host),
        "the gateways dial the control plane's Service name: {asked:?}"
    );

    let service = Arc::new(Service::default());
    for gw in &gateways {
        service.add(gw);
    }
    let load = load(&service, 4);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Prometheus' view of each pod, through its stats port.
    for gw in &gateways {
        let requests = gw.scrape().await;
        assert!(
            requests.get("served").is_some_and(|n| *n > 0.0),
            "{}: {requests:?}",
            gw.pod.name
        );
    }
    let before_a = load.served();

    // (a) The new filter image. The control plane's Deployment is Recreate:
    // its pod stops (SIGTERM) before the new one starts; the new pod's init
    // container copies the new build into its emptyDir, and the control plane
    // serves it on the same Service (same PVC, Secrets, ConfigMap).
    let cp_deploy = v2.deployment("control-plane");
    assert_eq!(cp_deploy["spec"]["strategy"]["type"], "Recreate");
    let grace = Duration::from_secs(
        cp_deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30),
    );
    let t_a = Instant::now();
    let proc = cp.pod.proc.as_mut().unwrap();
    let exit = tokio::task::block_in_place(|| proc.terminate(grace));
    let cp_stopped = t_a.elapsed();
    assert!(
        exit.is_some_and(|s| s.success()),
        "the control plane did not stop on SIGTERM within {grace:?}: {exit:?}"
    );
    let served_cp_down_from = load.served();
    for gw in &gateways {
        assert!(
            gw.probe("readinessProbe").await,
            "{} unready without the control plane",
            gw.pod.name
        );
    }
    let old_ports = cp.ports.clone();
    cp = ControlPlane::start(&cluster, &v2, next(), Some(&old_ports)).await;
    let cp_back = t_a.elapsed();
    let served_cp_down = load.served() - served_cp_down_from;
    let sha2 = sha256(&build2);
    wait_for_build(&gateways, &served_at, &sha2).await;
    let switched = t_a.elapsed();
    let switched_after_cp = switched - cp_back;
    // Once the old listener has drained, only the new build serves.
    wait_drained(&gateways).await;
    let old_build_gone = t_a.elapsed();
    let by_pod: Vec<u64> = gateways.iter().map(|gw| service.served(&gw.pod.name)).collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (gw, before) in gateways.iter().zip(&by_pod) {
        let n = service.served(&gw.pod.name) - before;
        assert!(n >= 10, "{} served {n} requests with the new build", gw.pod.name);
    }
    let after_a = load.served();

    // (b) The gateways roll: maxSurge 1, maxUnavailable 0. A new pod (the
    // new template's hash in its name) is ready before an old one goes; an old
    // one goes with the chart's preStop hook (envoy-admin.sh drain) while it
    // leaves the Service, then SIGTERM.
    let gw_deploy = v3.deployment("gateway");
    let strategy = &gw_deploy["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0);
    let grace = Duration::from_secs(
        gw_deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    let t_b = Instant::now();
    let mut rolled = Vec::new();
    let mut new_ready = Vec::new();
    let mut drains = Vec::new();
    let mut old_served = Vec::new();
    while !gateways.is_empty() {
        let (gw, ready) = GatewayPod::start(&cluster, &v3, next(), &cp).await;
        assert_ne!(
            gw.pod.name.rsplit_once('-').unwrap().0,
            gateways[0].pod.name.rsplit_once('-').unwrap().0,
            "a new template, a new ReplicaSet"
        );
        new_ready.push(ready);
        service.add(&gw);
        rolled.push(gw);
        let old = gateways.remove(0);
        let name = old.pod.name.clone();
        let svc = service.clone();
        let unlisted = async move {
            // The endpoints controller and kube-proxy take a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            svc.remove(&name);
        };
        let name = old.pod.name.clone();
        drains.push(old.terminate(grace, unlisted).await);
        old_served.push((name.clone(), service.served(&name)));
    }
    let rollout = t_b.elapsed();
    wait_for_build(&rolled, &served_at, &sha2).await;
    let by_pod: Vec<u64> = rolled.iter().map(|gw| service.served(&gw.pod.name)).collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (total, failed) = load.stop().await;
    for (gw, before) in rolled.iter().zip(&by_pod) {
        let n = service.served(&gw.pod.name);
        assert!(n >= 10 && n > *before, "{} served {n} requests", gw.pod.name);
    }

    println!(
        "chart fleet: {total} requests served through the OpenAI API, {} failed, in {:.1} s\n\
         release: control plane and 2 gateways ready (gateways in {:?}), build {sha1:.12} fetched over mTLS from {served_at}\n\
         (a) new filter image: the control plane stopped in {} ms, the new pod ready {} ms after SIGTERM ({served_cp_down} requests served meanwhile); \
         build {sha2:.12} on both gateways {} ms later ({} ms after SIGTERM), the old build drained {} ms after SIGTERM; {} requests during (a)\n\
         (b) gateway rollout: {} ms; new pods ready in {:?}, preStop drains took {:?}; old pods served {:?}, new pods {:?}",
        failed.len(),
        t0.elapsed().as_secs_f64(),
        first_ready,
        cp_stopped.as_millis(),
        cp_back.as_millis(),
        switched_after_cp.as_millis(),
        switched.as_millis(),
        old_build_gone.as_millis(),
        after_a - before_a,
        rollout.as_millis(),
        new_ready,
        drains,
        old_served,
        rolled
            .iter()
            .map(|gw| (gw.pod.name.clone(), service.served(&gw.pod.name)))
            .collect::<Vec<_>>(),
    );
    assert!(failed.is_empty(), "requests failed: {failed:#?}");
}

fn m_gateway_has_no_filter(m: &Manifests) -> bool {
    let spec = &m.deployment("gateway")["spec"]["template"]["spec"];
    spec.get("initContainers").is_none()
        && !spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "filter")
}
