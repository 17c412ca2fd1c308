//! The InfluxDB v2 sink against a real InfluxDB-v2-API server: VictoriaMetrics (Debian's
//! `victoria-metrics`, installed by `scripts/test`), started here on a free loopback port.

use citybrain::sink::health::OutputHealth;
use citybrain::sink::influx::{InfluxConfig, InfluxSink};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{Vm, free_port, scratch};

const T0_NS: u64 = 1_767_225_600_000_000_000;

/// `n` detector points as line protocol, in chunks of `per_chunk` lines.
fn chunks(n: usize, per_chunk: usize) -> Vec<String> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per_chunk)
        .map(|c| {
            c.iter()
                .map(|i| {
                    format!(
                        "traffic_detector,sensor=d{},segment=s{},window=1m count={}i,flow_vph={}.5 {}\n",
                        i % 500,
                        i % 50,
                        i,
                        i,
                        T0_NS + (i / 500) as u64 * 60_000_000_000
                    )
                })
                .collect()
        })
        .collect()
}

fn config(url: String, dir: &std::path::Path) -> InfluxConfig {
    InfluxConfig {
        url,
        batch_lines: 1000,
        flush_ms: 100,
        timeout_s: 2,
        max_backoff_s: 1,
        spool_dir: Some(dir.join("spool")),
        ..InfluxConfig::default()
    }
}

type Rejections = Arc<Mutex<Vec<(usize, String)>>>;

fn recorder() -> (Rejections, citybrain::sink::influx::RejectHook) {
    let seen: Rejections = Arc::default();
    let hook = seen.clone();
    (
        seen,
        Box::new(move |batch: &str, reason: &str| {
            hook.lock().unwrap().push((batch.lines().count(), reason.to_string()))
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_reach_the_server() {
    let vm = Vm::start(free_port(), &[]);
    let dir = scratch("ok");
    let (rejected, hook) = recorder();
    let sink = InfluxSink::start(config(vm.url(), &dir), &dir, hook, Arc::default()).unwrap();
    for chunk in chunks(12_000, 700) {
        sink.write(chunk).await.unwrap();
    }
    let metrics = sink.metrics();
    sink.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!(metrics.lines_written.load(std::sync::atomic::Ordering::Relaxed), 12_000);
    assert!(rejected.lock().unwrap().is_empty());
    // VictoriaMetrics stores field f of measurement m as metric m_f.
    assert_eq!(vm.samples("traffic_detector_count", 12_000).await, 12_000);
    assert_eq!(vm.samples("traffic_detector_flow_vph", 12_000).await, 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_spooled_and_drained_without_loss() {
    let port = free_port();
    let dir = scratch("outage");
    let (rejected, hook) = recorder();
    // Nothing listens yet: every batch fails and goes to the spool.
    let sink =
        InfluxSink::start(config(format!("http://127.0.0.1:{port}"), &dir), &dir, hook, Arc::default())
            .unwrap();
    let metrics = sink.metrics();
    for chunk in chunks(5_000, 500) {
        sink.write(chunk).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.spool_batches.load(std::sync::atomic::Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline, "batches were not spooled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_dir(dir.join("spool")).unwrap().count() >= 5, "the spool is on disk");
    assert_eq!(metrics.lines_written.load(std::sync::atomic::Ordering::Relaxed), 0);

    // The server comes up: the spool drains in order and nothing is lost.
    let vm = Vm::start(port, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.spool_batches.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        assert!(Instant::now() < deadline, "the spool did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!(metrics.lines_written.load(std::sync::atomic::Ordering::Relaxed), 5_000);
    assert!(metrics.write_failures.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(rejected.lock().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.join("spool")).unwrap().count(), 0);
    assert_eq!(vm.samples("traffic_detector_count", 5_000).await, 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_keeps_the_data_and_the_spool_survives_a_restart() {
    // The server demands other credentials (401): configuration, not data — nothing is dropped.
    let port = free_port();
    let vm = Vm::start(port, &["-httpAuth.username=ops", "-httpAuth.password=secret"]);
    let dir = scratch("auth");
    let (rejected, hook) = recorder();
    let cfg = InfluxConfig { token: "wrong".into(), ..config(vm.url(), &dir) };
    let sink = InfluxSink::start(cfg, &dir, hook, Arc::default()).unwrap();
    let metrics = sink.metrics();
    for chunk in chunks(2_000, 1_000) {
        sink.write(chunk).await.unwrap();
    }
    sink.shutdown(Duration::from_secs(2)).await.unwrap();
    assert_eq!(metrics.lines_written.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(rejected.lock().unwrap().is_empty(), "a 401 must not dead-letter data");
    assert_eq!(metrics.spool_batches.load(std::sync::atomic::Ordering::Relaxed), 2);
    drop(vm);

    // Restarted against a server that accepts it, the sink drains the old spool first.
    let vm = Vm::start(free_port(), &[]);
    let (_, hook) = recorder();
    let sink = InfluxSink::start(config(vm.url(), &dir), &dir, hook, Arc::default()).unwrap();
    let metrics = sink.metrics();
    sink.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!(metrics.lines_written.load(std::sync::atomic::Ordering::Relaxed), 2_000);
    assert_eq!(vm.samples("traffic_detector_count", 2_000).await, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_is_dead_lettered_with_the_servers_reason() {
    // VictoriaMetrics skips bad lines with 204, so this one failure mode is played by a minimal
    // HTTP responder that answers the way InfluxDB 2 does to unparsable line protocol.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                let mut got = Vec::new();
                // Read the request head and its body (Content-Length).
                loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let body = r#"{"code":"invalid","message":"unable to parse 'x': missing fields"}"#;
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    let dir = scratch("bad");
    let (rejected, hook) = recorder();
    let sink =
        InfluxSink::start(config(format!("http://127.0.0.1:{port}"), &dir), &dir, hook, Arc::default())
            .unwrap();
    let metrics = sink.metrics();
    for chunk in chunks(1_500, 1_500) {
        sink.write(chunk).await.unwrap();
    }
    sink.shutdown(Duration::from_secs(10)).await.unwrap();
    let rejected = rejected.lock().unwrap().clone();
    assert_eq!(rejected.iter().map(|(n, _)| n).sum::<usize>(), 1_500);
    assert!(rejected[0].1.contains("400") && rejected[0].1.contains("missing fields"), "{rejected:?}");
    assert_eq!(metrics.lines_rejected.load(std::sync::atomic::Ordering::Relaxed), 1_500);
    assert_eq!(
        metrics.spool_batches.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "refused data is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_file_is_quarantined_and_the_rest_drains() {
    let vm = Vm::start(free_port(), &[]);
    let dir = scratch("corrupt");
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let all = chunks(3_000, 1_000);
    std::fs::write(spool.join("000000000000.lp"), &all[0]).unwrap();
    std::fs::write(spool.join("000000000001.lp"), b"\xff\xfe\x00 not line protocol").unwrap();
    std::fs::write(spool.join("000000000002.lp"), &all[1]).unwrap();
    std::fs::create_dir(spool.join("000000000003.lp")).unwrap(); // not even a file
    std::fs::write(spool.join("000000000004.lp"), &all[2]).unwrap();
    let (rejected, hook) = recorder();
    let sink = InfluxSink::start(config(vm.url(), &dir), &dir, hook, Arc::default()).unwrap();
    let metrics = sink.metrics();
    let unsent = sink.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!(metrics.quarantined.load(Relaxed), 2);
    assert_eq!(metrics.lines_written.load(Relaxed), 3_000);
    assert_eq!((unsent.batches, unsent.lines), (0, 0));
    assert!(rejected.lock().unwrap().is_empty());
    assert!(spool.join("000000000001.lp.corrupt").is_file());
    assert!(spool.join("000000000003.lp.corrupt").is_dir());
    assert_eq!(vm.samples("traffic_detector_count", 3_000).await, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_spool_keeps_batches_in_memory_until_it_recovers() {
    let port = free_port();
    let dir = scratch("spool-full");
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // The server is down and the spool's disk is full: the first spool file goes to /dev/full.
    std::os::unix::fs::symlink("/dev/full", spool.join("000000000000.tmp")).unwrap();
    let health = Arc::new(OutputHealth::default());
    let (_, hook) = recorder();
    let sink =
        InfluxSink::start(config(format!("http://127.0.0.1:{port}"), &dir), &dir, hook, health.clone())
            .unwrap();
    let metrics = sink.metrics();
    for chunk in chunks(3_000, 1_000) {
        sink.write(chunk).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.memory_batches.load(Relaxed) < 3 {
        assert!(Instant::now() < deadline, "batches were not kept in memory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failing = health.failing();
    assert!(
        failing.len() == 1
            && failing[0].starts_with("influxdb_spool")
            && failing[0].contains("No space left"),
        "{failing:?}"
    );
    // Space again: the memory goes to the spool; the server comes back: everything arrives.
    std::fs::remove_file(spool.join("000000000000.tmp")).unwrap();
    while metrics.spool_batches.load(Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the memory did not reach the spool");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.healthy());
    assert_eq!(metrics.memory_batches.load(Relaxed), 0);
    let vm = Vm::start(port, &[]);
    let unsent = sink.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!((unsent.batches, unsent.lines, unsent.lost_lines), (0, 0, 0));
    assert_eq!(metrics.lines_written.load(Relaxed), 3_000);
    assert_eq!(vm.samples("traffic_detector_count", 3_000).await, 3_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_with_a_full_spool_and_the_server_gone_and_says_what_is_left() {
    let vm = Vm::start(free_port(), &[]);
    let dir = scratch("full-shutdown");
    let health = Arc::new(OutputHealth::default());
    let (_, hook) = recorder();
    let cfg = InfluxConfig { spool_max_mb: 1, ..config(vm.url(), &dir) };
    let sink = InfluxSink::start(cfg, &dir, hook, health.clone()).unwrap();
    let metrics = sink.metrics();
    for chunk in chunks(2_000, 1_000) {
        sink.write(chunk).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.lines_written.load(Relaxed) < 2_000 {
        assert!(Instant::now() < deadline, "the first lines were not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // VictoriaMetrics stops; a producer writes until the 1 MB spool is full and it has to wait.
    drop(vm);
    let total: usize = 40_000;
    let tx = sink.chunks();
    let producer = tokio::spawn(async move {
        for chunk in chunks(total, 1_000) {
            tx.send(chunk).await.unwrap();
        }
    });
    while health.healthy() {
        assert!(Instant::now() < deadline, "a full spool was not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.failing()[0].starts_with("influxdb "), "{:?}", health.failing());
    assert!(!producer.is_finished(), "the producer waits while the spool is full");
    // Shutdown begins: the producer is released at once, and shutdown ends within its grace.
    let started = Instant::now();
    sink.closing();
    tokio::time::timeout(Duration::from_secs(10), producer)
        .await
        .expect("the producer was released")
        .unwrap();
    let unsent = sink.shutdown(Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    let written = metrics.lines_written.load(Relaxed);
    assert_eq!(written, 2_000);
    assert_eq!(unsent.lines, total as u64, "{unsent:?}");
    assert_eq!(unsent.lost_lines, 0);
    let on_disk = std::fs::read_dir(dir.join("spool")).unwrap().count() as u64;
    assert_eq!(unsent.batches, on_disk);
    // The next start drains it (a new server here).
    let vm = Vm::start(free_port(), &[]);
    let (_, hook) = recorder();
    let sink = InfluxSink::start(config(vm.url(), &dir), &dir, hook, Arc::default()).unwrap();
    let metrics = sink.metrics();
    assert_eq!(sink.shutdown(Duration::from_secs(30)).await.unwrap().batches, 0);
    assert_eq!(metrics.lines_written.load(Relaxed), total as u64);
}
