//! The grid domain driven through the whole city dataflow (no files, no binary): case time
//! limits on calendar hours and working days, overdue with no further message, amber before
//! red, closed today until the city's midnight, sensor persistence, hysteresis and staleness,
//! the risk score, and the same output on one and two workers and with every event twice.

use citybrain_dataflows::alerts::Rule;
use citybrain_dataflows::event::{Decoder, Reason};
use citybrain_dataflows::grid::GridOut;
use citybrain_dataflows::grid::model::Light;
use citybrain_dataflows::ingest::Record;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Config, Ms};
use serde_json::json;

mod common;
use common::{Delivered, Msg, rounds_of, transitions};

/// 2026-01-01T00:00:00Z, a Thursday, 08:00 in Shanghai.
const T0: Ms = 1_767_225_600_000;
const S: Ms = 1000;
const MIN: Ms = 60 * S;
const H: Ms = 60 * MIN;

/// One district of two cells, each with its officer, and one segment.
const CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[0.2,0],[0.2,0.1],[0,0.1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[0.1,0],[0.1,0.1],[0,0.1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0.1,0],[0.2,0],[0.2,0.1],[0.1,0.1],[0.1,0]]]},"properties":{"kind":"cell","id":"c2","district":"d1","officers":["o2"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.02,0.05],[0.08,0.05]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":6600,"speed_limit_kmh":60,"lanes":1,"road_class":"arterial"}}
]}"#;

fn drive(rounds: &[(Vec<Msg>, Ms)], workers: usize, cfg: Config) -> Delivered {
    common::drive(CITY, rounds, workers, cfg)
}

fn case(id: &str, ts: Ms, status: &str, category: &str, cell: &str) -> Msg {
    (
        format!("city/grid/case/{id}"),
        json!({"case": id, "ts": ts, "status": status, "category": category, "cell": cell, "officer": "o1"}),
    )
}

fn reading(id: &str, ts: Ms, kind: &str, value: f64, cell: &str) -> Msg {
    (
        format!("city/grid/sensor/{id}"),
        json!({"sensor": id, "ts": ts, "kind": kind, "value": value, "cell": cell}),
    )
}

/// Every (time, diff, snapshot) of cell `cell`'s indicators.
fn cell_changes(out: &Delivered, cell: u32) -> Vec<(Ms, isize, citybrain_dataflows::grid::CellSnapshot)> {
    out.iter()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (*t, o, *d)))
        .filter_map(|(t, o, d)| match o {
            Out::Grid(GridOut::Cell(c)) if c.cell == cell => Some((t, d, (**c).clone())),
            _ => None,
        })
        .collect()
}

/// The lights a case was released with, in order: (time, light).
fn lights(out: &Delivered, id: &str) -> Vec<(Ms, Light)> {
    let mut seen = Vec::new();
    for (t, records) in out {
        for (o, d) in records {
            if let Out::Grid(GridOut::Case(c)) = o
                && c.id == id
                && *d > 0
                && seen.last().is_none_or(|(_, l)| *l != c.light)
            {
                seen.push((*t, c.light));
            }
        }
    }
    seen
}

#[test]
fn an_urgent_case_turns_amber_then_overdue_on_the_clock_alone() {
    let msgs = vec![
        case("k1", T0, "reported", "gas_leak", "c1"),
        case("k1", T0 + 5 * MIN, "assigned", "gas_leak", "c1"),
        case("k1", T0 + 10 * MIN, "in_progress", "gas_leak", "c1"),
        case("k1", T0 + 70 * MIN, "resolved", "gas_leak", "c1"),
        case("k1", T0 + 80 * MIN, "closed", "gas_leak", "c1"),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 17 * H, 10 * MIN), 1, Config::default());
    assert_eq!(transitions(&out, Rule::GridCaseAssigned), vec![(T0 + 5 * MIN, 1), (T0 + 10 * MIN, -1)]);
    // gas_leak: 1 h. Amber at 80 % (48 min), overdue at the deadline with no message then,
    // cleared by the resolution.
    assert_eq!(
        lights(&out, "k1"),
        vec![(T0, Light::Green), (T0 + 48 * MIN, Light::Amber), (T0 + 60 * MIN, Light::Red)]
    );
    assert_eq!(transitions(&out, Rule::GridCaseOverdue), vec![(T0 + 60 * MIN, 1), (T0 + 70 * MIN, -1)]);
    let cells = cell_changes(&out, 0);
    let at = |t: Ms| cells.iter().find(|(x, d, _)| *x == t && *d > 0).map(|(_, _, c)| c.clone());
    let closed = at(T0 + 80 * MIN).expect("a row at the closing");
    assert_eq!((closed.counts.open, closed.counts.closed_today), (0, 1));
    assert_eq!(closed.counts.mttr_s(), Some(70.0 * 60.0));
    let overdue = at(T0 + 60 * MIN).expect("a row at the deadline");
    assert_eq!((overdue.counts.open, overdue.counts.overdue, overdue.risk), (1, 1, 20));
    // Closed today until the city's midnight (16:00 UTC), then gone.
    let last = cells.last().unwrap();
    assert_eq!((last.0, last.1), (T0 + 16 * H, -1));
    // The closed case leaves the case list after the grace (1 h).
    let case_gone = out.iter().any(|(t, r)| {
        *t == T0 + 140 * MIN
            && r.iter().any(|(o, d)| matches!(o, Out::Grid(GridOut::Case(c)) if c.id == "k1") && *d < 0)
    });
    assert!(case_gone);
}

#[test]
fn working_day_limits_skip_weekends_and_holidays() {
    // Friday 2 January 2026, 10:00 in Shanghai.
    let friday = T0 + 26 * H;
    let msgs = vec![case("g1", friday, "reported", "garbage", "c1")];
    let rounds = rounds_of(msgs, T0, T0 + 7 * 24 * H, H);
    let out = drive(&rounds, 1, Config::default());
    // 1wd: Monday 10:00.
    assert_eq!(transitions(&out, Rule::GridCaseOverdue), vec![(friday + 72 * H, 1)]);
    let mut cfg = Config::default();
    cfg.grid.calendar.holidays = vec!["2026-01-05".into()];
    let out = drive(&rounds, 1, cfg);
    assert_eq!(transitions(&out, Rule::GridCaseOverdue), vec![(friday + 96 * H, 1)]);
}

#[test]
fn a_reopened_case_restarts_its_clock() {
    let msgs = vec![
        case("r1", T0, "reported", "flooding", "c1"),
        case("r1", T0 + 30 * MIN, "resolved", "flooding", "c1"),
        case("r1", T0 + 100 * MIN, "reopened", "flooding", "c1"),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 5 * H, 10 * MIN), 1, Config::default());
    // flooding: 2 h from the reopening.
    assert_eq!(transitions(&out, Rule::GridCaseOverdue), vec![(T0 + 220 * MIN, 1)]);
}

#[test]
fn sensor_alarms_need_persistence_clear_with_hysteresis_and_silence_is_stale() {
    let w = |k: Ms, v: f64| reading("w1", T0 + k * MIN, "water_level", v, "c1");
    let mut msgs = vec![
        w(0, 0.1),
        w(1, 0.35),
        w(2, 0.4),  // two readings beyond 0.30: raised
        w(3, 0.25), // between the thresholds: still in alarm
        w(4, 0.5),
        w(5, 0.15), // at or below 0.20: cleared
        w(6, 0.35),
        w(7, 0.1), // a broken run
        w(8, 0.35),
        w(9, 0.36), // raised again; then silence
        w(30, 0.1),
    ];
    // pm25 needs 30 minutes beyond 150.
    for k in (0..=40).step_by(5) {
        msgs.push(reading("p1", T0 + k * MIN, "pm25", if k <= 35 { 160.0 } else { 100.0 }, "c2"));
    }
    // A kind without a rule: charted, never an alarm or stale.
    msgs.push(reading("v1", T0, "vibration", 1e6, "c2"));
    let out = drive(&rounds_of(msgs, T0, T0 + 3 * H, MIN), 1, Config::default());
    let threshold = |id: &str| {
        let mut v: Vec<(Ms, isize)> = out
            .iter()
            .flat_map(|(t, r)| r.iter().map(move |(o, d)| (*t, o, *d)))
            .filter_map(|(t, o, d)| match o {
                Out::Alert(k)
                    if k.rule == Rule::GridSensorThreshold && format!("{:?}", k.subject).contains(id) =>
                {
                    Some((t, d))
                }
                _ => None,
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        threshold("\"w1\""),
        vec![(T0 + 2 * MIN, 1), (T0 + 5 * MIN, -1), (T0 + 9 * MIN, 1), (T0 + 30 * MIN, -1)]
    );
    assert_eq!(threshold("\"p1\""), vec![(T0 + 30 * MIN, 1), (T0 + 40 * MIN, -1)]);
    // water_level is stale after 900 s of silence; pm25 after 3600 s (its last reading at 40 min).
    assert_eq!(
        transitions(&out, Rule::GridSensorStale),
        vec![(T0 + 24 * MIN, 1), (T0 + 30 * MIN, -1), (T0 + 45 * MIN, 1), (T0 + 100 * MIN, 1)]
    );
}

#[test]
fn risk_counts_alarms_and_overdue_cases_and_raises_risk_high() {
    let mut msgs = vec![case("x1", T0, "reported", "gas_leak", "c2")];
    for (id, v) in [("a", 0.5), ("b", 0.6)] {
        for k in 0..3 {
            msgs.push(reading(id, T0 + k * MIN, "water_level", v, "c2"));
        }
    }
    let out = drive(&rounds_of(msgs, T0, T0 + 2 * H, 5 * MIN), 1, Config::default());
    // Two alarms (2 × 25) and an open case (5) = 55 < 60; overdue at 1 h adds 15 = 70.
    assert_eq!(transitions(&out, Rule::GridRiskHigh), vec![(T0 + 60 * MIN, 1)]);
    // Both sensors then go stale (no risk weight) at 16 minutes; the district shows the cell's risk.
    let district_risk = out
        .iter()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (*t, o, *d)))
        .filter_map(|(t, o, d)| match o {
            Out::Grid(GridOut::District(s)) if d > 0 => Some((t, s.risk)),
            _ => None,
        })
        .next_back();
    assert_eq!(district_risk, Some((T0 + 60 * MIN, 70)));
}

#[test]
fn cells_are_known_ids_or_points_inside_a_cell() {
    let city = CityModel::from_geojson_str(CITY).unwrap();
    let decoder = Decoder::new("city/", Pseudonymizer::new(b"k".to_vec()));
    let check = |payload: serde_json::Value| {
        let mut got = None;
        decoder.decode("city/grid/case/z", payload.to_string().as_bytes(), |ev| {
            got = Some(ev.and_then(|e| Record::check(&city, &e)).map(|_| ()).map_err(|e| e.reason));
        });
        got.unwrap()
    };
    let base = |extra: serde_json::Value| {
        let mut p = json!({"case": "z", "ts": T0, "status": "reported", "category": "garbage"});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    };
    assert_eq!(check(base(json!({"cell": "c2"}))), Ok(()));
    assert_eq!(check(base(json!({"lon": 0.15, "lat": 0.05}))), Ok(()));
    assert_eq!(check(base(json!({"cell": "nope"}))), Err(Reason::UnknownId));
    assert_eq!(check(base(json!({"lon": 5.0, "lat": 5.0}))), Err(Reason::UnknownId));
    assert_eq!(check(base(json!({}))), Err(Reason::InvalidPayload));
    assert_eq!(check(base(json!({"cell": "c1", "category": " "}))), Err(Reason::InvalidValue));
}

#[test]
fn same_output_on_one_and_two_workers_with_every_event_twice_and_late_events() {
    let mut msgs = Vec::new();
    for i in 0..40u64 {
        let cell = if i % 3 == 0 { "c1" } else { "c2" };
        let cat = ["gas_leak", "garbage", "flooding", "stray_animal"][i as usize % 4];
        let id = format!("q{i}");
        let t = T0 + i * 7 * MIN;
        msgs.push(case(&id, t, "reported", cat, cell));
        msgs.push(case(&id, t + 20 * MIN, "assigned", cat, cell));
        if i % 2 == 0 {
            msgs.push(case(&id, t + (30 + i) * MIN, "in_progress", cat, cell));
            msgs.push(case(&id, t + (60 + 3 * i) * MIN, "resolved", cat, cell));
            msgs.push(case(&id, t + (90 + 3 * i) * MIN, "closed", cat, cell));
        }
    }
    for k in 0..240u64 {
        let v = 0.1 + 0.4 * ((k / 20) % 2) as f64 + (k % 7) as f64 * 0.01;
        msgs.push(reading("s1", T0 + k * MIN, "water_level", v, "c1"));
        if k % 50 != 49 {
            msgs.push(reading("s2", T0 + k * MIN, "feeder_load", 0.7 + (k % 11) as f64 * 0.02, "c2"));
        }
    }
    let rounds = rounds_of(msgs.clone(), T0, T0 + 12 * H, 3 * MIN);
    let one = drive(&rounds, 1, Config::default());
    assert!(!transitions(&one, Rule::GridCaseOverdue).is_empty());
    assert!(!transitions(&one, Rule::GridSensorThreshold).is_empty());
    assert_eq!(one, drive(&rounds, 2, Config::default()));
    let twice: Vec<(Vec<Msg>, Ms)> =
        rounds.iter().map(|(m, w)| (m.iter().flat_map(|x| [x.clone(), x.clone()]).collect(), *w)).collect();
    assert_eq!(one, drive(&twice, 2, Config::default()));
    // Every message delivered one round late (behind the watermark, within the retention):
    // the final states agree (the past written stays written, as for late traffic readings).
    let mut late = rounds.clone();
    for i in (1..late.len()).rev() {
        let moved = std::mem::take(&mut late[i - 1].0);
        late[i].0.extend(moved);
    }
    let final_alerts = |out: &Delivered| {
        let mut active = std::collections::BTreeMap::new();
        for (_, r) in out {
            for (o, d) in r {
                if let Out::Alert(k) = o {
                    *active.entry(k.clone()).or_insert(0) += d;
                }
            }
        }
        active.retain(|_, n| *n != 0);
        active
    };
    assert_eq!(final_alerts(&one), final_alerts(&drive(&late, 1, Config::default())));
}
