//! The admin API (JSON over HTTP/1.1, loopback by default), every request
//! authenticated with the admin token (`Authorization: Bearer <token>`):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/v1/keys` | every key (never the key, never its hash) |
//! | `POST /admin/v1/keys` | create: `{"name", "team", "owner", "metadata", "routes", "targets", "direct", "max_price", "limits": {"rpm","tpm","budget_day_usd","budget_month_usd"}, "expires_at_ms"}`; the answer holds the key, shown this once |
//! | `GET /admin/v1/keys/{id}` | one key, with its meters |
//! | `PATCH /admin/v1/keys/{id}` | change editable fields (JSON merge patch) |
//! | `POST /admin/v1/keys/{id}/revoke` | revoke |
//! | `GET /admin/v1/teams` | every team |
//! | `PUT /admin/v1/teams/{name}` | create or replace `{"limits", "owner"}` |
//! | `GET /admin/v1/usage` | every meter of the current windows |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchyard_core::governance::ct_eq;
use tokio::net::TcpListener;

use super::{AdminError, Governance, subjects_of};

/// Work on the database, run off the async workers.
type Job = Box<dyn FnOnce(&Governance) -> (u16, Value) + Send>;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, governance: Governance, token: String) {
    let token = std::sync::Arc::new(token);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (g, token) = (governance.clone(), token.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (g, token) = (g.clone(), token.clone());
                async move {
                    let (code, body) = handle(req, &g, &token, peer).await;
                    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                    *r.status_mut() =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn error(code: u16, message: &str) -> (u16, Value) {
    (code, json!({"error": {"message": message, "code": code}}))
}

fn authorized(req: &Request<hyper::body::Incoming>, token: &str) -> bool {
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !token.is_empty() && ct_eq(presented.as_bytes(), token.as_bytes())
}

async fn body(req: Request<hyper::body::Incoming>) -> Result<Value, (u16, Value)> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(Duration::from_secs(5), limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return Err(error(400, "unreadable or too large body")),
    };
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| error(400, &format!("body is not JSON: {e}")))
}

fn done<T>(r: Result<T, AdminError>, f: impl FnOnce(T) -> Value) -> (u16, Value) {
    match r {
        Ok(v) => (200, f(v)),
        Err(e) => error(e.status(), &e.to_string()),
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    g: &Governance,
    token: &str,
    peer: SocketAddr,
) -> (u16, Value) {
    if !authorized(&req, token) {
        tracing::warn!("admin API: refused a request from {peer} without the admin token");
        return error(
            401,
            "the admin token is missing or wrong (Authorization: Bearer <token>)",
        );
    }
    let actor = format!("admin-api {peer}");
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path
        .trim_start_matches("/admin/v1/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let g2 = g.clone();
    // The database work is short but blocking: off the async workers.
    let run = |f: Job| async move {
        tokio::task::spawn_blocking(move || f(&g2))
            .await
            .unwrap_or_else(|e| error(500, &e.to_string()))
    };
    match (method, parts.as_slice()) {
        (Method::GET, ["keys"]) => {
            let keys: Vec<Value> = g.keys().iter().map(|k| k.public()).collect();
            (200, json!({"keys": keys}))
        }
        (Method::POST, ["keys"]) => {
            let spec = match body(req).await {
                Ok(b) => b,
                Err(e) => return e,
            };
            run(Box::new(move |g| {
                done(g.create_key(&spec, &actor), |(doc, key)| {
                    json!({"key": key, "record": doc.public(), "note": "the key is shown this once"})
                })
            }))
            .await
        }
        (Method::GET, ["keys", id]) => {
            let meters = g.meters();
            done(g.key(id), |k| {
                let (ks, ts) = subjects_of(&k);
                let mine: Vec<&super::meter::MeterView> = meters
                    .iter()
                    .filter(|m| m.subject == ks || Some(&m.subject) == ts.as_ref())
                    .collect();
                json!({"record": k.public(), "meters": mine})
            })
        }
        (Method::PATCH, ["keys", id]) => {
            let id = id.to_string();
            let patch = match body(req).await {
                Ok(b) => b,
                Err(e) => return e,
            };
            run(Box::new(move |g| {
                done(
                    g.update_key(&id, &patch, &actor),
                    |k| json!({"record": k.public()}),
                )
            }))
            .await
        }
        (Method::POST, ["keys", id, "revoke"]) => {
            let id = id.to_string();
            run(Box::new(move |g| {
                done(g.revoke_key(&id, &actor), |k| json!({"record": k.public()}))
            }))
            .await
        }
        (Method::GET, ["teams"]) => (200, json!({"teams": g.teams()})),
        (Method::PUT, ["teams", name]) => {
            let name = name.to_string();
            let spec = match body(req).await {
                Ok(b) => b,
                Err(e) => return e,
            };
            run(Box::new(move |g| {
                done(g.put_team(&name, &spec, &actor), |t| json!({"team": t}))
            }))
            .await
        }
        (Method::GET, ["usage"]) => (200, json!({"meters": g.meters()})),
        _ => error(404, "unknown admin endpoint (see `switchyard keys --help`)"),
    }
}
