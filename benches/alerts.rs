//! Alert fan-out benchmark: `cargo bench --bench alerts [-- CLIENTS ALERTS]`.
//!
//! Starts the real API (axum, `/ws/alerts`) over an alert hub with its SQLite store on a
//! loopback port, connects CLIENTS websocket clients (default 1,000) with an ops token, then
//! hands the hub a burst of ALERTS raised alerts (default 10,000) in dataflow-sized batches of
//! 100, as fast as it takes them. Every client counts the transitions it receives and the
//! delay from the moment its batch was handed to the hub to the moment the client read it.
//! Prints p50/p99/max delivery latency, the burst's duration and whether any client missed a
//! transition (none may: a lagging client would be told `lagged`, which counts as a miss).

use citybrain::alerts::{Alert, AlertState, Severity};
use citybrain::api::{AppState, app};
use citybrain::auth::{Role, TokenConfig, Tokens, generate, hash};
use citybrain::config::{AlertsConfig, HttpConfig};
use citybrain::hub::Hub;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}}
]}"#;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let clients = args.first().copied().unwrap_or(1000);
    let alerts = args.get(1).copied().unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(clients, alerts));
}

async fn run(clients: usize, alerts: usize) {
    let dir = std::env::temp_dir().join(format!("citybrain-bench-alerts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = AlertsConfig { hold_down_s: 0, escalate_after_s: 0, ..AlertsConfig::default() };
    let hub = Arc::new(Hub::open(Some(&dir.join("alerts.db")), &cfg.hub_options()).unwrap());
    let token = generate();
    let city = citybrain_dataflows::CityModel::from_geojson_str(CITY).unwrap();
    let entry = TokenConfig { name: None, role: Role::Ops, officer: None, sha256: hash(&token) };
    let tokens = Tokens::new(&[entry], &city).unwrap();
    let http = HttpConfig { max_ws_connections: clients + 10, ..HttpConfig::default() };
    let state = AppState::standalone(CITY.to_string(), hub.clone(), tokens, http).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app(state)).await });

    // Connect every client and wait for its snapshot.
    let started = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut req = format!("ws://127.0.0.1:{port}/ws/alerts").into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let ready = ready_tx.clone();
        handles.push(tokio::spawn(async move {
            let _snapshot = ws.next().await;
            let _ = ready.send(()).await;
            // (seq, when read) of every transition; `lagged` counts as a miss.
            let mut got: Vec<(u64, Instant)> = Vec::with_capacity(alerts);
            let mut lagged = false;
            while got.len() < alerts {
                match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                    Ok(Some(Ok(msg))) => {
                        let now = Instant::now();
                        let text = msg.to_text().unwrap_or("");
                        if text.contains("\"lagged\"") {
                            lagged = true;
                        }
                        if let Some(seq) = seq_of(text) {
                            got.push((seq, now));
                        }
                    }
                    _ => break,
                }
            }
            (got, lagged)
        }));
    }
    for _ in 0..clients {
        ready_rx.recv().await.unwrap();
    }
    eprintln!("{clients} clients connected in {:.2} s", started.elapsed().as_secs_f64());

    // The burst: batches of 100, each stamped when handed to the hub.
    let t0: u64 = 1_767_225_600_000;
    let mut handed: Vec<Instant> = Vec::with_capacity(alerts);
    let burst = Instant::now();
    for batch in (0..alerts).collect::<Vec<_>>().chunks(100) {
        let raw: Vec<Alert> = batch.iter().map(|&i| alert(i, t0)).collect();
        let at = Instant::now();
        let n = raw.len();
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.apply(t0, raw)).await.unwrap();
        handed.extend(std::iter::repeat_n(at, n));
    }
    let handed_in = burst.elapsed();
    let mut latencies: Vec<Duration> = Vec::with_capacity(clients * alerts);
    let (mut missed_clients, mut lagged_clients) = (0, 0);
    for h in handles {
        let (got, lagged) = h.await.unwrap();
        lagged_clients += usize::from(lagged);
        let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        if seqs.len() != alerts || seqs.first() != Some(&1) || seqs.last() != Some(&(alerts as u64)) {
            missed_clients += 1;
        }
        for (seq, when) in got {
            if let Some(at) = handed.get(seq as usize - 1) {
                latencies.push(when.saturating_duration_since(*at));
            }
        }
    }
    let delivered_in = burst.elapsed();
    latencies.sort_unstable();
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    println!("alert fan-out: {clients} websocket clients x {alerts} alerts = {} deliveries", latencies.len());
    println!(
        "  burst handed to the hub (stored in SQLite) in {:.2} s; every client had everything after {:.2} s ({:.0} deliveries/s)",
        handed_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        latencies.len() as f64 / delivered_in.as_secs_f64()
    );
    println!(
        "  delivery latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    println!("  clients that missed a transition: {missed_clients} (told `lagged`: {lagged_clients})");
    let _ = std::fs::remove_dir_all(&dir);
    if missed_clients > 0 {
        std::process::exit(1);
    }
}

fn seq_of(text: &str) -> Option<u64> {
    if !text.starts_with("{\"type\":\"transition\"") {
        return None;
    }
    let rest = &text[text.find("\"seq\":")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

fn alert(i: usize, t: u64) -> Alert {
    Alert {
        id: format!("traffic.detector_offline:d-{i}"),
        rule: "traffic.detector_offline".into(),
        severity: Severity::Info,
        state: AlertState::Raised,
        domain: "traffic".into(),
        subject: serde_json::json!({ "sensor": format!("d-{i}") }),
        cell: Some("c1".into()),
        district: Some("d1".into()),
        raised_ts: t,
        cleared_ts: None,
        acked_by: None,
        acked_ts: None,
        message: format!("Detector d-{i} stopped reporting"),
        ack_note: None,
        escalated: false,
    }
}
