//! The emergency domain driven through the whole city dataflow (no files, no binary): each
//! alert rule raised and cleared at the right event time, the interval percentiles against a
//! sorted-list computation, recommendations withdrawn on dispatch, and the same output on one
//! and two workers and with every event delivered twice.

use citybrain_dataflows::alerts::Rule;
use citybrain_dataflows::emergency::EmOut;
use citybrain_dataflows::emergency::model::Interval;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::{Config, Ms};
use serde_json::json;

mod common;
use common::{Delivered, Msg, rounds_of, transitions};

const T0: Ms = 1_767_225_600_000;
const S: Ms = 1000;

/// One district and cell; a ring of four one-way segments round a square block, and three
/// stations.
const CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[0.1,0],[0.1,0.1],[0,0.1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[0.1,0],[0.1,0.1],[0,0.1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.02,0.02],[0.08,0.02]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":6600,"speed_limit_kmh":60,"lanes":1,"road_class":"arterial","downstream":["s2"],"upstream":["s4"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.08,0.02],[0.08,0.08]]},"properties":{"kind":"segment","id":"s2","district":"d1","length_m":6600,"speed_limit_kmh":60,"lanes":1,"road_class":"arterial","downstream":["s3"],"upstream":["s1"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.08,0.08],[0.02,0.08]]},"properties":{"kind":"segment","id":"s3","district":"d1","length_m":6600,"speed_limit_kmh":60,"lanes":1,"road_class":"arterial","downstream":["s4"],"upstream":["s2"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.02,0.08],[0.02,0.02]]},"properties":{"kind":"segment","id":"s4","district":"d1","length_m":6600,"speed_limit_kmh":60,"lanes":1,"road_class":"arterial","downstream":["s1"],"upstream":["s3"]}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.03,0.02]},"properties":{"kind":"station","id":"fire-1","type":"fire","district":"d1"}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.08,0.05]},"properties":{"kind":"station","id":"ems-1","type":"ems","district":"d1"}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.05,0.08]},"properties":{"kind":"station","id":"police-1","type":"police","district":"d1"}}
]}"#;

/// Drives the emergency test city (see [`common::drive`]).
fn drive(rounds: &[(Vec<Msg>, Ms)], workers: usize, cfg: Config) -> Delivered {
    common::drive(CITY, rounds, workers, cfg)
}

fn incident(id: &str, ts: Ms, status: &str, kind: &str, severity: u8) -> Msg {
    (
        format!("city/emergency/incident/{id}"),
        json!({"incident": id, "ts": ts, "status": status, "type": kind, "severity": severity,
               "lon": 0.05, "lat": 0.021}),
    )
}

fn unit(id: &str, ts: Ms, kind: &str, status: &str, station: &str, lon: f64, lat: f64) -> Msg {
    (
        format!("city/emergency/unit/{id}"),
        json!({"unit": id, "ts": ts, "type": kind, "status": status, "station": station, "lon": lon, "lat": lat}),
    )
}

#[test]
fn unassigned_is_raised_at_its_deadline_and_cleared_by_the_dispatch() {
    let msgs = vec![
        incident("i1", T0 + 10 * S, "reported", "medical", 1),
        incident("i2", T0 + 10 * S, "reported", "medical", 4),
        incident("i1", T0 + 100 * S, "dispatched", "medical", 1),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 300 * S, 7 * S), 1, Config::default());
    // Severity 1: raised at report + 60 s (a timer, no input then), cleared at the dispatch.
    assert_eq!(transitions(&out, Rule::EmergencyUnassigned), vec![(T0 + 70 * S, 1), (T0 + 100 * S, -1)]);
}

#[test]
fn response_sla_is_raised_at_the_breach_and_cleared_on_scene() {
    let msgs = vec![
        incident("f1", T0, "reported", "fire", 2),
        incident("f1", T0 + 20 * S, "dispatched", "fire", 2),
        incident("f1", T0 + 50 * S, "en_route", "fire", 2),
        incident("f1", T0 + 350 * S, "on_scene", "fire", 2),
        // An ambulance 300 s en route is within its 480 s.
        incident("m1", T0, "reported", "medical", 3),
        incident("m1", T0 + 30 * S, "dispatched", "medical", 3),
        incident("m1", T0 + 40 * S, "en_route", "medical", 3),
        incident("m1", T0 + 340 * S, "on_scene", "medical", 3),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 600 * S, 13 * S), 1, Config::default());
    assert_eq!(transitions(&out, Rule::EmergencyResponseSla), vec![(T0 + 290 * S, 1), (T0 + 350 * S, -1)]);
}

#[test]
fn coverage_gap_follows_the_districts_own_units() {
    let msgs = vec![
        unit("a1", T0, "ambulance", "available", "ems-1", 0.08, 0.05),
        unit("a1", T0 + 100 * S, "ambulance", "dispatched", "ems-1", 0.08, 0.05),
        unit("a1", T0 + 400 * S, "ambulance", "available", "ems-1", 0.08, 0.05),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 600 * S, 11 * S), 1, Config::default());
    assert_eq!(transitions(&out, Rule::EmergencyCoverageGap), vec![(T0 + 100 * S, 1), (T0 + 400 * S, -1)]);
}

#[test]
fn surge_needs_the_minimum_count_and_clears_as_reports_leave_the_window() {
    let msgs: Vec<Msg> =
        (0..5).map(|i| incident(&format!("s{i}"), T0 + i * 60 * S, "reported", "police", 4)).collect();
    let out = drive(&rounds_of(msgs, T0, T0 + 40 * 60 * S, 30 * S), 1, Config::default());
    // The fifth report in 30 minutes (no baseline) raises; the first leaving the window clears.
    assert_eq!(transitions(&out, Rule::EmergencySurge), vec![(T0 + 240 * S, 1), (T0 + 30 * 60 * S, -1)]);
}

/// A small deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, m: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % m
    }
}

/// Random incidents with all four milestones, their events shuffled within each round.
fn random_incidents(seed: u64, n: usize) -> (Vec<Msg>, Vec<[Ms; 4]>) {
    let mut rng = Lcg(seed);
    let (mut msgs, mut times) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = T0 + rng.next(3 * 3600) * S + rng.next(1000);
        let d = r + (5 + rng.next(120)) * S;
        let e = d + (5 + rng.next(90)) * S;
        let o = e + (30 + rng.next(600)) * S;
        let id = format!("p{i}");
        for (ts, status) in [(r, "reported"), (d, "dispatched"), (e, "en_route"), (o, "on_scene")] {
            msgs.push(incident(&id, ts, status, "medical", 3));
        }
        msgs.push(incident(&id, o + 600 * S, "cleared", "medical", 3));
        times.push([r, d, e, o]);
    }
    (msgs, times)
}

/// The nearest-rank percentile of a sorted list.
fn rank(sorted: &[Ms], q: f64) -> Ms {
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

#[test]
fn percentiles_equal_a_sorted_list_at_every_change() {
    let (mut msgs, times) = random_incidents(7, 60);
    // Out of order within rounds: shuffle before they are cut into rounds (rounds_of keeps
    // each round's messages, and the ingest orders by event time).
    let mut rng = Lcg(11);
    for i in (1..msgs.len()).rev() {
        msgs.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let out = drive(&rounds_of(msgs, T0, T0 + 6 * 3600 * S, 97 * S), 2, Config::default());
    let mut checked = 0;
    for (t, records) in &out {
        for (o, d) in records {
            let Out::Emergency(EmOut::District(snap)) = o else { continue };
            if *d < 0 {
                continue;
            }
            for kind in Interval::ALL {
                let (from, to) = match kind {
                    Interval::Call => (0, 1),
                    Interval::Turnout => (1, 2),
                    Interval::Travel => (2, 3),
                    Interval::Response => (0, 3),
                };
                let mut present: Vec<Ms> = times
                    .iter()
                    .filter(|m| m[to] <= *t && *t < m[to] + 3600 * S)
                    .map(|m| m[to] - m[from])
                    .collect();
                present.sort_unstable();
                let want = (!present.is_empty()).then(|| (rank(&present, 0.5), rank(&present, 0.9)));
                assert_eq!(snap.pct[kind as usize], want, "{kind:?} at {t}");
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "{checked}");
}

#[test]
fn a_late_event_corrects_the_intervals_from_its_arrival() {
    let mut msgs = vec![
        incident("x", T0, "reported", "medical", 3),
        incident("x", T0 + 60 * S, "dispatched", "medical", 3),
        incident("x", T0 + 400 * S, "on_scene", "medical", 3),
    ];
    let mut rounds = rounds_of(msgs.clone(), T0, T0 + 1200 * S, 100 * S);
    // en_route at +100 s arrives only in the round ending at +1000 s, long after the watermark.
    msgs.clear();
    rounds[9].0.push(incident("x", T0 + 100 * S, "en_route", "medical", 3));
    let out = drive(&rounds, 1, Config::default());
    let last = out
        .iter()
        .rev()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (t, o, d)))
        .find_map(|(t, o, d)| match o {
            Out::Emergency(EmOut::District(s)) if *d > 0 => Some((*t, s.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(last.0, T0 + 900 * S, "corrected at the input time of the round that carried it");
    assert_eq!(last.1.pct[Interval::Turnout as usize], Some((40 * S, 40 * S)));
    assert_eq!(last.1.pct[Interval::Travel as usize], Some((300 * S, 300 * S)));
}

fn dispatches(out: &Delivered) -> Vec<(Ms, u32, Option<String>)> {
    out.iter()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (t, o, d)))
        .filter_map(|(t, o, _)| match o {
            Out::Emergency(EmOut::Dispatch(r)) => Some((*t, r.rank, r.unit.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn recommendations_rank_by_eta_and_are_withdrawn_on_dispatch() {
    let msgs = vec![
        // Both on s1 behind the incident; e2 a little further back.
        unit("e1", T0, "fire_engine", "available", "fire-1", 0.03, 0.02),
        unit("e2", T0, "fire_engine", "available", "fire-1", 0.025, 0.02),
        unit("p1", T0, "police", "available", "police-1", 0.05, 0.08),
        incident("f", T0 + 30 * S, "reported", "fire", 1),
        incident("f", T0 + 90 * S, "dispatched", "fire", 1),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 200 * S, 10 * S), 1, Config::default());
    assert_eq!(
        dispatches(&out),
        vec![
            (T0 + 30 * S, 1, Some("e1".into())),
            (T0 + 30 * S, 2, Some("e2".into())),
            (T0 + 90 * S, 1, None),
            (T0 + 90 * S, 2, None),
        ]
    );
}

#[test]
fn same_output_on_one_and_two_workers_and_with_every_event_twice() {
    let (msgs, _) = random_incidents(3, 40);
    let mut all = msgs.clone();
    for u in 0..6 {
        let (kind, station) =
            [("ambulance", "ems-1"), ("fire_engine", "fire-1"), ("police", "police-1")][u % 3];
        for k in 0..30 {
            let status = ["available", "dispatched", "en_route", "on_scene", "returning"][(k + u) % 5];
            all.push(unit(
                &format!("u{u}"),
                T0 + k as Ms * 300 * S + u as Ms,
                kind,
                status,
                station,
                0.05,
                0.021,
            ));
        }
    }
    let rounds = rounds_of(all.clone(), T0, T0 + 4 * 3600 * S, 61 * S);
    let one = drive(&rounds, 1, Config::default());
    assert!(one.iter().any(|(_, r)| r.iter().any(|(o, _)| matches!(o, Out::Emergency(EmOut::Dispatch(_))))));
    assert_eq!(one, drive(&rounds, 2, Config::default()));
    let twice: Vec<(Vec<Msg>, Ms)> =
        rounds.iter().map(|(m, w)| (m.iter().flat_map(|x| [x.clone(), x.clone()]).collect(), *w)).collect();
    assert_eq!(one, drive(&twice, 2, Config::default()));
}
