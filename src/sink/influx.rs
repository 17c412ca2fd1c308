//! The InfluxDB v2 sink: line protocol to `POST /api/v2/write` through the `influxdb2` crate.
//!
//! Lines arrive in chunks through a bounded channel and are batched by size and time. A batch
//! the server accepts is done. A batch the server refuses as a *client* error (4xx: malformed,
//! too large, unauthorized) is handed to the rejection hook with the server's reason and never
//! retried. Every other failure (5xx, timeout, connection refused) spools the batch to disk, in
//! order, and the sink retries with jittered exponential backoff. Only data errors count as
//! refusals (400 Bad Request, 413 Payload Too Large, 422 Unprocessable Entity); 401, 403, 404
//! and 429 mean a wrong token, a missing bucket or throttling — configuration, not data — so
//! those batches are spooled and retried, and nothing is lost while an operator fixes it; while the spool is not empty new
//! batches go behind it, so the server always receives points in the order they were produced.
//!
//! Memory is bounded by the channel (a few chunks) plus one batch: when the spool reaches its
//! byte limit the sink stops taking chunks, so producers wait (backpressure) instead of data
//! being dropped. Spool segments survive a restart and are drained first. Writes are
//! idempotent in InfluxDB (same series and timestamp overwrite), so a batch re-sent after a
//! timeout that had in fact succeeded does no harm: delivery is at least once.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// `[influxdb]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8086`. Required when the sink is enabled.
    pub url: String,
    /// Organization. Default `citybrain`.
    pub org: String,
    /// Bucket. Default `citybrain`.
    pub bucket: String,
    /// API token (prefer the environment variable `CITYBRAIN_INFLUX_TOKEN`). Default empty.
    pub token: String,
    /// Lines per batch. Default 5000.
    pub batch_lines: usize,
    /// Longest a line waits before its batch is sent, ms. Default 1000.
    pub flush_ms: u64,
    /// Request timeout, s. Default 10.
    pub timeout_s: u64,
    /// Where batches wait while the server is unreachable. Default `DATA_DIR/spool/influx`.
    pub spool_dir: Option<PathBuf>,
    /// Spool size at which the sink stops accepting lines (backpressure), MB. Default 1024.
    pub spool_max_mb: u64,
    /// Longest wait between retries, s. Default 30.
    pub max_backoff_s: u64,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            url: String::new(),
            org: "citybrain".into(),
            bucket: "citybrain".into(),
            token: String::new(),
            batch_lines: 5000,
            flush_ms: 1000,
            timeout_s: 10,
            spool_dir: None,
            spool_max_mb: 1024,
            max_backoff_s: 30,
        }
    }
}

/// Counters of the sink, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct InfluxMetrics {
    /// Lines received from producers.
    pub lines_received: AtomicU64,
    /// Lines the server accepted.
    pub lines_written: AtomicU64,
    /// Batches the server accepted.
    pub batches_written: AtomicU64,
    /// Lines the server refused as bad data (400, 413, 422), handed to the rejection hook.
    pub lines_rejected: AtomicU64,
    /// Failed attempts that will be retried.
    pub write_failures: AtomicU64,
    /// Bytes currently waiting in the spool.
    pub spool_bytes: AtomicU64,
    /// Batches currently waiting in the spool.
    pub spool_batches: AtomicU64,
}

/// Called with a refused batch and the server's reason.
pub type RejectHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Handle to a running sink.
pub struct InfluxSink {
    tx: mpsc::Sender<String>,
    metrics: Arc<InfluxMetrics>,
    task: JoinHandle<Result<()>>,
}

/// Why an attempt failed.
enum Failure {
    /// The server refused the batch (4xx): do not retry.
    Rejected(String),
    /// Anything else: retry later.
    Retry(String),
}

/// Validates a server URL (the `influxdb2` client panics on an invalid one).
pub fn check_url(u: &str) -> Result<()> {
    let parsed = url::Url::parse(u).with_context(|| format!("`influxdb.url` {u:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("`influxdb.url` {u:?} must be an http:// or https:// URL with a host");
    }
    Ok(())
}

impl InfluxSink {
    /// Starts the sink on the current tokio runtime. `data_dir` holds the default spool.
    pub fn start(cfg: InfluxConfig, data_dir: &Path, on_reject: RejectHook) -> Result<InfluxSink> {
        check_url(&cfg.url)?;
        if cfg.batch_lines == 0 {
            bail!("`influxdb.batch_lines` must be at least 1");
        }
        let http = reqwest::ClientBuilder::new().timeout(Duration::from_secs(cfg.timeout_s.max(1)));
        let client =
            influxdb2::ClientBuilder::with_builder(http, cfg.url.clone(), cfg.org.clone(), cfg.token.clone())
                .build()
                .context("cannot build the InfluxDB client")?;
        let spool = Spool::open(cfg.spool_dir.clone().unwrap_or_else(|| data_dir.join("spool/influx")))?;
        let metrics = Arc::new(InfluxMetrics::default());
        metrics.spool_bytes.store(spool.bytes, Ordering::Relaxed);
        metrics.spool_batches.store(spool.segments.len() as u64, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<String>(8);
        let worker = Worker { cfg, client, spool, metrics: metrics.clone(), on_reject, backoff: None };
        let task = tokio::spawn(worker.run(rx));
        Ok(InfluxSink { tx, metrics, task })
    }

    /// Queues a chunk of line-protocol lines (each ending in `\n`). Waits while the sink is
    /// saturated (backpressure).
    pub async fn write(&self, chunk: String) -> Result<()> {
        self.tx.send(chunk).await.map_err(|_| anyhow::anyhow!("the InfluxDB sink has stopped"))
    }

    /// The sink's counters.
    pub fn metrics(&self) -> Arc<InfluxMetrics> {
        self.metrics.clone()
    }

    /// Stops taking lines, sends what is pending and waits up to `grace` for the spool to drain;
    /// whatever is still spooled then stays on disk for the next start.
    pub async fn shutdown(self, grace: Duration) -> Result<()> {
        drop(self.tx);
        match tokio::time::timeout(grace, self.task).await {
            Ok(joined) => joined.context("the InfluxDB sink task failed")?,
            Err(_) => {
                tracing::warn!(
                    spooled = self.metrics.spool_batches.load(Ordering::Relaxed),
                    "InfluxDB still unreachable at shutdown; spooled batches stay on disk"
                );
                Ok(())
            }
        }
    }
}

struct Worker {
    cfg: InfluxConfig,
    client: influxdb2::Client,
    spool: Spool,
    metrics: Arc<InfluxMetrics>,
    on_reject: RejectHook,
    /// Current retry delay while the server is failing.
    backoff: Option<Duration>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<String>) -> Result<()> {
        let mut batch = String::new();
        let mut lines = 0usize;
        let flush_every = Duration::from_millis(self.cfg.flush_ms.max(1));
        let mut tick = tokio::time::interval(flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spool_max = self.cfg.spool_max_mb.saturating_mul(1 << 20);
        let mut open = true;
        while open || lines > 0 || !self.spool.is_empty() {
            let accepting = open && self.spool.bytes < spool_max;
            tokio::select! {
                chunk = rx.recv(), if accepting => match chunk {
                    Some(chunk) => {
                        let n = chunk.bytes().filter(|&b| b == b'\n').count();
                        self.metrics.lines_received.fetch_add(n as u64, Ordering::Relaxed);
                        batch.push_str(&chunk);
                        lines += n;
                        if lines >= self.cfg.batch_lines {
                            self.send(std::mem::take(&mut batch)).await?;
                            lines = 0;
                        }
                    }
                    None => open = false,
                },
                _ = tick.tick() => {
                    if lines > 0 {
                        self.send(std::mem::take(&mut batch)).await?;
                        lines = 0;
                    }
                    self.drain().await?;
                }
            }
            if !open && lines > 0 {
                self.send(std::mem::take(&mut batch)).await?;
                lines = 0;
            }
            if !open && !self.spool.is_empty() {
                // Shutting down: keep retrying (the caller bounds this with its grace period).
                if let Some(at) = self.spool.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                self.drain().await?;
            }
        }
        Ok(())
    }

    /// Sends a batch, or puts it behind the spool if the spool is not empty or the send fails.
    async fn send(&mut self, batch: String) -> Result<()> {
        if !self.spool.is_empty() {
            self.spool.push(&batch)?;
            self.gauge();
            return self.drain().await;
        }
        match self.attempt(&batch).await {
            Ok(()) => Ok(()),
            Err(Failure::Rejected(reason)) => {
                self.reject(&batch, &reason);
                Ok(())
            }
            Err(Failure::Retry(reason)) => {
                self.failed(&reason);
                self.spool.push(&batch)?;
                self.gauge();
                Ok(())
            }
        }
    }

    /// Sends spooled batches in order until one fails (then waits for the backoff).
    async fn drain(&mut self) -> Result<()> {
        if self.spool.retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
            return Ok(());
        }
        while let Some(first) = self.spool.first() {
            let batch = self.spool.read(&first)?;
            match self.attempt(&batch).await {
                Ok(()) => {}
                Err(Failure::Rejected(reason)) => self.reject(&batch, &reason),
                Err(Failure::Retry(reason)) => {
                    self.failed(&reason);
                    return Ok(());
                }
            }
            self.spool.remove(&first)?;
            self.gauge();
        }
        Ok(())
    }

    async fn attempt(&mut self, batch: &str) -> Result<(), Failure> {
        let n = batch.bytes().filter(|&b| b == b'\n').count() as u64;
        let result =
            self.client.write_line_protocol(&self.cfg.org, &self.cfg.bucket, batch.to_string()).await;
        match result {
            Ok(()) => {
                self.spool.retry_at = None;
                if self.backoff.take().is_some() {
                    tracing::info!("InfluxDB reachable again; draining the spool");
                }
                self.metrics.lines_written.fetch_add(n, Ordering::Relaxed);
                self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(influxdb2::RequestError::Http { status, text })
                if matches!(status.as_u16(), 400 | 413 | 422) =>
            {
                Err(Failure::Rejected(format!("HTTP {status}: {}", text.trim())))
            }
            Err(e) => Err(Failure::Retry(e.to_string())),
        }
    }

    fn reject(&self, batch: &str, reason: &str) {
        let n = batch.bytes().filter(|&b| b == b'\n').count() as u64;
        self.metrics.lines_rejected.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(lines = n, %reason, "InfluxDB refused a batch; it goes to the dead letters");
        (self.on_reject)(batch, reason);
    }

    fn failed(&mut self, reason: &str) {
        self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
        let max = Duration::from_secs(self.cfg.max_backoff_s.max(1));
        let next = match self.backoff {
            None => {
                tracing::warn!(%reason, "InfluxDB write failed; spooling to disk and retrying");
                Duration::from_millis(200)
            }
            Some(d) => (d * 2).min(max),
        };
        // ±25 % jitter so many sinks do not retry in step.
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        self.backoff = Some(next);
        self.spool.retry_at = Some(tokio::time::Instant::now() + next.mul_f64(jitter));
    }

    fn gauge(&self) {
        self.metrics.spool_bytes.store(self.spool.bytes, Ordering::Relaxed);
        self.metrics.spool_batches.store(self.spool.segments.len() as u64, Ordering::Relaxed);
    }
}

/// Batches waiting on disk, one file each, named by sequence number.
struct Spool {
    dir: PathBuf,
    segments: std::collections::VecDeque<(u64, u64)>,
    next: u64,
    bytes: u64,
    retry_at: Option<tokio::time::Instant>,
}

impl Spool {
    fn open(dir: PathBuf) -> Result<Spool> {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create spool {}", dir.display()))?;
        let mut segments = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read spool {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) =
                name.to_str().and_then(|n| n.strip_suffix(".lp")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push((seq, entry.metadata()?.len()));
        }
        segments.sort_unstable();
        let next = segments.last().map(|(s, _)| s + 1).unwrap_or(0);
        let bytes = segments.iter().map(|(_, b)| b).sum();
        if !segments.is_empty() {
            tracing::info!(
                batches = segments.len(),
                bytes,
                "InfluxDB spool from an earlier run: draining it first"
            );
        }
        Ok(Spool { dir, segments: segments.into(), next, bytes, retry_at: None })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.lp"))
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn first(&self) -> Option<(u64, u64)> {
        self.segments.front().copied()
    }

    fn push(&mut self, batch: &str) -> Result<()> {
        let seq = self.next;
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, batch).with_context(|| format!("cannot write spool {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write spool {}", path.display()))?;
        self.next += 1;
        self.bytes += batch.len() as u64;
        self.segments.push_back((seq, batch.len() as u64));
        Ok(())
    }

    fn read(&self, seg: &(u64, u64)) -> Result<String> {
        let path = self.path(seg.0);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read spool {}", path.display()))
    }

    fn remove(&mut self, seg: &(u64, u64)) -> Result<()> {
        let path = self.path(seg.0);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove spool {}", path.display()))?;
        self.segments.pop_front();
        self.bytes -= seg.1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_the_client_sees_them() {
        assert!(check_url("http://127.0.0.1:8086").is_ok());
        assert!(check_url("https://influx.example:443/").is_ok());
        assert!(check_url("localhost:8086").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url("ftp://x").is_err());
    }

    #[test]
    fn the_spool_survives_a_reopen_in_order() {
        let dir = std::env::temp_dir().join(format!("cb-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(dir.clone()).unwrap();
        s.push("a 1\n").unwrap();
        s.push("b 2\n").unwrap();
        let s2 = Spool::open(dir.clone()).unwrap();
        assert_eq!(s2.segments.len(), 2);
        assert_eq!(s2.bytes, 8);
        assert_eq!(s2.read(&s2.first().unwrap()).unwrap(), "a 1\n");
        let mut s2 = s2;
        let first = s2.first().unwrap();
        s2.remove(&first).unwrap();
        s2.push("c 3\n").unwrap();
        let s3 = Spool::open(dir).unwrap();
        let order: Vec<String> = s3.segments.iter().map(|seg| s3.read(seg).unwrap()).collect();
        assert_eq!(order, vec!["b 2\n", "c 3\n"]);
    }
}
