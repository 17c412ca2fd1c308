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

type Delivered = Arc<Mutex<Vec<(Ms, Vec<(Out, isize)>)>>>;

fn start(city: &Arc<CityModel>, speed: f64) -> (Live, Delivered, Arc<Mutex<Vec<String>>>) {
    let delivered: Delivered = Arc::default();
    let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
    let (d, r) = (delivered.clone(), rejected.clone());
    let opts = LiveOptions {
        workers: 2,
        tick: Duration::from_millis(40),
        speed,
        pseudonym_key: b"live-test-key-123".to_vec(),
        ..LiveOptions::default()
    };
    let live = Live::start(
        city.clone(),
        Arc::new(Config::default()),
        opts,
        Arc::new(move |t, mut records| {
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
    let mut live_lp = String::new();
    for (_, recs) in delivered.lock().unwrap().iter() {
        for (o, d) in recs {
            if *d > 0 && !matches!(o, Out::Alert(_)) {
                lp::encode(o, &city, &Config::default(), &mut live_lp);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("citybrain-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    std::fs::write(dir.join("feed.jsonl"), lines.join("\n")).unwrap();
    let ropts = ReplayOptions {
        city: dir.join("city.geojson"),
        input: dir.join("feed.jsonl"),
        out_lp: dir.join("out.lp"),
        alerts_out: None,
        dead_letter_out: None,
        workers: 2,
        progress: false,
        block_bytes: citybrain::replay::BLOCK_BYTES,
    };
    replay(&ropts, &Settings::load(None).unwrap()).unwrap();
    let replayed = final_windows(&std::fs::read_to_string(dir.join("out.lp")).unwrap());
    let lived = final_windows(&live_lp);
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
