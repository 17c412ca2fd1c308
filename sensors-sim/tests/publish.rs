//! Publishing to a real broker: mosquitto (Debian's, /usr/sbin/mosquitto) on a free loopback port,
//! a rumqttc subscriber on `city/#`, and `publish_lines` in between; and the `citybrain-sim run`
//! command line, to a recording and to the broker.

use citybrain_sim::publish::{MqttTarget, Pace, parse_line, publish_lines};
use citybrain_sim::{
    CityOptions, EmergencyOptions, FeedOptions, detector_feed_geojson, generate_city, geojson_text,
    scenario_feed,
};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const T0: u64 = 1_772_406_000_000;

/// A mosquitto process with its own config and directory; killed (and the directory removed) on
/// drop.
struct Broker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Broker {
    /// A broker without persistence.
    fn start() -> Broker {
        Broker::start_with(false)
    }

    /// With `persistent`, sessions and queued messages survive a restart (saved on SIGTERM).
    fn start_with(persistent: bool) -> Broker {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "citybrain-sim-mosquitto-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nlog_dest stderr\n\
             log_type error\nlog_type warning\n"
        );
        if persistent {
            // Running as root, mosquitto would drop to the `mosquitto` user, which cannot write here.
            conf += &format!("persistence true\npersistence_location {}/\nuser root\n", dir.display());
        } else {
            conf += "persistence false\n";
        }
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Broker { child: None, dir, port };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        assert!(
            std::path::Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is needed (apt-get install mosquitto)"
        );
        let log = File::options().create(true).append(true).open(self.dir.join("mosquitto.log")).unwrap();
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("mosquitto exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "mosquitto does not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait for the exit.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let killed = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(killed.success());
        child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A subscriber to `city/#` at QoS 1 that keeps polling (and reconnecting) in its own task.
struct Subscriber {
    rx: mpsc::UnboundedReceiver<(String, String)>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Connects and returns once the broker acknowledged the subscription.
    async fn start(port: u16, id: &str, clean_session: bool) -> Subscriber {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 16 << 20).set_clean_session(clean_session);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client.subscribe("city/#", QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (subacked_tx, subacked) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _client = client;
            let mut subacked_tx = Some(subacked_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                        if tx.send((p.topic, payload)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(s) = subacked_tx.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subacked).await.expect("no SubAck").unwrap();
        Subscriber { rx, task }
    }

    /// Receives until `done` says so, failing after `limit`; then anything arriving in the next
    /// 300 ms too (to catch extra messages).
    async fn receive_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&got) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => panic!("received {} messages by the deadline", got.len()),
            }
        }
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await {
            got.push(m);
        }
        got
    }
}

fn by_topic(messages: &[(String, String)]) -> BTreeMap<&str, Vec<&str>> {
    let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (topic, payload) in messages {
        map.entry(topic).or_default().push(payload);
    }
    map
}

/// `n` lines one event-time second apart on a few topics.
fn numbered_lines(n: u64, step_ms: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(r#"{{"topic":"city/test/{}","payload":{{"ts":{},"i":{i}}}}}"#, i % 5, T0 + i * step_ms)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_in_order_per_topic() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(broker.port, "test-sub-order", true).await;
    let city = generate_city(&CityOptions::default()).unwrap();
    let lines =
        detector_feed_geojson(&city, &FeedOptions { duration_min: 5, ..FeedOptions::default() }).unwrap();
    let expected: Vec<(String, String)> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
    assert!(expected.len() > 1000, "{} lines", expected.len());

    let target = MqttTarget { qos: 1, ..MqttTarget::new("127.0.0.1", broker.port) };
    let report = publish_lines(&target, lines, Pace::AsFastAsPossible, None).await.unwrap();
    assert_eq!(report.messages, expected.len() as u64);
    assert_eq!(report.bytes, expected.iter().map(|(_, p)| p.len() as u64).sum::<u64>());
    assert!(report.seconds > 0.0 && report.rate() > 0.0);
    eprintln!("{} messages in {:.2} s: {:.0} msg/s", report.messages, report.seconds, report.rate());

    let got = sub.receive_until(Duration::from_secs(60), |got| got.len() >= expected.len()).await;
    assert_eq!(got.len(), expected.len(), "exactly every message");
    assert_eq!(by_topic(&got), by_topic(&expected), "every (topic, payload), in order per topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_publishes_complete() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(broker.port, "test-sub-qos0", true).await;
    let lines = numbered_lines(2000, 1000);
    let expected: Vec<(String, String)> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
    let target = MqttTarget { qos: 0, ..MqttTarget::new("127.0.0.1", broker.port) };
    let report = publish_lines(&target, lines, Pace::AsFastAsPossible, None).await.unwrap();
    assert_eq!(report.messages, 2000);
    // Over loopback to a subscriber that keeps up, QoS 0 loses nothing either.
    let got = sub.receive_until(Duration::from_secs(30), |got| got.len() >= expected.len()).await;
    assert_eq!(by_topic(&got), by_topic(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_paces_by_event_time() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(broker.port, "test-sub-pace", true).await;
    // 61 lines over 60 s of event time; at speed 600 that is 0.1 s.
    let lines = numbered_lines(61, 1000);
    let expected: Vec<(String, String)> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
    let target = MqttTarget::new("127.0.0.1", broker.port);
    let began = Instant::now();
    let report = publish_lines(&target, lines, Pace::Speed(600.0), None).await.unwrap();
    let wall = began.elapsed().as_secs_f64();
    assert_eq!(report.messages, 61);
    assert!((0.05..2.0).contains(&report.seconds), "{} s", report.seconds);
    assert!(wall < 5.0, "{wall} s in all");
    let got = sub.receive_until(Duration::from_secs(10), |got| got.len() >= 61).await;
    assert_eq!(by_topic(&got), by_topic(&expected));

    // RFC 3339 stamps and batches (the latest stamp counts): 30 s at speed 300 → 0.1 s.
    let lines = vec![
        r#"{"topic":"city/test/a","payload":{"ts":"2026-03-02T07:00:00+08:00"}}"#.to_string(),
        r#"{"topic":"city/test/b","payload":[{"ts":1772406000000},{"ts":1772406030000}]}"#.to_string(),
    ];
    let report = publish_lines(&target, lines, Pace::Speed(300.0), None).await.unwrap();
    assert_eq!(report.messages, 2);
    assert!((0.08..2.0).contains(&report.seconds), "{} s", report.seconds);
    assert!(publish_lines(&target, Vec::new(), Pace::Speed(0.0), None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_early_and_what_was_published_arrives() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(broker.port, "test-sub-stop", true).await;
    // An hour of event time at speed 60: a minute, were it not stopped after 0.3 s.
    let lines = numbered_lines(3600, 1000);
    let expected: Vec<(String, String)> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
    let target = MqttTarget::new("127.0.0.1", broker.port);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop_tx.send(true).unwrap();
        // Keep the sender alive while publish_lines drains.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let began = Instant::now();
    let report = publish_lines(&target, lines, Pace::Speed(60.0), Some(stop)).await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
    let n = report.messages as usize;
    assert!((5..100).contains(&n), "{n} messages before the stop");
    let got = sub.receive_until(Duration::from_secs(10), |got| got.len() >= n).await;
    assert_eq!(by_topic(&got), by_topic(&expected[..n]), "exactly the first {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_errors_with_their_line_number() {
    let broker = Broker::start();
    let target = MqttTarget::new("127.0.0.1", broker.port);
    for (bad, why) in [
        ("garbage", "not a recording line"),
        (r#"{"topic":"city/x"}"#, "missing field `payload`"),
        (r#"{"topic":"city/#","payload":{}}"#, "wildcard"),
    ] {
        let lines = vec![numbered_lines(1, 1000).remove(0), String::new(), bad.to_string()];
        let err =
            format!("{:#}", publish_lines(&target, lines, Pace::AsFastAsPossible, None).await.unwrap_err());
        assert!(err.starts_with("line 3: ") && err.contains(why), "{bad}: {err}");
    }
    // Only blank lines: nothing to publish, not an error.
    let report = publish_lines(&target, vec![String::new(), " ".into()], Pace::AsFastAsPossible, None).await;
    assert_eq!(report.unwrap().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let mut broker = Broker::start_with(true);
    // A persistent session: the broker keeps the subscription and queues for it across its
    // restart, so whatever it acknowledged reaches the subscriber.
    let mut sub = Subscriber::start(broker.port, "test-sub-restart", false).await;
    // 3000 lines, 0.1 s apart in event time, at speed 150: 2 s.
    let lines = numbered_lines(3000, 100);
    let expected: BTreeSet<(String, String)> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
    let target = MqttTarget::new("127.0.0.1", broker.port);
    let publisher =
        tokio::spawn(async move { publish_lines(&target, lines, Pace::Speed(150.0), None).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    broker.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.spawn();
    let report = tokio::time::timeout(Duration::from_secs(30), publisher).await.unwrap().unwrap().unwrap();
    assert_eq!(report.messages, 3000);
    // At least once: duplicates are allowed, losses are not.
    let got = sub
        .receive_until(Duration::from_secs(30), |got| {
            got.len() >= expected.len() && got.iter().cloned().collect::<BTreeSet<_>>() == expected
        })
        .await;
    assert!(got.iter().all(|m| expected.contains(m)), "nothing else");
}

/// A scratch directory for command-line runs, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("citybrain-sim-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `citybrain-sim` with `args`; returns its stderr, failing on a non-zero exit.
fn sim(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_citybrain-sim")).args(args).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "citybrain-sim {args:?}: {stderr}");
    stderr
}

/// The lines of a recording, each with its newline.
fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn run_without_emergencies_is_the_detector_feed() {
    let dir = Scratch::new("run-off");
    let city_path = dir.path("city.geojson");
    sim(&["city", "--out", &city_path]);
    let city = generate_city(&CityOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&city_path).unwrap(), geojson_text(&city));
    let expected = joined(
        &detector_feed_geojson(&city, &FeedOptions { duration_min: 10, ..FeedOptions::default() }).unwrap(),
    );
    for extra in [&[][..], &["--emergency", "off"][..]] {
        let out = dir.path("feed.jsonl");
        let mut args = vec!["run", "--city", &city_path, "--out", &out, "--duration-min", "10"];
        args.extend_from_slice(extra);
        let stderr = sim(&args);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), expected, "{extra:?}: byte-identical");
        assert!(stderr.contains("readings to") && !stderr.contains("emergency"), "{stderr}");
    }
    // Emergency options need the scenario on.
    let out = Command::new(env!("CARGO_BIN_EXE_citybrain-sim"))
        .args(["run", "--city", &city_path, "--out", &dir.path("x.jsonl"), "--mass-casualty", "district-5@1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mass-casualty needs --emergency on"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_emergencies_records_and_publishes_the_same_lines() {
    let broker = Broker::start();
    let mut sub = Subscriber::start(broker.port, "test-sub-emergency", true).await;
    let dir = Scratch::new("run-on");
    let city_path = dir.path("city.geojson");
    sim(&["city", "--out", &city_path]);
    let text = std::fs::read_to_string(&city_path).unwrap();
    let model = citybrain_dataflows::CityModel::from_geojson_str(&text).unwrap();
    let feed = FeedOptions { duration_min: 20, ..FeedOptions::default() };
    let em = EmergencyOptions {
        call_rate: 6.0,
        mass_casualty: vec!["district-5@5+8".parse().unwrap()],
        ..EmergencyOptions::default()
    };
    let expected = scenario_feed(&model, &text, &feed, &em).unwrap();
    let emergency_lines = expected.iter().filter(|l| l.starts_with(r#"{"topic":"city/emergency/"#)).count();
    assert!(emergency_lines > 100, "{emergency_lines} emergency events");

    // To a recording: the library's lines, byte for byte.
    let out = dir.path("feed.jsonl.gz");
    let common = [
        "run",
        "--city",
        &city_path,
        "--duration-min",
        "20",
        "--emergency",
        "on",
        "--call-rate",
        "6",
        "--mass-casualty",
        "district-5@5+8",
    ];
    let stderr = sim(&[&common[..], &["--out", &out]].concat());
    assert!(stderr.contains(&format!("{emergency_lines} emergency events")), "{stderr}");
    let recorded = citybrain_sim::read_lines(std::path::Path::new(&out)).unwrap();
    assert_eq!(recorded, expected);

    // To MQTT and a recording at once: the subscriber gets exactly the recording.
    let out = dir.path("published.jsonl");
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let cmd = [&common[..], &["--mqtt", &url, "--fast", "--out", &out]].concat();
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || sim(&cmd.iter().map(String::as_str).collect::<Vec<_>>()));
    let got = sub.receive_until(Duration::from_secs(120), |got| got.len() >= expected.len()).await;
    run.await.unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), joined(&expected));
    let expected: Vec<(String, String)> = expected.iter().map(|l| parse_line(l).unwrap()).collect();
    assert_eq!(got.len(), expected.len(), "exactly every message");
    assert_eq!(by_topic(&got), by_topic(&expected), "every (topic, payload), in order per topic");
}
