//! The health port (`serve --health-addr`, plain HTTP, loopback by default):
//! `GET /live` answers 200 while the process serves HTTP at all; `GET /ready`
//! answers 200 once the config is loaded and the xDS server is serving, 503
//! before that and again once shutdown has begun. Kubelet probes use it: they
//! cannot present a client certificate to the TLS ports. It tells nothing but
//! those two facts.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Whether the control plane is ready; shared by `serve` and the health port.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks ready (`true`) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn answer(req: &Request<hyper::body::Incoming>, ready: &Readiness) -> (StatusCode, &'static str) {
    match (req.method(), req.uri().path()) {
        (&hyper::Method::GET | &hyper::Method::HEAD, "/live") => (StatusCode::OK, "live\n"),
        (&hyper::Method::GET | &hyper::Method::HEAD, "/ready") => {
            if ready.get() {
                (StatusCode::OK, "ready\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => (StatusCode::NOT_FOUND, "GET /live or /ready\n"),
    }
}

/// Serves `/live` and `/ready` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ready: Readiness) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (code, body) = answer(&req, &ready);
                let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *r.status_mut() = code;
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
