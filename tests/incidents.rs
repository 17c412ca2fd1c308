//! `traffic.incident` against independent truth: every SUMO fixture of `tests/fixtures/sumo/`
//! (written by `scripts/sumo/generate.py`; CI needs no SUMO) replayed through `citybrain
//! replay`, scored against the stalls the generator planted (see `incidents/eval.rs`).
//!
//! The figures are event-time (deterministic), so the targets are asserted here: every stall
//! of ≥ 8 minutes detected within 5 minutes of its start and cleared within 5 minutes of its
//! end, and at most one incident per two simulated rush hours across the runs without a stall.
//! `cargo bench --bench incidents` prints the same table in release. Small hand-made feeds pin
//! the cases the SUMO runs did not produce in isolation: a blocked lane a car slips past now and
//! then, beside a lane queueing at every red light; signal and turning queues. The 5-minute
//! detector windows themselves are checked against SUMO's own 300-s loop output.

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

/// SUMO's 5-minute print precision and the 30-s values' rounding, derived: SUMO writes its E1
/// occupancy in % and speed in m/s with 2 decimals (`--precision 2`, the default).
///
/// * Occupancy: the truth (SUMO's 300-s interval) is off its exact value by at most half a print
///   unit, 0.005 % = 5e-5. Citybrain's window is the mean of ten 30-s readings, each SUMO's
///   exact value off by at most 5e-5 (the generator's `/ 100` rounded to 4 decimals is exact),
///   so their mean is off by at most 5e-5 too; SUMO's exact 300-s occupancy *is* the mean of its
///   exact 30-s occupancies (the same occupied time over ten equal intervals). Hence
///   |citybrain − SUMO| ≤ 1e-4, plus float slack.
/// * Speed: the truth is off by at most 0.005 m/s = 0.018 km/h. Each 30-s reading is off by
///   0.018 km/h from SUMO's print, plus the generator's rounding of m/s × 3.6 (3 decimals, the
///   last one even, as 3.6 × k/100 = 36k/1000) to 2 decimals, at most 0.004 km/h; a count-weighted
///   mean of readings each off by ≤ 0.022 km/h is off by ≤ 0.022 km/h. SUMO's exact 300-s speed
///   (the mean over the vehicles of the 300 s) *is* the count-weighted mean of its exact 30-s
///   means (the same vehicles). Hence |citybrain − SUMO| ≤ 0.040 km/h, plus float slack.
const OCC_TOL: f64 = 1e-4 + 1e-9;
const SPEED_TOL: f64 = 0.040 + 1e-9;

#[test]
fn detector_windows_equal_sumo_5_minute_loop_output() {
    use citybrain::config::Settings;
    use citybrain::replay::{BLOCK_BYTES, ReplayOptions, replay};
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::io::Read;

    // SUMO's own E1 output with `period="300"` on the very loops of the recording
    // (`generate.py --loops5m grid2-stalls`): per loop, [start_ms, count, occupancy, speed_kmh].
    let name = "grid2-stalls";
    let fx = eval::fixtures();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fx.join(format!("{name}.loops5m.json.gz"))).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let truth: Value = serde_json::from_str(&text).unwrap();
    let (start, end) = (truth["start_ms"].as_u64().unwrap(), truth["end_ms"].as_u64().unwrap());
    assert_eq!(truth["window_ms"], 300_000);
    assert_eq!(start % 300_000, 0, "SUMO's 300-s intervals are citybrain's epoch-aligned windows");
    let loops = truth["loops"].as_object().unwrap();
    let windows = ((end - start) / 300_000) as usize;

    let dir = std::env::temp_dir().join(format!("citybrain-incidents-5m-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = ReplayOptions {
        city: fx.join(format!("{name}.city.geojson")),
        input: fx.join(format!("{name}.jsonl.gz")),
        out_lp: dir.join("out.lp"),
        alerts_out: None,
        dead_letter_out: Some(dir.join("dl.jsonl")),
        workers: 1,
        parsers: 1,
        progress: false,
        block_bytes: BLOCK_BYTES,
    };
    let summary = replay(&opts, &Settings::load(None).unwrap()).unwrap();
    assert_eq!(summary.rejected.values().sum::<u64>(), 0, "rejected {:?}", summary.rejected);
    // A reading for every loop and 30-s interval, so every 5-minute window has ten of them and
    // none may be missing from the output (not even a window without a vehicle).
    let readings = summary.accepted.values().sum::<u64>();
    assert_eq!(readings, (loops.len() * windows * 10) as u64, "{:?}", summary.accepted);

    // Citybrain's `traffic_detector` 5-minute points by (sensor, window start ms); a corrected
    // window is written again, so the last point of a series and time counts.
    let lp = std::fs::read_to_string(&opts.out_lp).unwrap();
    let mut ours: BTreeMap<(String, u64), BTreeMap<String, f64>> = BTreeMap::new();
    for line in lp.lines().filter(|l| l.starts_with("traffic_detector,")) {
        assert!(!line.contains('\\'), "no escaped tag expected in {line}");
        let (series, rest) = line.split_once(' ').unwrap();
        let (fields, ns) = rest.rsplit_once(' ').unwrap();
        let tags: BTreeMap<&str, &str> =
            series.split(',').skip(1).filter_map(|t| t.split_once('=')).collect();
        if tags["window"] != "5m" {
            continue;
        }
        let ns: u64 = ns.parse().unwrap();
        assert_eq!(ns % 1_000_000, 0);
        let fields = fields
            .split(',')
            .map(|f| {
                let (k, v) = f.split_once('=').unwrap();
                (k.to_string(), v.trim_end_matches('i').parse::<f64>().unwrap())
            })
            .collect();
        ours.insert((tags["sensor"].to_string(), ns / 1_000_000), fields);
    }

    let (mut compared, mut with_speed, mut max_occ, mut max_speed) = (0usize, 0usize, 0f64, 0f64);
    let mut bad = Vec::new();
    for (id, rows) in loops {
        for row in rows.as_array().unwrap() {
            let ts = row[0].as_u64().unwrap();
            let (count, occ, speed) = (row[1].as_u64().unwrap(), row[2].as_f64().unwrap(), row[3].as_f64());
            let Some(f) = ours.remove(&(id.clone(), ts)) else {
                bad.push(format!("{id} @{ts}: no citybrain window (SUMO count {count}, occupancy {occ})"));
                continue;
            };
            compared += 1;
            if f["count"] != count as f64 || f["flow_vph"] != count as f64 * 12.0 {
                bad.push(format!("{id} @{ts}: count {} flow {} ≠ SUMO {count}", f["count"], f["flow_vph"]));
            }
            let d = (f["occupancy"] - occ).abs();
            max_occ = max_occ.max(d);
            if d > OCC_TOL {
                bad.push(format!("{id} @{ts}: occupancy {} ≠ SUMO {occ}", f["occupancy"]));
            }
            match (f.get("speed_kmh"), speed) {
                (Some(a), Some(b)) => {
                    with_speed += 1;
                    max_speed = max_speed.max((a - b).abs());
                    if (a - b).abs() > SPEED_TOL {
                        bad.push(format!("{id} @{ts}: speed {a} ≠ SUMO {b} km/h (count {count})"));
                    }
                }
                (None, None) => assert_eq!(count, 0, "{id} @{ts}: vehicles without a speed"),
                (a, b) => bad.push(format!("{id} @{ts}: speed {a:?} vs SUMO {b:?} (count {count})")),
            }
        }
    }
    let extra: Vec<_> = ours.keys().take(5).collect();
    assert!(ours.is_empty(), "{} citybrain windows SUMO does not have, e.g. {extra:?}", ours.len());
    println!(
        "{compared} windows compared ({} loops × {windows}), {with_speed} with a speed; \
         max |Δ occupancy| {max_occ:.2e} (tolerance {OCC_TOL:.2e}), max |Δ speed| {max_speed:.4} km/h \
         (tolerance {SPEED_TOL:.3})",
        loops.len()
    );
    assert!(bad.is_empty(), "{} of {compared} windows differ from SUMO:\n{}", bad.len(), bad.join("\n"));
    assert_eq!(compared, loops.len() * windows, "every loop's every 5-minute window");
    assert!(compared >= 3_000 && loops.len() >= 100, "{compared} windows of {} loops", loops.len());
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
