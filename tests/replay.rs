//! End-to-end tests of `citybrain replay` and the traffic dataflows: recordings in, line
//! protocol, alert transitions and dead letters out, through the same code as the CLI.

use citybrain::config::Settings;
use citybrain::replay::{ReplayOptions, ReplaySummary, replay};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MIN: u64 = 60_000;

/// A scratch directory per test: `target/tmp/replay-{name}`, emptied at the start of each run.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("replay-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small city: one district, two cells, a chain of three 2-lane arterial segments
/// s0 → s1 → s2 (500 m, 60 km/h), one detector per lane (`k{seg}-{lane}`).
fn city() -> Value {
    let sq = |x0: f64, x1: f64| json!({"type": "Polygon", "coordinates": [[[x0, 0.0], [x1, 0.0], [x1, 1.0], [x0, 1.0], [x0, 0.0]]]});
    let mut f = vec![
        json!({"type": "Feature", "geometry": sq(0.0, 3.0), "properties": {"kind": "district", "id": "d1", "name": "Centre"}}),
        json!({"type": "Feature", "geometry": sq(0.0, 1.5), "properties": {"kind": "cell", "id": "c1", "district": "d1", "officers": ["o1"]}}),
        json!({"type": "Feature", "geometry": sq(1.5, 3.0), "properties": {"kind": "cell", "id": "c2", "district": "d1", "officers": ["o2"]}}),
    ];
    for s in 0..3 {
        let x = s as f64 + 0.1;
        let mut props = json!({"kind": "segment", "id": format!("s{s}"), "district": "d1", "length_m": 500.0,
            "speed_limit_kmh": 60.0, "lanes": 2, "road_class": "arterial"});
        if s < 2 {
            props["downstream"] = json!([format!("s{}", s + 1)]);
        }
        f.push(json!({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[x, 0.5], [x + 0.5, 0.5]]}, "properties": props}));
        for lane in 0..2 {
            f.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [x + 0.4, 0.5]},
                "properties": {"kind": "detector", "id": format!("k{s}-{lane}"), "segment": format!("s{s}"), "lane": lane}}));
        }
    }
    json!({"type": "FeatureCollection", "features": f})
}

/// One detector reading as a recording line.
fn reading(seg: u32, lane: u32, ts: u64, count: u32, occ: f64, speed: Option<f64>) -> String {
    json!({"topic": format!("city/traffic/detector/k{seg}-{lane}"), "payload": {
        "sensor": format!("k{seg}-{lane}"), "segment": format!("s{seg}"), "lane": lane, "ts": ts,
        "interval_s": 30, "count": count, "occupancy": occ, "speed_kmh": speed}})
    .to_string()
}

/// What a lane does in one 30-second interval.
type Behaviour = dyn Fn(u32, u32, u64) -> (u32, f64, Option<f64>);

/// Every detector reporting every 30 s from `T0` for `minutes`, as told by `how(seg, lane, t)`.
fn feed(minutes: u64, how: &Behaviour) -> Vec<String> {
    let mut lines = vec![];
    for i in 0..minutes * 2 {
        let ts = T0 + i * 30_000;
        for seg in 0..3 {
            for lane in 0..2 {
                let (count, occ, speed) = how(seg, lane, ts);
                lines.push(reading(seg, lane, ts, count, occ, speed));
            }
        }
    }
    lines
}

fn free_flow(_: u32, _: u32, _: u64) -> (u32, f64, Option<f64>) {
    (10, 0.1, Some(55.0))
}

/// The outputs of one replay.
struct Run {
    lp: String,
    alerts: Vec<Value>,
    dead: Vec<Value>,
    summary: ReplaySummary,
}

fn run_files(dir: &Path, city_path: &Path, input: &Path, workers: usize, config: Option<&Path>) -> Run {
    let opts = ReplayOptions {
        city: city_path.to_path_buf(),
        input: input.to_path_buf(),
        out_lp: dir.join(format!("out-{workers}.lp")),
        alerts_out: Some(dir.join(format!("alerts-{workers}.jsonl"))),
        dead_letter_out: Some(dir.join(format!("dl-{workers}.jsonl"))),
        workers,
        // Another number of parsers than of workers, so dealing readings to their owners is tested.
        parsers: workers % 2 + 1,
        progress: false,
        block_bytes: 2048, // many rounds even in a small file: the watermark moves as in a live feed
    };
    let settings = Settings::load(config).unwrap();
    let summary = replay(&opts, &settings).unwrap();
    let read_json = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    Run {
        lp: std::fs::read_to_string(&opts.out_lp).unwrap(),
        alerts: read_json(opts.alerts_out.as_ref().unwrap()),
        dead: read_json(opts.dead_letter_out.as_ref().unwrap()),
        summary,
    }
}

fn run(name: &str, lines: &[String], workers: usize) -> Run {
    let dir = scratch(name);
    let city_path = dir.join("city.geojson");
    std::fs::write(&city_path, city().to_string()).unwrap();
    let input = dir.join("feed.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    run_files(&dir, &city_path, &input, workers, None)
}

/// Parsed line protocol: (measurement, tags, fields, ns).
#[derive(Debug, Clone, PartialEq)]
struct Point {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, String>,
    ns: u64,
}

fn points(lp: &str) -> Vec<Point> {
    lp.lines()
        .map(|l| {
            let (series, rest) = l.split_once(' ').unwrap();
            let (fields, ns) = rest.rsplit_once(' ').unwrap();
            let mut tags = series.split(',');
            let measurement = tags.next().unwrap().to_string();
            let tags = tags.map(|t| t.split_once('=').unwrap()).map(|(k, v)| (k.into(), v.into())).collect();
            // Test data has no commas inside string fields except `subject`, which we skip.
            let fields = fields
                .split(',')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            Point { measurement, tags, fields, ns: ns.parse().unwrap() }
        })
        .collect()
}

fn find<'a>(pts: &'a [Point], m: &str, tags: &[(&str, &str)], start_ms: u64) -> Vec<&'a Point> {
    pts.iter()
        .filter(|p| p.measurement == m && p.ns == start_ms * 1_000_000)
        .filter(|p| tags.iter().all(|(k, v)| p.tags.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

fn field(p: &Point, k: &str) -> f64 {
    p.fields[k].trim_end_matches('i').parse().unwrap()
}

#[test]
fn fixed_input_gives_exact_windows() {
    // Lane 0 of s0: readings with different occupancy and speed; lane 1 empty road.
    let mut lines = vec![
        reading(0, 0, T0, 10, 0.2, Some(60.0)),
        reading(0, 0, T0 + 30_000, 30, 0.4, Some(40.0)),
        reading(0, 0, T0 + 60_000, 0, 0.1, None),
        reading(0, 1, T0, 0, 0.0, None),
    ];
    // Something much later, from two detectors (one alone so far ahead of every other would
    // not move the clock), closes the first windows.
    lines.push(reading(2, 0, T0 + 20 * MIN, 5, 0.1, Some(50.0)));
    lines.push(reading(2, 1, T0 + 20 * MIN, 5, 0.1, Some(50.0)));
    let r = run("fixed", &lines, 1);
    let pts = points(&r.lp);

    let d1 = find(&pts, "traffic_detector", &[("sensor", "k0-0"), ("window", "1m")], T0);
    assert_eq!(d1.len(), 1, "{:?}", d1);
    assert_eq!(field(d1[0], "count"), 40.0);
    assert_eq!(field(d1[0], "flow_vph"), 2400.0);
    assert!((field(d1[0], "occupancy") - 0.3).abs() < 1e-12);
    assert!((field(d1[0], "speed_kmh") - 45.0).abs() < 1e-12);

    let d5 = find(&pts, "traffic_detector", &[("sensor", "k0-0"), ("window", "5m")], T0);
    assert_eq!(field(d5[0], "count"), 40.0);
    assert_eq!(field(d5[0], "flow_vph"), 480.0);
    assert!((field(d5[0], "occupancy") - (0.2 * 30.0 + 0.4 * 30.0 + 0.1 * 30.0) / 90.0).abs() < 1e-12);
    assert!((field(d5[0], "speed_kmh") - 45.0).abs() < 1e-12);

    // The second minute has count 0: no speed field at all.
    let empty = find(&pts, "traffic_detector", &[("sensor", "k0-0"), ("window", "1m")], T0 + MIN);
    assert_eq!(field(empty[0], "count"), 0.0);
    assert!(!empty[0].fields.contains_key("speed_kmh"));

    // Segment s0, 5 minutes: both lanes.
    let s = find(&pts, "traffic_segment", &[("segment", "s0"), ("window", "5m")], T0);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].tags["district"], "d1");
    assert_eq!(s[0].tags["road_class"], "arterial");
    assert_eq!(field(s[0], "count"), 40.0);
    assert!((field(s[0], "occupancy") - (0.2 * 30.0 + 0.4 * 30.0 + 0.1 * 30.0) / 120.0).abs() < 1e-12);
    assert!((field(s[0], "tti") - 60.0 / 45.0).abs() < 1e-12);
    assert_eq!(field(s[0], "level"), 1.0); // 45 km/h > 40 on an arterial

    // District d1: only s0 observed in this window, not congested.
    let d = find(&pts, "traffic_district", &[("district", "d1"), ("window", "5m")], T0);
    assert_eq!(d.len(), 1);
    assert_eq!(field(d[0], "tpi"), 0.0);
    assert_eq!(field(d[0], "level"), 1.0);
    assert_eq!(field(d[0], "congested_km"), 0.0);
    assert!((field(d[0], "speed_kmh") - 45.0).abs() < 1e-9);

    // No window without readings is written.
    assert!(find(&pts, "traffic_detector", &[("sensor", "k1-0")], T0).is_empty());
    assert_eq!(r.summary.readings(), 6);
    assert!(r.dead.is_empty());
}

#[test]
fn late_data_corrects_and_too_late_is_dead_lettered() {
    // After 33 minutes of feed the watermark is well past 25:00 but within 15 minutes of it.
    let mut lines = feed(33, &free_flow);
    // Behind the watermark, within retention: corrects the closed windows [24, 25) and [20, 25).
    lines.push(reading(0, 0, T0 + 24 * MIN + 10_000, 100, 0.1, Some(30.0)));
    // Beyond retention.
    lines.push(reading(0, 0, T0 + 2 * MIN, 100, 0.1, Some(30.0)));
    lines.extend(feed(45, &free_flow).into_iter().skip(33 * 2 * 6));
    let r = run("late", &lines, 1);
    let pts = points(&r.lp);
    let w = find(&pts, "traffic_detector", &[("sensor", "k0-0"), ("window", "1m")], T0 + 24 * MIN);
    assert_eq!(w.len(), 2, "written when closed, then again corrected: {w:?}");
    assert_eq!(field(w[0], "count"), 20.0);
    assert_eq!(field(w[1], "count"), 120.0);
    let w5 = find(&pts, "traffic_segment", &[("segment", "s0"), ("window", "5m")], T0 + 20 * MIN);
    assert_eq!(w5.len(), 2, "{w5:?}");
    assert_eq!(field(w5[1], "count") - field(w5[0], "count"), 100.0);
    let d5 = find(&pts, "traffic_district", &[("district", "d1"), ("window", "5m")], T0 + 20 * MIN);
    assert_eq!(d5.len(), 2, "the district is corrected with its segment: {d5:?}");
    // The old window is untouched, and the too-late reading is in the dead letters.
    assert_eq!(
        find(&pts, "traffic_detector", &[("sensor", "k0-0"), ("window", "1m")], T0 + 2 * MIN).len(),
        1
    );
    assert_eq!(r.dead.len(), 1);
    assert_eq!(r.dead[0]["reason"], "too_late");
    assert_eq!(r.dead[0]["line"], 33 * 2 * 6 + 2);
    assert_eq!(r.summary.rejected["too_late"], 1);
}

#[test]
fn one_and_two_workers_write_identical_bytes() {
    let mut lines = feed(45, &|seg, lane, ts| {
        let m = (ts - T0) / MIN;
        if seg == 1 && lane == 0 && (10..22).contains(&m) {
            (0, 0.97, None)
        } else {
            (8 + seg + lane, 0.12, Some(48.0 + seg as f64))
        }
    });
    lines.insert(100, "garbage".into());
    lines.insert(200, reading(9, 9, T0, 1, 0.1, None));
    let a = run("w1", &lines, 1);
    let b = run("w2", &lines, 2);
    let c = run("w3", &lines, 3);
    assert!(!a.lp.is_empty());
    assert_eq!(a.lp, b.lp);
    assert_eq!(a.lp, c.lp);
    assert_eq!(a.alerts, b.alerts);
    assert_eq!(a.dead, b.dead);
    assert_eq!(a.dead, c.dead);
    assert!(a.alerts.iter().any(|x| x["rule"] == "traffic.incident"));
}

#[test]
fn arrival_order_does_not_change_final_values() {
    // Shuffle deliveries within the 5 s allowed lateness: the last write of each series and
    // time must be identical (InfluxDB keeps the last write).
    let lines = feed(30, &|seg, lane, ts| {
        (((ts / 30_000) % 7) as u32 + seg + lane, 0.1 + 0.01 * lane as f64, Some(50.0))
    });
    let mut shuffled = lines.clone();
    for chunk in shuffled.chunks_mut(6) {
        chunk.reverse();
    }
    type Series = (String, BTreeMap<String, String>, u64);
    let last = |r: &Run| -> BTreeMap<Series, BTreeMap<String, String>> {
        points(&r.lp).into_iter().map(|p| ((p.measurement, p.tags, p.ns), p.fields)).collect()
    };
    let a = run("order-a", &lines, 1);
    let b = run("order-b", &shuffled, 2);
    assert_eq!(last(&a), last(&b));
}

#[test]
fn blocked_lane_raises_an_incident_that_clears() {
    // Lane 0 of s1 blocked from minute 10 to 20: occupancy 1, nothing crosses; lane 1 flows.
    let lines = feed(40, &|seg, lane, ts| {
        let m = (ts - T0) / MIN;
        if seg == 1 && lane == 0 && (10..20).contains(&m) { (0, 1.0, None) } else { (9, 0.12, Some(50.0)) }
    });
    let r = run("incident", &lines, 1);
    let inc: Vec<&Value> = r.alerts.iter().filter(|a| a["rule"] == "traffic.incident").collect();
    assert_eq!(inc.len(), 2, "{inc:?}");
    assert_eq!(inc[0]["state"], "raised");
    assert_eq!(inc[0]["subject"], json!({"segment": "s1", "lane": 0}));
    assert_eq!(inc[0]["severity"], "critical");
    assert_eq!(inc[0]["district"], "d1");
    assert_eq!(inc[0]["cell"], "c1");
    assert_eq!(inc[0]["id"], "traffic.incident:s1:0");
    // Raised at the end of the 3rd stopped minute (3 of 6, README "the incident rule"), cleared
    // when the first free minute closes (the queue discharges).
    assert_eq!(inc[0]["raised_ts"], T0 + 13 * MIN);
    assert_eq!(inc[1]["state"], "cleared");
    assert_eq!(inc[1]["raised_ts"], T0 + 13 * MIN);
    assert_eq!(inc[1]["cleared_ts"], T0 + 21 * MIN);
    // And the transitions are in the line protocol too.
    assert_eq!(
        r.lp.lines().filter(|l| l.starts_with("alert,") && l.contains("rule=traffic.incident")).count(),
        2
    );
}

#[test]
fn rush_hour_queues_raise_no_incident() {
    // A congested hour: every lane slow; the left-turn lane (lane 0) of every segment sits in a
    // queue, fully occupied with nothing crossing for up to four minutes at a time, while
    // lane 1 crawls; downstream segments are congested too (spill-back).
    let lines = feed(60, &|seg, lane, ts| {
        let m = (ts - T0) / MIN;
        if lane == 0 && (m + seg as u64) % 5 != 4 {
            (0, 0.98, None)
        } else if lane == 0 {
            (6, 0.7, Some(8.0))
        } else {
            (5, 0.55, Some(12.0))
        }
    });
    let r = run("rush", &lines, 1);
    assert!(r.alerts.iter().all(|a| a["rule"] != "traffic.incident"), "{:?}", r.alerts);
    // It is congestion, and the district index says so.
    let pts = points(&r.lp);
    let d = find(&pts, "traffic_district", &[("district", "d1"), ("window", "5m")], T0 + 30 * MIN);
    assert_eq!(field(d[0], "tpi"), 10.0);
    assert_eq!(field(d[0], "level"), 5.0);
    assert_eq!(field(d[0], "congested_km"), 1.5);
    // …and a persistently congested district raises traffic.congestion after 15 minutes.
    let cong: Vec<&Value> = r.alerts.iter().filter(|a| a["rule"] == "traffic.congestion").collect();
    assert_eq!(cong.len(), 1, "{cong:?}");
    assert_eq!(cong[0]["raised_ts"], T0 + 15 * MIN);
    assert_eq!(cong[0]["subject"], json!({"district": "d1"}));
}

#[test]
fn a_silent_detector_goes_offline_and_comes_back() {
    // k2-1 is silent from minute 10 to minute 20.
    let lines: Vec<String> = feed(30, &free_flow)
        .into_iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ts = v["payload"]["ts"].as_u64().unwrap();
            !(v["payload"]["sensor"] == "k2-1" && (T0 + 10 * MIN..T0 + 20 * MIN).contains(&ts))
        })
        .collect();
    let r = run("offline", &lines, 2);
    let off: Vec<&Value> = r.alerts.iter().filter(|a| a["rule"] == "traffic.detector_offline").collect();
    assert_eq!(off.len(), 2, "{off:?}");
    // Last reading 09:30 covers until 10:00; three silent intervals later, at 11:30, it is offline.
    assert_eq!(off[0]["raised_ts"], T0 + 11 * MIN + 30_000);
    assert_eq!(off[0]["subject"], json!({"sensor": "k2-1"}));
    assert_eq!(off[1]["cleared_ts"], T0 + 20 * MIN);
}

#[test]
fn bad_input_is_dead_lettered_and_the_rest_is_unchanged() {
    let good = feed(20, &free_flow);
    let clean = run("dl-clean", &good, 1);
    let mut bad = good.clone();
    let inserts = [
        (5, "{not json".to_string()),
        (10, json!({"topic": "city/traffic/detector/k0-0", "payload": {"sensor": "k0-0", "segment": "s0", "ts": T0, "interval_s": 30, "count": "many"}}).to_string()),
        (15, reading(7, 0, T0 + 60_000, 3, 0.1, Some(40.0))),
        (20, json!({"topic": "city/weather/station/w1", "payload": {"ts": T0}}).to_string()),
        (25, json!({"topic": "city/traffic/detector/k0-0", "payload": {"sensor": "k0-0", "segment": "s2", "ts": T0, "interval_s": 30, "count": 3}}).to_string()),
        (30, json!({"topic": "city/traffic/detector/k0-0", "payload": {"sensor": "k0-0", "segment": "s0", "ts": T0, "interval_s": 30, "count": 3, "occupancy": 7}}).to_string()),
        (35, json!({"topic": "city/traffic/detector/k0-0", "payload": [
            {"sensor": "k0-0", "segment": "s0", "ts": T0, "interval_s": 0, "count": 3},
            {"sensor": "nope", "segment": "s0", "ts": T0, "interval_s": 30, "count": 3}]}).to_string()),
        (40, json!({"topic": "city/health/case/x", "payload": {"person": "110105194912310021", "ts": "tomorrow", "status": "confirmed"}}).to_string()),
        (45, json!({"payload": {}}).to_string()),
    ];
    for (at, line) in &inserts {
        bad.insert(*at, line.clone());
    }
    let r = run("dl-bad", &bad, 2);
    assert_eq!(r.lp, clean.lp, "valid input must produce the same output");
    let reasons: Vec<(u64, &str)> =
        r.dead.iter().map(|d| (d["line"].as_u64().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(
        reasons,
        vec![
            (6, "malformed_json"),
            (11, "invalid_payload"),
            (16, "unknown_id"),
            (21, "unknown_topic"),
            (26, "unknown_id"),
            (31, "invalid_value"),
            (36, "invalid_value"),
            (36, "unknown_id"),
            (41, "invalid_value"),
            (46, "invalid_payload"),
        ]
    );
    assert!(r.dead.iter().all(|d| d["detail"].as_str().is_some_and(|s| !s.is_empty())));
    let text = serde_json::to_string(&r.dead).unwrap();
    assert!(!text.contains("110105194912310021"), "a personal id leaked into the dead letters");
    assert_eq!(r.summary.rejected.values().sum::<u64>(), 10);
}

#[test]
fn state_stays_flat_over_a_long_replay() {
    // Two hours and sixteen hours of the same city: the live windowed state is bounded by the
    // retention (15 minutes), not by the length of the input.
    let short = run("flat-short", &feed(120, &free_flow), 1);
    let long = run("flat-long", &feed(16 * 60, &free_flow), 1);
    assert_eq!(long.summary.readings(), 8 * short.summary.readings());
    assert!(short.summary.max_live_windows > 0);
    assert_eq!(long.summary.max_live_windows, short.summary.max_live_windows);
    // 6 detectors × (17 one-minute + 4 five-minute windows) within retention plus the round in flight.
    assert!(long.summary.max_live_windows < 6 * 40, "{}", long.summary.max_live_windows);
}

#[test]
fn gzip_input_and_config_file() {
    use std::io::Write;
    let dir = scratch("gzip");
    let city_path = dir.join("city.geojson");
    std::fs::write(&city_path, city().to_string()).unwrap();
    let lines = feed(12, &|_, _, _| (3, 0.6, Some(25.0)));
    let plain = dir.join("feed.jsonl");
    std::fs::write(&plain, lines.join("\n")).unwrap();
    let gz = dir.join("feed.jsonl.gz");
    let mut enc =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(lines.join("\n").as_bytes()).unwrap();
    enc.finish().unwrap();
    let a = run_files(&dir, &city_path, &plain, 1, None);
    let b = run_files(&dir, &city_path, &gz, 2, None);
    assert_eq!(a.lp, b.lp);
    // A config file changes the bands: 25 km/h on an arterial is level 3 by default, 1 here.
    let cfg = dir.join("citybrain.toml");
    std::fs::write(&cfg, "[traffic.bands]\narterial = [20.0, 15.0, 10.0, 5.0]\n").unwrap();
    let c = run_files(&dir, &city_path, &plain, 1, Some(&cfg));
    let level_of = |r: &Run| {
        field(find(&points(&r.lp), "traffic_segment", &[("segment", "s0"), ("window", "5m")], T0)[0], "level")
    };
    assert_eq!(level_of(&a), 3.0);
    assert_eq!(level_of(&c), 1.0);
}

#[test]
fn the_cli_reports_and_survives_bad_arguments() {
    let exe = env!("CARGO_BIN_EXE_citybrain");
    let dir = scratch("cli");
    std::fs::write(dir.join("city.geojson"), city().to_string()).unwrap();
    std::fs::write(dir.join("feed.jsonl"), feed(6, &free_flow).join("\n")).unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "replay",
            "--city",
            "city.geojson",
            "--input",
            "feed.jsonl",
            "--out-lp",
            "o/out.lp",
            "--quiet",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("72 readings accepted"), "{err}");
    assert!(err.contains("points written"), "{err}");
    assert!(dir.join("o/out.lp").exists());
    // A missing input is an error with a clear message and exit code 1.
    let out = std::process::Command::new(exe)
        .args(["replay", "--city", "city.geojson", "--input", "missing.jsonl", "--out-lp", "x.lp"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open input missing.jsonl"));
}

#[test]
fn simulated_rush_hour_with_one_blocked_lane() {
    use citybrain_sim::{CityOptions, FeedOptions, IncidentSpec, detector_feed, generate_city, geojson_text};
    // The simulator's city, 07:00–10:00 local time (morning rush), one lane blocked 08:00–08:15.
    let geojson = geojson_text(&generate_city(&CityOptions::default()).unwrap());
    let model = citybrain_dataflows::CityModel::from_geojson_str(&geojson).unwrap();
    let seg = model.segments.iter().find(|s| s.lanes >= 2 && !s.downstream.is_empty()).unwrap();
    let incident = IncidentSpec { segment: seg.id.clone(), lane: 1, start_min: 60, duration_min: 15 };
    let opts = FeedOptions { duration_min: 180, incidents: vec![incident], ..FeedOptions::default() };
    let lines = detector_feed(&model, &opts).unwrap();

    let dir = scratch("sim");
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    std::fs::write(dir.join("feed.jsonl"), lines.join("\n")).unwrap();
    let r = run_files(&dir, &dir.join("city.geojson"), &dir.join("feed.jsonl"), 2, None);
    assert!(r.dead.is_empty(), "{:?}", &r.dead[..r.dead.len().min(3)]);
    assert_eq!(r.summary.readings(), lines.len() as u64);

    let incidents: Vec<&Value> = r.alerts.iter().filter(|a| a["rule"] == "traffic.incident").collect();
    assert_eq!(incidents.len(), 2, "exactly the injected lane, raised then cleared: {incidents:?}");
    assert_eq!(incidents[0]["subject"], json!({"segment": seg.id, "lane": 1}));
    let start = opts.start_ms + 60 * MIN;
    assert_eq!(incidents[0]["raised_ts"], start + 3 * MIN, "three stopped minutes");
    assert_eq!(incidents[1]["cleared_ts"], start + 16 * MIN, "cleared when the first free minute closes");
    // Every segment and district of the city was written for every 5-minute window.
    let pts = points(&r.lp);
    let seg_points = pts.iter().filter(|p| p.measurement == "traffic_segment").count();
    assert_eq!(seg_points, model.segments.len() * 36);
    assert_eq!(
        pts.iter().filter(|p| p.measurement == "traffic_district").count(),
        model.districts.len() * 36
    );
    // The city is the sum of its districts, window by window.
    let city: Vec<&Point> = pts.iter().filter(|p| p.measurement == "traffic_city").collect();
    assert_eq!(city.len(), 36);
    let mut congested_windows = 0;
    for c in city {
        let districts = pts.iter().filter(|p| p.measurement == "traffic_district" && p.ns == c.ns);
        let (sum, n) = districts.fold((0.0, 0), |(s, n), p| (s + field(p, "congested_km"), n + 1));
        assert_eq!(n, model.districts.len());
        assert!((field(c, "congested_km") - sum).abs() < 1e-9, "{c:?}: the districts sum to {sum}");
        assert_eq!(c.tags["window"], "5m");
        congested_windows += usize::from(sum > 0.0);
    }
    assert!(congested_windows > 0, "the rush hour congests some windows");
}

// ---------------------------------------------------------------------------------------------
// The core tells the truth on real input: copies, bad clocks, the end of input.

/// A varied feed (counts and occupancies change every interval), so copies and corrections
/// matter.
fn varied(minutes: u64) -> Vec<String> {
    feed(minutes, &|seg, lane, ts| {
        let i = ((ts - T0) / 30_000) as u32;
        ((i * 7 + seg * 3 + lane) % 13, ((i + seg + lane) % 9) as f64 / 20.0, Some(30.0 + (i % 5) as f64))
    })
}

#[test]
fn every_line_twice_writes_the_same_bytes() {
    let lines = varied(40);
    let once = run("dup-once", &lines, 1);
    let doubled: Vec<String> = lines.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
    for workers in [1, 2] {
        let twice = run(&format!("dup-twice-{workers}"), &doubled, workers);
        assert_eq!(twice.lp, once.lp, "{workers} worker(s)");
        assert_eq!(twice.alerts, once.alerts);
        assert!(twice.dead.is_empty(), "a copy is not a dead letter: {:?}", &twice.dead[..1]);
        assert_eq!(twice.summary.duplicates, lines.len() as u64);
        assert_eq!(twice.summary.readings(), lines.len() as u64);
    }
    // The whole recording replayed again after its end: every copy is a duplicate (the first
    // ones are too late by then).
    let again: Vec<String> = lines.iter().chain(lines.iter()).cloned().collect();
    let r = run("dup-again", &again, 2);
    assert_eq!(
        r.summary.duplicates + r.summary.rejected.get("too_late").copied().unwrap_or(0),
        lines.len() as u64
    );
    assert_eq!(
        points(&r.lp).iter().filter(|p| p.measurement == "traffic_detector").count(),
        points(&once.lp).iter().filter(|p| p.measurement == "traffic_detector").count()
    );
}

#[test]
fn a_copy_with_other_content_replaces_the_first() {
    let lines = varied(20);
    let mut fixed = lines.clone();
    // The reading of k0-0 at minute 3 is corrected later (a re-sent, repaired record).
    let at = fixed
        .iter()
        .position(|l| l.contains("\"k0-0\"") && l.contains(&format!("\"ts\":{}", T0 + 3 * MIN)))
        .unwrap();
    let corrected = reading(0, 0, T0 + 3 * MIN, 99, 0.5, Some(20.0));
    fixed[at] = corrected.clone();
    let want = run("corr-want", &fixed, 1);
    let mut with_copy = lines.clone();
    with_copy.insert(at + 40, corrected);
    let got = run("corr-got", &with_copy, 2);
    assert_eq!(got.summary.corrections, 1);
    // The last value written for every window is the corrected one.
    type Series = (String, Vec<(String, String)>, u64);
    let last = |lp: &str| -> BTreeMap<Series, BTreeMap<String, String>> {
        points(lp)
            .into_iter()
            .filter(|p| p.measurement != "alert")
            .map(|p| ((p.measurement, p.tags.into_iter().collect(), p.ns), p.fields))
            .collect()
    };
    assert_eq!(last(&got.lp), last(&want.lp));
}

#[test]
fn one_record_a_day_ahead_changes_nothing_else() {
    let lines = varied(40);
    let clean = run("future-clean", &lines, 1);
    let mut bad = lines.clone();
    // A sensor with a wrong clock, in the middle; and a far-future record of an unknown detector.
    bad.insert(200, reading(1, 0, T0 + 24 * 60 * MIN, 3, 0.2, Some(40.0)));
    let unknown = reading(1, 0, T0 + 48 * 60 * MIN, 3, 0.2, Some(40.0)).replace("k1-0", "k9-9");
    bad.insert(300, unknown);
    for workers in [1, 2] {
        let r = run(&format!("future-bad-{workers}"), &bad, workers);
        assert_eq!(r.lp, clean.lp, "{workers} worker(s)");
        assert_eq!(r.alerts, clean.alerts);
        let reasons: Vec<(u64, &str)> =
            r.dead.iter().map(|d| (d["line"].as_u64().unwrap(), d["reason"].as_str().unwrap())).collect();
        assert_eq!(reasons, vec![(301, "unknown_id"), (201, "future_ts")]);
        assert_eq!(r.dead[1]["topic"], "city/traffic/detector/k1-0");
        assert_eq!(r.summary.end_ts, clean.summary.end_ts);
    }
}

#[test]
fn a_recording_that_ends_reports_only_the_detector_that_really_fell_silent() {
    // k1-0 falls silent at minute 30 of 90; everything else reports to the end.
    let lines: Vec<String> = varied(90)
        .into_iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            !(v["payload"]["sensor"] == "k1-0" && v["payload"]["ts"].as_u64().unwrap() >= T0 + 30 * MIN)
        })
        .collect();
    let r = run("ends", &lines, 2);
    let off: Vec<&Value> = r.alerts.iter().filter(|a| a["rule"] == "traffic.detector_offline").collect();
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(off[0]["subject"], json!({"sensor": "k1-0"}));
    assert_eq!(off[0]["state"], "raised");
    // Its last reading (29:30) covers until 30:00; three intervals later it is offline.
    assert_eq!(off[0]["raised_ts"], T0 + 31 * MIN + 30_000);
    assert_eq!(
        r.summary.alerts_active,
        r.alerts.iter().filter(|a| a["state"] == "raised").count() as u64
            - r.alerts.iter().filter(|a| a["state"] == "cleared").count() as u64
    );
    // And a recording that simply ends reports nothing offline.
    let full = run("ends-full", &varied(90), 1);
    assert!(full.alerts.iter().all(|a| a["rule"] != "traffic.detector_offline"), "{:?}", full.alerts);
}

// ---------------------------------------------------------------------------------------------
// Emergency: the simulator's calls and units through `citybrain replay`.

#[test]
fn simulated_emergencies_write_indicators_recommendations_and_alerts() {
    use citybrain_sim::{
        CityOptions, EmergencyOptions, FeedOptions, MassCasualtySpec, generate_city, geojson_text,
        scenario_feed,
    };
    let geojson = geojson_text(&generate_city(&CityOptions::default()).unwrap());
    let model = citybrain_dataflows::CityModel::from_geojson_str(&geojson).unwrap();
    let feed = FeedOptions { duration_min: 120, ..FeedOptions::default() };
    let burst = MassCasualtySpec { district: "district-5".into(), minute: 40, calls: 12 };
    let em = EmergencyOptions { call_rate: 3.0, mass_casualty: vec![burst], ..EmergencyOptions::default() };
    let lines = scenario_feed(&model, &geojson, &feed, &em).unwrap();
    let dir = scratch("emergency");
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    std::fs::write(dir.join("feed.jsonl"), lines.join("\n")).unwrap();
    let one = run_files(&dir, &dir.join("city.geojson"), &dir.join("feed.jsonl"), 1, None);
    assert!(one.dead.is_empty(), "{:?}", &one.dead[..one.dead.len().min(3)]);
    assert!(one.summary.accepted["emergency/incident"] > 100, "{:?}", one.summary.accepted);

    let pts = points(&one.lp);
    let district: Vec<&Point> = pts.iter().filter(|p| p.measurement == "emergency_district").collect();
    assert!(district.iter().any(|p| p.fields.contains_key("response_p90_s")), "percentiles are written");
    let dispatch: Vec<&Point> = pts.iter().filter(|p| p.measurement == "emergency_dispatch").collect();
    assert!(
        dispatch.iter().any(|p| p.tags["rank"] == "1" && !p.fields["unit"].is_empty()),
        "recommendations"
    );
    assert!(dispatch.iter().any(|p| p.fields["unit"].is_empty()), "and their withdrawal on dispatch");
    // The burst leaves its district short of ambulances.
    let gaps: Vec<&Value> = one.alerts.iter().filter(|a| a["rule"] == "emergency.coverage_gap").collect();
    assert!(gaps.iter().any(|a| a["subject"] == json!({"district": "district-5", "unit_type": "ambulance"})));
    assert!(one.alerts.iter().any(|a| a["rule"] == "emergency.surge" && a["district"] == "district-5"));

    // Same bytes on two workers.
    let two = run_files(&dir, &dir.join("city.geojson"), &dir.join("feed.jsonl"), 2, None);
    assert_eq!(one.lp, two.lp);
    assert_eq!(one.alerts, two.alerts);
}

// ---------------------------------------------------------------------------------------------
// Grid: the simulator's cases and cell sensors (with a rainstorm) through `citybrain replay`.

#[test]
fn simulated_grid_writes_cell_indicators_and_alerts_to_the_cells() {
    use citybrain_sim::{
        CityOptions, FeedOptions, GridOptions, GridSim, RainstormSpec, Scenario, SilentSensorSpec, Simulator,
        generate_city, geojson_text,
    };
    let geojson = geojson_text(&generate_city(&CityOptions::default()).unwrap());
    let model = citybrain_dataflows::CityModel::from_geojson_str(&geojson).unwrap();
    let feed = FeedOptions { duration_min: 180, ..FeedOptions::default() };
    let opts = GridOptions {
        case_rate: 2.0,
        rainstorms: vec![RainstormSpec { district: "district-2".into(), minute: 20, duration_min: 60 }],
        silent_sensors: vec![SilentSensorSpec { sensor: None, minute: 30 }],
    };
    let grid = GridSim::new(&model, &feed, &opts).unwrap();
    let silent = grid.silent_sensors()[0].0.to_string();
    let sim = Scenario::traffic_only(Simulator::new(&model, &feed).unwrap()).with_grid(grid).unwrap();
    let mut lines = Vec::new();
    for batch in sim {
        lines.extend(batch.unwrap().lines);
    }
    let dir = scratch("grid");
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    std::fs::write(dir.join("feed.jsonl"), lines.join("\n")).unwrap();
    let one = run_files(&dir, &dir.join("city.geojson"), &dir.join("feed.jsonl"), 1, None);
    assert!(one.dead.is_empty(), "{:?}", &one.dead[..one.dead.len().min(3)]);
    assert!(one.summary.accepted["grid/case"] > 100, "{:?}", one.summary.accepted);
    assert!(one.summary.accepted["grid/sensor"] > 1000, "{:?}", one.summary.accepted);

    let pts = points(&one.lp);
    let cells: Vec<&Point> = pts.iter().filter(|p| p.measurement == "grid_cell").collect();
    assert!(cells.iter().any(|p| p.fields["open_cases"] != "0i"), "open cases are counted");
    assert!(cells.iter().any(|p| p.fields["closed_today"] != "0i"), "and closed ones");
    assert!(pts.iter().any(|p| p.measurement == "grid_district" && p.fields.contains_key("mttr_s")));
    assert!(pts.iter().any(|p| p.measurement == "grid_sensor" && p.tags["kind"] == "water_level"));
    // The rainstorm floods district-2: water-level alarms there and nowhere else; every grid
    // alert names its cell, so it reaches that cell's officers.
    let threshold: Vec<&Value> = one.alerts.iter().filter(|a| a["rule"] == "grid.sensor_threshold").collect();
    assert!(threshold.iter().any(|a| a["district"] == "district-2" && a["state"] == "raised"));
    assert!(
        threshold
            .iter()
            .all(|a| a["district"] == "district-2"
                || !a["subject"]["sensor"].as_str().unwrap().contains("water")),
        "{threshold:?}"
    );
    assert!(one.alerts.iter().filter(|a| a["domain"] == "grid").all(|a| a["cell"].is_string()));
    assert!(one.alerts.iter().any(|a| a["rule"] == "grid.case_assigned"));
    let stale: Vec<&Value> = one.alerts.iter().filter(|a| a["rule"] == "grid.sensor_stale").collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0]["subject"]["sensor"], silent.as_str());

    // Same bytes on two workers, and with every line twice.
    let two = run_files(&dir, &dir.join("city.geojson"), &dir.join("feed.jsonl"), 2, None);
    assert_eq!(one.lp, two.lp);
    assert_eq!(one.alerts, two.alerts);
    let doubled: Vec<String> = lines.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
    std::fs::write(dir.join("twice.jsonl"), doubled.join("\n")).unwrap();
    let twice = run_files(&dir, &dir.join("city.geojson"), &dir.join("twice.jsonl"), 2, None);
    assert_eq!(one.lp, twice.lp);
    assert_eq!(one.alerts, twice.alerts);
}

// ---------------------------------------------------------------------------------------------
// Public health: the simulator's travellers through the `citybrain replay` binary; no clear
// id-card number leaves it (CONTRACT §1–2).

#[test]
fn simulated_health_finds_contacts_and_never_leaks_a_clear_id() {
    use citybrain_sim::{
        CityOptions, FeedOptions, HealthOptions, HealthSim, Scenario, Simulator, generate_city, geojson_text,
        is_valid_id_card,
    };
    let geojson = geojson_text(&generate_city(&CityOptions::default()).unwrap());
    let model = citybrain_dataflows::CityModel::from_geojson_str(&geojson).unwrap();
    let feed = FeedOptions { duration_min: 120, ..FeedOptions::default() };
    let opts = HealthOptions { travellers: 500, confirmed_cases: vec![90], ..HealthOptions::default() };
    let health = HealthSim::new(&model, &feed, &opts).unwrap();
    let sim = Scenario::traffic_only(Simulator::new(&model, &feed).unwrap()).with_health(health).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for batch in sim {
        lines.extend(batch.unwrap().lines);
    }
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        if let Some(p) = v["payload"]["person"].as_str() {
            assert!(is_valid_id_card(p), "{p}");
            ids.insert(p.to_string());
        }
    }
    assert!(ids.len() > 400, "{}", ids.len());
    // Hand-written malformed lines, each quoting a clear id-card number.
    let numeric = ids.iter().find(|p| !p.ends_with('X')).unwrap().clone();
    let mut own: Vec<String> =
        ["330106199001011234", "330102198512120019", "33010520001231555X", "330108197703030303"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    own.push(numeric.clone());
    let ts = feed.start_ms + 100 * MIN;
    let bad = [
        // Not JSON (cut off).
        format!(
            r#"{{"topic":"city/health/trip/trip-x","payload":{{"person":"{}","ts":{ts},"carrier":"bus","#,
            own[0]
        ),
        // A wrong type: person as a number, ts as the id.
        format!(
            r#"{{"topic":"city/health/case/x1","payload":{{"person":{numeric},"ts":{ts},"status":"confirmed"}}}}"#
        ),
        format!(
            r#"{{"topic":"city/health/case/x2","payload":{{"person":"{}","ts":"{}","status":"confirmed"}}}}"#,
            own[1], own[1]
        ),
        // An unknown status, with the person as the topic id.
        format!(
            r#"{{"topic":"city/health/case/{}","payload":{{"person":"{}","ts":{ts},"status":"infected"}}}}"#,
            own[2], own[2]
        ),
        // A check-in at an unknown cell.
        format!(
            r#"{{"topic":"city/health/checkin/v-x","payload":{{"person":"{}","ts":{ts},"venue":"v-x","cell":"no-such-cell"}}}}"#,
            own[3]
        ),
    ];
    ids.extend(own);
    let at = lines.len() * 4 / 5;
    for (k, l) in bad.iter().enumerate() {
        lines.insert(at + k * 7, l.clone());
    }

    let dir = scratch("health");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(dir.join("city.geojson"), &geojson).unwrap();
    std::fs::write(dir.join("feed.jsonl"), lines.join("\n") + "\n").unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_citybrain"))
        .args([
            "replay",
            "--city",
            "city.geojson",
            "--input",
            "feed.jsonl",
            "--out-lp",
            "out/out.lp",
            "--alerts-out",
            "out/alerts.jsonl",
            "--dead-letter-out",
            "out/dl.jsonl",
        ])
        .env("RUST_LOG", "debug")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "{stderr}");

    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let alerts: Vec<Value> = read("alerts.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let contacts: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "health.contact").collect();
    assert!(contacts.len() >= 5, "the case's co-passengers: {contacts:?}");
    assert!(contacts.iter().all(|a| a["subject"]["person"].is_string() && a["subject"]["date"].is_string()));
    let dead: Vec<Value> = read("dl.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    assert!(dead.iter().any(|d| d["reason"] == "unknown_id"), "{dead:?}");

    // No clear id, nor its first 14 characters (area code and birth date), anywhere.
    let mut texts = vec![("stderr".to_string(), stderr), ("stdout".to_string(), stdout)];
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        texts.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
    }
    for id in &ids {
        for (name, text) in &texts {
            for needle in [&id[..], &id[..14]] {
                if let Some(i) = text.find(needle) {
                    let ctx = &text[i.saturating_sub(200)..(i + 100).min(text.len())];
                    panic!("{name} holds {needle:?} (of a clear id): …{ctx}…");
                }
            }
        }
    }
}
