//! The alert hub and the access-controlled API, over real sockets: websocket clients with the
//! tokens of each role, REST calls, the SQLite store across a restart, hold-down and escalation,
//! and `POST /api/ingest` into a live dataflow.

mod common;

use citybrain::alerts::{Alert, AlertState, Severity};
use citybrain::api::{AppState, app};
use citybrain::auth::{Role, TokenConfig, Tokens, generate, hash};
use citybrain::config::{AlertsConfig, HttpConfig};
use citybrain::hub::Hub;
use citybrain_dataflows::{CityModel, Config, Ms};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1,0],[2,0],[2,1],[1,1],[1,0]]]},"properties":{"kind":"cell","id":"c2","district":"d1","officers":["o1","o2"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.1,0.5],[0.4,0.5]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":300,"speed_limit_kmh":60,"lanes":2,"road_class":"arterial"}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.3,0.5]},"properties":{"kind":"detector","id":"k1","segment":"s1","lane":1}}
]}"#;

const MIN: Ms = 60_000;
const T0: Ms = 1_767_225_600_000; // 2026-01-01

/// The tokens of one test: ops, officer o2 (cell c2 only), ingest.
struct Keys {
    ops: String,
    officer: String,
    ingest: String,
}

fn keys() -> (Keys, Tokens) {
    let k = Keys { ops: generate(), officer: generate(), ingest: generate() };
    let entries = [
        TokenConfig { name: Some("desk".into()), role: Role::Ops, officer: None, sha256: hash(&k.ops) },
        TokenConfig { name: None, role: Role::Officer, officer: Some("o2".into()), sha256: hash(&k.officer) },
        TokenConfig { name: None, role: Role::Ingest, officer: None, sha256: hash(&k.ingest) },
    ];
    let city = CityModel::from_geojson_str(CITY).unwrap();
    let tokens = Tokens::new(&entries, &city).unwrap();
    (k, tokens)
}

fn hub(db: &Path, hold_down_s: u64, escalate_after_s: u64) -> Arc<Hub> {
    let cfg = AlertsConfig { hold_down_s, escalate_after_s, restore_grace_s: 600, ..AlertsConfig::default() };
    Arc::new(Hub::open(Some(db), &cfg.hub_options()).unwrap())
}

/// Raw transitions raising `n` alerts in cell c1.
fn many(n: usize) -> Vec<Alert> {
    (0..n).map(|i| raw(&format!("m{i:04}"), Some("c1"), AlertState::Raised, T0, None)).collect()
}

/// Serves `state` on a free loopback port (in the current runtime); returns the port.
async fn serve(state: AppState) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    port
}

fn standalone(hub: Arc<Hub>, tokens: Tokens, http: HttpConfig) -> AppState {
    AppState::standalone(CITY.to_string(), hub, tokens, http).unwrap()
}

/// A dataflow transition as the alert book makes it.
fn raw(id: &str, cell: Option<&str>, state: AlertState, raised: Ms, cleared: Option<Ms>) -> Alert {
    Alert {
        id: id.into(),
        rule: "traffic.incident".into(),
        severity: Severity::Warning,
        state,
        domain: "traffic".into(),
        subject: json!({"segment": "s1", "lane": 1}),
        cell: cell.map(str::to_string),
        district: Some("d1".into()),
        raised_ts: raised,
        cleared_ts: cleared,
        acked_by: None,
        acked_ts: None,
        message: format!("alert {id}"),
        ack_note: None,
        escalated: false,
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(port: u16, path: &str, token: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next message that is not a heartbeat (5 s at most).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("no message in 5 s");
        let v: Value = serde_json::from_str(msg.unwrap().unwrap().to_text().unwrap()).unwrap();
        if v["type"] != "heartbeat" {
            return v;
        }
    }
}

/// Asserts nothing but heartbeats arrives for a moment.
async fn quiet(ws: &mut Ws) {
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "heartbeat", "unexpected {v}");
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

async fn call(method: &str, port: u16, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut req = if method == "POST" { client.post(url) } else { client.get(url) };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_exactly_its_alerts_and_acks_reach_everyone_and_the_store() {
    let dir = common::scratch("api-roles");
    let (k, tokens) = keys();
    let hub = hub(&dir.join("alerts.db"), 0, 0);
    let port = serve(standalone(hub.clone(), tokens, HttpConfig::default())).await;

    let mut ops = ws(port, "/ws/alerts", &k.ops).await;
    let mut officer = ws(port, "/ws/alerts", &k.officer).await;
    let mut critical_only = ws(port, "/ws/alerts?severity=critical", &k.ops).await;
    for c in [&mut ops, &mut officer, &mut critical_only] {
        assert_eq!(next(c).await, json!({"type": "snapshot", "alerts": []}));
    }
    hub.apply(
        T0,
        vec![
            raw("a:c1", Some("c1"), AlertState::Raised, T0, None),
            raw("a:c2", Some("c2"), AlertState::Raised, T0, None),
            raw("a:city", None, AlertState::Raised, T0, None),
        ],
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        let v = next(&mut ops).await;
        assert_eq!(v["type"], "transition");
        seen.push(v["alert"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["a:c1", "a:c2", "a:city"]);
    let v = next(&mut officer).await;
    assert_eq!((v["alert"]["id"].as_str(), v["alert"]["state"].as_str()), (Some("a:c2"), Some("raised")));
    quiet(&mut officer).await;
    quiet(&mut critical_only).await;

    // REST reads are scoped the same way.
    let (st, list) = call("GET", port, "/api/alerts", Some(&k.officer), None).await;
    assert_eq!((st, ids(&list)), (200, vec!["a:c2".to_string()]));
    let (st, list) = call("GET", port, "/api/alerts?cell=c1,c2", Some(&k.ops), None).await;
    assert_eq!((st, ids(&list)), (200, vec!["a:c1".to_string(), "a:c2".to_string()]));
    assert_eq!(call("GET", port, "/api/alerts?cell=c1", Some(&k.officer), None).await.0, 403);
    // A late subscriber's snapshot is scoped too.
    let mut late = ws(port, "/ws/alerts?token=ignored-when-header-present", &k.officer).await;
    assert_eq!(ids(&next(&mut late).await["alerts"]), ["a:c2"]);

    // The officer acknowledges their alert over the websocket: everyone who may see it is told.
    officer.send(json!({"type": "ack", "id": "a:c2", "note": "on my way"}).to_string().into()).await.unwrap();
    let mut got_result = false;
    let mut got_transition = false;
    for _ in 0..2 {
        let v = next(&mut officer).await;
        match v["type"].as_str() {
            Some("ack_result") => got_result = v["ok"] == true,
            Some("transition") => got_transition = v["alert"]["state"] == "acknowledged",
            _ => panic!("{v}"),
        }
    }
    assert!(got_result && got_transition);
    let v = next(&mut ops).await;
    assert_eq!(v["alert"]["state"], "acknowledged");
    assert_eq!(
        (v["alert"]["acked_by"].as_str(), v["alert"]["ack_note"].as_str()),
        (Some("o2"), Some("on my way"))
    );
    assert_eq!(next(&mut late).await["alert"]["acked_by"], "o2");

    // REST acks: outside the officer's cells 403; ops may; twice is a conflict; unknown 404.
    assert_eq!(call("POST", port, "/api/alerts/a:c1/ack", Some(&k.officer), None).await.0, 403);
    let (st, a) =
        call("POST", port, "/api/alerts/a:c1/ack", Some(&k.ops), Some(json!({"note": "seen"}))).await;
    assert_eq!((st, a["acked_by"].as_str(), a["state"].as_str()), (200, Some("desk"), Some("acknowledged")));
    assert_eq!(call("POST", port, "/api/alerts/a:c1/ack", Some(&k.ops), None).await.0, 409);
    assert_eq!(call("POST", port, "/api/alerts/nope/ack", Some(&k.ops), None).await.0, 404);
    assert_eq!(next(&mut ops).await["alert"]["id"], "a:c1");
    quiet(&mut officer).await; // the c1 ack is not theirs to see

    // The store has every transition; history is filtered, scoped and paged.
    let (_, hist) = call("GET", port, "/api/alerts?state=all", Some(&k.ops), None).await;
    let states: Vec<(&str, &str)> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("a:c1", "raised"),
            ("a:c2", "raised"),
            ("a:city", "raised"),
            ("a:c2", "acknowledged"),
            ("a:c1", "acknowledged")
        ]
    );
    let (_, page) = call("GET", port, "/api/alerts?state=all&limit=2&after=2", Some(&k.ops), None).await;
    assert_eq!(
        page.as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        [3, 4]
    );
    let (_, mine) = call("GET", port, "/api/alerts?state=acknowledged", Some(&k.officer), None).await;
    assert_eq!(ids(&mine), ["a:c2"]);
    let since = T0 + 1;
    let (_, none) =
        call("GET", port, &format!("/api/alerts?state=raised&since={since}"), Some(&k.ops), None).await;
    assert_eq!(none, json!([]));
    let (st, _) = call("GET", port, "/api/alerts?since=yesterday", Some(&k.ops), None).await;
    assert_eq!(st, 400);

    // A clear reaches the officer; the active set empties.
    hub.apply(T0 + MIN, vec![raw("a:c2", Some("c2"), AlertState::Cleared, T0, Some(T0 + MIN))]);
    let v = next(&mut officer).await;
    assert_eq!(
        (v["alert"]["state"].as_str(), v["alert"]["cleared_ts"].as_u64()),
        (Some("cleared"), Some(T0 + MIN))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_answer_401_and_403_and_public_ones_200() {
    let dir = common::scratch("api-auth");
    let (k, tokens) = keys();
    let http = HttpConfig { max_body_bytes: 1024, max_ws_connections: 2, ..HttpConfig::default() };
    let port = serve(standalone(hub(&dir.join("a.db"), 0, 0), tokens, http)).await;
    for path in ["/healthz", "/readyz", "/metrics", "/api/openapi.json"] {
        assert_eq!(call("GET", port, path, None, None).await.0, 200, "{path}");
    }
    // (method, path, roles allowed besides ops)
    let routes: [(&str, &str, &[&str]); 8] = [
        ("GET", "/api/city", &["officer"]),
        ("GET", "/api/traffic/segments", &[]),
        ("GET", "/api/traffic/districts", &[]),
        ("GET", "/api/alerts", &["officer"]),
        ("POST", "/api/alerts/x/ack", &["officer"]),
        ("GET", "/ws/alerts", &["officer"]),
        ("GET", "/ws/live", &[]),
        ("POST", "/api/ingest/city/traffic/detector/k1", &["ingest"]),
    ];
    for (method, path, allowed) in routes {
        assert_eq!(call(method, port, path, None, None).await.0, 401, "{method} {path} without a token");
        assert_eq!(
            call(method, port, path, Some("cb_wrong"), None).await.0,
            401,
            "{method} {path} wrong token"
        );
        for (role, token) in [("ops", &k.ops), ("officer", &k.officer), ("ingest", &k.ingest)] {
            let status = call(method, port, path, Some(token), None).await.0;
            if role == "ops" || allowed.contains(&role) {
                assert_ne!(status, 401, "{method} {path} as {role}");
                assert_ne!(status, 403, "{method} {path} as {role}");
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}");
            }
        }
    }
    // 401 carries the challenge; the websocket query token works; the limit of 2 sockets holds.
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/api/alerts")).await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"citybrain\"");
    let url = |t: &str| format!("ws://127.0.0.1:{port}/ws/alerts?token={t}");
    let (_a, _) = tokio_tungstenite::connect_async(url(&k.ops)).await.unwrap();
    let (_b, _) = tokio_tungstenite::connect_async(url(&k.officer)).await.unwrap();
    let third = tokio_tungstenite::connect_async(url(&k.ops)).await.unwrap_err().to_string();
    assert!(third.contains("503"), "{third}");
    // Bodies over the limit: 413. No CORS headers by default.
    let big = json!({"note": "x".repeat(4096)});
    assert_eq!(call("POST", port, "/api/alerts/x/ack", Some(&k.ops), Some(big)).await.0, 413);
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // The OpenAPI description is generated from the routes.
    let (_, api) = call("GET", port, "/api/openapi.json", None, None).await;
    for path in
        ["/api/alerts", "/api/alerts/{id}/ack", "/api/ingest/{topic}", "/ws/alerts", "/ws/live", "/api/city"]
    {
        assert!(api["paths"].get(path).is_some(), "{path} missing from the OpenAPI description");
    }
    assert!(api["components"]["schemas"].get("Alert").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_makes_one_alert_and_unacknowledged_ones_escalate() {
    let dir = common::scratch("api-flap");
    let (k, tokens) = keys();
    let hub = hub(&dir.join("a.db"), 120, 600); // 2 min hold-down, escalation after 10 min
    let port = serve(standalone(hub.clone(), tokens, HttpConfig::default())).await;
    let mut ops = ws(port, "/ws/alerts", &k.ops).await;
    next(&mut ops).await;
    hub.apply(T0, vec![raw("flap", Some("c1"), AlertState::Raised, T0, None)]);
    assert_eq!(next(&mut ops).await["alert"]["state"], "raised");
    // Clears and re-raises every minute for 8 minutes: within the hold-down each time.
    for m in 1..=4 {
        let t = T0 + (2 * m - 1) * MIN;
        hub.apply(t, vec![raw("flap", Some("c1"), AlertState::Cleared, T0, Some(t))]);
        hub.apply(t + MIN, vec![raw("flap", Some("c1"), AlertState::Raised, t + MIN, None)]);
    }
    quiet(&mut ops).await;
    assert_eq!(hub.metrics().flaps.load(std::sync::atomic::Ordering::Relaxed), 4);
    // Ten minutes after the raise, still unacknowledged: escalated once, stamped at the deadline.
    hub.apply(T0 + 12 * MIN, vec![]);
    let v = next(&mut ops).await;
    assert_eq!(v["alert"]["severity"], "critical");
    assert_eq!(
        (v["alert"]["escalated"].as_bool(), v["alert"]["state"].as_str()),
        (Some(true), Some("raised"))
    );
    hub.apply(T0 + 30 * MIN, vec![]);
    quiet(&mut ops).await;
    // A real clear, once the hold-down has passed, carries the time the condition ended.
    hub.apply(T0 + 31 * MIN, vec![raw("flap", Some("c1"), AlertState::Cleared, T0, Some(T0 + 31 * MIN))]);
    quiet(&mut ops).await;
    hub.apply(T0 + 34 * MIN, vec![]);
    let v = next(&mut ops).await;
    assert_eq!(
        (v["alert"]["state"].as_str(), v["alert"]["cleared_ts"].as_u64()),
        (Some("cleared"), Some(T0 + 31 * MIN))
    );
    assert_eq!(v["alert"]["raised_ts"].as_u64(), Some(T0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_active_alerts_and_acks() {
    let dir = common::scratch("api-restart");
    let db = dir.join("alerts.db");
    {
        let (k, tokens) = keys();
        let hub = hub(&db, 0, 0);
        let port = serve(standalone(hub.clone(), tokens, HttpConfig::default())).await;
        hub.apply(
            T0,
            vec![
                raw("kept", Some("c2"), AlertState::Raised, T0, None),
                raw("open", Some("c1"), AlertState::Raised, T0, None),
                raw("done", Some("c1"), AlertState::Raised, T0, None),
            ],
        );
        hub.apply(T0 + MIN, vec![raw("done", Some("c1"), AlertState::Cleared, T0, Some(T0 + MIN))]);
        let (st, _) =
            call("POST", port, "/api/alerts/kept/ack", Some(&k.officer), Some(json!({"note": "n"}))).await;
        assert_eq!(st, 200);
    }
    // A new process: a new hub over the same database, a new server.
    let (k, tokens) = keys();
    let hub = hub(&db, 0, 0);
    let port = serve(standalone(hub.clone(), tokens, HttpConfig::default())).await;
    let (_, active) = call("GET", port, "/api/alerts", Some(&k.ops), None).await;
    assert_eq!(ids(&active), ["kept", "open"]);
    let kept = &active[0];
    assert_eq!(
        (kept["state"].as_str(), kept["acked_by"].as_str(), kept["ack_note"].as_str()),
        (Some("acknowledged"), Some("o2"), Some("n"))
    );
    let (_, hist) = call("GET", port, "/api/alerts?state=all", Some(&k.ops), None).await;
    assert_eq!(hist.as_array().unwrap().len(), 5);
    // The new dataflow raises `kept` again (silently: same alert); `open` never comes back and
    // is cleared when the restore grace (10 min) has passed.
    let mut ops = ws(port, "/ws/alerts", &k.ops).await;
    assert_eq!(ids(&next(&mut ops).await["alerts"]), ["kept", "open"]);
    hub.apply(T0 + 60 * MIN, vec![raw("kept", Some("c2"), AlertState::Raised, T0 + 60 * MIN, None)]);
    quiet(&mut ops).await;
    hub.apply(T0 + 71 * MIN, vec![]);
    let v = next(&mut ops).await;
    assert_eq!((v["alert"]["id"].as_str(), v["alert"]["state"].as_str()), (Some("open"), Some("cleared")));
    assert_eq!(v["seq"], 6, "sequence numbers continue across the restart");
    let (_, active) = call("GET", port, "/api/alerts", Some(&k.ops), None).await;
    assert_eq!(ids(&active), ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_far_future_clock_still_fires_timers() {
    let dir = common::scratch("api-future-clock");
    let db = dir.join("alerts.db");
    {
        // What an older version stored after a sensor stamped 2099: the hub's clock.
        let hub = hub(&db, 0, 600);
        hub.apply(4_070_908_800_000, vec![raw("old", Some("c1"), AlertState::Raised, T0, None)]);
    }
    let (k, tokens) = keys();
    let hub = hub(&db, 0, 600);
    let port = serve(standalone(hub.clone(), tokens, HttpConfig::default())).await;
    let mut ops = ws(port, "/ws/alerts", &k.ops).await;
    next(&mut ops).await;
    hub.apply(T0, vec![raw("x", Some("c1"), AlertState::Raised, T0, None)]);
    assert_eq!(next(&mut ops).await["alert"]["state"], "raised");
    // Nothing is due yet (with the stored 2099 clock, escalation fired at once).
    quiet(&mut ops).await;
    // Ten minutes on: `old` was not raised again (cleared after the restore grace) and `x`,
    // unacknowledged, escalates at its deadline.
    hub.apply(T0 + 12 * MIN, vec![]);
    let (a, b) = (next(&mut ops).await, next(&mut ops).await);
    let mut got: Vec<(String, String, bool)> = [a, b]
        .iter()
        .map(|v| {
            let al = &v["alert"];
            (al["id"].as_str().unwrap().into(), al["state"].as_str().unwrap().into(), al["escalated"] == true)
        })
        .collect();
    got.sort();
    // (`old` had escalated in its first life, under the 2099 clock.)
    assert_eq!(got, [("old".into(), "cleared".into(), true), ("x".into(), "raised".into(), true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_http_feeds_the_live_dataflow_and_bad_json_is_dead_lettered() {
    use citybrain::live::{Live, LiveOptions};
    let dir = common::scratch("api-ingest");
    let (k, tokens) = keys();
    let city = Arc::new(CityModel::from_geojson_str(CITY).unwrap());
    let out: Arc<std::sync::Mutex<Vec<(Ms, usize)>>> = Arc::default();
    let dead: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (o, d) = (out.clone(), dead.clone());
    let live = Live::start(
        city,
        Arc::new(Config::default()),
        LiveOptions { tick: Duration::from_millis(50), ..LiveOptions::default() },
        Arc::new(move |t, records| o.lock().unwrap().push((t, records.len()))),
        Arc::new(move |topic: &str, _: &[u8], why| {
            d.lock().unwrap().push(format!("{topic} {}", why.reason.as_str()))
        }),
    )
    .unwrap();
    let mut state = standalone(hub(&dir.join("a.db"), 0, 0), tokens, HttpConfig::default());
    *state.ingest.lock().unwrap() = Some(live.sender());
    let d = dead.clone();
    state.reject = Arc::new(move |topic: &str, _: &[u8], why| {
        d.lock().unwrap().push(format!("{topic} {}", why.reason.as_str()))
    });
    let gate = state.ingest.clone();
    let port = serve(state).await;
    let reading = |ts: Ms| json!({"sensor": "k1", "segment": "s1", "ts": ts, "interval_s": 30, "count": 5, "occupancy": 0.1, "speed_kmh": 40.0});
    let batch = json!([reading(T0), reading(T0 + 30_000), reading(T0 + 10 * MIN)]);
    let path = "/api/ingest/city/traffic/detector/k1";
    let (st, body) = call("POST", port, path, Some(&k.ingest), Some(batch)).await;
    assert_eq!((st, body), (202, json!({"queued": true})));
    // Not JSON: 400 and a dead letter; a payload of the wrong shape: 202, dead-lettered downstream.
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(&k.ingest)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(call("POST", port, path, Some(&k.ingest), Some(json!({"sensor": "k1"}))).await.0, 202);
    assert_eq!(call("POST", port, "/api/ingest/elsewhere/x", Some(&k.ingest), Some(json!({}))).await.0, 400);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while live.metrics().accepted.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        assert!(std::time::Instant::now() < deadline, "the readings did not reach the dataflow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.lock().unwrap().take();
    tokio::task::spawn_blocking(move || live.shutdown()).await.unwrap().unwrap();
    // The first minute's windows closed and were delivered.
    assert!(out.lock().unwrap().iter().any(|(t, n)| *t >= T0 + MIN && *n > 0));
    let dead = dead.lock().unwrap().clone();
    assert_eq!(
        dead,
        ["city/traffic/detector/k1 malformed_json", "city/traffic/detector/k1 invalid_payload"],
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_told_and_resent_a_snapshot_and_heartbeats_flow() {
    let dir = common::scratch("api-lag");
    let (k, tokens) = keys();
    let cfg = AlertsConfig {
        hold_down_s: 0,
        escalate_after_s: 0,
        broadcast_capacity: 16,
        ..AlertsConfig::default()
    };
    let hub = Arc::new(Hub::open(Some(&dir.join("a.db")), &cfg.hub_options()).unwrap());
    let http = HttpConfig { ws_heartbeat_s: 1, ..HttpConfig::default() };
    let port = serve(standalone(hub.clone(), tokens, http)).await;
    let mut ops = ws(port, "/ws/alerts", &k.ops).await;
    assert_eq!(next(&mut ops).await["type"], "snapshot");
    // 1,000 transitions at once overflow the 16-slot broadcast before the client's task runs.
    hub.apply(T0, many(1000));
    let mut v = next(&mut ops).await;
    let mut streamed = 0;
    while v["type"] == "transition" {
        streamed += 1;
        v = next(&mut ops).await;
    }
    assert_eq!(v["type"], "lagged", "after {streamed} transitions");
    assert!(v["missed"].as_u64().unwrap() > 0);
    let snap = next(&mut ops).await;
    assert_eq!((snap["type"].as_str(), snap["alerts"].as_array().unwrap().len()), (Some("snapshot"), 1000));
    // Then the stream goes on, and heartbeats carry the last sequence number.
    hub.apply(T0 + MIN, vec![raw("m0000", Some("c1"), AlertState::Cleared, T0, Some(T0 + MIN))]);
    let v = next(&mut ops).await;
    assert_eq!((v["alert"]["id"].as_str(), v["seq"].as_u64()), (Some("m0000"), Some(1001)));
    let beat = loop {
        let m = tokio::time::timeout(Duration::from_secs(3), ops.next()).await.unwrap().unwrap().unwrap();
        let b: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if b["type"] == "heartbeat" {
            break b;
        }
    };
    assert_eq!(beat["seq"], 1001);
    ops.send(json!({"type": "ping"}).to_string().into()).await.unwrap();
    assert_eq!(next(&mut ops).await, json!({"type": "pong", "seq": 1001}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_alert_store_pauses_input_and_recovers_without_losing_a_transition() {
    use citybrain::sink::health::OutputHealth;
    let dir = common::scratch("api-store-locked");
    let db = dir.join("alerts.db");
    let (k, tokens) = keys();
    let health = Arc::new(OutputHealth::default());
    let cfg = AlertsConfig { hold_down_s: 0, escalate_after_s: 0, ..AlertsConfig::default() };
    let hub = Arc::new(Hub::open_reporting(Some(&db), &cfg.hub_options(), health.clone()).unwrap());
    let mut state = standalone(hub.clone(), tokens, HttpConfig::default());
    let h = health.clone();
    state.ready = Arc::new(move || if h.healthy() { Ok(()) } else { Err(h.failing().join("; ")) });
    let h = health.clone();
    state.accepting = Arc::new(move || if h.healthy() { Ok(()) } else { Err(h.failing().join("; ")) });
    let port = serve(state).await;
    hub.apply(T0, many(3));
    assert_eq!(hub.flush_store(Duration::from_secs(5)), 0);

    // Another process (a backup, say) holds the database's write lock.
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut ops = ws(port, "/ws/alerts", &k.ops).await;
    assert_eq!(next(&mut ops).await["type"], "snapshot");
    let started = std::time::Instant::now();
    hub.apply(T0 + MIN, vec![raw("m0000", Some("c1"), AlertState::Cleared, T0, Some(T0 + MIN))]);
    hub.apply(T0 + 2 * MIN, vec![raw("late", Some("c1"), AlertState::Raised, T0 + 2 * MIN, None)]);
    // The hub does not wait for the disk: the transitions are out at once.
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert_eq!(next(&mut ops).await["alert"]["id"], "m0000");
    assert_eq!(next(&mut ops).await["alert"]["id"], "late");
    assert_eq!(ids(&call("GET", port, "/api/alerts", Some(&k.ops), None).await.1).len(), 3);
    // The failed commit is reported: not ready, HTTP ingest refused, counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health.healthy() {
        assert!(std::time::Instant::now() < deadline, "the store failure was not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, body) = call("GET", port, "/readyz", None, None).await;
    assert_eq!(st, 503);
    assert!(
        body.as_str().unwrap().contains("alert_store") && body.as_str().unwrap().contains("alerts.db"),
        "{body}"
    );
    let (st, _) =
        call("POST", port, "/api/ingest/city/traffic/detector/k1", Some(&k.ingest), Some(json!({}))).await;
    assert_eq!(st, 503);
    assert!(hub.metrics().store_errors.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(hub.store_backlog(), 2);

    // The lock goes: the retry stores both, in order, and readiness returns.
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(hub.flush_store(Duration::from_secs(10)), 0);
    assert!(health.healthy());
    assert_eq!(call("GET", port, "/readyz", None, None).await.0, 200);
    let (_, hist) = call("GET", port, "/api/alerts?state=all", Some(&k.ops), None).await;
    let seqs: Vec<u64> = hist.as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}
