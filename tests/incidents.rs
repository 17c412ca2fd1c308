//! `traffic.incident` against independent truth: every SUMO fixture of `tests/fixtures/sumo/`
//! (written by `scripts/sumo/generate.py`; CI needs no SUMO) replayed through `citybrain
//! replay`, scored against the stalls the generator planted (see `incidents/eval.rs`).
//!
//! The figures are event-time (deterministic), so the targets are asserted here: every stall
//! of ≥ 8 minutes detected within 5 minutes of its start and cleared within 5 minutes of its
//! end, and at most one incident per two simulated rush hours across the runs without a stall.
//! `cargo bench --bench incidents` prints the same table in release. Small hand-made feeds pin
//! the cases the SUMO runs did not produce in isolation: a blocked lane a car slips past now and
//! then, beside a lane queueing at every red light; signal and turning queues.

#[path = "incidents/eval.rs"]
mod eval;

#[test]
fn sumo_runs_meet_the_incident_targets() {
    let dir = std::env::temp_dir().join(format!("citybrain-incidents-{}", std::process::id()));
    let runs: Vec<eval::Scored> = eval::scenarios().iter().map(|n| eval::score(n, 1, &dir)).collect();
    assert!(runs.iter().filter(|r| r.stalls.is_empty()).count() >= 2, "no-incident runs");
    assert!(runs.iter().map(|r| r.stalls.len()).sum::<usize>() >= 8, "stalls");
    let table = eval::table(&runs);
    println!("{table}");
    let (detected, cleared, alarms, bound) = eval::targets(&runs);
    assert!(detected, "a stall of ≥ 8 min was not detected within 5 min:\n{table}");
    assert!(cleared, "a stall's incident was not cleared within 5 min of its end:\n{table}");
    assert!(bound >= 2.0, "at least 2 simulated rush hours without incident");
    assert!(alarms as f64 <= bound, "{alarms} incidents on the no-incident runs (bound {bound}):\n{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_workers_raise_the_same_incidents() {
    let dir = std::env::temp_dir().join(format!("citybrain-incidents-w-{}", std::process::id()));
    let one = eval::score("grid2-stalls", 1, &dir);
    let two = eval::score("grid2-stalls", 2, &dir);
    assert!(one.alerts.contains("traffic.incident"));
    assert_eq!(one.alerts, two.alerts);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 2-lane approach `s1` to a signal, with its downstream `s2`; one loop per lane.
const SIGNAL_CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.1,0.5],[0.9,0.5]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":300,"speed_limit_kmh":50,"lanes":2,"road_class":"secondary","downstream":["s2"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[1.1,0.5],[1.9,0.5]]},"properties":{"kind":"segment","id":"s2","district":"d1","length_m":300,"speed_limit_kmh":50,"lanes":2,"road_class":"secondary"}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.8,0.5]},"properties":{"kind":"detector","id":"a0","segment":"s1","lane":0}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.8,0.5]},"properties":{"kind":"detector","id":"a1","segment":"s1","lane":1}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[1.8,0.5]},"properties":{"kind":"detector","id":"b0","segment":"s2","lane":0}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[1.8,0.5]},"properties":{"kind":"detector","id":"b1","segment":"s2","lane":1}}
]}"#;

/// Incident alert transitions (state, raised_ts, cleared_ts) of lane 0 of `s1` for 40 minutes
/// of 30-s readings, `how(detector, interval)` giving (count, occupancy).
fn signal_incidents(name: &str, how: impl Fn(&str, u64) -> (u32, f64)) -> Vec<(String, u64, Option<u64>)> {
    use citybrain::config::Settings;
    use citybrain::replay::{ReplayOptions, replay};
    let dir = std::env::temp_dir().join(format!("citybrain-incidents-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("city.geojson"), SIGNAL_CITY).unwrap();
    let mut lines = String::new();
    for i in 0..80 {
        for det in ["a0", "a1", "b0", "b1"] {
            let (count, occ) = how(det, i);
            let speed = if count > 0 { "30.0" } else { "null" };
            lines += &format!(
                r#"{{"topic":"city/traffic/detector/{det}","payload":{{"sensor":"{det}","segment":"s{}","lane":{},"ts":{},"interval_s":30,"count":{count},"occupancy":{occ},"speed_kmh":{speed}}}}}"#,
                if det.starts_with('a') { 1 } else { 2 },
                &det[1..],
                T0 + i * 30_000
            );
            lines.push('\n');
        }
    }
    std::fs::write(dir.join("feed.jsonl"), lines).unwrap();
    let opts = ReplayOptions {
        city: dir.join("city.geojson"),
        input: dir.join("feed.jsonl"),
        out_lp: dir.join("out.lp"),
        alerts_out: Some(dir.join("alerts.jsonl")),
        dead_letter_out: Some(dir.join("dl.jsonl")),
        workers: 1,
        parsers: 1,
        progress: false,
        block_bytes: 4096,
    };
    replay(&opts, &Settings::load(None).unwrap()).unwrap();
    let out = std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["rule"] == "traffic.incident")
        .map(|a| {
            (
                a["state"].as_str().unwrap().to_string(),
                a["raised_ts"].as_u64().unwrap(),
                a["cleared_ts"].as_u64(),
            )
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

const T0: u64 = 1_772_406_000_000;
const MIN: u64 = 60_000;

/// A 90-s signal cycle seen per 30-s interval: red (the queue stands over the loop, nobody
/// crosses), then two green intervals discharging the queue.
fn signal(i: u64) -> (u32, f64) {
    if i.is_multiple_of(3) { (0, 1.0) } else { (7, 0.35) }
}

#[test]
fn a_blocked_lane_beside_a_signal_queue_is_raised_despite_slips() {
    // Lane 0 of s1 blocked from minute 10 to 22: the loop reads ≈ 1 and a car slips past now
    // and then; lane 1 queues at every red light and discharges at green.
    let inc = signal_incidents("slips", |det, i| match det {
        "a0" if (20..44).contains(&i) => (u32::from(i % 7 == 3), if i % 7 == 3 { 0.97 } else { 1.0 }),
        _ => signal(i),
    });
    assert_eq!(inc.len(), 2, "{inc:?}");
    // Raised at the end of the window that completes 3 stopped minutes (minutes 10, 11, 12, the
    // slips' minutes still stopped with ≤ 1 vehicle), cleared when the queue moves off at 22.
    assert_eq!(inc[0], ("raised".into(), T0 + 13 * MIN, None));
    assert_eq!(inc[1], ("cleared".into(), T0 + 13 * MIN, Some(T0 + 23 * MIN)));
}

#[test]
fn signal_and_turning_queues_raise_nothing_once_seen_to_discharge() {
    // Both lanes queue at every red light (the same cycle): never a whole stopped minute.
    assert_eq!(signal_incidents("signal", |_, i| signal(i)), vec![]);
    // A permissive turning lane creeping in the rush hour: occupancy 0.9, a car a minute,
    // for 12 minutes, then moving off; lane 1 flows.
    let inc = signal_incidents("turning", |det, i| match det {
        "a0" if (20..44).contains(&i) => (u32::from(i % 2 == 0), 0.9),
        _ => signal(i),
    });
    assert_eq!(inc, vec![]);
    // A turning lane held four minutes at a time (occupancy 1, nobody crossing), moving off for
    // a minute in between: once it has been seen to discharge, every window of 6 minutes holds
    // a discharge. Its first hold, with no discharge before it, looks like a blockage until it
    // moves off: raised after 3 minutes, cleared when it discharges, never again.
    let inc = signal_incidents("held", |det, i| match det {
        "a0" if (i / 2) % 5 != 4 => (0, 1.0),
        "a0" => (6, 0.6),
        _ => signal(i),
    });
    assert_eq!(
        inc,
        vec![("raised".into(), T0 + 3 * MIN, None), ("cleared".into(), T0 + 3 * MIN, Some(T0 + 5 * MIN))]
    );
}
