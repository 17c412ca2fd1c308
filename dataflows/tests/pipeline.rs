//! The city dataflow driven directly (no files, no binary): fixed inputs in, delivered
//! outputs compared on one and on several workers.

use citybrain_dataflows::event::{Decoder, Event};
use citybrain_dataflows::ingest::Ingest;
use citybrain_dataflows::pipeline::{self, Out};
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::traffic::Win;
use citybrain_dataflows::{CityModel, Config, Ms};
use std::sync::{Arc, Mutex};

const T0: Ms = 1_767_225_600_000;

const CITY: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
  {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
  {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.1,0.5],[0.4,0.5]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":400,"speed_limit_kmh":80,"lanes":2,"road_class":"expressway"}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.3,0.5]},"properties":{"kind":"detector","id":"k0","segment":"s1","lane":0}},
  {"type":"Feature","geometry":{"type":"Point","coordinates":[0.3,0.5]},"properties":{"kind":"detector","id":"k1","segment":"s1","lane":1}}
]}"#;

/// Feeds `rounds` (each a list of payloads, then the watermark that ends the round) through the
/// city dataflow on `workers` workers; returns every delivered batch, consolidated.
fn drive(rounds: &[(Vec<String>, Ms)], workers: usize) -> Vec<(Ms, Vec<(Out, isize)>)> {
    let city = Arc::new(CityModel::from_geojson_str(CITY).unwrap());
    let cfg = Arc::new(Config::default());
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let rounds = Arc::new(rounds.to_vec());
    let sink = delivered.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let sink = sink.clone();
        let (mut inputs, probe) = worker.dataflow::<Ms, _, _>(|scope| {
            let (inputs, out) = pipeline::build(scope, city.clone(), cfg.clone());
            let (probe, out) = out.probe();
            pipeline::deliver(out, move |t, mut records| {
                pipeline::consolidate_batch(&mut records);
                sink.lock().unwrap().push((t, records));
            });
            (inputs, probe)
        });
        let decoder = Decoder::new("city/", Pseudonymizer::new(b"k".to_vec()));
        let mut ingest = Ingest::new(city.clone(), &cfg);
        for (payloads, watermark) in rounds.iter() {
            // Each worker takes every `peers`-th payload, as replay deals out blocks.
            for p in payloads.iter().skip(index).step_by(peers) {
                decoder.decode("city/traffic/detector/x", p.as_bytes(), |ev| {
                    let ev: Event = ev.unwrap();
                    ingest.offer(&ev).unwrap();
                });
            }
            ingest.flush(&mut inputs, *watermark);
            inputs.advance_to(*watermark);
            inputs.flush();
            worker.step_or_park_while(None, || probe.less_than(watermark));
        }
    })
    .unwrap();
    let mut out = delivered.lock().unwrap().clone();
    out.retain(|(_, r)| !r.is_empty());
    out
}

fn reading(det: &str, ts: Ms, count: u32, occ: f64, speed: Option<f64>) -> String {
    serde_json::json!({"sensor": det, "segment": "s1", "ts": ts, "interval_s": 30, "count": count,
        "occupancy": occ, "speed_kmh": speed})
    .to_string()
}

fn scenario() -> Vec<(Vec<String>, Ms)> {
    let mut rounds = Vec::new();
    for minute in 0..12u64 {
        let mut payloads = Vec::new();
        for half in 0..2 {
            let ts = T0 + minute * 60_000 + half * 30_000;
            payloads.push(reading("k0", ts, 10 + minute as u32, 0.2, Some(70.0 + half as f64)));
            payloads.push(reading("k1", ts, 5, 0.1, Some(90.0)));
        }
        rounds.push((payloads, T0 + (minute + 1) * 60_000));
    }
    // A late reading for minute 2 (already closed) corrects it.
    rounds.push((vec![reading("k1", T0 + 2 * 60_000 + 10_000, 100, 0.1, Some(40.0))], T0 + 13 * 60_000));
    rounds
}

#[test]
fn same_output_on_one_and_several_workers() {
    let one = drive(&scenario(), 1);
    assert!(!one.is_empty());
    assert_eq!(one, drive(&scenario(), 2));
    assert_eq!(one, drive(&scenario(), 3));
}

#[test]
fn windows_appear_at_their_end_and_are_corrected() {
    let out = drive(&scenario(), 2);
    let detector = |t: Ms, det: u32, win: Win, start: Ms| -> Vec<i64> {
        out.iter()
            .filter(|(at, _)| *at == t)
            .flat_map(|(_, r)| r.iter())
            .filter_map(|(o, d)| match o {
                Out::Detector(w, s) if w.det == det && w.win == win && w.start == start && *d > 0 => {
                    Some(s.count)
                }
                _ => None,
            })
            .collect()
    };
    // k0 (detector 0), minute 0: 10 + 10 vehicles, delivered at the end of the minute.
    assert_eq!(detector(T0 + 60_000, 0, Win::M1, T0), vec![20]);
    // The 5-minute window closes at 00:05: k0 sums 2 × (10 + 11 + 12 + 13 + 14).
    assert_eq!(detector(T0 + 5 * 60_000, 0, Win::M5, T0), vec![120]);
    // k1 (detector 1), minute 2: 10 vehicles at close, corrected to 110 when the late reading
    // arrives (released at the input time of the round that carried it).
    assert_eq!(detector(T0 + 3 * 60_000, 1, Win::M1, T0 + 2 * 60_000), vec![10]);
    assert_eq!(detector(T0 + 12 * 60_000, 1, Win::M1, T0 + 2 * 60_000), vec![110]);
}
