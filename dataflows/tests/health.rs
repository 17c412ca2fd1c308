//! The public-health domain driven through the whole city dataflow: the co-passenger contact
//! query's boundaries (rows ±3, the 14-day lookback to the second, the venue window to the
//! minute), bus and metro trips, the case never its own contact, retraction when a case is
//! cleared, suspected cases, the contact's cell, retention (`too_late`, records leaving the
//! state), idempotence, 1 vs 2 workers, and no clear personal id in any output.

use citybrain_dataflows::alerts::{AlertKey, Rule, Subject};
use citybrain_dataflows::event::{Decoder, Reason};
use citybrain_dataflows::health::{Contact, HealthOut, Via};
use citybrain_dataflows::ingest::{Ingest, Record};
use citybrain_dataflows::pipeline::{self, Out};
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Config, Ms};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

mod common;
use common::{Delivered, Msg, rounds_of, transitions};

/// 2026-01-01T00:00:00Z, 08:00 in Shanghai.
const T0: Ms = 1_767_225_600_000;
const S: Ms = 1000;
const MIN: Ms = 60 * S;
const H: Ms = 60 * MIN;
const D: Ms = 24 * H;

/// One district of two cells.
const CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[0.2,0],[0.2,0.1],[0,0.1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[0.1,0],[0.1,0.1],[0,0.1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0.1,0],[0.2,0],[0.2,0.1],[0.1,0.1],[0.1,0]]]},"properties":{"kind":"cell","id":"c2","district":"d1","officers":["o2"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.02,0.05],[0.08,0.05]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":6600,"speed_limit_kmh":60,"lanes":1,"road_class":"arterial"}}
]}"#;

/// A clear id-card-like number for person `n` (never to appear in any output).
fn id(n: u32) -> String {
    format!("1101051990{n:06}1X")
}

/// The pseudonym the harness's decoder gives person `n`.
fn ps(n: u32) -> String {
    Pseudonymizer::new(b"k".to_vec()).pseudonym(&id(n))
}

fn case(n: u32, ts: Ms, status: &str) -> Msg {
    ("city/health/case/c".into(), json!({"person": id(n), "ts": ts, "status": status}))
}

fn trip(n: u32, ts: Ms, carrier: &str, trip: &str, row: Option<Value>, seat: Option<&str>) -> Msg {
    let mut p = json!({"person": id(n), "ts": ts, "carrier": carrier, "trip": trip});
    if let Some(r) = row {
        p["row"] = r;
    }
    if let Some(s) = seat {
        p["seat"] = json!(s);
    }
    ("city/health/trip/t".into(), p)
}

fn checkin(n: u32, ts: Ms, venue: &str, cell: Option<&str>) -> Msg {
    let mut p = json!({"person": id(n), "ts": ts, "venue": venue});
    if let Some(c) = cell {
        p["cell"] = json!(c);
    }
    (format!("city/health/checkin/{venue}"), p)
}

fn drive(rounds: &[(Vec<Msg>, Ms)], workers: usize) -> Delivered {
    common::drive(CITY, rounds, workers, Config::default())
}

/// Every contact transition: (time, diff, contact).
fn contacts(out: &Delivered) -> Vec<(Ms, isize, Contact)> {
    out.iter()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (*t, o, *d)))
        .filter_map(|(t, o, d)| match o {
            Out::Health(HealthOut::Contact(c)) => Some((t, d, (**c).clone())),
            _ => None,
        })
        .collect()
}

/// The (person, via) of the contacts raised at `t`.
fn raised_at(out: &Delivered, t: Ms) -> BTreeSet<(String, Via)> {
    contacts(out)
        .into_iter()
        .filter(|(x, d, _)| *x == t && *d > 0)
        .map(|(_, _, c)| (c.person, c.via))
        .collect()
}

/// The health.contact transitions of person `n`: (time, diff).
fn alerts_of(out: &Delivered, n: u32) -> Vec<(Ms, isize)> {
    let who = ps(n);
    out.iter()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (*t, o, *d)))
        .filter_map(|(t, o, d)| match o {
            Out::Alert(AlertKey { rule: Rule::HealthContact, subject: Subject::Contact { person, .. } })
                if *person == who =>
            {
                Some((t, d))
            }
            _ => None,
        })
        .collect()
}

fn no_clear_ids(out: &Delivered, persons: impl IntoIterator<Item = u32>) {
    let text = format!("{out:?}");
    for n in persons {
        assert!(!text.contains(&id(n)), "clear id of person {n} in the output");
        assert!(!text.contains(&id(n)[..12]), "part of a clear id of person {n} in the output");
    }
}

/// The case confirmed at `C` in the trip scenario.
const C: Ms = T0 + 20 * D;

/// Person 1 is the case; 2.. travel with them.
fn trip_scenario() -> Vec<Msg> {
    let g1 = C - 2 * D;
    let g2 = C - 14 * D;
    let g3 = C - 14 * D - S;
    vec![
        case(1, C, "confirmed"),
        // Train G1, the case in row 12: rows 9 and 15 in, 8 and 16 out, no row out, seat 14C in.
        trip(1, g1, "train", "G1@2026-01-19", Some(json!(12)), Some("12A")),
        trip(2, g1, "train", "G1@2026-01-19", Some(json!(9)), None),
        trip(3, g1, "train", "G1@2026-01-19", Some(json!("15")), None),
        trip(4, g1, "train", "G1@2026-01-19", Some(json!(8)), None),
        trip(5, g1, "train", "G1@2026-01-19", Some(json!(16)), None),
        trip(6, g1, "train", "G1@2026-01-19", None, None),
        trip(7, g1, "train", "G1@2026-01-19", None, Some("14C")),
        // Flights exactly 14 days before the case (in) and one second more (out).
        trip(1, g2, "flight", "MU5101@2026-01-07", Some(json!(30)), None),
        trip(8, g2, "flight", "MU5101@2026-01-07", Some(json!(31)), None),
        trip(1, g3, "flight", "CA1501@2026-01-07", Some(json!(30)), None),
        trip(9, g3, "flight", "CA1501@2026-01-07", Some(json!(30)), None),
        // A bus and the metro: everyone on the trip, rows or not.
        trip(1, C - D, "bus", "B42@2026-01-20", None, None),
        trip(10, C - D, "bus", "B42@2026-01-20", Some(json!(40)), None),
        trip(11, C - D + 10 * MIN, "bus", "B42@2026-01-20", None, None),
        trip(1, C - 3 * H, "metro", "M2@2026-01-21", None, None),
        trip(12, C - 3 * H, "metro", "M2@2026-01-21", None, None),
        // After the case's time: out.
        trip(1, C + H, "bus", "B7@2026-01-21", None, None),
        trip(13, C + H, "bus", "B7@2026-01-21", None, None),
    ]
}

#[test]
fn trip_contacts_rows_lookback_and_carriers() {
    let out = drive(&rounds_of(trip_scenario(), T0, C + 6 * H, 6 * H), 1);
    let trip = |n: u32, t: &str| (ps(n), Via::Trip(t.to_string()));
    let want: BTreeSet<_> = [
        trip(2, "G1@2026-01-19"),
        trip(3, "G1@2026-01-19"),
        trip(7, "G1@2026-01-19"),
        trip(8, "MU5101@2026-01-07"),
        trip(10, "B42@2026-01-20"),
        trip(11, "B42@2026-01-20"),
        trip(12, "M2@2026-01-21"),
    ]
    .into_iter()
    .collect();
    assert_eq!(raised_at(&out, C), want);
    // Nothing else, ever: not rows 8 and 16, not the row-less, not 14 days + 1 s, not after
    // the case's time, never the case itself.
    assert!(contacts(&out).iter().all(|(t, d, _)| *t == C && *d > 0));
    assert!(contacts(&out).iter().all(|(_, _, c)| c.person != ps(1) && c.case == ps(1)));
    for n in [4, 5, 6, 9, 13, 1] {
        assert_eq!(alerts_of(&out, n), vec![], "person {n}");
    }
    assert_eq!(alerts_of(&out, 2), vec![(C, 1)]);
    // Dates are the city's local dates of the contact's trip (C − 2 d = 19 January, 08:00).
    let g1: Vec<_> = contacts(&out).into_iter().filter(|(_, _, c)| c.person == ps(2)).collect();
    assert_eq!(g1[0].2.date, "2026-01-19");
    no_clear_ids(&out, 1..=13);
}

#[test]
fn a_cleared_case_retracts_its_contacts_and_a_suspected_case_counts() {
    let c = T0 + 2 * D;
    let msgs = vec![
        case(1, c, "suspected"),
        trip(1, c - H, "bus", "B1@2026-01-03", None, None),
        trip(2, c - H, "bus", "B1@2026-01-03", None, None),
        case(1, c + 5 * H, "confirmed"),
        case(1, c + 9 * H, "cleared"),
    ];
    let out = drive(&rounds_of(msgs, T0, c + D, H), 1);
    // Confirmation keeps the same case (and contact); clearing ends it at its own time.
    assert_eq!(alerts_of(&out, 2), vec![(c, 1), (c + 9 * H, -1)]);
    assert_eq!(transitions(&out, Rule::HealthContact), vec![(c, 1), (c + 9 * H, -1)]);
    no_clear_ids(&out, 1..=2);
}

#[test]
fn venue_contacts_within_thirty_minutes_with_their_latest_cell() {
    let c = T0 + 10 * D;
    let x = c - 3 * D; // 8 January, 08:00 local
    let msgs = vec![
        case(1, c, "confirmed"),
        checkin(1, x, "v-mall", Some("c1")),
        checkin(2, x + 30 * MIN, "v-mall", Some("c1")),
        checkin(3, x - 30 * MIN, "v-mall", None),
        checkin(4, x + 31 * MIN, "v-mall", Some("c1")),
        checkin(5, x - 31 * MIN, "v-mall", Some("c1")),
        // Person 2's latest check-in (elsewhere) is in c2: the alert goes there.
        checkin(2, x + 2 * D, "v-gym", Some("c2")),
    ];
    let out = drive(&rounds_of(msgs, T0, c + 6 * H, 6 * H), 1);
    let venue = |n: u32| (ps(n), Via::Venue("v-mall".into()));
    assert_eq!(raised_at(&out, c), [venue(2), venue(3)].into_iter().collect());
    assert!(alerts_of(&out, 4).is_empty() && alerts_of(&out, 5).is_empty() && alerts_of(&out, 1).is_empty());
    let city = CityModel::from_geojson_str(CITY).unwrap();
    let found = contacts(&out);
    let two = found.iter().find(|(_, _, k)| k.person == ps(2)).unwrap();
    assert_eq!((two.2.cell, two.2.date.as_str()), (Some(1), "2026-01-08"));
    let three = found.iter().find(|(_, _, k)| k.person == ps(3)).unwrap();
    assert_eq!(three.2.cell, None);
    // The alert: the pseudonym, venue and date only; to the cell of the latest check-in.
    let key = out
        .iter()
        .flat_map(|(_, r)| r.iter())
        .find_map(|(o, _)| match o {
            Out::Alert(k @ AlertKey { subject: Subject::Contact { person, .. }, .. }) if *person == ps(2) => {
                Some(k.clone())
            }
            _ => None,
        })
        .unwrap();
    let info = key.describe(&city);
    assert_eq!(info.rule, "health.contact");
    assert_eq!(info.domain, "health");
    assert_eq!(info.severity, citybrain_dataflows::alerts::Severity::Warning);
    assert_eq!(info.subject, json!({"person": ps(2), "venue": "v-mall", "date": "2026-01-08"}));
    assert_eq!((info.cell.as_deref(), info.district.as_deref()), (Some("c2"), Some("d1")));
    assert!(info.message.contains(&ps(2)) && info.message.contains("v-mall"));
    assert!(!info.message.contains(&ps(1)), "the case's pseudonym is not in the contact's alert");
    assert!(info.id.starts_with("health.contact:"));
    no_clear_ids(&out, 1..=5);
    assert!(!format!("{info:?}").contains(&id(2)));
}

#[test]
fn records_leave_after_fourteen_days_and_the_grace() {
    // A trip exactly 14 days before the case: in, until the trip is deleted 15 days after it.
    let c = T0 + 14 * D;
    let msgs = vec![
        case(1, c, "confirmed"),
        trip(1, T0, "metro", "M1@2026-01-01", None, None),
        trip(2, T0, "metro", "M1@2026-01-01", None, None),
    ];
    let out = drive(&rounds_of(msgs, T0, T0 + 17 * D, 6 * H), 1);
    assert_eq!(alerts_of(&out, 2), vec![(c, 1), (T0 + 15 * D, -1)]);

    // The state itself: records are remembered until their retention ends, then forgotten;
    // a copy arriving after that is too late.
    let city = Arc::new(CityModel::from_geojson_str(CITY).unwrap());
    let cfg = Arc::new(Config::default());
    timely::execute_directly(move |worker| {
        let mut inputs =
            worker.dataflow::<Ms, _, _>(|scope| pipeline::build(scope, city.clone(), cfg.clone()).0);
        let decoder = Decoder::new("city/", Pseudonymizer::new(b"k".to_vec()));
        let mut ingest = Ingest::new(city.clone(), &cfg);
        let offer = |ingest: &mut Ingest, (topic, payload): Msg| {
            let bytes = payload.to_string();
            let mut res = None;
            decoder.decode(&topic, bytes.as_bytes(), |ev| {
                res = Some(ingest.offer(&ev.unwrap()).map_err(|e| e.reason));
            });
            res.unwrap()
        };
        let mut round = |ingest: &mut Ingest, upto: Ms| {
            ingest.flush(&mut inputs, upto, Ms::MAX, upto);
            inputs.advance_to(upto);
            inputs.flush();
            worker.step();
        };
        offer(&mut ingest, trip(1, T0, "train", "G9@2026-01-01", Some(json!(1)), None)).unwrap();
        offer(&mut ingest, checkin(1, T0, "v-1", Some("c1"))).unwrap();
        round(&mut ingest, T0 + H);
        assert_eq!((ingest.health.trips.len(), ingest.health.checkins.len()), (1, 1));
        assert_eq!(ingest.health.trips.states().count(), 1);
        round(&mut ingest, T0 + 15 * D - 1);
        assert_eq!(ingest.health.trips.states().count(), 1);
        // A copy within the retention is a duplicate.
        offer(&mut ingest, trip(1, T0, "train", "G9@2026-01-01", Some(json!(1)), None)).unwrap();
        round(&mut ingest, T0 + 15 * D - 1);
        assert_eq!(ingest.health.duplicates(), 1);
        round(&mut ingest, T0 + 15 * D);
        assert_eq!(ingest.health.trips.states().count(), 0);
        assert!(ingest.health.is_empty(), "trips and check-ins forgotten after 14 days + 1 day");
        assert_eq!(
            offer(&mut ingest, trip(1, T0, "train", "G9@2026-01-01", Some(json!(1)), None)),
            Err(Reason::TooLate)
        );
        assert_eq!(offer(&mut ingest, checkin(1, T0, "v-1", None)), Err(Reason::TooLate));
        offer(&mut ingest, checkin(1, T0 + 1, "v-1", None)).unwrap();
    });
}

#[test]
fn same_output_on_one_and_two_workers_and_with_every_message_twice() {
    let mut msgs = trip_scenario();
    // Venue traffic and more cases, some cleared, around the trip scenario's case.
    for i in 0..30u32 {
        let t = C - 5 * D + i as Ms * 47 * MIN;
        msgs.push(checkin(
            20 + i % 12,
            t,
            ["v-a", "v-b", "v-c"][i as usize % 3],
            Some(["c1", "c2"][i as usize % 2]),
        ));
    }
    msgs.push(checkin(1, C - 5 * D + 150 * MIN, "v-a", None));
    msgs.push(checkin(1, C - 5 * D + 349 * MIN, "v-b", Some("c2")));
    msgs.push(case(21, C + H, "suspected"));
    msgs.push(case(21, C + 3 * H, "cleared"));
    let rounds = rounds_of(msgs.clone(), T0, C + D, 3 * H);
    let one = drive(&rounds, 1);
    // Any arrival order: everything in one round, newest first, gives the same contacts at the
    // same event times.
    msgs.reverse();
    assert_eq!(one, drive(&[(msgs, C + D)], 2));
    assert!(contacts(&one).iter().any(|(_, _, c)| matches!(c.via, Via::Venue(_))));
    assert!(transitions(&one, Rule::HealthContact).iter().any(|(_, d)| *d < 0));
    assert_eq!(one, drive(&rounds, 2));
    let twice: Vec<(Vec<Msg>, Ms)> =
        rounds.iter().map(|(m, w)| (m.iter().flat_map(|x| [x.clone(), x.clone()]).collect(), *w)).collect();
    assert_eq!(one, drive(&twice, 2));
    no_clear_ids(&one, (1..=13).chain(20..32));
}

#[test]
fn invalid_health_records_are_rejected_without_quoting_the_person() {
    let city = CityModel::from_geojson_str(CITY).unwrap();
    let decoder = Decoder::new("city/", Pseudonymizer::new(b"k".to_vec()));
    let check = |(topic, payload): Msg| {
        let mut got = None;
        decoder.decode(&topic, payload.to_string().as_bytes(), |ev| {
            got = Some(ev.and_then(|e| Record::check(&city, &e)).map(|_| ()));
        });
        got.unwrap()
    };
    let reason = |m: Msg| check(m).map_err(|e| e.reason);
    assert_eq!(reason(checkin(1, T0, "v", Some("c2"))), Ok(()));
    assert_eq!(
        reason((
            "city/health/checkin/v".into(),
            json!({"person": id(1), "ts": T0, "venue": "v", "lon": 0.15, "lat": 0.05})
        )),
        Ok(())
    );
    assert_eq!(reason(checkin(1, T0, "v", Some("nope"))), Err(Reason::UnknownId));
    assert_eq!(reason(checkin(1, T0, " ", None)), Err(Reason::InvalidValue));
    assert_eq!(
        reason(("city/health/case/c".into(), json!({"person": "  ", "ts": T0, "status": "confirmed"}))),
        Err(Reason::InvalidValue)
    );
    assert_eq!(reason(trip(1, T0, "bus", "", None, None)), Err(Reason::InvalidValue));
    let bad_row = check(trip(1, T0, "train", "G1", Some(json!("12x")), None)).unwrap_err();
    assert_eq!(bad_row.reason, Reason::InvalidValue);
    assert!(!bad_row.detail.contains(&id(1)));
}
