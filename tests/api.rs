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
    let app = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
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
    for path in ["/healthz", "/readyz", "/metrics", "/api/openapi.json", "/", "/officer"] {
        assert_eq!(call("GET", port, path, None, None).await.0, 200, "{path}");
    }
    for (path, kind) in [("/", "text/html"), ("/assets/vendor/echarts.min.js", "text/javascript")] {
        let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
    }
    assert_eq!(call("GET", port, "/assets/no-such-file.js", None, None).await.0, 404);
    // The charts' history: a known measurement, or 400.
    assert_eq!(
        call("GET", port, "/api/history?measurement=traffic_city", Some(&k.ops), None).await,
        (200, json!([]))
    );
    assert_eq!(call("GET", port, "/api/history?measurement=grid_cell", Some(&k.ops), None).await.0, 400);
    // Who am I: an officer's id and cells, the clock and the city's time zone.
    let (st, me) = call("GET", port, "/api/session", Some(&k.officer), None).await;
    assert_eq!(st, 200);
    assert_eq!(
        (me["role"].as_str(), me["city_tz"].as_str(), me["clock"].as_u64()),
        (Some("officer"), Some("Asia/Shanghai"), Some(0))
    );
    assert!(me["officer"].is_string() && me["cells"].is_array(), "{me}");
    let (_, ops) = call("GET", port, "/api/session", Some(&k.ops), None).await;
    assert_eq!(
        (ops["role"].as_str(), &ops["cells"], &ops["officer"]),
        (Some("ops"), &Value::Null, &Value::Null)
    );
    // The citizen's self-check needs no token (an empty body: 400, not 401).
    assert_eq!(call("POST", port, "/api/health/contact-check", None, None).await.0, 400);
    // (method, path, roles allowed besides ops)
    let routes: [(&str, &str, &[&str]); 11] = [
        ("GET", "/api/session", &["officer", "ingest"]),
        ("GET", "/api/city", &["officer"]),
        ("GET", "/api/traffic/segments", &[]),
        ("GET", "/api/traffic/districts", &[]),
        ("GET", "/api/alerts", &["officer"]),
        ("POST", "/api/alerts/x/ack", &["officer"]),
        ("GET", "/ws/alerts", &["officer"]),
        ("GET", "/ws/live", &[]),
        ("GET", "/api/history?measurement=traffic_district", &[]),
        ("GET", "/api/health/contacts", &["officer"]),
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

/// The emergency API (`/api/emergency/*`) over a live dataflow whose output is consumed as the
/// service does (board, alert hub): reads scoped by role, and dispatches confirmed through
/// ingestion.
mod emergency {
    use super::*;
    use citybrain::alerts::AlertBook;
    use citybrain::live::{Live, LiveOptions};
    use std::sync::Mutex;
    use std::time::Instant;

    /// A live dataflow behind a served API. Ambulances a1 (nearest to i1) and a2, police p1, all
    /// available, on segment s1 in cell c1; medical incidents i1 (cell c1, severity 1) and i2
    /// (cell c2, the officer's, severity 2), reported at T0; the clock pushed past the
    /// unassigned timers (T0 + 60 s) by a detector reading at T0 + 2 min.
    pub(super) struct Em {
        pub(super) port: u16,
        pub(super) keys: Keys,
        live: Option<Live>,
        gate: citybrain::api::IngestGate,
        dead: Arc<Mutex<Vec<String>>>,
    }

    impl Drop for Em {
        /// A failing test stops the dataflow too: its workers would wait for the API's sender
        /// forever, and the test with them.
        fn drop(&mut self) {
            self.gate.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(live) = self.live.take() {
                let _ = live.shutdown();
            }
        }
    }

    async fn start(name: &str) -> Em {
        let unit = |id: &str, kind: &str, lon: f64| json!({"unit": id, "ts": T0, "type": kind, "status": "available", "lon": lon, "lat": 0.5});
        let incident = |id: &str, severity: u8, lon: f64| json!({"incident": id, "ts": T0, "status": "reported", "type": "medical", "severity": severity, "lon": lon, "lat": 0.5});
        let feed = vec![
            ("emergency/unit/a1", unit("a1", "ambulance", 0.15)),
            ("emergency/unit/a2", unit("a2", "ambulance", 0.12)),
            ("emergency/unit/p1", unit("p1", "police", 0.2)),
            ("emergency/incident/i1", incident("i1", 1, 0.35)),
            ("emergency/incident/i2", incident("i2", 2, 1.5)),
            (
                "traffic/detector/k1",
                json!({"sensor": "k1", "segment": "s1", "ts": T0 + 2 * MIN, "interval_s": 30, "count": 0}),
            ),
        ];
        start_with(name, feed).await
    }

    /// The pseudonym key of the decoder and the API in [`start_with`].
    const PSEUDONYM_KEY: &[u8] = b"api-test-pseudonym-key";

    /// A live dataflow behind a served API, fed `feed` (topics below `city/`) through
    /// `POST /api/ingest` as the ingest role.
    pub(super) async fn start_with(name: &str, feed: Vec<(&str, Value)>) -> Em {
        let dir = common::scratch(name);
        let (keys, tokens) = keys();
        let city = Arc::new(CityModel::from_geojson_str(CITY).unwrap());
        let cfg = Arc::new(Config::default());
        let hub = hub(&dir.join("a.db"), 0, 0);
        let mut state = standalone(hub.clone(), tokens, HttpConfig::default());
        state.pseudonyms =
            Arc::new(citybrain_dataflows::pseudonym::Pseudonymizer::new(PSEUDONYM_KEY.to_vec()));
        let (version_tx, version_rx) = tokio::sync::watch::channel(0u64);
        state.board_version = version_rx;
        // The service's output consumer: render, board, hub.
        let (board, c) = (state.board.clone(), city.clone());
        let (book, cf) = (Mutex::new(AlertBook::default()), cfg.clone());
        let consume = move |t: Ms, mut records: Vec<_>| {
            let mut lp = String::new();
            let (_, raw) = book.lock().unwrap().render(t, &mut records, &c, &cf, &mut lp);
            version_tx.send_replace(board.write().unwrap().apply(t, &records));
            hub.apply(t, raw);
        };
        let dead: Arc<Mutex<Vec<String>>> = Arc::default();
        let d = dead.clone();
        let reject = move |topic: &str, _: &[u8], why: &citybrain_dataflows::event::Rejected| {
            d.lock().unwrap().push(format!("{topic} {}", why.reason.as_str()))
        };
        let reject: citybrain::live::RejectSink = Arc::new(reject);
        let opts = LiveOptions {
            tick: Duration::from_millis(50),
            pseudonym_key: PSEUDONYM_KEY.to_vec(),
            ..LiveOptions::default()
        };
        let live = Live::start(city, cfg, opts, Arc::new(consume), reject.clone()).unwrap();
        *state.ingest.lock().unwrap() = Some(live.sender());
        state.reject = reject;
        let gate = state.ingest.clone();
        let port = serve(state).await;

        for (topic, payload) in feed {
            let path = format!("/api/ingest/city/{topic}");
            assert_eq!(call("POST", port, &path, Some(&keys.ingest), Some(payload)).await.0, 202, "{topic}");
        }
        Em { port, keys, live: Some(live), gate, dead }
    }

    impl Em {
        /// GETs `path` as `token` until `ok` holds for the answer (15 s at most); the answer.
        pub(super) async fn until(
            &self,
            path: &str,
            token: &str,
            what: &str,
            ok: impl Fn(&Value) -> bool,
        ) -> Value {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let (st, v) = call("GET", self.port, path, Some(token), None).await;
                assert_eq!(st, 200, "{path}: {v}");
                if ok(&v) {
                    return v;
                }
                assert!(Instant::now() < deadline, "{what}: {path} still answers {v}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        pub(super) async fn get(&self, path: &str, token: &str) -> Value {
            let (st, v) = call("GET", self.port, path, Some(token), None).await;
            assert_eq!(st, 200, "{path}: {v}");
            v
        }

        async fn confirm(&self, incident: &str, token: Option<&str>, body: Value) -> (u16, Value) {
            call("POST", self.port, &format!("/api/emergency/dispatch/{incident}"), token, Some(body)).await
        }

        /// Stops the dataflow; the dead letters it and the API kept.
        pub(super) async fn stop(mut self) -> Vec<String> {
            self.gate.lock().unwrap().take();
            let live = self.live.take().unwrap();
            tokio::task::spawn_blocking(move || live.shutdown()).await.unwrap().unwrap();
            self.dead.lock().unwrap().clone()
        }
    }

    /// `key` of every row (as text), in order.
    pub(super) fn col(rows: &Value, key: &str) -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().map_or_else(|| r[key].to_string(), str::to_string))
            .collect()
    }

    /// The recommended units of `incident`, by rank.
    fn recommended(rows: &Value, incident: &str) -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["incident"] == incident)
            .map(|r| r["unit"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emergency_reads_are_scoped_by_role() {
        let em = start("api-em-reads").await;
        let (ops, officer, ingest) = (&em.keys.ops, &em.keys.officer, &em.keys.ingest);
        let rows = em
            .until("/api/emergency/dispatch", ops, "recommendations", |v| {
                recommended(v, "i1") == ["a1", "a2"] && !recommended(v, "i2").is_empty()
            })
            .await;
        assert_eq!(rows[0]["unit_type"], "ambulance");
        assert!(rows[0]["eta_s"].as_f64().unwrap() > 0.0 && rows[0]["distance_m"].as_f64().unwrap() > 0.0);
        let all = em.get("/api/emergency/incidents", ops).await;
        assert_eq!(col(&all, "incident"), ["i1", "i2"]);
        let i1 = &all[0];
        assert_eq!(
            (i1["type"].as_str(), i1["status"].as_str(), i1["cell"].as_str(), i1["district"].as_str()),
            (Some("medical"), Some("reported"), Some("c1"), Some("d1"))
        );
        assert_eq!((i1["severity"].as_u64(), i1["reported_ts"].as_u64()), (Some(1), Some(T0)));
        assert!(i1["unit"].is_null() && i1["dispatched_ts"].is_null());
        let units = em.get("/api/emergency/units", ops).await;
        assert_eq!(col(&units, "unit"), ["a1", "a2", "p1"]);
        assert_eq!(col(&units, "status"), ["available"; 3]);
        assert_eq!((units[0]["type"].as_str(), units[0]["lon"].as_f64()), (Some("ambulance"), Some(0.15)));

        // The officer (cell c2): i2 only, its recommendations only, no unit works on it yet.
        assert_eq!(col(&em.get("/api/emergency/incidents", officer).await, "incident"), ["i2"]);
        let theirs = em.get("/api/emergency/dispatch", officer).await;
        assert!(!theirs.as_array().unwrap().is_empty());
        assert_eq!(col(&theirs, "incident").iter().filter(|i| *i != "i2").count(), 0, "{theirs}");
        assert_eq!(em.get("/api/emergency/units", officer).await, json!([]));
        // The unassigned alerts of both, each seen by whom it concerns.
        let alerts = em.until("/api/alerts", ops, "unassigned alerts", |v| ids(v).len() == 2).await;
        assert_eq!(ids(&alerts), ["emergency.unassigned:i1", "emergency.unassigned:i2"]);
        assert_eq!(ids(&em.get("/api/alerts", officer).await), ["emergency.unassigned:i2"]);

        for path in ["/api/emergency/incidents", "/api/emergency/units", "/api/emergency/dispatch"] {
            assert_eq!(call("GET", em.port, path, Some(ingest), None).await.0, 403, "{path} as ingest");
            assert_eq!(call("GET", em.port, path, None, None).await.0, 401, "{path} without a token");
            assert_eq!(call("GET", em.port, path, Some("cb_wrong"), None).await.0, 401, "{path}");
        }
        // /ws/live carries the emergency rows and figures.
        let mut live = ws(em.port, "/ws/live", ops).await;
        let snap = next(&mut live).await;
        assert_eq!(col(&snap["emergency_incidents"], "incident"), ["i1", "i2"]);
        assert_eq!(col(&snap["emergency_districts"], "district"), ["d1"]);
        assert_eq!(snap["emergency_districts"][0]["unassigned"], 2);
        assert!(!snap["emergency_dispatch"].as_array().unwrap().is_empty());
        assert_eq!(
            (snap["kpis"]["open_incidents"].as_i64(), snap["kpis"]["unassigned_incidents"].as_i64()),
            (Some(2), Some(2))
        );
        assert_eq!(snap["kpis"]["available_units"], 3);
        // The routes are described.
        let (_, api) = call("GET", em.port, "/api/openapi.json", None, None).await;
        for path in [
            "/api/emergency/incidents",
            "/api/emergency/units",
            "/api/emergency/dispatch",
            "/api/emergency/dispatch/{incident}",
        ] {
            assert!(api["paths"].get(path).is_some(), "{path} missing from the OpenAPI description");
        }
        assert_eq!(em.stop().await, Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_confirmed_dispatch_is_published_through_ingestion_and_clears_the_unassigned_alert() {
        let em = start("api-em-dispatch").await;
        let (ops, officer, ingest) = (&em.keys.ops, &em.keys.officer, &em.keys.ingest);
        em.until("/api/emergency/dispatch", ops, "recommendations", |v| recommended(v, "i1") == ["a1", "a2"])
            .await;
        em.until("/api/alerts", ops, "unassigned alerts", |v| {
            ids(v).contains(&"emergency.unassigned:i1".into())
        })
        .await;

        // Who may confirm, and what is refused.
        let a1 = json!({"unit": "a1"});
        assert_eq!(em.confirm("i1", Some(officer), a1.clone()).await.0, 403);
        assert_eq!(em.confirm("i2", Some(officer), a1.clone()).await.0, 403, "even in their own cell");
        assert_eq!(em.confirm("i1", Some(ingest), a1.clone()).await.0, 403);
        assert_eq!(em.confirm("i1", None, a1.clone()).await.0, 401);
        assert_eq!(em.confirm("nope", Some(ops), a1.clone()).await.0, 404);
        assert_eq!(em.confirm("i1", Some(ops), json!({})).await.0, 400);
        assert_eq!(em.confirm("i1", Some(ops), json!({"unit": "zz"})).await.0, 400);
        let (st, err) = em.confirm("i1", Some(ops), json!({"unit": "p1"})).await;
        assert_eq!(st, 400, "a police car for a medical call: {err}");

        // Ops confirms a1 for i1: both events are queued, stamped with the city clock.
        let (st, sent) = em.confirm("i1", Some(ops), json!({"unit": "a1", "note": "confirmed"})).await;
        assert_eq!(st, 202, "{sent}");
        let ts = sent["incident"]["payload"]["ts"].as_u64().unwrap();
        assert!(ts >= T0 + MIN, "the clock has passed the alert's raise: {sent}");
        assert_eq!(
            sent["incident"],
            json!({"topic": "city/emergency/incident/i1", "payload": {"incident": "i1", "ts": ts,
                "status": "dispatched", "type": "medical", "severity": 1, "lon": 0.35, "lat": 0.5,
                "unit": "a1", "note": "confirmed"}})
        );
        assert_eq!(
            sent["unit"],
            json!({"topic": "city/emergency/unit/a1", "payload": {"unit": "a1", "ts": ts,
                "type": "ambulance", "status": "dispatched", "incident": "i1", "lon": 0.15, "lat": 0.5}})
        );

        // Through the dataflow: i1 dispatched, its recommendations withdrawn, a1 no longer
        // recommended for i2, the unassigned alert of i1 cleared (that of i2 stays).
        let incidents = em
            .until("/api/emergency/incidents", ops, "i1 dispatched", |v| v[0]["status"] == "dispatched")
            .await;
        assert_eq!(
            (incidents[0]["unit"].as_str(), incidents[0]["dispatched_ts"].as_u64()),
            (Some("a1"), Some(ts))
        );
        let rows = em
            .until("/api/emergency/dispatch", ops, "i1 withdrawn", |v| recommended(v, "i1").is_empty())
            .await;
        assert_eq!(recommended(&rows, "i2"), ["a2"]);
        let units = em.get("/api/emergency/units", ops).await;
        assert_eq!(
            (units[0]["status"].as_str(), units[0]["incident"].as_str()),
            (Some("dispatched"), Some("i1"))
        );
        let alerts = em.until("/api/alerts", ops, "i1's alert cleared", |v| ids(v).len() == 1).await;
        assert_eq!(ids(&alerts), ["emergency.unassigned:i2"]);
        let (_, cleared) = call("GET", em.port, "/api/alerts?state=cleared", Some(ops), None).await;
        assert_eq!(ids(&cleared), ["emergency.unassigned:i1"]);

        // Again: i1 has its unit (409), and a1 is no longer available (409).
        assert_eq!(em.confirm("i1", Some(ops), json!({"unit": "a2"})).await.0, 409);
        assert_eq!(em.confirm("i2", Some(ops), a1).await.0, 409);
        // a2 for i2, in the officer's cell: now the officer sees the unit working on it.
        assert_eq!(em.confirm("i2", Some(ops), json!({"unit": "a2"})).await.0, 202);
        let theirs =
            em.until("/api/emergency/units", officer, "a2 on i2", |v| col(v, "unit") == ["a2"]).await;
        assert_eq!(theirs[0]["incident"], "i2");
        em.until("/api/emergency/dispatch", ops, "no recommendation left", |v| *v == json!([])).await;
        em.until("/api/alerts", ops, "every alert cleared", |v| ids(v).is_empty()).await;
        assert_eq!(em.stop().await, Vec::<String>::new(), "nothing published was dead-lettered");
    }
}

mod grid {
    use super::emergency::{col, start_with};
    use super::*;

    /// Cases g1 (cell c1, garbage) and g2 (cell c2, the officer's; gas_leak) reported at T0, a
    /// water-level sensor in c2 in alarm from T0 + 1 min; a detector reading pushes the clock.
    async fn start(name: &str) -> super::emergency::Em {
        let case = |id: &str, category: &str, cell: &str| json!({"case": id, "ts": T0, "status": "reported", "category": category, "cell": cell, "source": "hotline"});
        let level = |ts: Ms| json!({"sensor": "w2", "ts": ts, "kind": "water_level", "value": 0.5, "cell": "c2", "unit": "m"});
        let feed = vec![
            ("grid/case/g1", case("g1", "garbage", "c1")),
            ("grid/case/g2", case("g2", "gas_leak", "c2")),
            ("grid/sensor/w2", json!([level(T0), level(T0 + MIN)])),
            (
                "traffic/detector/k1",
                json!({"sensor": "k1", "segment": "s1", "ts": T0 + 2 * MIN, "interval_s": 30, "count": 0}),
            ),
        ];
        start_with(name, feed).await
    }

    async fn set(port: u16, case: &str, token: &str, body: Value) -> (u16, Value) {
        call("POST", port, &format!("/api/grid/cases/{case}/status"), Some(token), Some(body)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn officers_read_and_work_the_cases_of_their_own_cells_only() {
        let g = start("api-grid").await;
        let (ops, officer, ingest) = (&g.keys.ops, &g.keys.officer, &g.keys.ingest);
        let cases = g.until("/api/grid/cases", ops, "both cases", |v| col(v, "case") == ["g1", "g2"]).await;
        assert_eq!(
            (cases[1]["status"].as_str(), cases[1]["light"].as_str()),
            (Some("reported"), Some("green"))
        );
        assert_eq!(cases[1]["deadline_ts"].as_u64(), Some(T0 + 60 * MIN), "gas_leak: 1 h");
        assert_eq!(col(&g.get("/api/grid/cases", officer).await, "case"), ["g2"]);
        // Cells: ops every cell, the officer theirs; c2 has an open case and a sensor in alarm.
        assert_eq!(col(&g.get("/api/grid/cells", ops).await, "cell"), ["c1", "c2"]);
        let mine = g.until("/api/grid/cells", officer, "the alarm", |v| v[0]["sensor_alarms"] == 1).await;
        assert_eq!(col(&mine, "cell"), ["c2"]);
        assert_eq!((mine[0]["open_cases"].as_i64(), mine[0]["risk"].as_i64()), (Some(1), Some(30)));
        assert_eq!(col(&g.get("/api/grid/sensors", officer).await, "sensor"), ["w2"]);
        assert_eq!(call("GET", g.port, "/api/grid/districts", Some(officer), None).await.0, 403);
        assert_eq!(col(&g.get("/api/grid/districts", ops).await, "district"), ["d1"]);
        for path in ["/api/grid/cases", "/api/grid/cells", "/api/grid/sensors"] {
            assert_eq!(call("GET", g.port, path, Some(ingest), None).await.0, 403, "{path} as ingest");
            assert_eq!(call("GET", g.port, path, None, None).await.0, 401, "{path} without a token");
        }

        // Another officer's cell: 403, and nothing is published.
        assert_eq!(set(g.port, "g1", officer, json!({"status": "in_progress"})).await.0, 403);
        assert_eq!(set(g.port, "nope", ops, json!({"status": "assigned"})).await.0, 404);
        assert_eq!(set(g.port, "g2", officer, json!({"status": "done"})).await.0, 400);
        assert_eq!(set(g.port, "g2", officer, json!({"status": "closed"})).await.0, 409, "not from reported");
        assert_eq!(set(g.port, "g2", ingest, json!({"status": "assigned"})).await.0, 403);
        assert_eq!(set(g.port, "g2", officer, json!({"status": "assigned", "officer": "o1"})).await.0, 403);
        // The officer takes the case: published as its event, assigned to them, and the
        // case_assigned alert reaches them; taking it in hand clears it.
        let (st, v) = set(g.port, "g2", officer, json!({"status": "assigned"})).await;
        assert_eq!(st, 202, "{v}");
        assert_eq!(
            (v["topic"].as_str(), v["payload"]["officer"].as_str()),
            (Some("city/grid/case/g2"), Some("o2"))
        );
        assert_eq!(v["payload"]["category"], "gas_leak");
        g.until("/api/alerts", officer, "case_assigned", |v| {
            ids(v).contains(&"grid.case_assigned:g2".to_string())
        })
        .await;
        let rows = g.until("/api/grid/cases", officer, "assigned", |v| v[0]["status"] == "assigned").await;
        assert_eq!(rows[0]["officer"], "o2");
        assert_eq!(set(g.port, "g2", officer, json!({"status": "in_progress"})).await.0, 202);
        g.until("/api/alerts", officer, "cleared", |v| {
            !ids(v).contains(&"grid.case_assigned:g2".to_string())
        })
        .await;
        g.until("/api/grid/cases", officer, "in progress", |v| v[0]["status"] == "in_progress").await;
        assert_eq!(set(g.port, "g2", officer, json!({"status": "resolved"})).await.0, 202);
        g.until("/api/grid/cases", officer, "resolved", |v| v[0]["status"] == "resolved").await;
        // Closing is the operations centre's.
        assert_eq!(set(g.port, "g2", officer, json!({"status": "closed"})).await.0, 403);
        assert_eq!(set(g.port, "g2", ops, json!({"status": "closed"})).await.0, 202);
        let cells = g.until("/api/grid/cells", officer, "closed today", |v| v[0]["closed_today"] == 1).await;
        assert_eq!(cells[0]["open_cases"], 0);

        // /ws/live carries the grid rows and figures; the routes are described.
        let mut live = ws(g.port, "/ws/live", ops).await;
        let snap = next(&mut live).await;
        assert_eq!(col(&snap["grid_cells"], "cell"), ["c1", "c2"]);
        assert_eq!(snap["kpis"]["open_cases"], 1);
        let (_, api) = call("GET", g.port, "/api/openapi.json", None, None).await;
        for path in ["/api/grid/cases", "/api/grid/cells", "/api/grid/sensors", "/api/grid/cases/{id}/status"]
        {
            assert!(api["paths"].get(path).is_some(), "{path} is described");
        }
        assert!(g.stop().await.is_empty());
    }
}

mod health {
    use super::emergency::{col, start_with};
    use super::*;
    use citybrain::api::health::{ContactLimiter, IdCardError, id_card_check_digit, validate_id_card};
    use std::time::Instant;

    /// A valid GB 11643-1999 number: `first17` and its computed check character.
    fn id_card(first17: &str) -> String {
        let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        let sum: u32 = first17.chars().zip(weights).map(|(c, w)| c.to_digit(10).unwrap() * w).sum();
        let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
        format!("{first17}{check}")
    }

    /// The same number with a wrong check character.
    fn wrong_check(id: &str) -> String {
        let (head, check) = id.split_at(17);
        let other = if check == "0" { '1' } else { '0' };
        format!("{head}{other}")
    }

    #[test]
    fn id_cards_are_checked_and_clients_rate_limited() {
        for first in ["11010519491231002", "44030019900101123", "32010619851203451", "51010720000229007"] {
            let id = id_card(first);
            assert_eq!(id_card_check_digit(first).map(String::from).as_deref(), Some(&id[17..]));
            assert_eq!(validate_id_card(&id), Ok(()), "{id}");
            assert_eq!(validate_id_card(&format!(" {} ", id.to_lowercase())), Ok(()));
            assert_eq!(validate_id_card(&wrong_check(&id)), Err(IdCardError::CheckDigit));
        }
        // The check sum of 11010519491231002: remainder 10 → X.
        assert_eq!(id_card("11010519491231002"), "11010519491231002X");
        for bad in ["", "1101051949123100", "11010519491231002XX", "1101051949123100AX", "11010519491231002Y"]
        {
            assert_eq!(validate_id_card(bad), Err(IdCardError::Format), "{bad:?}");
        }
        assert!(!IdCardError::CheckDigit.to_string().contains("110105"));

        // Burst 5, 60 a minute (one a second); at most two clients remembered.
        let limiter = ContactLimiter::new(60, 5, 2);
        let (a, b, c) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let t = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check(a, t).is_ok());
        }
        let wait = limiter.check(a, t).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(limiter.check(b, t).is_ok(), "another client has its own bucket");
        assert!(limiter.check(a, t + Duration::from_millis(1000)).is_ok(), "refilled");
        assert!(limiter.check(a, t + Duration::from_millis(1000)).is_err());
        // A third client evicts the least recently seen (b): memory stays bounded.
        assert!(limiter.check(c, t + Duration::from_millis(1000)).is_ok());
        assert!(limiter.check(a, t + Duration::from_millis(1000)).is_err(), "a is still remembered");
    }

    /// An active case A; B rode bus trip B7 with A and later checked in at the mall in cell c2
    /// (the officer's); C was at the café in cell c1 ten minutes after A; D is unknown.
    struct People {
        a: String,
        b: String,
        c: String,
        d: String,
    }

    fn people() -> People {
        People {
            a: id_card("11010519800101001"),
            b: id_card("44030019900101123"),
            c: id_card("32010619851203451"),
            d: id_card("51010720000229007"),
        }
    }

    async fn start(name: &str, p: &People) -> super::emergency::Em {
        let trip = |person: &str, ts: Ms| json!({"person": person, "ts": ts, "carrier": "bus", "trip": "B7@2026-01-01"});
        let checkin = |person: &str, ts: Ms, venue: &str, cell: &str| json!({"person": person, "ts": ts, "venue": venue, "cell": cell});
        let feed = vec![
            ("health/trip/t1", json!([trip(&p.a, T0 - 60 * MIN), trip(&p.b, T0 - 55 * MIN)])),
            ("health/checkin/mall", checkin(&p.b, T0 - 30 * MIN, "mall", "c2")),
            (
                "health/checkin/cafe",
                json!([
                    checkin(&p.a, T0 - 120 * MIN, "cafe", "c1"),
                    checkin(&p.c, T0 - 110 * MIN, "cafe", "c1")
                ]),
            ),
            ("health/case/x1", json!({"person": p.a, "ts": T0, "status": "confirmed"})),
            (
                "traffic/detector/k1",
                json!({"sensor": "k1", "segment": "s1", "ts": T0 + 2 * MIN, "interval_s": 30, "count": 0}),
            ),
        ];
        start_with(name, feed).await
    }

    async fn check(port: u16, body: Value) -> (u16, Value, Option<String>) {
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/health/contact-check"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), retry)
    }

    /// Asserts `text` holds no clear id-card number and no name.
    fn nothing_personal(p: &People, names: &[&str], what: &str, text: &str) {
        for id in [&p.a, &p.b, &p.c, &p.d] {
            assert!(!text.contains(id.as_str()) && !text.contains(&id[..17]), "{what} quotes an id: {text}");
        }
        for n in names {
            assert!(!text.contains(n), "{what} quotes a name: {text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contacts_are_read_by_scope_and_citizens_check_themselves() {
        let p = people();
        let names = ["张三", "李四", "王五"];
        let h = start("api-health", &p).await;
        let (ops, officer, ingest) = (&h.keys.ops, &h.keys.officer, &h.keys.ingest);
        let all =
            h.until("/api/health/contacts", ops, "two contacts", |v| v.as_array().unwrap().len() == 2).await;
        nothing_personal(&p, &names, "contacts", &all.to_string());
        for row in all.as_array().unwrap() {
            assert_eq!(row["person"].as_str().unwrap().len(), 64, "a pseudonym: {row}");
            assert!(row.get("case").is_none(), "the case is never named: {row}");
            assert_eq!(row["date"], "2026-01-01");
        }
        let mut vias: Vec<(String, String, String)> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["trip"].to_string(), r["venue"].to_string(), r["cell"].to_string()))
            .collect();
        vias.sort();
        assert_eq!(
            vias,
            [
                ("\"B7@2026-01-01\"".into(), "null".into(), "\"c2\"".into()),
                ("null".into(), "\"cafe\"".into(), "\"c1\"".into())
            ]
        );
        // The officer of c2 sees B's contact only.
        let mine = h.get("/api/health/contacts", officer).await;
        assert_eq!(col(&mine, "trip"), ["B7@2026-01-01"]);
        assert_eq!((mine[0]["cell"].as_str(), mine[0]["district"].as_str()), (Some("c2"), Some("d1")));
        nothing_personal(&p, &names, "officer contacts", &mine.to_string());
        assert_eq!(call("GET", h.port, "/api/health/contacts", Some(ingest), None).await.0, 403);
        assert_eq!(call("GET", h.port, "/api/health/contacts", None, None).await.0, 401);

        // The self-check, without a token: five in a burst, then 429.
        let (st, v, _) = check(h.port, json!({"name": names[0], "id_card": p.b})).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(
            (v["contact"].as_bool(), v["trip"].as_str(), v["venue"].clone(), v["date"].as_str()),
            (Some(true), Some("B7@2026-01-01"), Value::Null, Some("2026-01-01"))
        );
        let zh = v["advice"]["zh"].as_str().unwrap();
        assert!(zh.contains("社区") && zh.contains("居家观察") && zh.contains("发热门诊"), "{zh}");
        assert!(v["advice"]["en"].as_str().unwrap().contains("fever clinic"));
        nothing_personal(&p, &names, "a contact's answer", &v.to_string());
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        let known_keys = keys(&v);

        let (st, v, _) = check(h.port, json!({"name": names[1], "id_card": p.d})).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(keys(&v), known_keys, "one shape, known or not");
        assert_eq!(
            (v["contact"].as_bool(), &v["trip"], &v["venue"], &v["date"]),
            (Some(false), &Value::Null, &Value::Null, &Value::Null)
        );
        assert!(v["advice"]["en"].as_str().unwrap().contains("No contact on record"));
        nothing_personal(&p, &names, "an unknown person's answer", &v.to_string());

        // C in lower case with spaces: the decoder's normalisation; the venue contact.
        let c = format!("  {}  ", p.c.to_lowercase());
        let (st, v, _) = check(h.port, json!({"name": names[2], "id_card": c})).await;
        assert_eq!((st, v["contact"].as_bool(), v["venue"].as_str()), (200, Some(true), Some("cafe")), "{v}");

        let bad = wrong_check(&p.b);
        let (st, v, _) = check(h.port, json!({"name": names[0], "id_card": bad})).await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("check digit"), "{v}");
        nothing_personal(&p, &names, "a 400", &v.to_string());
        assert!(!v.to_string().contains(&bad[..17]));
        // A number where a string belongs: 400 without quoting it.
        let (st, v, _) = check(h.port, json!({"name": names[0], "id_card": 440300199001011234u64})).await;
        assert_eq!(st, 400);
        assert!(!v.to_string().contains("4403001990"), "{v}");

        let (st, v, retry) = check(h.port, json!({"name": names[0], "id_card": p.b})).await;
        assert_eq!(st, 429, "the sixth check in a burst: {v}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=6).contains(&retry), "{retry}");

        // Neither the alerts nor /ws/live quote an id or a name; /ws/live has the count only.
        let alerts = h
            .until("/api/alerts", ops, "two contact alerts", |v| {
                ids(v).iter().filter(|i| i.starts_with("health.contact")).count() == 2
            })
            .await;
        nothing_personal(&p, &names, "alerts", &alerts.to_string());
        let officer_alerts = h.get("/api/alerts", officer).await;
        assert_eq!(officer_alerts.as_array().unwrap().len(), 1, "{officer_alerts}");
        // The officer marks their contact as handled (registered with the community) by
        // acknowledging it; the other cell's contact is not theirs to acknowledge.
        let mine = officer_alerts[0]["id"].as_str().unwrap().to_string();
        let theirs =
            ids(&alerts).into_iter().find(|i| i.starts_with("health.contact") && *i != mine).unwrap();
        let escaped = |id: &str| -> String {
            id.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'.' {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let path = |id: &str| format!("/api/alerts/{}/ack", escaped(id));
        let body = json!({"note": "registered with the community"});
        let (st, acked) = call("POST", h.port, &path(&mine), Some(officer), Some(body.clone())).await;
        assert_eq!((st, acked["state"].as_str()), (200, Some("acknowledged")), "{acked}");
        assert!(acked["acked_by"].is_string(), "{acked}");
        assert_eq!(call("POST", h.port, &path(&theirs), Some(officer), Some(body)).await.0, 403);
        let handled = h.get("/api/alerts?domain=health", ops).await;
        let states: Vec<(String, String)> = handled
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["id"].as_str().unwrap().to_string(), a["state"].as_str().unwrap().to_string()))
            .collect();
        assert!(states.contains(&(mine.clone(), "acknowledged".into())), "{states:?}");
        assert!(states.contains(&(theirs.clone(), "raised".into())), "{states:?}");
        let mut live = ws(h.port, "/ws/live", ops).await;
        let snap = next(&mut live).await;
        assert_eq!((snap["health_contacts"].as_u64(), snap["kpis"]["contacts"].as_u64()), (Some(2), Some(2)));
        nothing_personal(&p, &names, "/ws/live", &snap.to_string());
        for row in all.as_array().unwrap() {
            let pseudonym = row["person"].as_str().unwrap();
            assert!(!snap.to_string().contains(pseudonym), "/ws/live carries no pseudonym");
        }

        let (_, api) = call("GET", h.port, "/api/openapi.json", None, None).await;
        for path in ["/api/health/contacts", "/api/health/contact-check"] {
            assert!(api["paths"].get(path).is_some(), "{path} is described");
        }
        assert!(api["paths"]["/api/health/contact-check"]["post"].get("security").is_none());
        assert_eq!(h.stop().await, Vec::<String>::new(), "nothing was dead-lettered");
    }
}
