//! The harness the domain tests share: rounds of MQTT messages driven through the whole city
//! dataflow on N workers, every record on the worker that owns it, as the drivers route them.
#![allow(dead_code)]

use citybrain_dataflows::alerts::{AlertKey, Rule};
use citybrain_dataflows::event::Decoder;
use citybrain_dataflows::ingest::{Ingest, Record};
use citybrain_dataflows::pipeline::{self, Out};
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Config, Ms};
use std::sync::{Arc, Mutex};

pub type Msg = (String, serde_json::Value);
pub type Delivered = Vec<(Ms, Vec<(Out, isize)>)>;

/// Feeds rounds of messages (each round ends at its watermark) through the city dataflow on
/// `workers` workers, every record on the worker that owns it, as the drivers route them.
pub fn drive(city: &str, rounds: &[(Vec<Msg>, Ms)], workers: usize, cfg: Config) -> Delivered {
    let city = Arc::new(CityModel::from_geojson_str(city).unwrap());
    let cfg = Arc::new(cfg);
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
                if !records.is_empty() {
                    sink.lock().unwrap().push((t, records));
                }
            });
            (inputs, probe)
        });
        let decoder = Decoder::new("city/", Pseudonymizer::new(b"k".to_vec()));
        let mut ingest = Ingest::new(city.clone(), &cfg);
        let mut seq = 0;
        for (msgs, watermark) in rounds.iter() {
            for (topic, payload) in msgs {
                seq += 1;
                let bytes = payload.to_string();
                decoder.decode(topic, bytes.as_bytes(), |ev| {
                    let record = Record::check(&city, &ev.unwrap()).unwrap();
                    if record.owner(peers) == index {
                        ingest.offer_record(record, seq).unwrap();
                    }
                });
            }
            ingest.flush(&mut inputs, *watermark, Ms::MAX, *watermark);
            inputs.advance_to(*watermark);
            inputs.flush();
            worker.step_or_park_while(None, || probe.less_than(watermark));
        }
    })
    .unwrap();
    delivered.lock().unwrap().clone()
}

/// Rounds of `step` ms from `from` to `until`, each carrying the messages stamped in it.
pub fn rounds_of(mut msgs: Vec<Msg>, from: Ms, until: Ms, step: Ms) -> Vec<(Vec<Msg>, Ms)> {
    msgs.sort_by_key(|(_, p)| p["ts"].as_u64());
    let mut rounds = Vec::new();
    let mut t = from;
    while t < until {
        let end = t + step;
        let now: Vec<Msg> =
            msgs.iter().filter(|(_, p)| (t..end).contains(&p["ts"].as_u64().unwrap())).cloned().collect();
        rounds.push((now, end));
        t = end;
    }
    rounds
}

/// Every transition of alerts of `rule`: (time, +1 raised / −1 cleared).
pub fn transitions(out: &Delivered, rule: Rule) -> Vec<(Ms, isize)> {
    out.iter()
        .flat_map(|(t, r)| r.iter().map(move |(o, d)| (t, o, d)))
        .filter_map(|(t, o, d)| match o {
            Out::Alert(AlertKey { rule: r, .. }) if *r == rule => Some((*t, *d)),
            _ => None,
        })
        .collect()
}
