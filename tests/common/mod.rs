//! Servers the integration tests start on free loopback ports: VictoriaMetrics (an InfluxDB v2
//! write API) and mosquitto (an outside MQTT broker), both from Debian's packages, which
//! `scripts/test` installs when they are missing.
#![allow(dead_code)] // each test crate uses a part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh scratch directory for the test `name`: under cargo's `target/tmp`, one per test crate
/// and name, emptied at the start of each run (so runs never pile up, and the last run's files
/// are there to inspect).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", env!("CARGO_CRATE_NAME")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `port` on 127.0.0.1 accepts connections.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A VictoriaMetrics server on a loopback port, stopped on drop.
pub struct Vm {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Vm {
    pub fn start(port: u16, extra: &[&str]) -> Vm {
        let dir = scratch(&format!("vm-{port}"));
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg("-retentionPeriod=100y") // test data is stamped 2026-01-01
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics is not installed: ./scripts/test installs it (apt-get install victoria-metrics)");
        wait_for_port(port, "victoria-metrics");
        Vm { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Number of samples stored for `metric`, waiting up to 30 s for it to reach `want`.
    pub async fn samples(&self, metric: &str, want: usize) -> usize {
        let url = format!("{}/api/v1/export?match[]={metric}", self.url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            let n: usize = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["values"].as_array().unwrap().len()
                })
                .sum();
            if n >= want || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mosquitto broker on a loopback port (Debian's package, installed by `scripts/test`).
pub struct Mosquitto {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    conf: std::path::PathBuf,
}

impl Mosquitto {
    pub fn start(port: u16) -> Mosquitto {
        let dir = std::env::temp_dir().join(format!("citybrain-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        // Never drop queued QoS 1 messages for a slow subscriber (STACK-NOTES).
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\npersistence false\n"),
        )
        .unwrap();
        Self::spawn(port, conf)
    }

    fn spawn(port: u16, conf: std::path::PathBuf) -> Mosquitto {
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto is not installed: ./scripts/test installs it (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, conf }
    }

    pub fn restart(mut self) -> Mosquitto {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (port, conf) = (self.port, self.conf.clone());
        std::mem::forget(self);
        Self::spawn(port, conf)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
