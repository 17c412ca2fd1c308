//! The live driver: messages in, the same dataflows as `replay`, rounds on a wall-clock tick,
//! and a clock that follows the wall clock while input is idle.

use citybrain::config::Settings;
use citybrain::live::{Live, LiveOptions, Message};
use citybrain::replay::{ReplayOptions, replay};
use citybrain_dataflows::pipeline::{self, Out};
use citybrain_dataflows::{CityModel, Config, Ms, lp};
use citybrain_sim::{CityOptions, FeedOptions, detector_feed, generate_city, geojson_text};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{Mosquitto, free_port};

type Delivered = Arc<Mutex<Vec<(Ms, Vec<(Out, isize)>)>>>;

fn start(city: &Arc<CityModel>, speed: f64) -> (Live, Delivered, Arc<Mutex<Vec<String>>>) {
    start_with(city, speed, LiveOptions::default().queue)
}

fn start_with(city: &Arc<CityModel>, speed: f64, queue: usize) -> (Live, Delivered, Arc<Mutex<Vec<String>>>) {
    start_pausable(city, speed, queue, Arc::default())
}

/// A live driver on two workers collecting its output and rejections; its output sink blocks
/// while `paused` is set (the dataflow stalls, its queue fills, and ingestion is backpressured).
fn start_pausable(
    city: &Arc<CityModel>,
    speed: f64,
    queue: usize,
    paused: Arc<std::sync::atomic::AtomicBool>,
) -> (Live, Delivered, Arc<Mutex<Vec<String>>>) {
    let delivered: Delivered = Arc::default();
    let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
    let (d, r) = (delivered.clone(), rejected.clone());
    let opts = LiveOptions {
        workers: 2,
        tick: Duration::from_millis(40),
        speed,
        queue,
        pseudonym_key: b"live-test-key-123".to_vec(),
        ..LiveOptions::default()
    };
    let live = Live::start(
        city.clone(),
        Arc::new(Config::default()),
        opts,
        Arc::new(move |t, mut records| {
            while paused.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            pipeline::consolidate_batch(&mut records);
            d.lock().unwrap().push((t, records));
        }),
        Arc::new(move |topic: &str, _payload: &[u8], why| r.lock().unwrap().push(format!("{topic}: {why}"))),
    )
    .unwrap();
    (live, delivered, rejected)
}

fn messages(lines: &[String]) -> Vec<Message> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Message {
                topic: v["topic"].as_str().unwrap().to_string(),
                payload: v["payload"].to_string().into_bytes(),
            }
        })
        .collect()
}

/// The last value written for every window series and time, as line protocol (InfluxDB's view).
fn final_windows(lp_text: &str) -> BTreeMap<String, String> {
    lp_text
        .lines()
        .filter(|l| l.starts_with("traffic_"))
        .map(|l| {
            let (series, rest) = l.split_once(' ').unwrap();
            let (fields, ns) = rest.rsplit_once(' ').unwrap();
            (format!("{series} {ns}"), fields.to_string())
        })
        .collect()
}

/// The final window values the live driver delivered (see [`final_windows`]).
fn live_windows(delivered: &Delivered, city: &CityModel) -> BTreeMap<String, String> {
    let mut live_lp = String::new();
    for (_, recs) in delivered.lock().unwrap().iter() {
        for (o, d) in recs {
            if *d > 0 && !matches!(o, Out::Alert(_)) {
                lp::encode(o, city, &Config::default(), &mut live_lp);
            }
        }
    }
    final_windows(&live_lp)
}

/// The final window values `replay` computes from the same recording.
fn replay_windows(name: &str, geojson: &str, lines: &[String], workers: usize) -> BTreeMap<String, String> {
    let dir = common::scratch(&format!("replay-{name}"));
    std::fs::write(dir.join("city.geojson"), geojson).unwrap();
    std::fs::write(dir.join("feed.jsonl"), lines.join("\n")).unwrap();
    let ropts = ReplayOptions {
        city: dir.join("city.geojson"),
        input: dir.join("feed.jsonl"),
        out_lp: dir.join("out.lp"),
        alerts_out: None,
        dead_letter_out: None,
        workers,
        parsers: 2,
        progress: false,
        block_bytes: citybrain::replay::BLOCK_BYTES,
    };
    replay(&ropts, &Settings::load(None).unwrap()).unwrap();
    final_windows(&std::fs::read_to_string(dir.join("out.lp")).unwrap())
}

fn scenario(minutes: u32) -> (String, Arc<CityModel>, Vec<String>, FeedOptions) {
    let geojson = geojson_text(&generate_city(&CityOptions::default()).unwrap());
    let city = Arc::new(CityModel::from_geojson_str(&geojson).unwrap());
    let opts = FeedOptions { duration_min: minutes, ..FeedOptions::default() };
    let lines = detector_feed(&city, &opts).unwrap();
    (geojson, city, lines, opts)
}

#[test]
fn live_equals_replay_and_idle_timers_fire_on_the_wall_clock() {
    let (geojson, city, lines, opts) = scenario(15);
    // 600 event ms per wall ms: a minute of idle event time passes in 0.1 s.
    let (live, delivered, rejected) = start(&city, 600.0);
    let sender = live.sender();
    for m in messages(&lines) {
        sender.send(m).unwrap();
    }
    drop(sender);

    // Input is now idle: every detector reported last at about start + 14:30, so its offline
    // timer (three silent 30 s intervals after the one its last reading covers) is due two
    // minutes later — and must fire while the service runs, on the idle clock.
    let last_ts: BTreeMap<String, u64> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let e = m.entry(v["payload"]["sensor"].as_str().unwrap().to_string()).or_insert(0);
        *e = (*e).max(v["payload"]["ts"].as_u64().unwrap());
        m
    });
    let offline_raised = || -> BTreeMap<String, Ms> {
        delivered
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(t, recs)| recs.iter().map(move |r| (*t, r)))
            .filter_map(|(t, (o, d))| match o {
                Out::Alert(k) if *d > 0 => {
                    let info = k.describe(&city);
                    (info.rule == "traffic.detector_offline")
                        .then(|| (info.subject["sensor"].as_str().unwrap().to_string(), t))
                }
                _ => None,
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while offline_raised().len() < city.detectors.len() {
        assert!(
            Instant::now() < deadline,
            "idle timers did not fire: {} of {}",
            offline_raised().len(),
            city.detectors.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (sensor, raised) in offline_raised() {
        assert_eq!(raised, last_ts[&sensor] + 4 * 30_000, "{sensor}: the timer fires at its deadline");
    }
    let metrics = live.metrics();
    live.shutdown().unwrap();
    assert!(rejected.lock().unwrap().is_empty());
    assert_eq!(metrics.accepted.load(std::sync::atomic::Ordering::Relaxed), lines.len() as u64);

    // Every window value equals what `replay` computes from the same recording.
    let lived = live_windows(&delivered, &city);
    let replayed = replay_windows("live", &geojson, &lines, 2);
    assert_eq!(lived.len(), replayed.len());
    assert_eq!(lived, replayed);
    assert!(lived.len() > city.detectors.len() * 15, "{} windows", lived.len());
    let _ = opts;
}

#[test]
fn shutdown_loses_nothing_queued_and_bad_input_is_rejected() {
    let (_, city, lines, _) = scenario(3);
    // Idle clock at wall speed: nothing fires by itself during this test.
    let (live, delivered, rejected) = start(&city, 1.0);
    let sender = live.sender();
    let mut msgs = messages(&lines);
    msgs.insert(10, Message { topic: "city/traffic/detector/x".into(), payload: b"{broken".to_vec() });
    msgs.insert(20, Message { topic: "city/weather/x".into(), payload: b"{}".to_vec() });
    for m in msgs {
        sender.send(m).unwrap();
    }
    drop(sender);
    let metrics = live.metrics();
    live.shutdown().unwrap();
    assert_eq!(metrics.accepted.load(std::sync::atomic::Ordering::Relaxed), lines.len() as u64);
    let rejected = rejected.lock().unwrap().clone();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0].contains("malformed_json") || rejected[1].contains("malformed_json"));
    // Shutdown closed every window: each detector has its three 1-minute windows.
    let one_minute: usize = delivered
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, r)| r.iter())
        .filter(|(o, d)| {
            *d > 0 && matches!(o, Out::Detector(w, _) if w.win == citybrain_dataflows::traffic::Win::M1)
        })
        .count();
    assert_eq!(one_minute, city.detectors.len() * 3);
}

#[test]
fn a_far_future_message_and_redeliveries_change_nothing() {
    let (geojson, city, lines, _) = scenario(10);
    let (live, delivered, rejected) = start(&city, 1.0);
    let sender = live.sender();
    // Every message twice (a QoS 1 redelivery storm), and in the middle one reading stamped a
    // day ahead of the wall clock (a sensor with a wrong clock).
    let mut msgs: Vec<Message> = messages(&lines).into_iter().flat_map(|m| [m.clone(), m]).collect();
    let wrong = serde_json::from_str::<serde_json::Value>(&lines[100]).unwrap();
    let mut payload = wrong["payload"].clone();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let day_ahead = now.as_millis() as u64 + 86_400_000;
    payload["ts"] = day_ahead.into();
    msgs.insert(
        300,
        Message { topic: wrong["topic"].as_str().unwrap().into(), payload: payload.to_string().into_bytes() },
    );
    for m in msgs {
        sender.send(m).unwrap();
    }
    drop(sender);
    let metrics = live.metrics();
    live.shutdown().unwrap();
    let rejected = rejected.lock().unwrap().clone();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("future_ts"), "{rejected:?}");
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&metrics.accepted), lines.len() as u64);
    assert_eq!(load(&metrics.duplicates), lines.len() as u64);
    // Nothing else was lost or changed: every window equals replay of the clean recording.
    assert_eq!(live_windows(&delivered, &city), replay_windows("future", &geojson, &lines, 1));
}

/// A QoS 1 publisher whose event loop runs (and reconnects) in the background.
/// Publishes `batch` at QoS 1, in order (each publish is queued; the client's event loop
/// sends them).
fn publish_all(rt: &tokio::runtime::Runtime, client: &rumqttc::AsyncClient, batch: &[Message]) {
    rt.block_on(async {
        for m in batch {
            client
                .publish(m.topic.clone(), rumqttc::QoS::AtLeastOnce, false, m.payload.clone())
                .await
                .unwrap();
        }
    })
}

fn publisher(
    port: u16,
    rt: &tokio::runtime::Runtime,
) -> (rumqttc::AsyncClient, Arc<std::sync::atomic::AtomicU64>) {
    let mut opts = rumqttc::MqttOptions::new(format!("test-pub-{port}"), "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10_000);
    let connects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = connects.clone();
    rt.spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (client, connects)
}

fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mqtt_through_a_broker_restart_loses_nothing_and_matches_replay() {
    use citybrain::mqtt::{MqttConfig, MqttIngest};
    use std::sync::atomic::Ordering::SeqCst;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = Mosquitto::start(free_port());
    let port = broker.port;
    let (geojson, city, lines, _) = scenario(10);
    let (live, delivered, rejected) = start(&city, 1.0);
    let cfg = MqttConfig { port, client_id: format!("citybrain-test-{port}"), ..MqttConfig::default() };
    let ingest = rt.block_on(async { MqttIngest::start(&cfg, "city/", live.sender()) }).unwrap();
    let im = ingest.metrics();
    wait_until("the subscription", 10, || im.subscriptions.load(SeqCst) >= 1);
    std::thread::sleep(Duration::from_millis(200)); // the SubAck

    let (pub_client, pub_connects) = publisher(port, &rt);
    wait_until("the publisher", 10, || pub_connects.load(SeqCst) >= 1);
    let msgs = messages(&lines);
    let (first, second) = msgs.split_at(msgs.len() / 2);
    let publish = |batch: &[Message]| publish_all(&rt, &pub_client, batch);
    publish(first);
    let lm = live.metrics();
    wait_until("the first half", 30, || lm.accepted.load(SeqCst) == first.len() as u64);

    // The broker restarts (and forgets every session): both clients reconnect, the ingest
    // subscribes again, and the second half flows.
    let broker = broker.restart();
    wait_until("re-subscription after the restart", 30, || im.subscriptions.load(SeqCst) >= 2);
    wait_until("the publisher's reconnect", 30, || pub_connects.load(SeqCst) >= 2);
    std::thread::sleep(Duration::from_millis(300));
    publish(second);
    // A malformed payload is rejected and the rest keeps flowing.
    rt.block_on(pub_client.publish(
        "city/traffic/detector/x",
        rumqttc::QoS::AtLeastOnce,
        false,
        b"{oops".to_vec(),
    ))
    .unwrap();
    wait_until("everything", 30, || {
        lm.accepted.load(SeqCst) == msgs.len() as u64 && lm.rejected.load(SeqCst) == 1
    });
    assert!(im.errors.load(SeqCst) >= 1, "the restart was seen as a connection error");

    rt.block_on(ingest.shutdown());
    live.shutdown().unwrap();
    drop(broker);
    assert_eq!(rejected.lock().unwrap().len(), 1);

    // Same values as `replay` over the same recording.
    assert_eq!(live_windows(&delivered, &city), replay_windows("mqtt", &geojson, &lines, 1));
}

/// The `citybrain` binary, its summary on stderr captured.
fn citybrain() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_citybrain"));
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    c
}

/// GETs a JSON document from the service with a bearer token.
async fn get_json(port: u16, path: &str, token: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// The tokens `demo` wrote to DATA_DIR/tokens.env.
fn demo_tokens(dir: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("tokens.env")).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Waits until the service's `/metrics` shows `name` at `want` or more (at most `secs`).
async fn wait_for_metric(port: u16, name: &str, want: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = 0;
    while Instant::now() < deadline {
        let text =
            reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
        seen = text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or(0);
        if seen >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} reached {seen}, not {want}, within {secs} s");
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the service did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn demo_serves_indicators_and_alerts_and_exits_cleanly() {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = common::scratch("demo");
    let (mqtt, http) = (free_port(), free_port());
    // 120 simulated seconds per second: the blocked lane (minute 10) is raised 5 s later.
    let child = citybrain()
        .args(["demo", "--duration", "20", "--speed", "120", "--mqtt-port", &mqtt.to_string()])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(&dir)
        .spawn()
        .unwrap();
    rt.block_on(async {
        wait_ready(http).await;
        let tokens = demo_tokens(&dir);
        let ops = tokens["CITYBRAIN_OPS_TOKEN"].clone();
        assert!(
            tokens["CITYBRAIN_OFFICER_TOKEN"].starts_with("cb_")
                && !tokens["CITYBRAIN_OFFICER_ID"].is_empty()
        );
        // Without a token: 401.
        let anon = reqwest::get(format!("http://127.0.0.1:{http}/api/alerts")).await.unwrap();
        assert_eq!(anon.status(), 401);
        // The MQTT outlet: alert transitions under city/alerts/….
        let mut opts = rumqttc::MqttOptions::new("demo-alert-listener", "127.0.0.1", mqtt);
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (outlet_client, mut outlet_loop) = rumqttc::AsyncClient::new(opts, 100);
        outlet_client.subscribe("city/alerts/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
        let outlet = tokio::spawn(async move {
            loop {
                match outlet_loop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))
                        if !p.topic.ends_with("/active")
                            && String::from_utf8_lossy(&p.payload).contains("traffic.incident") =>
                    {
                        return p.topic;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/ws/alerts?token={ops}"))
                .await
                .unwrap();
        let first: serde_json::Value =
            serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(first["type"], "snapshot");
        // Wait for the incident to be raised and pushed over the websocket.
        let deadline = Instant::now() + Duration::from_secs(14);
        let mut incident = None;
        while incident.is_none() && Instant::now() < deadline {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            if v["type"] == "transition" && v["alert"]["rule"] == "traffic.incident" {
                incident = Some(v["alert"].clone());
            }
        }
        let incident = incident.expect("no traffic.incident transition on /ws/alerts");
        assert_eq!(incident["state"], "raised");
        let active = get_json(http, "/api/alerts?state=active&domain=traffic", &ops).await;
        assert!(active.as_array().unwrap().iter().any(|a| a["id"] == incident["id"]));
        let topic = tokio::time::timeout(Duration::from_secs(5), outlet).await.unwrap().unwrap();
        assert!(topic.starts_with("city/alerts/traffic/"), "{topic}");
        // A late subscriber gets the retained active set of that cell at once.
        tokio::time::sleep(Duration::from_millis(1500)).await; // retained sets go out once a second
        let (late_client, mut late_loop) = rumqttc::AsyncClient::new(
            rumqttc::MqttOptions::new("demo-late-listener", "127.0.0.1", mqtt),
            100,
        );
        late_client.subscribe(format!("{topic}/active"), rumqttc::QoS::AtLeastOnce).await.unwrap();
        let retained = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = late_loop.poll().await {
                    return p;
                }
            }
        })
        .await
        .expect("no retained active set");
        assert!(retained.retain);
        let set: serde_json::Value = serde_json::from_slice(&retained.payload).unwrap();
        assert!(set.as_array().unwrap().iter().any(|a| a["id"] == incident["id"]), "{set}");
        // /ws/live: a snapshot of the indicators, then throttled updates as windows close.
        let (mut live, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/ws/live?token={ops}"))
                .await
                .unwrap();
        let snap: serde_json::Value =
            serde_json::from_str(live.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["districts"].as_array().unwrap().len(), 9, "{snap}");
        let update =
            tokio::time::timeout(Duration::from_secs(8), live.next()).await.unwrap().unwrap().unwrap();
        let update: serde_json::Value = serde_json::from_str(update.to_text().unwrap()).unwrap();
        assert_eq!(update["type"], "update");
        assert!(update["version"].as_u64() > snap["version"].as_u64() && update["kpis"]["clock"].is_u64());
        let districts = get_json(http, "/api/traffic/districts", &ops).await;
        assert_eq!(districts.as_array().unwrap().len(), 9, "{districts}");
        assert!(districts[0]["tpi"].is_number() && districts[0]["level"].is_number());
        let segments = get_json(http, "/api/traffic/segments", &ops).await;
        assert_eq!(segments.as_array().unwrap().len(), 120);
        let city = get_json(http, "/api/city", &ops).await;
        assert_eq!(city["type"], "FeatureCollection");
        let metrics =
            reqwest::get(format!("http://127.0.0.1:{http}/metrics")).await.unwrap().text().await.unwrap();
        assert!(
            metrics.contains("citybrain_mqtt_messages_total") && metrics.contains("citybrain_watermark_ms")
        );
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("shutting down") && stderr.contains("0 dead-lettered"), "{stderr}");
    let lp = std::fs::read_to_string(dir.join("lp/citybrain-000001.lp")).unwrap();
    assert!(lp.lines().filter(|l| l.starts_with("traffic_district,")).count() >= 9);
    let alerts = std::fs::read_to_string(dir.join("alerts/alerts-000001.jsonl")).unwrap();
    assert!(alerts.contains("\"rule\":\"traffic.incident\""));
    // Every detector reported to the end: stopping the demo raised nothing of its own (it used to
    // report all 260 detectors offline at every stop).
    assert!(!alerts.contains("traffic.detector_offline"), "the shutdown invented news: {alerts}");
}

#[test]
fn run_with_mosquitto_and_victoria_metrics() {
    use citybrain_sim::publish::{MqttTarget, Pace, publish_lines};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = Mosquitto::start(free_port());
    let vm = common::Vm::start(free_port(), &[]);
    let dir = common::scratch("run");
    let (geojson, _city, lines, _) = scenario(20);
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    let http = free_port();
    let config = format!(
        "city = {city:?}\ndata_dir = {data:?}\n[privacy]\npseudonym_key = \"run-test-key-0123456789\"\n\
         [mqtt]\nport = {mqtt}\nclient_id = \"citybrain-run-test\"\n\
         [influxdb]\nurl = \"{url}\"\nbatch_lines = 2000\nflush_ms = 200\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n[live]\ntick_ms = 100\n",
        city = dir.join("city.geojson").display().to_string(),
        data = dir.join("data").display().to_string(),
        mqtt = broker.port,
        url = vm.url(),
    );
    std::fs::write(dir.join("citybrain.toml"), config).unwrap();
    // Stopped with Ctrl-C (SIGINT) once every message has arrived, not after a fixed time: on a
    // busy machine the broker may still be delivering when a timer runs out (the rest would wait
    // in the persistent session, but this test counts them).
    let child = citybrain()
        .args(["run", "--duration", "180", "--config"])
        .arg(dir.join("citybrain.toml"))
        .spawn()
        .unwrap();
    rt.block_on(async {
        wait_ready(http).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // the SubAck
        let target = MqttTarget { qos: 1, ..MqttTarget::new("127.0.0.1", broker.port) };
        let report = publish_lines(&target, lines.clone(), Pace::AsFastAsPossible, None).await.unwrap();
        assert_eq!(report.messages, lines.len() as u64);
        // A malformed reading, and a real detector's reading stamped a day ahead of the wall
        // clock (a sensor with a wrong clock): both dead-lettered, nothing else lost.
        let mut ahead: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        ahead["payload"]["ts"] = (now.as_millis() as u64 + 86_400_000).into();
        let bad = vec![
            r#"{"topic":"city/traffic/detector/x","payload":{"sensor":"x"}}"#.to_string(),
            ahead.to_string(),
        ];
        publish_lines(&target, bad, Pace::AsFastAsPossible, None).await.unwrap();
        let want = lines.len() as u64 + 2;
        wait_for_metric(http, "citybrain_mqtt_messages_total", want, 90).await;
    });
    let interrupted =
        std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{} accepted, 2 dead-lettered", lines.len())), "{stderr}");

    // Line protocol on disk, and the same points in the time-series server.
    let lp = std::fs::read_to_string(dir.join("data/lp/citybrain-000001.lp")).unwrap();
    let distinct: std::collections::BTreeSet<(String, String)> = lp
        .lines()
        .filter(|l| l.starts_with("traffic_segment,"))
        .map(|l| {
            let (series, rest) = l.split_once(' ').unwrap();
            (series.to_string(), rest.rsplit_once(' ').unwrap().1.to_string())
        })
        .collect();
    assert!(distinct.len() >= 120 * 4, "{} segment points", distinct.len());
    let stored = rt.block_on(vm.samples("traffic_segment_count", distinct.len()));
    assert!(stored >= distinct.len(), "VictoriaMetrics holds {stored} of {} segment points", distinct.len());
    let dead = std::fs::read_dir(dir.join("data/dead-letters")).unwrap().next().unwrap().unwrap().path();
    let dead = std::fs::read_to_string(dead).unwrap();
    assert!(dead.contains("invalid_payload") && dead.contains("future_ts"), "{dead}");
}

#[test]
fn run_holds_input_while_its_line_protocol_cannot_be_written_and_loses_nothing() {
    use citybrain_sim::publish::{MqttTarget, Pace, publish_lines};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = Mosquitto::start(free_port());
    let dir = common::scratch("run-lp-fails");
    let (geojson, _city, lines, _) = scenario(10);
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    let http = free_port();
    let data = dir.join("data");
    let config = format!(
        "city = {city:?}\ndata_dir = {data:?}\n[privacy]\npseudonym_key = \"run-test-key-0123456789\"\n\
         [mqtt]\nport = {mqtt}\nclient_id = \"citybrain-lp-fails\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n[live]\ntick_ms = 100\n",
        city = dir.join("city.geojson").display().to_string(),
        data = data.display().to_string(),
        mqtt = broker.port,
    );
    std::fs::write(dir.join("citybrain.toml"), config).unwrap();
    let child = citybrain()
        .args(["run", "--duration", "180", "--config"])
        .arg(dir.join("citybrain.toml"))
        .spawn()
        .unwrap();
    let metric = |text: &str, name: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    };
    rt.block_on(async {
        wait_ready(http).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // the SubAck
        // The line-protocol directory turns into a regular file: no file can be written there.
        let lp = data.join("lp");
        std::fs::remove_dir_all(&lp).unwrap();
        std::fs::write(&lp, b"not a directory").unwrap();
        let target = MqttTarget { qos: 1, ..MqttTarget::new("127.0.0.1", broker.port) };
        // A third of the feed closes windows, whose line protocol then cannot be written …
        let (first, rest) = lines.split_at(lines.len() / 3);
        publish_lines(&target, first.to_vec(), Pace::AsFastAsPossible, None).await.unwrap();
        // The failure is loud: /readyz answers 503 naming the path, /metrics counts it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = reqwest::get(format!("http://127.0.0.1:{http}/readyz")).await.unwrap();
            if r.status() == 503 {
                let body = r.text().await.unwrap();
                assert!(body.contains("line_protocol") && body.contains("lp"), "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "/readyz never reported the failing output");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // … and the rest is held back meanwhile: the broker keeps what is not acknowledged.
        let rest = rest.to_vec();
        let publishing =
            tokio::spawn(async move { publish_lines(&target, rest, Pace::AsFastAsPossible, None).await });
        tokio::time::sleep(Duration::from_secs(3)).await;
        let text =
            reqwest::get(format!("http://127.0.0.1:{http}/metrics")).await.unwrap().text().await.unwrap();
        assert!(text.contains("citybrain_output_failing{output=\"line_protocol\"} 1"), "{text}");
        assert!(metric(&text, "citybrain_ingest_accepted_total") < lines.len() as u64, "input was not held");
        // The directory comes back: everything is written and taken, nothing lost.
        std::fs::remove_file(&lp).unwrap();
        std::fs::create_dir(&lp).unwrap();
        wait_ready(http).await;
        let report = publishing.await.unwrap().unwrap();
        assert_eq!(report.messages, (lines.len() - lines.len() / 3) as u64);
        wait_for_metric(http, "citybrain_ingest_accepted_total", lines.len() as u64, 90).await;
    });
    let interrupted =
        std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lp = String::new();
    for f in std::fs::read_dir(data.join("lp")).unwrap() {
        lp += &std::fs::read_to_string(f.unwrap().path()).unwrap();
    }
    assert_eq!(final_windows(&lp), replay_windows("lp-fails", &geojson, &lines, 1));
}

#[test]
fn a_burst_of_batches_is_never_judged_late() {
    // Three hours of readings in batches of 100, sent as fast as possible: far more event time
    // than the retention passes through the queue within a second. Nothing may look late just
    // because it waited in the queue while other input advanced the clock.
    let (_, city, lines, _) = scenario(180);
    // A small queue, so the sender is made to wait (backpressure) as it would be by a fast broker.
    let (live, _delivered, rejected) = start_with(&city, 1.0, 4);
    let batches: Vec<Message> = lines
        .chunks(100)
        .map(|chunk| {
            let payloads: Vec<String> =
                chunk.iter().map(|l| citybrain_sim::publish::parse_line(l).unwrap().1).collect();
            let (topic, _) = citybrain_sim::publish::parse_line(&chunk[0]).unwrap();
            Message { topic, payload: format!("[{}]", payloads.join(",")).into_bytes() }
        })
        .collect();
    let sender = live.sender();
    for b in batches {
        sender.send(b).unwrap();
    }
    drop(sender);
    let metrics = live.metrics();
    live.shutdown().unwrap();
    assert_eq!(
        rejected.lock().unwrap().len(),
        0,
        "{:?}",
        &rejected.lock().unwrap()[..3.min(rejected.lock().unwrap().len())]
    );
    assert_eq!(metrics.accepted.load(std::sync::atomic::Ordering::Relaxed), lines.len() as u64);
}

#[test]
fn run_without_a_broker_stops_cleanly() {
    // Nothing listens on the broker port: the service keeps retrying, reports not ready, and
    // still shuts down on time (the MQTT task is stopped, releasing the dataflow's queue).
    let dir = common::scratch("nobroker");
    let (geojson, ..) = scenario(1);
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    let config = format!(
        "city = {:?}\ndata_dir = {:?}\n[mqtt]\nport = {}\n[http]\nlisten = \"127.0.0.1:{}\"\n",
        dir.join("city.geojson").display().to_string(),
        dir.join("data").display().to_string(),
        free_port(),
        free_port()
    );
    std::fs::write(dir.join("citybrain.toml"), config).unwrap();
    let started = Instant::now();
    let out = citybrain()
        .args(["run", "--duration", "2", "--config"])
        .arg(dir.join("citybrain.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "shutdown hung");
}

// ---------------------------------------------------------------------------------------------
// MQTT under backpressure and connection loss, and the service's outputs failing (issue 10,
// parts 2 and 5).
// ---------------------------------------------------------------------------------------------

/// [`start_pausable`] at wall speed with a 64-message queue. A rejection would show as a
/// window that differs from replay's.
fn pausable_live(city: &Arc<CityModel>, paused: Arc<std::sync::atomic::AtomicBool>) -> (Live, Delivered) {
    let (live, delivered, _) = start_pausable(city, 1.0, 64, paused);
    (live, delivered)
}

/// MQTT ingestion with `cfg` into `live`, once its subscription is acknowledged, and a QoS 1
/// publisher to the broker on `broker_port`, once connected.
fn subscribed_ingest_and_publisher(
    rt: &tokio::runtime::Runtime,
    cfg: &citybrain::mqtt::MqttConfig,
    live: &Live,
    broker_port: u16,
) -> (citybrain::mqtt::MqttIngest, Arc<citybrain::mqtt::MqttMetrics>, rumqttc::AsyncClient) {
    use std::sync::atomic::Ordering::SeqCst;
    let ingest =
        rt.block_on(async { citybrain::mqtt::MqttIngest::start(cfg, "city/", live.sender()) }).unwrap();
    let im = ingest.metrics();
    wait_until("the SubAck", 10, || im.subscribed.load(SeqCst));
    let (pub_client, pub_connects) = publisher(broker_port, rt);
    wait_until("the publisher", 10, || pub_connects.load(SeqCst) >= 1);
    (ingest, im, pub_client)
}

/// A TCP proxy to `upstream` on a free port; `kill` drops every connection through it.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    fn start(rt: &tokio::runtime::Runtime, upstream: u16) -> Proxy {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        rt.spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy { port, conns }
    }

    fn kill(&self) {
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[test]

fn mqtt_backpressure_keeps_the_connection_alive_past_its_keep_alive_and_loses_nothing() {
    use citybrain::mqtt::MqttConfig;
    use std::sync::atomic::Ordering::SeqCst;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = Mosquitto::start(free_port());
    let (geojson, city, lines, _) = scenario(10);
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (live, delivered) = pausable_live(&city, paused.clone());
    let cfg = MqttConfig {
        port: broker.port,
        client_id: format!("citybrain-bp-{}", broker.port),
        keep_alive_s: 5,
        ..MqttConfig::default()
    };
    let (ingest, im, pub_client) = subscribed_ingest_and_publisher(&rt, &cfg, &live, broker.port);
    let msgs = messages(&lines);
    publish_all(&rt, &pub_client, &msgs);
    // The dataflow is stalled: ingestion holds what it received (the broker's in-flight window)
    // and takes no more; meanwhile the keep-alive (5 s; the broker gives up after 7.5 s) must
    // keep the connection up.
    wait_until("backpressure", 30, || im.held.load(SeqCst) >= 50);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!((im.connects.load(SeqCst), im.errors.load(SeqCst)), (1, 0), "the connection was lost");
    assert!(im.connected.load(SeqCst));
    let held = im.held.load(SeqCst);
    assert!(held <= citybrain::mqtt::HANDOFF as u64, "{held} held");
    // Released: everything arrives, over the same connection.
    paused.store(false, SeqCst);
    let lm = live.metrics();
    wait_until("every message", 60, || lm.messages.load(SeqCst) >= msgs.len() as u64);
    assert_eq!(im.messages.load(SeqCst), msgs.len() as u64, "nothing was redelivered");
    assert_eq!(im.connects.load(SeqCst), 1);
    assert_eq!(im.ack_failures.load(SeqCst), 0);
    rt.block_on(ingest.shutdown());
    live.shutdown().unwrap();
    drop(broker);
    assert_eq!(live_windows(&delivered, &city), replay_windows("mqtt-bp", &geojson, &lines, 1));
}

#[test]
fn mqtt_connection_killed_mid_feed_at_qos1_gives_the_output_of_no_reconnect() {
    // The connection dies while messages are received but not yet acknowledged: the client
    // reconnects (persistent session), the broker redelivers, and the output is the same as
    // replaying the recording — the redelivered copies are duplicates, which change nothing.
    use citybrain::mqtt::MqttConfig;
    use std::sync::atomic::Ordering::SeqCst;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = Mosquitto::start(free_port());
    let proxy = Proxy::start(&rt, broker.port);
    let (geojson, city, lines, _) = scenario(10);
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (live, delivered) = pausable_live(&city, paused.clone());
    let cfg = MqttConfig {
        port: proxy.port,
        client_id: format!("citybrain-kill-{}", broker.port),
        ..MqttConfig::default()
    };
    let (ingest, im, pub_client) = subscribed_ingest_and_publisher(&rt, &cfg, &live, broker.port);
    let msgs = messages(&lines);
    let lm = live.metrics();
    let (first, second) = msgs.split_at(msgs.len() / 3);
    let publish = |batch: &[Message]| publish_all(&rt, &pub_client, batch);
    publish(first);
    wait_until("the first third", 30, || lm.accepted.load(SeqCst) >= first.len() as u64);
    // Stall the dataflow so that messages are held unacknowledged, then cut the connection.
    paused.store(true, SeqCst);
    publish(second);
    wait_until("messages held", 30, || im.held.load(SeqCst) >= 20);
    proxy.kill();
    wait_until("the reconnect", 30, || im.connects.load(SeqCst) >= 2 && im.subscribed.load(SeqCst));
    paused.store(false, SeqCst);
    wait_until("every message", 60, || {
        lm.messages.load(SeqCst) >= msgs.len() as u64 + im.ack_failures.load(SeqCst)
    });
    assert!(im.ack_failures.load(SeqCst) > 0, "held messages lost their connection: their acks are not sent");
    std::thread::sleep(Duration::from_millis(500));
    rt.block_on(ingest.shutdown());
    live.shutdown().unwrap();
    drop(broker);
    assert_eq!(live_windows(&delivered, &city), replay_windows("mqtt-kill", &geojson, &lines, 1));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files
}

/// Every file under `dir`, as text (binary files lossily: SQLite pages hold text).
fn all_files_text(dir: &std::path::Path) -> String {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// The files under `dir` whose name starts with `prefix`, as text.
fn files_named(dir: &std::path::Path, prefix: &str) -> String {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// A valid id-card number (GB 11643) from its first 17 digits.
fn id_card(first17: &str) -> String {
    format!("{first17}{}", citybrain_sim::id_check_digit(first17).unwrap())
}

#[test]
fn demo_never_stores_logs_or_sends_a_clear_id_and_keeps_health_alerts_apart() {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = common::scratch("demo-health");
    let (mqtt, http) = (free_port(), free_port());
    let [case, contact, broken, topic_id, checker] = [
        "11010519491231002",
        "33010619900101123",
        "44030019850505432",
        "51010719770707001",
        "21010219660606008",
    ]
    .map(id_card);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_citybrain"))
        .args(["demo", "--duration", "25", "--speed", "60", "--mqtt-port", &mqtt.to_string()])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the logs while the demo runs (a full pipe would stall it).
    let drain = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut r = r;
            let _ = std::io::Read::read_to_string(&mut r, &mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut outputs = String::new();
    rt.block_on(async {
        wait_ready(http).await;
        let tokens = demo_tokens(&dir);
        let (ops, officer) =
            (tokens["CITYBRAIN_OPS_TOKEN"].clone(), tokens["CITYBRAIN_OFFICER_TOKEN"].clone());
        let cells = get_json(http, "/api/grid/cells", &officer).await;
        let cell = cells[0]["cell"].as_str().unwrap().to_string();
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/ws/alerts?token={ops}"))
                .await
                .unwrap();
        // Records a little behind the demo's clock (it runs ahead of the wall clock): the case
        // and the contact on one bus, the contact's check-in in the officer's cell, and broken
        // records quoting clear ids.
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let msgs = [
            (
                "city/health/trip/t-1".to_string(),
                serde_json::json!([
                {"person": case, "ts": now - 3_600_000, "carrier": "bus", "trip": "B42@today"},
                {"person": contact, "ts": now - 3_500_000, "carrier": "bus", "trip": "B42@today"}]),
            ),
            (
                "city/health/checkin/v-9".into(),
                serde_json::json!({"person": contact, "ts": now - 600_000, "venue": "v-9", "cell": cell}),
            ),
            (
                "city/health/case/c-1".into(),
                serde_json::json!({"person": case, "ts": now, "status": "confirmed"}),
            ),
            (
                "city/health/trip/t-2".into(),
                serde_json::json!({"person": broken, "ts": "yesterday", "carrier": "bus"}),
            ),
            (
                format!("city/health/case/{topic_id}"),
                serde_json::json!({"person": topic_id, "ts": now, "status": "infected"}),
            ),
        ];
        let (client, mut events) = rumqttc::AsyncClient::new(
            rumqttc::MqttOptions::new("leak-test-publisher", "127.0.0.1", mqtt),
            100,
        );
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        for (topic, payload) in msgs {
            client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string()).await.unwrap();
        }
        // The contact's alert reaches the websocket, naming the pseudonym only.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut alert = None;
        while alert.is_none() && Instant::now() < deadline {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await else {
                continue;
            };
            let text = msg.to_text().unwrap().to_string();
            outputs.push_str(&text);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["type"] == "transition"
                && v["alert"]["rule"] == "health.contact"
                && v["alert"]["cell"] == cell.as_str()
            {
                alert = Some(v["alert"].clone());
            }
        }
        let alert = alert.expect("no health.contact alert for the contact's cell");
        assert_eq!(alert["subject"]["trip"], "B42@today");
        // The officer of that cell sees and acknowledges it (handled).
        let id = alert["id"].as_str().unwrap().to_string();
        let escaped: String = id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'.' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let acked = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{http}/api/alerts/{escaped}/ack"))
            .bearer_auth(&officer)
            .json(&serde_json::json!({"note": "registered"}))
            .send()
            .await
            .unwrap();
        assert_eq!(acked.status(), 200);
        outputs.push_str(&acked.text().await.unwrap());
        // The citizen's self-check answers by the id, which is never kept.
        for id in [&contact, &checker] {
            let r = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{http}/api/health/contact-check"))
                .json(&serde_json::json!({"name": "张三", "id_card": id}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            outputs.push_str(&r.text().await.unwrap());
        }
        for path in
            ["/api/alerts?domain=health", "/api/alerts?state=all&domain=health", "/api/health/contacts"]
        {
            outputs.push_str(&get_json(http, path, &ops).await.to_string());
        }
        outputs.push_str(&get_json(http, "/api/health/contacts", &officer).await.to_string());
        let (mut live, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{http}/ws/live?token={ops}"))
                .await
                .unwrap();
        outputs.push_str(live.next().await.unwrap().unwrap().to_text().unwrap());
    });
    let status = child.wait().unwrap();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("public-health scenario on"), "the demo runs the health scenario");
    let disk = all_files_text(&dir);
    for id in [&case, &contact, &broken, &topic_id, &checker] {
        for (what, text) in
            [("the data directory", &disk), ("stdout", &stdout), ("the logs", &stderr), ("the API", &outputs)]
        {
            let at = text.find(&id[..17]).map(|i| &text[i.saturating_sub(300)..(i + 100).min(text.len())]);
            assert!(at.is_none(), "{what} holds the clear id {id}: …{}…", at.unwrap_or_default());
        }
    }
    // The broken records were dead-lettered, to the personal files (deleted after retention).
    let personal = files_named(&dir.join("dead-letters"), "personal-");
    assert!(personal.contains("yesterday") && personal.contains("infected"), "{personal}");
    assert!(!files_named(&dir.join("dead-letters"), "dead-letters-").contains("health/"));
    // Health transitions go to the day's personal files, never to the general ones.
    let health_alerts = files_named(&dir.join("alerts").join("health"), "alerts-");
    assert!(health_alerts.contains("\"rule\":\"health.contact\""), "{health_alerts}");
    assert!(!files_named(&dir.join("alerts"), "alerts-000").contains("health.contact"));
    assert!(files_named(&dir.join("lp").join("health"), "alerts-").contains("domain=health"));
    assert!(!files_named(&dir.join("lp"), "citybrain-").contains("domain=health"));
}
