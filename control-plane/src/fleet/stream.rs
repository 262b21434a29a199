//! The fleet stream (`switchyard.fleet.v1.Fleet/Stream`, served on the xDS
//! port): one bidirectional gRPC stream per Envoy. Reports come up when a
//! filter has news; state goes down only when something this node sees
//! changed, plus a heartbeat.
//!
//! A report is checked and answered by the same functions as the HTTP
//! exchange ([`super::check_report`], [`Exchange::answer`]); the stream sends
//! only the parts of that answer that differ from what it sent its node last.
//!
//! The [`Hub`] holds what every stream compares against between reports: the
//! fleet-wide view (targets set aside, effective weights, drill faults, the
//! credentials' version). It is recomputed after every report and on a short
//! timer (drills end, circuits expire, config reloads); when a part changed it
//! wakes every stream, and each sends its node only the parts that differ
//! from what it last sent. Governance (grants, the key table) goes down as the
//! answer to a report, as over HTTP. Every state carries this process's epoch
//! and a version from one counter, so a filter never applies an older state
//! over a newer one (`fleet.proto`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use switchyard_core::fleet::{Credentials, Fault, HEARTBEAT_MS, Push, State, Targets};
use switchyard_proto::convert;
use switchyard_proto::fleet::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::answer::Exchange;
use super::check_report;
use crate::xds::server::{Gate, Registry};

/// How long a stream waits for its node's xDS stream (a control plane that
/// just started sees both reconnect at once) before refusing it.
const KNOWN_WAIT: Duration = Duration::from_secs(5);

/// How often the hub looks for changes nobody reported (drills ending,
/// circuits expiring, keys changing, config reloads).
const REFRESH: Duration = Duration::from_millis(100);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new epoch: random per process (the clock, the process id and the
/// address of a stack value, hashed).
fn new_epoch() -> String {
    use sha2::Digest as _;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?} {} {:p} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        &KNOWN_WAIT,
        CALLS.fetch_add(1, Ordering::Relaxed)
    );
    let digest = sha2::Sha256::digest(seed.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Whether two target views differ in a way a filter would notice: open
/// targets and their times, or a weight moved by at least 0.01 (the smoothed
/// rates move a little with every report; a push per report to every node
/// would be noise).
fn targets_differ(a: &Targets, b: &Targets) -> bool {
    let q = |f: f64| (f * 100.0).round() as i64;
    a.open != b.open
        || a.weights.len() != b.weights.len()
        || a.weights
            .iter()
            .zip(&b.weights)
            .any(|(x, y)| x.target != y.target || q(x.factor) != q(y.factor))
}

/// The fleet-wide parts every stream compares against.
#[derive(Debug, Default)]
struct View {
    targets: Arc<Targets>,
    faults: Arc<Vec<Fault>>,
    credentials: Arc<Credentials>,
    /// The key table's version.
    table: String,
    /// Governance's count of meters found lean (credit to withdraw).
    lean: u64,
    serial: u64,
}

struct Inner {
    epoch: String,
    version: AtomicU64,
    exchange: Exchange,
    registry: Registry,
    view: Mutex<View>,
    changed: watch::Sender<u64>,
    policy: Option<crate::tls::NodePolicy>,
    heartbeat: Duration,
}

/// What the fleet streams share; cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("epoch", &self.0.epoch).finish()
    }
}

impl Hub {
    /// A hub answering with `exchange` (shared with the HTTP exchange); with
    /// `policy` (TLS), a stream's client certificate must name its node.
    pub fn new(
        exchange: Exchange,
        registry: Registry,
        policy: Option<crate::tls::NodePolicy>,
    ) -> Hub {
        let (changed, _) = watch::channel(0);
        let hub = Hub(Arc::new(Inner {
            epoch: new_epoch(),
            version: AtomicU64::new(0),
            exchange,
            registry,
            view: Mutex::new(View::default()),
            changed,
            policy,
            heartbeat: Duration::from_millis(HEARTBEAT_MS),
        }));
        hub.refresh(now_ms());
        tracing::info!(epoch = %hub.0.epoch, "fleet stream epoch");
        hub
    }

    /// This process's epoch.
    pub fn epoch(&self) -> &str {
        &self.0.epoch
    }

    /// Looks for changes on a timer (until the runtime stops).
    pub fn spawn_refresh(&self) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                hub.refresh(now_ms());
            }
        });
    }

    /// Wakes every stream now (a drill started or was aborted).
    pub fn poke(&self) {
        self.refresh(now_ms());
    }

    /// Recomputes the fleet-wide view; wakes every stream when a part changed.
    fn refresh(&self, now: u64) {
        let x = &self.0.exchange;
        let snapshot = x.snapshots.borrow().clone();
        let targets = x
            .fleet
            .targets(&snapshot.targets, snapshot.adaptive_weights.as_ref(), now);
        let faults = x.drills.faults(now);
        let table = x.governance.version();
        let lean = x.governance.lean_serial();
        let serial = {
            let Ok(mut v) = self.0.view.lock() else {
                return;
            };
            let mut changed = false;
            if targets_differ(&v.targets, &targets) {
                v.targets = Arc::new(targets);
                changed = true;
            }
            if *v.faults != faults {
                v.faults = Arc::new(faults);
                changed = true;
            }
            if v.table != table {
                v.table = table;
                changed = true;
            }
            if v.lean != lean {
                v.lean = lean;
                changed = true;
            }
            if v.credentials.version != snapshot.credentials.version {
                v.credentials = snapshot.credentials.clone();
                changed = true;
            }
            if !changed {
                return;
            }
            v.serial += 1;
            v.serial
        };
        self.0.changed.send_replace(serial);
    }

    fn next_version(&self) -> u64 {
        self.0.version.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn view(&self) -> (Arc<Targets>, Arc<Vec<Fault>>, Arc<Credentials>, String, u64) {
        self.0
            .view
            .lock()
            .map(|v| {
                (
                    v.targets.clone(),
                    v.faults.clone(),
                    v.credentials.clone(),
                    v.table.clone(),
                    v.lean,
                )
            })
            .unwrap_or_default()
    }

    /// The tonic service.
    pub fn into_service(self) -> pb::fleet_server::FleetServer<Hub> {
        pb::fleet_server::FleetServer::new(self)
            .max_decoding_message_size(switchyard_core::fleet::MAX_REPORT_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    fn gate<T>(&self, request: &Request<T>) -> Gate {
        match &self.0.policy {
            None => Gate::Open,
            Some(policy) => Gate::Certificate {
                peer: request
                    .extensions()
                    .get::<crate::tls::PeerInfo>()
                    .and_then(|p| p.peer.clone()),
                policy: policy.clone(),
            },
        }
    }
}

type StateStream = Pin<Box<dyn Stream<Item = Result<pb::State, Status>> + Send>>;

#[tonic::async_trait]
impl pb::fleet_server::Fleet for Hub {
    type StreamStream = StateStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::Report>>,
    ) -> Result<Response<StateStream>, Status> {
        let gate = self.gate(&request);
        let (tx, rx) = mpsc::channel(16);
        let session = Session {
            hub: self.clone(),
            gate,
            node: String::new(),
            credentials: String::new(),
            table: None,
            boot: String::new(),
            lean: 0,
            sent_targets: None,
            sent_faults: None,
            tx,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One node's stream.
struct Session {
    hub: Hub,
    gate: Gate,
    node: String,
    /// The key table version the filter holds (as reported, or as sent);
    /// `None` until its first report says.
    table: Option<String>,
    /// The credentials version the filter holds (as reported, or as sent).
    credentials: String,
    /// The Envoy's boot id, as its governance reports say (empty: none yet).
    boot: String,
    /// Governance's lean count when this node was last sent withdrawals.
    lean: u64,
    sent_targets: Option<Arc<Targets>>,
    sent_faults: Option<Arc<Vec<Fault>>>,
    tx: mpsc::Sender<Result<pb::State, Status>>,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::Report>) {
        let mut changed = self.hub.0.changed.subscribe();
        let heartbeat = self.hub.0.heartbeat;
        // A heartbeat goes out after 1.5-2 heartbeats of silence (the filter
        // leaves a stream silent for 3): a filter that reports every heartbeat
        // hears the answers, and gets no heartbeat beside them.
        let mut beat = tokio::time::interval(heartbeat / 2);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        let mut last_sent = tokio::time::Instant::now();
        // Ends with the config watcher (on shutdown), as the ADS streams do:
        // a stream never ends by itself, and the server waits for every one.
        let mut snapshots = self.hub.0.exchange.snapshots.clone();
        let end = loop {
            tokio::select! {
                s = snapshots.changed() => {
                    if s.is_err() {
                        break Some(Status::unavailable("the control plane is shutting down"));
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(report)) => {
                        let seq = report.seq;
                        match self.on_report(report).await {
                            // A numbered report is always answered: the
                            // filter keeps what it carried until then.
                            Ok(push) if push.is_some() || seq > 0 => {
                                if self.send(push.unwrap_or_default(), seq).await.is_err() {
                                    break None;
                                }
                                last_sent = tokio::time::Instant::now();
                            }
                            Ok(_) => {}
                            Err(status) => break Some(status),
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => {
                        tracing::debug!(node = %self.node, "fleet stream closed: {e}");
                        break None;
                    }
                },
                c = changed.changed(), if !self.node.is_empty() => {
                    if c.is_err() {
                        break None;
                    }
                    let push = self.diff();
                    if !push.is_heartbeat() {
                        if self.send(push, 0).await.is_err() {
                            break None;
                        }
                        last_sent = tokio::time::Instant::now();
                    }
                }
                _ = beat.tick(), if !self.node.is_empty() => {
                    if last_sent.elapsed() >= heartbeat * 3 / 2 {
                        let push = self.diff();
                        if self.send(push, 0).await.is_err() {
                            break None;
                        }
                        last_sent = tokio::time::Instant::now();
                    }
                }
            }
        };
        if let Some(status) = end {
            tracing::info!(node = %self.node, "fleet stream refused: {}", status.message());
            let _ = self.tx.send(Err(status)).await;
        }
        if !self.node.is_empty() {
            self.hub.0.registry.fleet_stream(&self.node, false);
        }
    }

    /// Sends `push`, answering the report numbered `answers` (0: none).
    async fn send(&mut self, mut push: Push, answers: u64) -> Result<(), ()> {
        push.epoch = self.hub.0.epoch.clone();
        push.version = self.hub.next_version();
        push.heartbeat_ms = self.hub.0.heartbeat.as_millis() as u64;
        let state = pb::State {
            answers,
            ..convert::state(&push)
        };
        self.tx.send(Ok(state)).await.map_err(|_| ())
    }

    /// `targets` when they differ from what this node was sent last (noted
    /// as sent).
    fn targets_news(&mut self, targets: Arc<Targets>) -> Option<Targets> {
        if self
            .sent_targets
            .as_ref()
            .is_some_and(|s| !targets_differ(s, &targets))
        {
            return None;
        }
        let news = (*targets).clone();
        self.sent_targets = Some(targets);
        Some(news)
    }

    /// `faults` when they differ from what this node was sent last (noted as
    /// sent).
    fn faults_news(&mut self, faults: Arc<Vec<Fault>>) -> Option<Vec<Fault>> {
        if self.sent_faults.as_ref().is_some_and(|s| **s == *faults) {
            return None;
        }
        let news = (*faults).clone();
        self.sent_faults = Some(faults);
        Some(news)
    }

    /// The parts of the fleet-wide view that differ from what this node was
    /// sent last.
    fn diff(&mut self) -> Push {
        let (targets, faults, credentials, table, lean) = self.hub.view();
        let mut push = Push {
            targets: self.targets_news(targets),
            faults: self.faults_news(faults),
            ..Push::default()
        };
        if !credentials.version.is_empty() && credentials.version != self.credentials {
            // Only to a node the gate admitted (its certificate, with TLS).
            self.credentials = credentials.version.clone();
            push.credentials = Some((*credentials).clone());
        }
        if let Some(held) = &self.table
            && *held != table
            && let Some(g) = self.hub.0.exchange.governance.table_for(held)
        {
            self.table = Some(g.version.clone());
            push.gov = Some(g);
        }
        if lean != self.lean && !self.boot.is_empty() {
            // A meter turned lean: this Envoy's credit there is withdrawn
            // now, not at its next report (it reports only with news).
            self.lean = lean;
            let governance = &self.hub.0.exchange.governance;
            if let Some(w) = governance.withdrawals_for(&self.boot, now_ms()) {
                match &mut push.gov {
                    Some(g) if !g.version.is_empty() => g.grants.extend(w.grants),
                    Some(_) => {}
                    None => push.gov = Some(w),
                }
            }
        }
        push
    }

    /// The parts of the HTTP exchange's answer `state` that differ from what
    /// this node was sent last (governance always: it answers the report).
    fn changes(&mut self, state: State) -> Push {
        let State {
            open,
            weights,
            gov,
            faults,
            credentials,
        } = state;
        let mut push = Push {
            gov,
            targets: self.targets_news(Arc::new(Targets { open, weights })),
            faults: self.faults_news(Arc::new(faults)),
            ..Push::default()
        };
        if let Some(c) = credentials {
            self.credentials = c.version.clone();
            push.credentials = Some(c);
        }
        if let Some(g) = &push.gov
            && (g.table.is_some() || g.version.is_empty())
        {
            self.table = Some(g.version.clone());
        }
        push
    }

    /// Takes one report; answers with what changed for this node (including
    /// the governance answer to the report's meters).
    async fn on_report(&mut self, report: pb::Report) -> Result<Option<Push>, Status> {
        let first = self.node.is_empty();
        if first {
            self.admit(&report.node).await?;
        } else if !report.node.is_empty() && report.node != self.node {
            return Err(Status::permission_denied(format!(
                "this stream reports for node `{}`, not `{}`",
                self.node, report.node
            )));
        }
        let mut full = convert::full_report(report)
            .map_err(|e| Status::invalid_argument(format!("not a fleet report: {e}")))?;
        full.report.node = self.node.clone();
        let x = &self.hub.0.exchange;
        let snapshot = x.snapshots.borrow().clone();
        // The node was admitted when the stream opened (`admit`).
        let checked = check_report(full, |_| Ok(()), |_| true, &snapshot.targets)
            .map_err(|refused| refused.grpc_status())?;
        let now = now_ms();
        if let Some(g) = checked.gov() {
            self.table = Some(g.table.clone());
            self.boot.clone_from(&g.boot);
        }
        // What the filter holds; the answer carries newer credentials.
        self.credentials = checked.credentials().to_string();
        let state = x.answer(&checked, now).await;
        // Others learn what this report changed (an opened circuit) now.
        self.hub.refresh(now);
        let mut push = self.changes(state);
        if first {
            // A new stream: the whole state, even what is empty.
            push.targets.get_or_insert_with(Targets::default);
            push.faults.get_or_insert_with(Vec::new);
        }
        Ok((first || !push.is_heartbeat()).then_some(push))
    }

    /// The first report names the node: with TLS the certificate must name
    /// it; the node must have an xDS stream to this control plane (waited for
    /// a while: after a restart both streams come back at once).
    async fn admit(&mut self, node: &str) -> Result<(), Status> {
        if node.is_empty() || node.len() > switchyard_core::fleet::MAX_NODE_BYTES {
            return Err(Status::invalid_argument(
                "the first report must name the node (1 to 256 bytes)",
            ));
        }
        self.gate.check(node).map_err(Status::permission_denied)?;
        let deadline = tokio::time::Instant::now() + KNOWN_WAIT;
        while !self.hub.0.registry.may_report(node) {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::failed_precondition(format!(
                    "node `{node}` is not served by this control plane"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.node = node.to_string();
        self.hub.0.registry.fleet_stream(node, true);
        tracing::debug!(node = %node, "fleet stream opened");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::Governance;
    use crate::xds::server::Snapshot;
    use switchyard_core::fleet::{Open, Weight};
    use switchyard_core::governance::Dim;

    #[test]
    fn small_weight_moves_are_not_news() {
        let t = |factor: f64| Targets {
            open: vec![],
            weights: vec![Weight {
                target: "a/m".into(),
                factor,
            }],
        };
        assert!(!targets_differ(&t(0.5012), &t(0.5031)));
        assert!(targets_differ(&t(0.50), &t(0.52)));
        let open = Targets {
            open: vec![Open {
                target: "a/m".into(),
                until_ms: 5,
            }],
            weights: vec![],
        };
        assert!(targets_differ(&open, &Targets::default()));
    }

    /// A control plane with a circuit breaker (3 consecutive failures) on
    /// `a/m`, nodes `e1` and `e2` known over xDS, the fleet service on a
    /// local port; returns the address.
    async fn serve() -> (std::net::SocketAddr, Registry) {
        let (addr, registry, _) = serve_with_governance().await;
        (addr, registry)
    }

    async fn serve_with_governance() -> (std::net::SocketAddr, Registry, Governance) {
        let text = "providers:\n  - {name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1'}\nroutes:\n  - {model: chat, chain: [a/m]}\ncircuit_breaker: { consecutive_failures: 3, base_open_ms: 10000, max_open_ms: 60000 }\n";
        let cfg =
            crate::config::parse(text, "t.yaml", std::path::Path::new("/"), &|_| None).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-stream-{}-{}",
            std::process::id(),
            new_epoch()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let governance = Governance::open(&dir, &cfg.governance).unwrap();
        let kept = governance.clone();
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::from_config(&cfg, 1)));
        std::mem::forget(_tx);
        let registry = Registry::default();
        registry.set_connected("e1", true);
        registry.set_connected("e2", true);
        let exchange = Exchange {
            fleet: crate::fleet::Fleet::default(),
            governance,
            snapshots: rx,
            rates: crate::rates::Window::default(),
            drills: crate::drill::Drills::default(),
        };
        let hub = Hub::new(exchange, registry.clone(), None);
        hub.spawn_refresh();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(hub.into_service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, registry, kept)
    }

    type Client = pb::fleet_client::FleetClient<tonic::transport::Channel>;

    /// Opens a stream as `node`; its first report carries `outcomes`.
    async fn open(
        addr: std::net::SocketAddr,
        node: &str,
        outcomes: Vec<pb::Outcome>,
    ) -> (mpsc::Sender<pb::Report>, Streaming<pb::State>) {
        let first = pb::Report {
            node: node.into(),
            outcomes,
            ..Default::default()
        };
        open_with(addr, first).await
    }

    /// Opens a stream whose first report is `first`.
    async fn open_with(
        addr: std::net::SocketAddr,
        first: pb::Report,
    ) -> (mpsc::Sender<pb::Report>, Streaming<pb::State>) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let states = Client::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        (tx, states)
    }

    async fn next(states: &mut Streaming<pb::State>) -> Push {
        let s = tokio::time::timeout(Duration::from_secs(3), states.message())
            .await
            .expect("a state within 3 s")
            .unwrap()
            .expect("the stream goes on");
        convert::push(s)
    }

    #[tokio::test]
    async fn a_circuit_opened_by_one_node_is_pushed_to_the_other() {
        let (addr, registry) = serve().await;
        let (_up2, mut down2) = open(addr, "e2", vec![]).await;
        let first = next(&mut down2).await;
        assert_eq!(
            first.targets,
            Some(Targets::default()),
            "a new stream gets everything"
        );
        assert_eq!(first.faults, Some(vec![]));
        assert!(first.epoch.len() == 16 && first.version > 0);
        assert_eq!(registry.nodes().get("e2").map(|s| s.fleet_streams), Some(1));

        // e1 reports three failures: its answer and e2's push both say open.
        let failed = pb::Outcome {
            target: "a/m".into(),
            failed: 3,
            ..Default::default()
        };
        let (_up1, mut down1) = open(addr, "e1", vec![failed]).await;
        let answer = next(&mut down1).await;
        let open_ = |p: &Push| {
            p.targets
                .as_ref()
                .map(|t| t.open.iter().map(|o| o.target.clone()).collect::<Vec<_>>())
        };
        assert_eq!(open_(&answer), Some(vec!["a/m".to_string()]));
        let pushed = next(&mut down2).await;
        assert_eq!(open_(&pushed), Some(vec!["a/m".to_string()]), "{pushed:?}");
        assert!(switchyard_core::fleet::is_newer(
            &pushed.epoch,
            pushed.version,
            Some((&first.epoch, first.version))
        ));
        // Nothing changed since: the next thing e2 hears is a heartbeat, not
        // the same state again (none within a second).
        assert!(
            tokio::time::timeout(Duration::from_secs(1), down2.message())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_new_key_is_pushed_to_every_stream_without_a_report() {
        let (addr, _, governance) = serve_with_governance().await;
        // The filter holds no table yet.
        let first = pb::Report {
            node: "e1".into(),
            gov: Some(pb::GovReport {
                boot: "b1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (_tx, mut states) = open_with(addr, first).await;
        let first = next(&mut states).await;
        let held = first.gov.map(|g| g.version).unwrap_or_default();
        let g = governance.clone();
        tokio::task::spawn_blocking(move || {
            g.create_key(&serde_json::json!({"name": "k1"}), "test")
                .unwrap()
        })
        .await
        .unwrap();
        let pushed = next(&mut states).await;
        let gov = pushed.gov.expect("the table is pushed");
        assert_ne!(gov.version, held);
        let table = gov.table.expect("with the table itself");
        assert_eq!(table.keys.len(), 1);
        assert!(gov.grants.is_empty());
    }

    #[tokio::test]
    async fn a_meter_turning_lean_withdraws_credit_from_a_silent_stream() {
        let (addr, _, governance) = serve_with_governance().await;
        let g = governance.clone();
        let (doc, _) = tokio::task::spawn_blocking(move || {
            g.create_key(
                &serde_json::json!({"name": "k1", "limits": {"budget_day_usd": 1.0}}),
                "test",
            )
            .unwrap()
        })
        .await
        .unwrap();
        let subject = format!("k:{}", doc.id);
        let gov = |boot: &str, dims: Vec<pb::DimReport>| {
            Some(pb::GovReport {
                boot: boot.into(),
                table: governance.version(),
                subjects: if dims.is_empty() {
                    vec![]
                } else {
                    vec![pb::SubjectReport {
                        s: subject.clone(),
                        dims,
                    }]
                },
                ..Default::default()
            })
        };
        let report = |node: &str, boot: &str, dims| pb::Report {
            node: node.into(),
            seq: 1,
            gov: gov(boot, dims),
            ..Default::default()
        };
        // Two Envoys: $1 a day, a credit of $0.25 each.
        let (_up1, mut down1) = open_with(addr, report("e1", "b1", vec![])).await;
        next(&mut down1).await;
        let (up2, mut down2) = open_with(addr, report("e2", "b2", vec![])).await;
        next(&mut down2).await;
        let w = Dim::CostDay.window(now_ms());
        let dim = |credit: u64, used: i64, want: u64| pb::DimReport {
            d: pb::Dim::CostDay as i32,
            w,
            credit,
            used,
            want,
            need: 1000,
            ..Default::default()
        };
        // e2 spends its credit and is lent all but e1's; then asks again.
        up2.send(pb::Report {
            seq: 2,
            ..report("", "b2", vec![dim(250_000, 250_000, 1_000_000)])
        })
        .await
        .unwrap();
        next(&mut down2).await;
        up2.send(pb::Report {
            seq: 3,
            ..report("", "b2", vec![dim(0, 0, 1_000)])
        })
        .await
        .unwrap();
        next(&mut down2).await;
        // e1 said nothing since its first report: the withdrawal is pushed.
        let pushed = next(&mut down1).await;
        let grants = pushed.gov.expect("governance news").grants;
        assert_eq!(grants.len(), 1, "{grants:?}");
        assert!(grants[0].no_credit && grants[0].n == 0 && grants[0].s == subject);
    }

    #[tokio::test]
    async fn every_numbered_report_is_answered_even_with_nothing_new() {
        let (addr, _) = serve().await;
        let first = pb::Report {
            node: "e1".into(),
            seq: 1,
            ..Default::default()
        };
        let (up, mut down) = open_with(addr, first).await;
        async fn answer(d: &mut Streaming<pb::State>) -> pb::State {
            tokio::time::timeout(Duration::from_secs(3), d.message())
                .await
                .expect("an answer within 3 s")
                .unwrap()
                .expect("the stream goes on")
        }
        let first = answer(&mut down).await;
        assert_eq!(first.answers, 1);
        // The filter holds the credentials it was sent: nothing is new.
        let held = first.credentials.map(|c| c.version).unwrap_or_default();
        // A heartbeat report with a number: answered (a heartbeat state).
        up.send(pb::Report {
            seq: 2,
            credentials: held.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let second = answer(&mut down).await;
        assert_eq!(second.answers, 2);
        assert!(convert::push(second).is_heartbeat());
        // Without one (an older filter): nothing to say, nothing sent.
        up.send(pb::Report {
            credentials: held,
            ..Default::default()
        })
        .await
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), down.message()).await;
        assert!(got.is_err(), "{got:?}");
    }

    #[tokio::test]
    async fn a_node_not_served_over_xds_is_refused() {
        let (addr, _) = serve().await;
        let (_tx, mut states) = open(addr, "stranger", vec![]).await;
        let e = tokio::time::timeout(Duration::from_secs(10), states.message())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    }

    #[test]
    fn epochs_differ_per_call() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 16);
    }
}
