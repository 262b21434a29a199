//! `xds-load`: simulates a fleet of Envoys on one control plane, for the scale
//! check. Each simulated Envoy opens its own ADS connection, subscribes to CDS, LDS
//! and RDS, and ACKs every response like Envoy does. Once all have the current
//! config, the config file is touched (a comment line appended, which changes its
//! version) and the time until every client has the new version is reported.
//!
//! Usage: `xds-load --xds 127.0.0.1:18000 --config FILE [--clients 50]`
//! Prints `converged N clients in X ms` and exits 0, or exits 1 after 30 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use switchyard_control_plane::xds::resources::{ROUTE_NAME, type_url};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Latest version each client has ACKed, per type.
type Seen = Arc<Mutex<HashMap<usize, HashMap<String, String>>>>;

async fn client(i: usize, xds: String, seen: Seen) -> Result<(), String> {
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let node = Node {
        id: format!("sim-envoy-{i}"),
        cluster: "switchyard".into(),
        ..Default::default()
    };
    for (ty, names) in [
        (type_url::CLUSTER, vec![]),
        (type_url::LISTENER, vec![]),
        (type_url::ROUTE, vec![ROUTE_NAME.to_string()]),
    ] {
        let req = DiscoveryRequest {
            node: Some(node.clone()),
            type_url: ty.to_string(),
            resource_names: names,
            ..Default::default()
        };
        tx.send(req).await.map_err(|e| e.to_string())?;
    }
    let mut inbound = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    while let Some(resp) = inbound.message().await.map_err(|e| e.to_string())? {
        let ack = DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: if resp.type_url == type_url::ROUTE {
                vec![ROUTE_NAME.to_string()]
            } else {
                vec![]
            },
            ..Default::default()
        };
        tx.send(ack).await.map_err(|e| e.to_string())?;
        if let Ok(mut s) = seen.lock() {
            s.entry(i)
                .or_default()
                .insert(resp.type_url, resp.version_info);
        }
    }
    Ok(())
}

/// The version every client has for every type, if they all agree.
fn common_version(seen: &Seen, clients: usize) -> Option<String> {
    let s = seen.lock().ok()?;
    if s.len() < clients {
        return None;
    }
    let mut version = None;
    for types in s.values() {
        if types.len() < 3 {
            return None;
        }
        for v in types.values() {
            match &version {
                None => version = Some(v.clone()),
                Some(x) if x != v => return None,
                _ => {}
            }
        }
    }
    version
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut xds, mut config, mut clients) = (String::from("127.0.0.1:18000"), None, 50usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--xds" => xds = args.next().unwrap_or_default(),
            "--config" => config = args.next(),
            "--clients" => clients = args.next().and_then(|n| n.parse().ok()).unwrap_or(50),
            other => {
                eprintln!("xds-load: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("usage: xds-load --xds ADDR --config FILE [--clients N]");
        std::process::exit(2);
    };
    let seen: Seen = Arc::default();
    for i in 0..clients {
        let (xds, seen) = (xds.clone(), seen.clone());
        tokio::spawn(async move {
            if let Err(e) = client(i, xds, seen).await {
                eprintln!("xds-load: client {i}: {e}");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait = |target: Option<String>| {
        let seen = seen.clone();
        async move {
            loop {
                if let Some(v) = common_version(&seen, clients)
                    && target.as_ref().is_none_or(|t| *t != v)
                {
                    return v;
                }
                if Instant::now() > deadline {
                    eprintln!("xds-load: clients did not converge in 30 s");
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let first = wait(None).await;
    println!("{clients} clients have version {first}");
    let touched = Instant::now();
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str(&format!(
        "\n# touched by xds-load at {:?}\n",
        std::time::SystemTime::now()
    ));
    if let Err(e) = std::fs::write(&config, text) {
        eprintln!("xds-load: cannot touch {config}: {e}");
        std::process::exit(1);
    }
    let second = wait(Some(first)).await;
    println!(
        "converged {clients} clients in {} ms (version {second}; file change to last ACK, 250 ms file poll included)",
        touched.elapsed().as_millis()
    );
}
