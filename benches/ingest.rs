//! `cargo bench --bench ingest` — ingestion from the embedded MQTT broker (issue 3).
//!
//! The simulator's city (260 lane detectors) and 300,000 readings are published as fast as
//! possible to the embedded rumqttd broker; citybrain's MQTT client feeds the live dataflow.
//! Measured from the first publish until the dataflow has accepted every reading: at QoS 0 with
//! one reading per message (target ≥ 150,000 readings/s), at QoS 1 (every reading must arrive),
//! and with batches of 100 readings per message. Prints figures; never fails on a slow machine.
//!
//! The load generator is lean on purpose (topics and payloads are split before the clock starts,
//! one rumqttc client publishes them): it shares the 2 cores with the broker and the processor,
//! and its own JSON parsing is not what is measured.

use citybrain::live::{Live, LiveOptions};
use citybrain::mqtt::{MqttConfig, MqttIngest};
use citybrain_dataflows::{CityModel, Config};
use citybrain_sim::publish::parse_line;
use citybrain_sim::{CityOptions, FeedOptions, detector_feed, generate_city, geojson_text};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Topic and payload bytes of every recording line.
fn prepared(lines: &[String]) -> Vec<(String, Vec<u8>)> {
    lines.iter().map(|l| parse_line(l).map(|(t, p)| (t, p.into_bytes())).unwrap()).collect()
}

/// Publishes every message and returns once the broker has them all (PubAck at QoS 1; written
/// to the socket at QoS 0).
async fn publish(port: u16, qos: u8, msgs: &[(String, Vec<u8>)]) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut opts = MqttOptions::new(format!("bench-pub-{qos}-{}", msgs.len()), "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 20).set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(opts, 100_000);
    let total = msgs.len();
    let waiter = tokio::spawn(async move {
        let mut done = 0usize;
        while done < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) if qos == 1 => done += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == 0 => done += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
        eventloop
    });
    let level = if qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    for (topic, payload) in msgs {
        client.publish(topic.clone(), level, false, payload.clone()).await.unwrap();
    }
    let _eventloop = waiter.await.unwrap();
}

fn main() {
    let n: usize = std::env::var("CITYBRAIN_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    citybrain::broker::start_embedded(port).unwrap();
    let city = Arc::new(
        CityModel::from_geojson_str(&geojson_text(&generate_city(&CityOptions::default()).unwrap())).unwrap(),
    );
    let per_minute = city.detectors.len() * 2;
    let opts = FeedOptions { duration_min: n.div_ceil(per_minute) as u32, ..FeedOptions::default() };
    let mut lines = detector_feed(&city, &opts).unwrap();
    lines.truncate(n);
    // The same readings as arrays of 100 per message.
    let batched: Vec<String> = lines
        .chunks(100)
        .map(|chunk| {
            let payloads: Vec<String> = chunk.iter().map(|l| parse_line(l).unwrap().1).collect();
            let (topic, _) = parse_line(&chunk[0]).unwrap();
            format!(
                r#"{{"topic":{},"payload":[{}]}}"#,
                serde_json::to_string(&topic).unwrap(),
                payloads.join(",")
            )
        })
        .collect();
    println!(
        "citybrain ingest benchmark: {n} readings, {} detectors, embedded rumqttd on 127.0.0.1:{port}",
        city.detectors.len()
    );
    let only_batched = std::env::var_os("CITYBRAIN_BENCH_BATCHED_ONLY").is_some();
    for (name, qos, msgs) in [
        ("QoS 0, 1 reading/message", 0u8, &lines),
        ("QoS 1, 1 reading/message", 1, &lines),
        ("QoS 1, 100 readings/message", 1, &batched),
    ] {
        if only_batched && msgs.len() == n {
            continue;
        }
        let live = Live::start(
            city.clone(),
            Arc::new(Config::default()),
            LiveOptions {
                workers: 2,
                tick: Duration::from_millis(50),
                pseudonym_key: b"bench-key-0123456789".to_vec(),
                ..LiveOptions::default()
            },
            Arc::new(|_, _| {}),
            Arc::new(|_, _, _| {}),
        )
        .unwrap();
        let cfg =
            MqttConfig { port, client_id: format!("bench-{qos}-{}", msgs.len()), ..MqttConfig::default() };
        let ingest = rt.block_on(async { MqttIngest::start(&cfg, "city/", live.sender()) }).unwrap();
        let im = ingest.metrics();
        while im.subscriptions.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        let lm = live.metrics();
        let started = Instant::now();
        rt.block_on(publish(port, qos, &prepared(msgs)));
        let deadline = Instant::now() + Duration::from_secs(60);
        while lm.accepted.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = started.elapsed().as_secs_f64();
        let got = lm.accepted.load(Ordering::Relaxed);
        println!(
            "  {name}: {got} of {n} readings in {secs:.2} s = {:.0} readings/s{}",
            got as f64 / secs,
            if got == n as u64 { ", none lost" } else { ", SOME MISSING (QoS 0 may drop under overload)" }
        );
        if got != n as u64 {
            println!(
                "    messages received {}, connects {}, connection errors {}, rejected readings {}",
                im.messages.load(Ordering::Relaxed),
                im.connects.load(Ordering::Relaxed),
                im.errors.load(Ordering::Relaxed),
                lm.rejected.load(Ordering::Relaxed)
            );
        }
        rt.block_on(ingest.shutdown());
        live.shutdown().unwrap();
    }
}
