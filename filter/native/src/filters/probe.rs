//! `probe`: a diagnostics filter (and cluster specifier) for `tests/envoy_probe.rs`. It logs
//! what Envoy's host calls return, one line per event, to the file named by `log=` in its
//! config (stderr without one). Behaviour per request is chosen by the request header
//! `x-probe` (comma-separated flags); the config chooses the role (`role=down` in the HCM
//! chain, `role=up` in the router's `upstream_http_filters`).
//!
//! Config (`key=value;...`): `role`, `log`, `fs_key` (filter state key set by `hold`),
//! `tick_ms` (config ticker period), `callout` (cluster the config calls on its 2nd tick).
//!
//! Flags: `attrs` (dump every attribute id), `bench` (time host calls), `hold` (down: hold
//! headers until the body, then rewrite headers/body, set filter state + metadata from
//! `x-probe-route`, clear the route cache), `noclear`, `uphold` (up: same for the attempt,
//! rewriting `:path`), `rhold` (up: hold the response until its body; a body containing
//! `retry-me` becomes `:status 503`), `localreply` (down: 418 from the request headers),
//! `uplocal` (up: 503 local reply on the first attempt), `rmhdr` (remove
//! `x-probe-remove-me`), `sched` (keep a filter scheduler past the stream; the config commits
//! it later), `tail` (down: append `TAIL` to the empty end-of-stream chunk, so the next filter
//! gets a non-empty last chunk), `panic-req-<role>`/`panic-body-<role>`/`panic-resp-<role>`
//! (panic in that hook of that role), `obsrewrite` (obs: replace the whole request body at its
//! end, e.g. after a `down` probe that buffered it). With `hold`, `x-probe-slots: c1,c2,..` also sets dynamic
//! metadata `switchyard.slot<k>` (read by the probe cluster specifier).
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{
    Attribute, BodyKind, BodyStatus, CalloutResponse, CalloutResult, ClusterSpecifier,
    ConfigHandle, Counter, Filter, FilterConfig, FilterScheduler, Gauge, HeaderMap, HeadersStatus,
    Histogram, RouteContext, Stream,
};
use crate::kv;
use crate::ticker::Ticker;

/// Event id of the config ticker.
const TICK: u64 = 1;

/// Where probe lines go.
struct Sink {
    file: Option<Mutex<File>>,
}

impl Sink {
    fn open(path: Option<&String>) -> Result<Sink, String> {
        let file = match path {
            Some(p) if !p.is_empty() => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("probe log {p}: {e}"))?,
            )),
            _ => None,
        };
        Ok(Sink { file })
    }

    fn line(&self, fields: &[(&str, String)]) {
        let mut line = String::new();
        for (k, v) in fields {
            let _ = write!(line, "{k}={} ", escape(v.as_bytes()));
        }
        line.push('\n');
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => eprint!("probe: {line}"),
        }
    }
}

/// Printable ASCII stays, everything else (and space, `%`, `=`) becomes `%XX`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' && b != b'=' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn show(v: Option<&[u8]>) -> String {
    match v {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "<none>".to_string(),
    }
}

fn preview(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(120)]).into_owned()
}

fn thread_name() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Down,
    Up,
    /// Logs only (placed after a `down` probe to see what a filter after a buffering filter
    /// receives).
    Obs,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Down => "down",
            Role::Up => "up",
            Role::Obs => "obs",
        }
    }
}

struct Shared {
    role: Role,
    sink: Sink,
    fs_key: String,
    callout: Option<String>,
    serial: AtomicU64,
    live: AtomicU64,
    ticks: AtomicU64,
    requests: Option<Counter>,
    by_cluster: Option<Counter>,
    live_gauge: Option<Gauge>,
    body_hist: Option<Histogram>,
    /// Filter schedulers kept past their stream (flag `sched`), committed on the next tick.
    stash: Mutex<Vec<(u64, FilterScheduler)>>,
}

impl Shared {
    fn log(&self, fields: &[(&str, String)]) {
        let mut all = vec![("role", self.role.name().to_string())];
        all.extend(fields.iter().cloned());
        self.sink.line(&all);
    }
}

/// The probe's filter config.
pub struct ProbeConfig {
    shared: Arc<Shared>,
    // Dropped before `shared` (field order): the ticker thread stops before anything else.
    _ticker: Option<Ticker>,
}

impl ProbeConfig {
    pub fn new(config: &[u8], handle: &mut ConfigHandle<'_>) -> Result<ProbeConfig, String> {
        let kv = kv::parse(config);
        let role = match kv.get("role").map(String::as_str) {
            Some("up") => Role::Up,
            Some("obs") => Role::Obs,
            Some("down") | None => Role::Down,
            Some(other) => return Err(format!("probe: unknown role {other:?}")),
        };
        let sink = Sink::open(kv.get("log"))?;
        let requests = handle.define_counter("probe_requests", &["role"]);
        let by_cluster = handle.define_counter("probe_attempts", &["role", "cluster"]);
        let live_gauge = handle.define_gauge("probe_live_filters", &[]);
        let body_hist = handle.define_histogram("probe_request_body_bytes", &[]);
        sink.line(&[
            ("role", role.name().to_string()),
            ("ev", "config_new".to_string()),
            ("thread", thread_name()),
            ("config", String::from_utf8_lossy(config).into_owned()),
            ("define_counter", format!("{:?}", requests.map(|_| ()))),
            ("define_labeled", format!("{:?}", by_cluster.map(|_| ()))),
            ("define_gauge", format!("{:?}", live_gauge.map(|_| ()))),
            ("define_histogram", format!("{:?}", body_hist.map(|_| ()))),
        ]);
        crate::api::log(
            crate::api::Level::Info,
            &format!("probe config created (role {})", role.name()),
        );
        let tick_ms: u64 = kv.get("tick_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        let ticker = match (tick_ms, handle.scheduler()) {
            (0, _) => None,
            (ms, Some(scheduler)) => Some(
                Ticker::start(scheduler, Duration::from_millis(ms), TICK)
                    .map_err(|e| format!("probe: ticker: {e}"))?,
            ),
            (_, None) => return Err("probe: no config scheduler".to_string()),
        };
        Ok(ProbeConfig {
            shared: Arc::new(Shared {
                role,
                sink,
                fs_key: kv
                    .get("fs_key")
                    .cloned()
                    .unwrap_or_else(|| "sy_route".to_string()),
                callout: kv.get("callout").cloned().filter(|c| !c.is_empty()),
                serial: AtomicU64::new(0),
                live: AtomicU64::new(0),
                ticks: AtomicU64::new(0),
                requests: requests.ok(),
                by_cluster: by_cluster.ok(),
                live_gauge: live_gauge.ok(),
                body_hist: body_hist.ok(),
                stash: Mutex::new(Vec::new()),
            }),
            _ticker: ticker,
        })
    }
}

impl Drop for ProbeConfig {
    fn drop(&mut self) {
        self.shared.log(&[
            ("ev", "config_destroy".to_string()),
            ("thread", thread_name()),
        ]);
    }
}

impl FilterConfig for ProbeConfig {
    fn new_filter(&self) -> Box<dyn Filter> {
        let sid = self.shared.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let live = self.shared.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.log(&[
            ("ev", "filter_new".to_string()),
            ("sid", sid.to_string()),
            ("live", live.to_string()),
            ("thread", thread_name()),
        ]);
        Box::new(Probe {
            shared: Arc::clone(&self.shared),
            sid,
            flags: String::new(),
            attempt: None,
            path: Vec::new(),
        })
    }

    fn on_scheduled(&self, config: &mut ConfigHandle<'_>, event_id: u64) {
        let n = self.shared.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 3 {
            self.shared.log(&[
                ("ev", "config_scheduled".to_string()),
                ("event", event_id.to_string()),
                ("tick", n.to_string()),
                ("thread", thread_name()),
            ]);
        }
        if n == 2
            && let Some(cluster) = &self.shared.callout
        {
            let r = config.http_callout(
                cluster,
                &[
                    (":method", b"POST"),
                    (":path", b"/config-callout"),
                    ("host", b"control-plane"),
                    ("content-type", b"text/plain"),
                ],
                b"hello from the config",
                2000,
            );
            self.shared.log(&[
                ("ev", "config_callout_start".to_string()),
                ("result", format!("{r:?}")),
                ("thread", thread_name()),
            ]);
        }
        if n == 3 {
            let late = config.define_counter("probe_late", &[]);
            let inc = self
                .shared
                .requests
                .map(|c| config.increment_counter(c, &["config"], 1));
            self.shared.log(&[
                ("ev", "config_late_metrics".to_string()),
                ("define_after_init", format!("{:?}", late.map(|_| ()))),
                ("config_increment", format!("{inc:?}")),
            ]);
        }
        // Schedulers of streams that are over: commit (abi.h: a no-op), then delete.
        let stash: Vec<(u64, FilterScheduler)> = self
            .shared
            .stash
            .lock()
            .map(|mut s| s.drain(..).collect())
            .unwrap_or_default();
        for (sid, scheduler) in stash {
            scheduler.commit(7);
            drop(scheduler);
            self.shared.log(&[
                ("ev", "stale_scheduler_committed".to_string()),
                ("of_sid", sid.to_string()),
            ]);
        }
    }

    fn on_http_callout_done(
        &self,
        _config: &mut ConfigHandle<'_>,
        callout_id: u64,
        result: CalloutResult,
        response: Option<&CalloutResponse<'_>>,
    ) {
        self.shared.log(&[
            ("ev", "config_callout_done".to_string()),
            ("id", callout_id.to_string()),
            ("result", format!("{result:?}")),
            ("status", format!("{:?}", response.and_then(|r| r.status()))),
            (
                "body",
                response
                    .map(|r| preview(&r.body_bytes()))
                    .unwrap_or_default(),
            ),
            ("thread", thread_name()),
        ]);
    }
}

struct Probe {
    shared: Arc<Shared>,
    sid: u64,
    flags: String,
    attempt: Option<String>,
    path: Vec<u8>,
}

impl Probe {
    fn has(&self, flag: &str) -> bool {
        self.flags.split(',').any(|f| f.trim() == flag)
    }

    fn log(&self, ev: &str, mut fields: Vec<(&str, String)>) {
        let mut all = vec![("ev", ev.to_string()), ("sid", self.sid.to_string())];
        all.append(&mut fields);
        self.shared.log(&all);
    }

    fn body_fields(s: &Stream<'_>, request: bool) -> Vec<(&'static str, String)> {
        let (recv, buf, same) = if request {
            (
                BodyKind::ReceivedRequest,
                BodyKind::BufferedRequest,
                s.received_is_buffered_request_body(),
            )
        } else {
            (
                BodyKind::ReceivedResponse,
                BodyKind::BufferedResponse,
                s.received_is_buffered_response_body(),
            )
        };
        let chunks = |k| {
            s.body_chunks(k)
                .map(|c| c.len().to_string())
                .unwrap_or_else(|| "none".to_string())
        };
        vec![
            ("recv_size", s.body_size(recv).to_string()),
            ("recv_chunks", chunks(recv)),
            ("recv", preview(&s.body_bytes(recv))),
            ("buf_size", s.body_size(buf).to_string()),
            ("buf_chunks", chunks(buf)),
            ("buf", preview(&s.body_bytes(buf))),
            ("recv_is_buf", same.to_string()),
        ]
    }

    fn attrs(&self, s: &Stream<'_>, ev: &str) {
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for id in 0..Attribute::END {
            if let Some(v) = s.attribute_string(Attribute(id)) {
                names.push((format!("s{id}"), preview(v)));
            }
            if let Some(v) = s.attribute_int(Attribute(id)) {
                names.push((format!("i{id}"), v.to_string()));
            }
        }
        for (k, v) in &names {
            fields.push((k.as_str(), v.clone()));
        }
        let mut all = vec![("at", ev.to_string())];
        all.extend(fields);
        self.log("attrs", all);
    }

    fn common(&self, s: &Stream<'_>) -> Vec<(&'static str, String)> {
        vec![
            (
                "attempt_hdr",
                show(s.request_header("x-envoy-attempt-count")),
            ),
            (
                "attempt_attr",
                format!(
                    "{:?}",
                    s.attribute_int(Attribute::UPSTREAM_REQUEST_ATTEMPT_COUNT)
                ),
            ),
            ("cluster", show(s.cluster_name())),
            (
                "xds_cluster",
                show(s.attribute_string(Attribute::XDS_CLUSTER_NAME)),
            ),
            (
                "upstream_addr",
                show(s.attribute_string(Attribute::UPSTREAM_ADDRESS)),
            ),
            (
                "upstream_port",
                format!("{:?}", s.attribute_int(Attribute::UPSTREAM_PORT)),
            ),
            (
                "host_md",
                show(s.metadata_string(crate::api::MetadataSource::Host, "switchyard", "target")),
            ),
            ("fs", show(s.filter_state(&self.shared.fs_key))),
            (
                "md_route",
                show(s.metadata_string(crate::api::MetadataSource::Dynamic, "switchyard", "route")),
            ),
            ("worker", s.worker_index().to_string()),
            ("thread", thread_name()),
        ]
    }

    fn bench(&self, s: &mut Stream<'_>) {
        const N: u32 = 100_000;
        let mut results = Vec::new();
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.request_header(black_box("x-probe")));
        }
        results.push(("get_header_ns", t.elapsed().as_nanos() / u128::from(N)));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.request_header(black_box("x-absent-header")));
        }
        results.push((
            "get_absent_header_ns",
            t.elapsed().as_nanos() / u128::from(N),
        ));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.set_request_header(black_box("x-bench"), black_box(b"1")));
        }
        results.push(("set_header_ns", t.elapsed().as_nanos() / u128::from(N)));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.headers(HeaderMap::RequestHeaders));
        }
        results.push(("get_all_headers_ns", t.elapsed().as_nanos() / u128::from(N)));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.worker_index());
        }
        results.push(("worker_index_ns", t.elapsed().as_nanos() / u128::from(N)));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.attribute_string(Attribute::REQUEST_PATH));
        }
        results.push(("attr_path_ns", t.elapsed().as_nanos() / u128::from(N)));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.set_filter_state(black_box("sy_bench"), black_box(b"x")));
        }
        results.push((
            "set_filter_state_ns",
            t.elapsed().as_nanos() / u128::from(N),
        ));
        let t = Instant::now();
        for _ in 0..N {
            black_box(s.filter_state(black_box("sy_bench")));
        }
        results.push((
            "get_filter_state_ns",
            t.elapsed().as_nanos() / u128::from(N),
        ));
        if let Some(g) = self.shared.live_gauge {
            let t = Instant::now();
            for _ in 0..N {
                let _ = black_box(s.set_gauge(g, &[], 1));
            }
            results.push((
                "set_gauge_no_labels_ns",
                t.elapsed().as_nanos() / u128::from(N),
            ));
        }
        if let Some(c) = self.shared.requests {
            let t = Instant::now();
            for _ in 0..N {
                let _ = black_box(s.increment_counter(c, &["bench"], 1));
            }
            results.push((
                "inc_counter_1_label_ns",
                t.elapsed().as_nanos() / u128::from(N),
            ));
        }
        let n = s.header_values(HeaderMap::RequestHeaders, "x-bench").len();
        let mut fields: Vec<(&str, String)> =
            results.iter().map(|(k, v)| (*k, v.to_string())).collect();
        fields.push(("x_bench_values", n.to_string()));
        self.log("bench", fields);
    }

    /// Down `hold` / up `uphold` at the end of the request body.
    fn rewrite_request(&self, s: &mut Stream<'_>) {
        let whole = s.request_body();
        let (tag, route) = match self.shared.role {
            Role::Down => (
                "DOWN",
                s.request_header("x-probe-route").map(<[u8]>::to_vec),
            ),
            Role::Up | Role::Obs => ("UP", None),
        };
        let slots: Vec<String> = s
            .request_header("x-probe-slots")
            .map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let mut new_body = format!("{tag}[").into_bytes();
        new_body.extend_from_slice(&whole);
        new_body.push(b']');
        let replaced = s.replace_request_body(&new_body);
        let after = s.request_body();
        let cl = s.set_request_header("content-length", new_body.len().to_string().as_bytes());
        let set_hdr = s.set_request_header(
            &format!("x-probe-{}", self.shared.role.name()),
            b"set-in-body",
        );
        let mut fields = vec![
            ("whole", preview(&whole)),
            ("whole_len", whole.len().to_string()),
            ("replaced", replaced.to_string()),
            ("after", preview(&after)),
            ("set_content_length", cl.to_string()),
            ("set_header", set_hdr.to_string()),
        ];
        if let Some(h) = self.shared.body_hist {
            fields.push((
                "hist",
                format!("{:?}", s.record_histogram(h, &[], whole.len() as u64)),
            ));
        }
        match self.shared.role {
            Role::Down => {
                for (i, cluster) in slots.iter().enumerate() {
                    s.set_metadata_string(
                        "switchyard",
                        &format!("slot{}", i + 1),
                        cluster.as_bytes(),
                    );
                }
                if !slots.is_empty() {
                    fields.push(("md_slots", slots.join(",")));
                }
                if let Some(route) = route {
                    let key = self.shared.fs_key.clone();
                    let set = s.set_filter_state(&key, &route);
                    s.set_metadata_string("switchyard", "route", &route);
                    fields.push(("set_fs", set.to_string()));
                    fields.push(("fs_back", show(s.filter_state(&key))));
                }
                fields.push(("cluster_before_clear", show(s.cluster_name())));
                if !self.has("noclear") {
                    s.clear_route_cache();
                }
                fields.push(("cluster_after_clear", show(s.cluster_name())));
            }
            Role::Up | Role::Obs => {
                let mut path = b"/rewritten".to_vec();
                path.extend_from_slice(&self.path);
                let set_path = s.set_request_header(":path", &path);
                fields.push(("set_path", set_path.to_string()));
                fields.push(("path_back", show(s.request_header(":path"))));
            }
        }
        self.log("rewrite_request", fields);
    }

    /// Up `rhold`: decide on the whole response.
    fn classify_response(&self, s: &mut Stream<'_>) {
        let body = s.response_body();
        let status = show(s.response_header(":status"));
        let mut fields = vec![
            ("status", status),
            ("body", preview(&body)),
            ("body_len", body.len().to_string()),
        ];
        if body.windows(8).any(|w| w == b"retry-me") {
            let set = s.set_response_header(":status", b"503");
            fields.push(("set_status_503", set.to_string()));
            fields.push(("status_back", show(s.response_header(":status"))));
        }
        let _ = s.set_response_header("x-probe-up-body-len", body.len().to_string().as_bytes());
        self.log("classify_response", fields);
    }
}

#[allow(clippy::panic)] // the probe panics on purpose to check the fail-closed path
fn deliberate_panic(hook: &str) -> ! {
    panic!("probe: deliberate panic in {hook}");
}

impl Filter for Probe {
    fn on_request_headers(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> HeadersStatus {
        self.flags = show(s.request_header("x-probe"));
        self.attempt = s
            .request_header("x-envoy-attempt-count")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        self.path = s.request_header(":path").unwrap_or_default().to_vec();
        let mut fields = vec![
            ("eos", end_of_stream.to_string()),
            ("flags", self.flags.clone()),
            ("rid", show(s.request_header("x-request-id"))),
            ("path", show(s.request_header(":path"))),
            (
                "nheaders",
                s.headers(HeaderMap::RequestHeaders).len().to_string(),
            ),
            ("buffer_limit", s.buffer_limit().to_string()),
        ];
        fields.extend(self.common(s));
        fields.extend(Self::body_fields(s, true));
        self.log("req_headers", fields);
        let role = self.shared.role.name();
        if let Some(c) = self.shared.requests {
            let _ = s.increment_counter(c, &[role], 1);
        }
        if let Some(c) = self.shared.by_cluster {
            let cluster = show(s.cluster_name());
            let _ = s.increment_counter(c, &[role, &cluster], 1);
        }
        if let Some(g) = self.shared.live_gauge {
            let _ = s.increment_gauge(g, &[], 1);
        }
        if self.shared.role == Role::Obs {
            return HeadersStatus::Continue;
        }
        if self.has("attrs") {
            self.attrs(s, "req_headers");
        }
        if self.has("bench") {
            self.bench(s);
        }
        if self.has("rmhdr") {
            let before = show(s.request_header("x-probe-remove-me"));
            let removed = s.remove_header(HeaderMap::RequestHeaders, "x-probe-remove-me");
            let after = show(s.request_header("x-probe-remove-me"));
            self.log(
                "remove_header",
                vec![
                    ("before", before),
                    ("removed", removed.to_string()),
                    ("after", after),
                ],
            );
        }
        if self.has("sched")
            && let Some(sch) = s.scheduler()
            && let Ok(mut stash) = self.shared.stash.lock()
        {
            stash.push((self.sid, sch));
        }
        if self.has(&format!("panic-req-{role}")) {
            deliberate_panic("on_request_headers");
        }
        match self.shared.role {
            Role::Down => {
                if self.has("localreply") {
                    s.send_response(
                        418,
                        &[("x-probe-local", b"yes")],
                        b"local reply from the probe\n",
                        "probe_local_reply",
                    );
                    self.log("sent_local_reply", vec![("status", "418".to_string())]);
                    return HeadersStatus::StopIteration;
                }
                if self.has("hold") {
                    return HeadersStatus::StopIteration;
                }
            }
            Role::Obs => {}
            Role::Up => {
                let first = matches!(self.attempt.as_deref(), None | Some("1"));
                if self.has("uplocal") && first {
                    s.send_response(
                        503,
                        &[("x-probe-up-local", b"yes")],
                        b"up-local\n",
                        "probe_up_local",
                    );
                    self.log("sent_local_reply", vec![("status", "503".to_string())]);
                    return HeadersStatus::StopIteration;
                }
                if self.has("uphold") {
                    return HeadersStatus::StopIteration;
                }
            }
        }
        HeadersStatus::Continue
    }

    fn on_request_body(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> BodyStatus {
        let mut fields = vec![("eos", end_of_stream.to_string())];
        fields.extend(Self::body_fields(s, true));
        fields.push(("cluster", show(s.cluster_name())));
        self.log("req_body", fields);
        if self.has(&format!("panic-body-{}", self.shared.role.name())) && end_of_stream {
            deliberate_panic("on_request_body");
        }
        if self.shared.role == Role::Down
            && self.has("tail")
            && end_of_stream
            && s.body_size(BodyKind::ReceivedRequest) == 0
        {
            let appended = s.append_body(BodyKind::ReceivedRequest, b"TAIL");
            self.log("tail", vec![("appended", appended.to_string())]);
        }
        let holding = match self.shared.role {
            Role::Down => self.has("hold"),
            Role::Up => self.has("uphold"),
            Role::Obs => {
                if self.has("obsrewrite") && end_of_stream {
                    let whole = s.request_body();
                    let mut new_body = b"OBS[".to_vec();
                    new_body.extend_from_slice(&whole);
                    new_body.push(b']');
                    let replaced = s.replace_request_body(&new_body);
                    let cl = s.set_request_header(
                        "content-length",
                        new_body.len().to_string().as_bytes(),
                    );
                    self.log(
                        "obs_rewrite",
                        vec![
                            ("whole", preview(&whole)),
                            ("replaced", replaced.to_string()),
                            ("after", preview(&s.request_body())),
                            ("set_content_length", cl.to_string()),
                        ],
                    );
                }
                false
            }
        };
        if !holding {
            return BodyStatus::Continue;
        }
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        self.rewrite_request(s);
        BodyStatus::Continue
    }

    fn on_response_headers(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> HeadersStatus {
        let mut fields = vec![
            ("eos", end_of_stream.to_string()),
            ("status", show(s.response_header(":status"))),
        ];
        fields.extend(self.common(s));
        self.log("resp_headers", fields);
        if self.has("attrs") && self.shared.role != Role::Obs {
            self.attrs(s, "resp_headers");
        }
        let tag = format!("x-probe-{}-sid", self.shared.role.name());
        let _ = s.set_response_header(&tag, self.sid.to_string().as_bytes());
        if self.has(&format!("panic-resp-{}", self.shared.role.name())) {
            deliberate_panic("on_response_headers");
        }
        if self.shared.role == Role::Up && self.has("rhold") {
            if end_of_stream {
                self.classify_response(s);
                return HeadersStatus::Continue;
            }
            return HeadersStatus::StopIteration;
        }
        HeadersStatus::Continue
    }

    fn on_response_body(&mut self, s: &mut Stream<'_>, end_of_stream: bool) -> BodyStatus {
        let mut fields = vec![("eos", end_of_stream.to_string())];
        fields.extend(Self::body_fields(s, false));
        self.log("resp_body", fields);
        if self.shared.role == Role::Up && self.has("rhold") {
            if !end_of_stream {
                return BodyStatus::StopIterationAndBuffer;
            }
            self.classify_response(s);
        }
        BodyStatus::Continue
    }

    fn on_stream_complete(&mut self, s: &mut Stream<'_>) {
        let mut fields = vec![
            (
                "code",
                format!("{:?}", s.attribute_int(Attribute::RESPONSE_CODE)),
            ),
            (
                "details",
                show(s.attribute_string(Attribute::RESPONSE_CODE_DETAILS)),
            ),
            (
                "flags_attr",
                show(s.attribute_string(Attribute::RESPONSE_FLAGS)),
            ),
            ("status_hdr", show(s.response_header(":status"))),
        ];
        fields.extend(self.common(s));
        self.log("complete", fields);
        if self.has("attrs") {
            self.attrs(s, "complete");
        }
        if let Some(g) = self.shared.live_gauge {
            let _ = s.decrement_gauge(g, &[], 1);
        }
    }

    fn on_scheduled(&mut self, _s: &mut Stream<'_>, event_id: u64) {
        self.log("filter_scheduled", vec![("event", event_id.to_string())]);
    }

    fn on_local_reply(
        &mut self,
        _s: &mut Stream<'_>,
        status: u32,
        details: &[u8],
        reset_imminent: bool,
    ) {
        self.log(
            "local_reply",
            vec![
                ("status", status.to_string()),
                ("details", preview(details)),
                ("reset", reset_imminent.to_string()),
            ],
        );
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let live = self
            .shared
            .live
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.log(
            "filter_destroy",
            vec![("live", live.to_string()), ("thread", thread_name())],
        );
    }
}

/// The probe cluster specifier: attempt k ([`RouteContext::attempt`]) goes to dynamic metadata
/// `switchyard.slot<k>` if set, else to request header `x-slot<k>`. Logs every call.
pub struct ProbeSpecifier {
    sink: Sink,
    calls: AtomicU64,
}

impl ProbeSpecifier {
    pub fn new(config: &[u8]) -> Result<ProbeSpecifier, String> {
        let kv = kv::parse(config);
        let sink = Sink::open(kv.get("log"))?;
        sink.line(&[
            ("role", "spec".to_string()),
            ("ev", "specifier_new".to_string()),
            ("thread", thread_name()),
        ]);
        Ok(ProbeSpecifier {
            sink,
            calls: AtomicU64::new(0),
        })
    }
}

impl ClusterSpecifier for ProbeSpecifier {
    fn select(&self, route: &mut RouteContext<'_>) -> bool {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let attempt = route
            .header("x-envoy-attempt-count")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let slot = route.attempt();
        let md_slot = route
            .dynamic_metadata("switchyard", &format!("slot{slot}"))
            .map(<[u8]>::to_vec);
        let hdr_slot = route.header(&format!("x-slot{slot}")).map(<[u8]>::to_vec);
        let chosen = md_slot.clone().or_else(|| hdr_slot.clone());
        self.sink.line(&[
            ("role", "spec".to_string()),
            ("ev", "select".to_string()),
            ("call", n.to_string()),
            (
                "attempt_hdr",
                attempt.clone().unwrap_or_else(|| "<none>".to_string()),
            ),
            ("slot", slot.to_string()),
            ("md_slot", show(md_slot.as_deref())),
            ("hdr_slot", show(hdr_slot.as_deref())),
            (
                "md_route",
                show(route.dynamic_metadata("switchyard", "route")),
            ),
            ("rid", show(route.header("x-request-id"))),
            (
                "path_attr",
                show(route.attribute_string(Attribute::REQUEST_PATH)),
            ),
            (
                "attempt_attr",
                format!(
                    "{:?}",
                    route.attribute_int(Attribute::UPSTREAM_REQUEST_ATTEMPT_COUNT)
                ),
            ),
            ("route_name", show(route.route_name())),
            ("nheaders", route.headers().len().to_string()),
            ("chosen", show(chosen.as_deref())),
            ("thread", thread_name()),
        ]);
        match chosen {
            Some(c) => {
                route.set_cluster(&String::from_utf8_lossy(&c));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_lines_parseable() {
        assert_eq!(escape(b"a b=c%\n"), "a%20b%3Dc%25%0A");
        assert_eq!(escape(b"/path?x=1"), "/path?x%3D1");
    }
}
