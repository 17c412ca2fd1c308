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
//! being dropped; that is reported as an output failure (`influxdb`: `/readyz` 503, input
//! paused) until the spool drains. Spool segments survive a restart and are drained first.
//! Writes are idempotent in InfluxDB (same series and timestamp overwrite), so a batch re-sent
//! after a timeout that had in fact succeeded does no harm: delivery is at least once.
//!
//! The spool never stops the sink: a batch the spool cannot take (disk full, the directory
//! replaced by a file) waits in memory behind it, in order (at most 64 MiB, counting toward the
//! limit), reported as an output failure (`influxdb_spool`) and retried on every flush tick; a
//! spool file that cannot be read (not UTF-8, not a file) is renamed `*.lp.corrupt`, logged and
//! counted, and the rest drains. Spool I/O runs on tokio's blocking pool.
//!
//! Shutdown is bounded: [`InfluxSink::closing`] (called as soon as the service begins to stop)
//! makes the sink take every chunk at once; [`InfluxSink::shutdown`] keeps sending for a grace
//! period, then leaves the rest in the spool and says how many batches and lines that is.

use super::health::OutputHealth;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
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

/// Batches kept in memory at most (bytes) while the spool cannot be written.
const MEMORY_MAX: u64 = 64 << 20;

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
    /// Batches waiting in memory because the spool could not be written.
    pub memory_batches: AtomicU64,
    /// Unreadable spool files renamed to `*.corrupt` and skipped.
    pub quarantined: AtomicU64,
}

/// Called with a refused batch and the server's reason.
pub type RejectHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// What a stopped sink left undelivered: in the spool (for the next start) or, if even the
/// spool could not be written, lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsent {
    /// Batches left in the spool.
    pub batches: u64,
    /// Lines in those batches.
    pub lines: u64,
    /// Lines that could not be spooled either (the spool failing at shutdown).
    pub lost_lines: u64,
    /// The spool directory.
    pub dir: PathBuf,
}

/// What the handle tells the running worker.
#[derive(Default)]
struct Control {
    /// Shutdown has begun: take every chunk (spooling past the limit), never make producers wait.
    closing: AtomicBool,
    /// Give up sending at this instant (set by `shutdown`).
    deadline: Mutex<Option<tokio::time::Instant>>,
    wake: Notify,
}

/// Handle to a running sink.
pub struct InfluxSink {
    tx: mpsc::Sender<String>,
    metrics: Arc<InfluxMetrics>,
    control: Arc<Control>,
    dir: PathBuf,
    task: JoinHandle<Result<Unsent>>,
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

fn count_lines(batch: &str) -> u64 {
    batch.bytes().filter(|&b| b == b'\n').count() as u64
}

impl InfluxSink {
    /// Starts the sink on the current tokio runtime. `data_dir` holds the default spool;
    /// failures of the spool (and a full spool) are reported to `health`.
    pub fn start(
        cfg: InfluxConfig,
        data_dir: &Path,
        on_reject: RejectHook,
        health: Arc<OutputHealth>,
    ) -> Result<InfluxSink> {
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
        let dir = spool.dir.clone();
        let metrics = Arc::new(InfluxMetrics::default());
        let (tx, rx) = mpsc::channel::<String>(8);
        let control = Arc::new(Control::default());
        let worker = Worker {
            cfg,
            client,
            spool,
            memory: VecDeque::new(),
            memory_bytes: 0,
            metrics: metrics.clone(),
            on_reject,
            backoff: None,
            retry_at: None,
            health,
            last_error: String::new(),
            saturated: false,
        };
        worker.gauge();
        let task = tokio::spawn(worker.run(rx, control.clone()));
        Ok(InfluxSink { tx, metrics, control, dir, task })
    }

    /// Queues a chunk of line-protocol lines (each ending in `\n`). Waits while the sink is
    /// saturated (backpressure).
    pub async fn write(&self, chunk: String) -> Result<()> {
        self.tx.send(chunk).await.map_err(|_| anyhow::anyhow!("the InfluxDB sink has stopped"))
    }

    /// A sender of chunks, for producers outside the runtime (`blocking_send`); the sink stops
    /// once it and every such sender are gone.
    pub fn chunks(&self) -> mpsc::Sender<String> {
        self.tx.clone()
    }

    /// The sink's counters.
    pub fn metrics(&self) -> Arc<InfluxMetrics> {
        self.metrics.clone()
    }

    /// Shutdown has begun: from now on the sink takes every chunk at once (spooling past
    /// `spool_max_mb` if it must), so no producer waits for a server that may be gone.
    pub fn closing(&self) {
        self.control.closing.store(true, Ordering::Release);
        self.control.wake.notify_one();
    }

    /// Stops taking lines, sends what is pending and keeps trying for up to `grace`; whatever is
    /// not sent then is left in the spool for the next start, and said (the returned [`Unsent`],
    /// and a warning). Bounded in time whatever the server does.
    pub async fn shutdown(self, grace: Duration) -> Result<Unsent> {
        self.closing();
        *self.control.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now() + grace);
        self.control.wake.notify_one();
        drop(self.tx);
        let mut task = self.task;
        // The worker stops by itself at the deadline; the margin covers its last spool writes.
        match tokio::time::timeout(grace + Duration::from_secs(5), &mut task).await {
            Ok(joined) => joined.context("the InfluxDB sink task failed")?,
            Err(_) => {
                task.abort();
                let m = &self.metrics;
                let unsent = Unsent {
                    batches: m.spool_batches.load(Ordering::Relaxed),
                    lines: 0,
                    lost_lines: 0,
                    dir: self.dir,
                };
                tracing::warn!(batches = unsent.batches, spool = %unsent.dir.display(),
                    "the InfluxDB sink did not stop in time; spooled batches stay on disk");
                Ok(unsent)
            }
        }
    }
}

struct Worker {
    cfg: InfluxConfig,
    client: influxdb2::Client,
    spool: Spool,
    /// Batches behind the spool that could not be written to it, oldest first.
    memory: VecDeque<String>,
    memory_bytes: u64,
    metrics: Arc<InfluxMetrics>,
    on_reject: RejectHook,
    /// Current retry delay while the server is failing.
    backoff: Option<Duration>,
    /// No attempt before this instant.
    retry_at: Option<tokio::time::Instant>,
    health: Arc<OutputHealth>,
    /// The server's last failure, for the saturation report.
    last_error: String,
    /// Whether the sink reported itself saturated (spool full).
    saturated: bool,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<String>, control: Arc<Control>) -> Result<Unsent> {
        let mut batch = String::new();
        let mut lines = 0usize;
        let flush_every = Duration::from_millis(self.cfg.flush_ms.max(1));
        let mut tick = tokio::time::interval(flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let spool_max = self.cfg.spool_max_mb.saturating_mul(1 << 20);
        let mut open = true;
        while open {
            let full = self.spool.bytes + self.memory_bytes >= spool_max || self.memory_bytes >= MEMORY_MAX;
            self.report_saturation(full);
            let accepting = !full || control.closing.load(Ordering::Acquire);
            tokio::select! {
                chunk = rx.recv(), if accepting => match chunk {
                    Some(chunk) => {
                        let n = chunk.bytes().filter(|&b| b == b'\n').count();
                        self.metrics.lines_received.fetch_add(n as u64, Ordering::Relaxed);
                        batch.push_str(&chunk);
                        lines += n;
                        if lines >= self.cfg.batch_lines {
                            self.send(std::mem::take(&mut batch), None).await;
                            lines = 0;
                        }
                    }
                    None => open = false,
                },
                _ = tick.tick() => {
                    if lines > 0 {
                        self.send(std::mem::take(&mut batch), None).await;
                        lines = 0;
                    }
                    self.persist_memory().await;
                    self.drain(None).await;
                }
                _ = control.wake.notified() => {}
            }
        }
        // Shutting down: the last batch, then retries until the deadline.
        let deadline = control
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(10));
        if lines > 0 {
            self.send(std::mem::take(&mut batch), Some(deadline)).await;
        }
        while !(self.spool.is_empty() && self.memory.is_empty()) && tokio::time::Instant::now() < deadline {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at.min(deadline)).await;
            }
            self.drain(Some(deadline)).await;
        }
        self.persist_memory().await;
        self.report_saturation(false);
        let lost_lines: u64 = self.memory.iter().map(|b| count_lines(b)).sum();
        let (batches, lines) = self.spool.count().await;
        let unsent = Unsent { batches, lines, lost_lines, dir: self.spool.dir.clone() };
        if batches > 0 {
            tracing::warn!(batches, lines, spool = %unsent.dir.display(), reason = %self.last_error,
                "InfluxDB unreachable at shutdown: these batches stay in the spool for the next start");
        }
        if lost_lines > 0 {
            tracing::error!(lines = lost_lines, spool = %unsent.dir.display(),
                "the InfluxDB spool cannot be written: these lines are not kept (they are in the line-protocol files)");
        }
        Ok(unsent)
    }

    /// Reports a full spool (the sink makes producers wait) as an output failure, and its end.
    fn report_saturation(&mut self, full: bool) {
        if full && !self.saturated {
            let reason = format!(
                "spool full ({} MB) while the server is unreachable ({}): producers wait",
                (self.spool.bytes + self.memory_bytes) >> 20,
                self.last_error
            );
            self.health.failed("influxdb", &self.spool.dir.display().to_string(), &reason);
        } else if !full && self.saturated {
            self.health.ok("influxdb");
        }
        self.saturated = full;
    }

    /// Sends a batch, or puts it behind the spool if the spool is not empty or the send fails.
    async fn send(&mut self, batch: String, deadline: Option<tokio::time::Instant>) {
        if !self.spool.is_empty() || !self.memory.is_empty() {
            self.enqueue(batch).await;
            return self.drain(deadline).await;
        }
        match self.attempt(&batch, deadline).await {
            Ok(()) => {}
            Err(Failure::Rejected(reason)) => self.reject(&batch, &reason),
            Err(Failure::Retry(reason)) => {
                self.failed(&reason);
                self.enqueue(batch).await;
            }
        }
    }

    /// Puts a batch behind everything waiting: into the spool, or into memory while the spool
    /// cannot be written (reported; retried on every tick).
    async fn enqueue(&mut self, batch: String) {
        self.memory_bytes += batch.len() as u64;
        self.memory.push_back(batch);
        self.persist_memory().await;
    }

    /// Moves the batches waiting in memory into the spool, in order, until one fails.
    async fn persist_memory(&mut self) {
        while let Some(batch) = self.memory.front() {
            match self.spool.push(batch).await {
                Ok(()) => self.health.ok("influxdb_spool"),
                Err(e) => {
                    self.health.failed(
                        "influxdb_spool",
                        &self.spool.dir.display().to_string(),
                        &format!("{e:#}"),
                    );
                    break;
                }
            }
            self.memory_bytes -= batch.len() as u64;
            self.memory.pop_front();
        }
        self.gauge();
    }

    /// Sends waiting batches in order (the spool first, then those only in memory) until one
    /// fails (then waits for the backoff). An unreadable spool file is quarantined.
    async fn drain(&mut self, deadline: Option<tokio::time::Instant>) {
        loop {
            if self.retry_at.is_some_and(|at| tokio::time::Instant::now() < at)
                || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
            {
                return;
            }
            let from_spool = self.spool.first();
            let batch = match from_spool {
                Some(seg) => match self.spool.read(seg).await {
                    Ok(batch) => batch,
                    Err(reason) => {
                        self.spool.quarantine(seg, &reason).await;
                        self.metrics.quarantined.fetch_add(1, Ordering::Relaxed);
                        self.gauge();
                        continue;
                    }
                },
                None => match self.memory.front() {
                    Some(b) => b.clone(),
                    None => return,
                },
            };
            match self.attempt(&batch, deadline).await {
                Ok(()) => {}
                Err(Failure::Rejected(reason)) => self.reject(&batch, &reason),
                Err(Failure::Retry(reason)) => {
                    self.failed(&reason);
                    return;
                }
            }
            match from_spool {
                Some(seg) => {
                    if let Err(e) = self.spool.remove(seg).await {
                        // Sent, but still on disk: it would be sent again (harmless: an
                        // overwrite), so only report it.
                        tracing::warn!(error = %format!("{e:#}"), "cannot remove a sent spool file");
                    }
                }
                None => {
                    self.memory_bytes -= batch.len() as u64;
                    self.memory.pop_front();
                }
            }
            self.gauge();
        }
    }

    async fn attempt(&mut self, batch: &str, deadline: Option<tokio::time::Instant>) -> Result<(), Failure> {
        let n = count_lines(batch);
        let write = self.client.write_line_protocol(&self.cfg.org, &self.cfg.bucket, batch.to_string());
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, write).await {
                Ok(r) => r,
                Err(_) => return Err(Failure::Retry("shutdown grace period over".into())),
            },
            None => write.await,
        };
        match result {
            Ok(()) => {
                self.retry_at = None;
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
        let n = count_lines(batch);
        self.metrics.lines_rejected.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(lines = n, %reason, "InfluxDB refused a batch; it goes to the dead letters");
        (self.on_reject)(batch, reason);
    }

    fn failed(&mut self, reason: &str) {
        self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
        self.last_error = reason.to_string();
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
        self.retry_at = Some(tokio::time::Instant::now() + next.mul_f64(jitter));
    }

    fn gauge(&self) {
        self.metrics.spool_bytes.store(self.spool.bytes, Ordering::Relaxed);
        self.metrics.spool_batches.store(self.spool.segments.len() as u64, Ordering::Relaxed);
        self.metrics.memory_batches.store(self.memory.len() as u64, Ordering::Relaxed);
    }
}

/// One spooled batch: its sequence number, size, and line count when known (batches spooled by
/// an earlier run are counted when needed).
#[derive(Clone, Copy, Debug)]
struct Segment {
    seq: u64,
    bytes: u64,
    lines: Option<u64>,
}

/// Batches waiting on disk, one file each, named by sequence number. File I/O runs on tokio's
/// blocking pool (`tokio::fs`), never on a runtime worker.
struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next: u64,
    bytes: u64,
}

impl Spool {
    /// Opens the spool (once, at start): the segments an earlier run left, in order.
    fn open(dir: PathBuf) -> Result<Spool> {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create spool {}", dir.display()))?;
        let mut segments = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read spool {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot read spool {}", dir.display()))?;
            let name = entry.file_name();
            let Some(seq) =
                name.to_str().and_then(|n| n.strip_suffix(".lp")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            segments.push(Segment { seq, bytes, lines: None });
        }
        segments.sort_unstable_by_key(|s| s.seq);
        let next = segments.last().map(|s| s.seq + 1).unwrap_or(0);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        if !segments.is_empty() {
            tracing::info!(
                batches = segments.len(),
                bytes,
                "InfluxDB spool from an earlier run: draining it first"
            );
        }
        Ok(Spool { dir, segments: segments.into(), next, bytes })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.lp"))
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn first(&self) -> Option<Segment> {
        self.segments.front().copied()
    }

    /// Writes a batch as the next segment (through a temporary file: a segment is whole or absent).
    async fn push(&mut self, batch: &str) -> Result<()> {
        let seq = self.next;
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, batch)
            .await
            .with_context(|| format!("cannot write spool {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .with_context(|| format!("cannot write spool {}", path.display()))?;
        self.next += 1;
        self.bytes += batch.len() as u64;
        self.segments.push_back(Segment { seq, bytes: batch.len() as u64, lines: Some(count_lines(batch)) });
        Ok(())
    }

    /// Reads a segment; the error says why it is unreadable (missing, not a file, not UTF-8).
    async fn read(&self, seg: Segment) -> Result<String, String> {
        let path = self.path(seg.seq);
        let bytes =
            tokio::fs::read(&path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        String::from_utf8(bytes)
            .map_err(|e| format!("{} is not line protocol (not UTF-8: {e})", path.display()))
    }

    /// Renames an unreadable segment to `*.lp.corrupt` (kept for inspection, never sent) and
    /// drops it from the queue, so the rest drains.
    async fn quarantine(&mut self, seg: Segment, reason: &str) {
        let path = self.path(seg.seq);
        let to = self.dir.join(format!("{:012}.lp.corrupt", seg.seq));
        match tokio::fs::rename(&path, &to).await {
            Ok(()) => tracing::error!(path = %path.display(), quarantined = %to.display(), %reason,
                "unreadable InfluxDB spool file quarantined; the rest of the spool drains"),
            Err(e) => tracing::error!(path = %path.display(), %reason, error = %e,
                "unreadable InfluxDB spool file cannot be renamed either; skipped until the next start"),
        }
        self.drop_front(seg);
    }

    /// Deletes a sent segment.
    async fn remove(&mut self, seg: Segment) -> Result<()> {
        let path = self.path(seg.seq);
        let removed = match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove spool {}", path.display()))
            }
            _ => Ok(()),
        };
        self.drop_front(seg);
        removed
    }

    fn drop_front(&mut self, seg: Segment) {
        if self.segments.front().is_some_and(|s| s.seq == seg.seq) {
            self.segments.pop_front();
            self.bytes -= seg.bytes;
        }
    }

    /// Batches and lines in the spool (reading the segments of earlier runs to count theirs).
    async fn count(&self) -> (u64, u64) {
        let mut lines = 0;
        for seg in &self.segments {
            lines += match seg.lines {
                Some(n) => n,
                None => tokio::fs::read(self.path(seg.seq))
                    .await
                    .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
                    .unwrap_or(0),
            };
        }
        (self.segments.len() as u64, lines)
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

    #[tokio::test]
    async fn the_spool_survives_a_reopen_in_order_and_quarantines_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("cb-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(dir.clone()).unwrap();
        s.push("a 1\n").await.unwrap();
        s.push("b 2\n").await.unwrap();
        let mut s2 = Spool::open(dir.clone()).unwrap();
        assert_eq!(s2.segments.len(), 2);
        assert_eq!(s2.bytes, 8);
        assert_eq!(s2.count().await, (2, 2));
        let first = s2.first().unwrap();
        assert_eq!(s2.read(first).await.unwrap(), "a 1\n");
        s2.remove(first).await.unwrap();
        s2.push("c 3\n").await.unwrap();
        std::fs::write(dir.join("000000000001.lp"), b"\xff\xfe not text").unwrap();
        let mut s3 = Spool::open(dir.clone()).unwrap();
        let first = s3.first().unwrap();
        let why = s3.read(first).await.unwrap_err();
        assert!(why.contains("not UTF-8"), "{why}");
        s3.quarantine(first, &why).await;
        assert!(dir.join("000000000001.lp.corrupt").exists());
        let order: Vec<String> = {
            let mut v = Vec::new();
            for seg in s3.segments.clone() {
                v.push(s3.read(seg).await.unwrap());
            }
            v
        };
        assert_eq!(order, vec!["c 3\n"]);
        assert_eq!(Spool::open(dir).unwrap().segments.len(), 1, "a quarantined file is not spooled again");
    }
}
