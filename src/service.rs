//! The live service: `citybrain run` (outside broker, InfluxDB) and `citybrain demo` (embedded
//! broker and simulator, local files only), assembled from the same parts.
//!
//! ```text
//! broker ─MQTT─▶ mqtt (ingest) ─▶ live (dataflow rounds) ─▶ output consumer ─┬─▶ DATA_DIR/lp/*.lp
//!  (demo: embedded,                  │ rejects                               ├─▶ DATA_DIR/alerts.jsonl
//!   fed by the simulator)            ▼                                       ├─▶ InfluxDB (run, optional)
//!                          DATA_DIR/dead-letters/                            └─▶ board ─▶ HTTP API, /ws/alerts
//! ```
//! The output consumer runs on its own thread (file and SQLite I/O never block the async
//! runtime): it renders the dataflow's output, updates the board and the alert hub, and appends
//! line protocol and alert transitions to their files. No output fails silently: every output
//! reports to one [`OutputHealth`]; a failing one is logged once (path and reason), counted on
//! `/metrics`, turns `/readyz` to 503, and pauses input (MQTT messages are no longer taken or
//! acknowledged, so the broker keeps them; `POST /api/ingest` answers 503) until a periodic retry
//! succeeds. The unwritten output waits in memory, bounded ([`MAX_UNWRITTEN_BYTES`] of files,
//! [`MAX_UNSTORED_ALERTS`] transitions for the alert store); beyond it the consumer stops taking
//! the dataflow's output, so the dataflow and then ingestion wait too. Nothing is lost.
//!
//! Shutdown (Ctrl-C or `--duration`) stops the simulator, lets in-flight messages arrive,
//! disconnects from the broker, ends the dataflow (closing every open window), drains the
//! outputs, flushes every file, gives InfluxDB a grace period (what is left stays spooled) and
//! stops the HTTP server. Every step is bounded in time, also with an output failing or the
//! InfluxDB server gone, and what could not be delivered is said (log and stderr): the batches
//! and lines left in the InfluxDB spool for the next start, file bytes not written, alert
//! transitions not stored.

use crate::alerts::AlertBook;
use crate::api::{AppState, Board};
use crate::auth::{Role, TokenConfig, Tokens};
use crate::config::Settings;
use crate::deadletter::DeadLetterStore;
use crate::hub::Hub;
use crate::live::{Live, LiveMetrics, LiveOptions};
use crate::mqtt::{MqttIngest, MqttMetrics};
use crate::sink::files::{DailyFiles, RotatingFile};
use crate::sink::health::OutputHealth;
use crate::sink::influx::{InfluxMetrics, InfluxSink};
use anyhow::{Context, Result};
use citybrain_dataflows::event::{Reason, Rejected};
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Ms};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Output bytes (line protocol and alert transitions) kept in memory while their files cannot be
/// written; beyond this the output consumer stops taking the dataflow's output.
pub const MAX_UNWRITTEN_BYTES: u64 = 64 << 20;
/// Alert transitions kept for the alert store while it cannot be written; beyond this the output
/// consumer stops taking the dataflow's output.
pub const MAX_UNSTORED_ALERTS: u64 = 100_000;
/// How often a failed output write is retried.
const RETRY: Duration = Duration::from_secs(1);
/// How long shutdown keeps retrying failed output writes before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What to run.
pub struct ServiceOptions {
    /// Settings (from the config file, or demo defaults).
    pub settings: Settings,
    /// The city model file.
    pub city_path: PathBuf,
    /// Stop after this long (wall clock), flushing; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Demo extras: the embedded broker and the simulator.
    pub demo: Option<DemoOptions>,
}

/// The demo's embedded parts.
pub struct DemoOptions {
    /// Simulated seconds per wall second (the simulator's pace and the idle clock's speed).
    pub speed: f64,
}

/// Figures of a finished run.
#[derive(Debug, Default)]
pub struct ServiceReport {
    /// Messages received over MQTT.
    pub messages: u64,
    /// Elements accepted.
    pub accepted: u64,
    /// Elements rejected (dead-lettered).
    pub rejected: u64,
    /// Line-protocol points written.
    pub points: u64,
    /// Alert transitions published by the hub.
    pub alert_transitions: u64,
    /// Line-protocol lines left in the InfluxDB spool for the next start.
    pub influx_unsent_lines: u64,
    /// Batches left in the InfluxDB spool for the next start.
    pub influx_unsent_batches: u64,
    /// Output file bytes (line protocol, alerts.jsonl) that could not be written.
    pub unwritten_bytes: u64,
    /// Alert transitions that could not be stored.
    pub unstored_transitions: u64,
}

/// The tokens `demo` makes for itself (CONTRACT §5).
struct DemoTokens {
    ops: String,
    officer_id: String,
    officer: String,
}

impl DemoTokens {
    /// The tokens of an earlier demo in `data_dir` (`tokens.env`), so a restart keeps the pages
    /// and links signed in, when they are for this city's officer; otherwise new ones: an ops
    /// token and a token for the first officer (by id) the city model names.
    fn load_or_new(data_dir: &std::path::Path, city: &CityModel) -> DemoTokens {
        let officer_id =
            city.officers().map(|(o, _)| o.to_string()).min().unwrap_or_else(|| "officer-1".into());
        let earlier = std::fs::read_to_string(data_dir.join("tokens.env")).ok().and_then(|text| {
            let get = |key: &str| {
                text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
            };
            let token = |t: String| t.starts_with("cb_").then_some(t);
            Some(DemoTokens {
                ops: get("CITYBRAIN_OPS_TOKEN").and_then(token)?,
                officer: get("CITYBRAIN_OFFICER_TOKEN").and_then(token)?,
                officer_id: get("CITYBRAIN_OFFICER_ID").filter(|o| *o == officer_id)?,
            })
        });
        earlier.unwrap_or_else(|| DemoTokens {
            ops: crate::auth::generate(),
            officer_id,
            officer: crate::auth::generate(),
        })
    }

    fn config(&self) -> [TokenConfig; 2] {
        [
            TokenConfig {
                name: Some("demo-ops".into()),
                role: Role::Ops,
                officer: None,
                sha256: crate::auth::hash(&self.ops),
            },
            TokenConfig {
                name: None,
                role: Role::Officer,
                officer: Some(self.officer_id.clone()),
                sha256: crate::auth::hash(&self.officer),
            },
        ]
    }

    /// Writes `DATA_DIR/tokens.env` (owner-only where the OS allows).
    fn write(&self, data_dir: &std::path::Path) -> Result<PathBuf> {
        let path = data_dir.join("tokens.env");
        let text = format!(
            "CITYBRAIN_OPS_TOKEN={}\nCITYBRAIN_OFFICER_ID={}\nCITYBRAIN_OFFICER_TOKEN={}\n",
            self.ops, self.officer_id, self.officer
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(path)
    }
}

fn wall_ms() -> Ms {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Ms).unwrap_or(0)
}

/// The dead-letter store and the health it reports to.
struct DeadLetters {
    store: Mutex<DeadLetterStore>,
    health: Arc<OutputHealth>,
}

impl DeadLetters {
    fn lock(&self) -> std::sync::MutexGuard<'_, DeadLetterStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a rejected element (flushed at once: rejections are rare, and a dead letter should
    /// survive a crash).
    fn record(&self, topic: &str, raw: &[u8], why: &Rejected) {
        let mut d = self.lock();
        let kept = d.record(topic, raw, why, wall_ms());
        Self::flush_locked(&mut d, &self.health);
        if let Err(e) = kept {
            tracing::debug!(error = %e, "dead letter not kept");
        }
    }

    /// Writes what is buffered (the output consumer retries this periodically).
    fn flush(&self) {
        Self::flush_locked(&mut self.lock(), &self.health);
    }

    fn flush_locked(d: &mut DeadLetterStore, health: &OutputHealth) {
        match d.flush() {
            Ok(()) => health.ok("dead_letters"),
            Err(e) => health.failed("dead_letters", &d.dir().display().to_string(), &format!("{e:#}")),
        }
    }
}

/// A file output of the consumer: its name (for health and metrics), its files, and the files
/// of its personal records (public-health alert transitions), one set a day, deleted once past
/// the health retention.
struct FileOutput {
    name: &'static str,
    file: RotatingFile,
    personal: DailyFiles,
}

impl FileOutput {
    /// Bytes queued and not yet on disk.
    fn pending_bytes(&self) -> u64 {
        self.file.pending_bytes() + self.personal.pending_bytes()
    }

    /// Writes what is queued; reports the outcome.
    fn flush(&mut self, health: &OutputHealth) {
        if self.pending_bytes() == 0 {
            return;
        }
        let (path, outcome) = match self.file.flush() {
            Ok(()) => (self.personal_dir(), self.personal.flush()),
            Err(e) => (self.file.current_path().display().to_string(), Err(e)),
        };
        match outcome {
            Ok(()) => health.ok(self.name),
            Err(e) => health.failed(self.name, &path, &format!("{e:#}")),
        }
    }

    fn personal_dir(&self) -> String {
        self.personal.dir().display().to_string()
    }

    /// Deletes the personal files of the days that ended at or before `before` (epoch ms).
    fn expire(&mut self, before: Ms) {
        match self.personal.expire(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                output = self.name,
                files = n,
                "public-health files past their retention deleted"
            ),
            Err(e) => tracing::warn!(output = self.name, error = %format!("{e:#}"),
                "cannot delete public-health files past their retention; tried again on the next day"),
        }
    }
}

/// Runs the service until Ctrl-C or the duration ends.
pub async fn serve(opts: ServiceOptions) -> Result<ServiceReport> {
    let s = &opts.settings;
    let city_text = std::fs::read_to_string(&opts.city_path)
        .with_context(|| format!("cannot read city model {}", opts.city_path.display()))?;
    let city = Arc::new(CityModel::from_geojson_str(&city_text)?);
    let cfg = Arc::new(s.dataflow.clone());
    let data_dir = s.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;

    // Outputs.
    let health = Arc::new(OutputHealth::default());
    let mut lp_files = FileOutput {
        name: "line_protocol",
        file: RotatingFile::open(&data_dir.join("lp"), "citybrain", "lp", 256 << 20, None)?,
        personal: DailyFiles::open(&data_dir.join("lp").join("health"), "alerts", "lp", 64 << 20, None)?,
    };
    let mut alert_file = FileOutput {
        name: "alerts_jsonl",
        file: RotatingFile::open(&data_dir.join("alerts"), "alerts", "jsonl", 64 << 20, None)?,
        personal: DailyFiles::open(
            &data_dir.join("alerts").join("health"),
            "alerts",
            "jsonl",
            64 << 20,
            None,
        )?,
    };
    let health_retention = cfg.health.retention_ms();
    let pseudonyms = Pseudonymizer::new(s.pseudonym_key.clone());
    let dead_store = Mutex::new(
        DeadLetterStore::open(
            &data_dir.join("dead-letters"),
            16 << 20,
            16,
            pseudonyms.clone(),
            &s.topic_prefix,
        )?
        .with_personal_retention(health_retention),
    );
    let dead = Arc::new(DeadLetters { store: dead_store, health: health.clone() });
    let influx = match &s.influxdb {
        Some(cfg) => {
            let dead = dead.clone();
            let hook: crate::sink::influx::RejectHook = Box::new(move |batch: &str, reason: &str| {
                let rej =
                    Rejected::new(Reason::InvalidValue, format!("InfluxDB refused the batch: {reason}"));
                dead.record("influxdb/write", batch.as_bytes(), &rej);
            });
            Some(InfluxSink::start(cfg.clone(), &data_dir, hook, health.clone())?)
        }
        None => None,
    };

    let influx_metrics = influx.as_ref().map(InfluxSink::metrics);

    // Access control and the alert hub.
    let demo_tokens = opts.demo.as_ref().map(|_| DemoTokens::load_or_new(&data_dir, &city));
    let mut token_cfg = s.auth.tokens.clone();
    token_cfg.extend(demo_tokens.iter().flat_map(DemoTokens::config));
    let tokens = Arc::new(Tokens::new(&token_cfg, &city).context("config section [auth]")?);
    if tokens.is_empty() {
        tracing::warn!("no [[auth.tokens]] configured: every protected route answers 401");
    }
    let mut hub_options = s.alerts.hub_options();
    // Public-health alerts are kept only as long as the records they come from.
    hub_options.domain_history_ms.push(("health".into(), cfg.health.retention_ms()));
    let hub = Arc::new(
        Hub::open_reporting(Some(&data_dir.join("alerts.db")), &hub_options, health.clone()).with_context(
            || format!("cannot open the alert store {}", data_dir.join("alerts.db").display()),
        )?,
    );
    let hub_metrics = hub.metrics();
    // The consumer's queue (files, InfluxDB) starts with nothing to catch up on: `alert` points
    // of alerts restored from the store were written when they happened.
    let (_, outlet_rx) = hub.outlet();
    let mqtt_outlet = s.alerts.mqtt_outlet.then(|| {
        let (snapshot, rx) = hub.outlet();
        crate::hub::outlet::start(&s.mqtt, &s.topic_prefix, snapshot, rx)
    });

    // The dataflow.
    let (out_tx, out_rx) = crossbeam_channel::bounded::<(Ms, Vec<(Out, isize)>)>(64);
    let speed = opts.demo.as_ref().map(|d| d.speed).unwrap_or(1.0);
    let live_opts = LiveOptions {
        workers: s.live.workers,
        tick: Duration::from_millis(s.live.tick_ms),
        speed,
        topic_prefix: s.topic_prefix.clone(),
        pseudonym_key: s.pseudonym_key.clone(),
        ..LiveOptions::default()
    };
    let dl = dead.clone();
    let live = Live::start(
        city.clone(),
        cfg.clone(),
        live_opts,
        Arc::new(move |t, records| {
            let _ = out_tx.send((t, records));
        }),
        Arc::new(move |topic: &str, raw: &[u8], rej| dl.record(topic, raw, rej)),
    )?;
    let live_metrics = live.metrics();

    // The output consumer: dataflow results → board, hub; hub transitions → files, InfluxDB.
    let board = Arc::new(RwLock::new(Board::new(city.clone(), cfg.clone())));
    let (version_tx, version_rx) = watch::channel(0u64);
    let points = Arc::new(AtomicU64::new(0));
    // Set when shutdown begins: the consumer then takes everything, whatever the bounds.
    let closing = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (board, hub, city, cfg, points, health, dead, closing) = (
            board.clone(),
            hub.clone(),
            city.clone(),
            cfg.clone(),
            points.clone(),
            health.clone(),
            dead.clone(),
            closing.clone(),
        );
        let mut outlet_rx = outlet_rx;
        // Line protocol for InfluxDB goes through the sink's own task (a slow server only slows
        // that; a full spool makes this thread wait, which is the backpressure).
        let lp_tx = influx.as_ref().map(InfluxSink::chunks);
        std::thread::Builder::new().name("output".into()).spawn(move || {
            let mut book = AlertBook::default();
            let mut open = true;
            let mut last_retry = Instant::now();
            // The city clock, and its value at the last expiry of personal files (hourly).
            let (mut now, mut clock): (Ms, Ms) = (0, 0);
            while open {
                let behind = lp_files.pending_bytes() + alert_file.pending_bytes() > MAX_UNWRITTEN_BYTES
                    || hub.store_backlog() > MAX_UNSTORED_ALERTS;
                let mut buf = String::new();
                let mut published = Vec::new();
                if behind && !closing.load(Ordering::Acquire) {
                    // Bounded memory: take nothing new until the failing output catches up.
                    hub.wait_store_below(MAX_UNSTORED_ALERTS, Duration::from_millis(200));
                } else {
                    match out_rx.recv_timeout(Duration::from_millis(200)) {
                        Ok((t, mut records)) => {
                            now = now.max(t);
                            let (n, raw) = book.render(t, &mut records, &city, &cfg, &mut buf);
                            points.fetch_add(n, Ordering::Relaxed);
                            // Every batch, not only those that wrote points: a unit that moves
                            // within its district writes nothing but changes the read model, and
                            // the board's clock must follow the alerts'. Dashboards hear of it
                            // only when the version moved.
                            let mut b = board.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                            let v = b.apply(t, &records);
                            version_tx.send_if_modified(|old| std::mem::replace(old, v) != v);
                            hub.apply(t, raw);
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => open = false,
                    }
                }
                // Everything the hub published since (also acknowledgements), in order:
                // `alert` points and alerts.jsonl.
                while let Ok(p) = outlet_rx.try_recv() {
                    published.push(p);
                }
                let mut alerts_json = String::new();
                // Public-health transitions (pseudonyms, trips, venues) go to the day's personal
                // files, deleted after the retention; InfluxDB gets them with the rest.
                let mut personal_lp = String::new();
                for p in &published {
                    let json = serde_json::to_string(&p.alert).unwrap_or_default() + "\n";
                    if p.alert.domain == "health" {
                        let mut line = String::new();
                        citybrain_dataflows::lp::alert_line(&p.alert, p.time, &mut line);
                        let days = (lp_files.personal.write(p.time, line.as_bytes()))
                            .and_then(|()| alert_file.personal.write(p.time, json.as_bytes()));
                        if let Err(e) = days {
                            health.failed("alerts_jsonl", &alert_file.personal_dir(), &format!("{e:#}"));
                        }
                        personal_lp.push_str(&line);
                    } else {
                        citybrain_dataflows::lp::alert_line(&p.alert, p.time, &mut buf);
                        alerts_json.push_str(&json);
                    }
                }
                if now > clock + 3_600_000 {
                    clock = now;
                    lp_files.expire(clock.saturating_sub(health_retention));
                    alert_file.expire(clock.saturating_sub(health_retention));
                }
                points.fetch_add(published.len() as u64, Ordering::Relaxed);
                // A failing file is retried once per RETRY, a working one written at once.
                let retry_due = last_retry.elapsed() >= RETRY;
                for (out, bytes) in [(&mut lp_files, buf.as_bytes()), (&mut alert_file, alerts_json.as_bytes())] {
                    let failing = out.file.pending_bytes() > 0;
                    out.file.write(bytes);
                    if !failing || retry_due {
                        out.flush(&health);
                    }
                }
                if retry_due {
                    last_retry = Instant::now();
                    dead.flush();
                }
                buf.push_str(&personal_lp);
                if let Some(tx) = lp_tx.as_ref().filter(|_| !buf.is_empty()) {
                    let _ = tx.blocking_send(buf);
                }
            }
            drop(lp_tx);
            // The dataflow has ended: keep retrying what is unwritten for a while, then say.
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            loop {
                lp_files.flush(&health);
                alert_file.flush(&health);
                dead.flush();
                let left = lp_files.pending_bytes() + alert_file.pending_bytes();
                if left == 0 || Instant::now() >= deadline {
                    for out in [&lp_files, &alert_file] {
                        let n = out.pending_bytes();
                        if n > 0 {
                            tracing::error!(output = out.name, path = %out.file.current_path().display(), bytes = n,
                                "output still failing at shutdown; these bytes are not written");
                        }
                    }
                    break left;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })?
    };

    // Demo: the embedded broker.
    let mqtt_cfg = s.mqtt.clone();
    if opts.demo.is_some() {
        crate::broker::start_embedded(mqtt_cfg.port)?;
    }
    let gate = {
        let h = health.clone();
        Arc::new(move || h.healthy())
    };
    let ingest = MqttIngest::start_gated(&mqtt_cfg, &s.topic_prefix, live.sender(), gate)?;
    let http_ingest: crate::api::IngestGate = Arc::new(Mutex::new(Some(live.sender())));
    let mqtt_metrics = ingest.metrics();

    // Demo: the simulator, publishing in (accelerated) real time.
    let (stop_tx, stop_rx) = watch::channel(false);
    let simulator = opts.demo.as_ref().map(|d| {
        let (city, speed, port) = (city.clone(), d.speed, mqtt_cfg.port);
        tokio::spawn(async move { crate::demo::simulate(city, port, speed, stop_rx).await })
    });

    // The API.
    let state = AppState {
        city: city.clone(),
        city_geojson: Arc::new(city_text),
        board: board.clone(),
        board_version: version_rx,
        hub: hub.clone(),
        tokens: tokens.clone(),
        http: Arc::new(s.http.clone()),
        topic_prefix: Arc::new(s.topic_prefix.clone()),
        ingest: http_ingest.clone(),
        reject: {
            let dl = dead.clone();
            Arc::new(move |topic: &str, raw: &[u8], rej: &Rejected| dl.record(topic, raw, rej))
        },
        ws_slots: Arc::new(tokio::sync::Semaphore::new(s.http.max_ws_connections)),
        ready: {
            let (m, h) = (mqtt_metrics.clone(), health.clone());
            Arc::new(move || {
                let failing = h.failing();
                if !failing.is_empty() {
                    Err(format!("output failing (input paused): {}", failing.join("; ")))
                } else if !m.subscribed.load(Ordering::Relaxed) {
                    Err("not subscribed to the MQTT broker".into())
                } else {
                    Ok(())
                }
            })
        },
        accepting: {
            let h = health.clone();
            Arc::new(move || {
                let failing = h.failing();
                if failing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("output failing (input paused): {}", failing.join("; ")))
                }
            })
        },
        metrics: Arc::new(render_metrics(Stages {
            live: live_metrics.clone(),
            mqtt: mqtt_metrics.clone(),
            influx: influx_metrics,
            dead: dead.clone(),
            health: health.clone(),
            hub: hub.clone(),
            outlet: mqtt_outlet.as_ref().map(|(m, _)| m.clone()),
        })),
        pseudonyms: Arc::new(pseudonyms.clone()),
        contact_limiter: Arc::new(crate::api::health::ContactLimiter::new(
            s.http.contact_check_per_minute,
            s.http.contact_check_burst,
            crate::api::health::MAX_LIMITED_CLIENTS,
        )),
    };
    let listener = tokio::net::TcpListener::bind(&s.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (config key `http.listen` / --http)", s.http.listen))?;
    let addr = listener.local_addr()?;
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let server = tokio::spawn(async move {
        let mut rx = http_stop_rx;
        axum::serve(
            listener,
            crate::api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
        .await
    });
    eprintln!(
        "citybrain: API on http://{addr}/ (try /api/traffic/districts, /api/alerts, /ws/alerts, /metrics)"
    );
    let topics = crate::mqtt::input_filters(&s.topic_prefix).join(" ");
    eprintln!("citybrain: MQTT {}:{} topics {topics}", mqtt_cfg.host, mqtt_cfg.port);
    if mqtt_outlet.is_some() {
        eprintln!("citybrain: alert transitions published on {}alerts/#", s.topic_prefix);
    }
    eprintln!(
        "citybrain: line protocol in {}/lp/, alerts in {}/alerts/, dead letters in {}/dead-letters/",
        data_dir.display(),
        data_dir.display(),
        data_dir.display()
    );
    eprintln!("citybrain: alerts stored in {}", data_dir.join("alerts.db").display());
    if let Some(t) = &demo_tokens {
        let path = t.write(&data_dir)?;
        eprintln!("citybrain: operations centre  http://{addr}/#token={}", t.ops);
        eprintln!(
            "citybrain: grid officer       http://{addr}/officer#token={}  ({})",
            t.officer, t.officer_id
        );
        eprintln!("citybrain: ops token      {}", t.ops);
        eprintln!("citybrain: officer {:<7} {}", t.officer_id, t.officer);
        eprintln!("citybrain: tokens written to {}", path.display());
        eprintln!(
            "citybrain: try  curl -H \"Authorization: Bearer $CITYBRAIN_OPS_TOKEN\" http://{addr}/api/alerts"
        );
    } else {
        eprintln!("citybrain: {} access token(s) configured", tokens.len());
    }

    // Run until Ctrl-C or the duration.
    let started = Instant::now();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("citybrain: interrupted; shutting down"),
        _ = async { match opts.duration { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
            eprintln!("citybrain: {:.0} s elapsed; shutting down", started.elapsed().as_secs_f64());
        }
    }

    // Orderly shutdown: nothing accepted is lost, and nothing waits for ever.
    closing.store(true, Ordering::Release);
    if let Some(sink) = &influx {
        sink.closing();
    }
    let _ = stop_tx.send(true);
    if let Some(sim) = simulator {
        match sim.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "simulator ended with an error"),
            Err(e) => tracing::warn!(error = %e, "simulator task failed"),
            Ok(Ok(())) => {}
        }
    }
    // Let messages in flight reach the dataflow before disconnecting.
    let mut last = u64::MAX;
    for _ in 0..50 {
        let now = mqtt_metrics.messages.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ingest.shutdown().await;
    http_ingest.lock().unwrap_or_else(|p| p.into_inner()).take();
    tokio::task::spawn_blocking(move || live.shutdown()).await.context("dataflow shutdown")??;
    let unwritten = tokio::task::spawn_blocking(move || consumer.join())
        .await
        .context("output consumer")?
        .map_err(|_| anyhow::anyhow!("the output consumer failed"))?;
    let unsent = match influx {
        Some(sink) => Some(sink.shutdown(Duration::from_secs(10)).await?),
        None => None,
    };
    let unstored = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.flush_store(SHUTDOWN_GRACE)).await.unwrap_or(0)
    };
    let transitions = hub_metrics.transitions.load(Ordering::Relaxed);
    // Websocket clients hold the server open: give them 5 s, then close it.
    let _ = http_stop_tx.send(true);
    let mut server = server;
    if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
        server.abort();
    }
    // The MQTT outlet ends with the hub (whose last holders were the API and the consumer).
    drop(hub);
    if let Some((_, task)) = mqtt_outlet {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    dead.flush();
    // Say what is left undelivered.
    if let Some(u) = &unsent
        && u.batches > 0
    {
        eprintln!(
            "citybrain: InfluxDB: {} batches / {} lines remain in the spool {} for the next start",
            u.batches,
            u.lines,
            u.dir.display()
        );
    }
    if unwritten > 0 {
        eprintln!("citybrain: {unwritten} bytes of output could not be written (see the log for the paths)");
    }
    if unstored > 0 {
        eprintln!("citybrain: {unstored} alert transitions could not be stored in the alert store");
    }
    Ok(ServiceReport {
        messages: mqtt_metrics.messages.load(Ordering::Relaxed),
        accepted: live_metrics.accepted.load(Ordering::Relaxed),
        rejected: live_metrics.rejected.load(Ordering::Relaxed),
        points: points.load(Ordering::Relaxed),
        alert_transitions: transitions,
        influx_unsent_lines: unsent.as_ref().map_or(0, |u| u.lines),
        influx_unsent_batches: unsent.as_ref().map_or(0, |u| u.batches),
        unwritten_bytes: unwritten,
        unstored_transitions: unstored,
    })
}

/// The counters of every stage, for `/metrics`.
struct Stages {
    live: Arc<LiveMetrics>,
    mqtt: Arc<MqttMetrics>,
    influx: Option<Arc<InfluxMetrics>>,
    dead: Arc<DeadLetters>,
    health: Arc<OutputHealth>,
    hub: Arc<Hub>,
    outlet: Option<Arc<crate::hub::outlet::OutletMetrics>>,
}

/// Renders `/metrics` (Prometheus text exposition format) from the stages' counters.
fn render_metrics(st: Stages) -> impl Fn() -> String + Send + Sync {
    let Stages { live, mqtt, influx, dead, health, hub: the_hub, outlet } = st;
    let hub = the_hub.metrics();
    move || {
        use std::fmt::Write;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (wm, max) = (g(&live.watermark), g(&live.max_ts));
        let lag = if wm > 0 { wall_ms().saturating_sub(wm) } else { 0 };
        // (name, type, help, value) of every unlabelled sample, in exposition order.
        let mut plain: Vec<(&str, &str, &str, u64)> = vec![
            ("citybrain_mqtt_messages_total", "counter", "MQTT publishes received.", g(&mqtt.messages)),
            ("citybrain_mqtt_bytes_total", "counter", "MQTT payload bytes received.", g(&mqtt.bytes)),
            ("citybrain_mqtt_connects_total", "counter", "MQTT connections established.", g(&mqtt.connects)),
            ("citybrain_mqtt_errors_total", "counter", "MQTT connection errors.", g(&mqtt.errors)),
            (
                "citybrain_mqtt_ack_failures_total",
                "counter",
                "MQTT acknowledgements that could not be sent (the broker redelivers those messages).",
                g(&mqtt.ack_failures),
            ),
            (
                "citybrain_mqtt_held",
                "gauge",
                "MQTT messages received and not yet taken by the dataflow (input paused or backpressured).",
                g(&mqtt.held),
            ),
            (
                "citybrain_mqtt_connected",
                "gauge",
                "1 while connected to the broker.",
                u64::from(mqtt.connected.load(Ordering::Relaxed)),
            ),
            (
                "citybrain_ingest_accepted_total",
                "counter",
                "Elements accepted by the dataflow.",
                g(&live.accepted),
            ),
            (
                "citybrain_ingest_duplicates_total",
                "counter",
                "Copies of readings already accepted, with the same content: ignored (not in accepted).",
                g(&live.duplicates),
            ),
            (
                "citybrain_ingest_corrections_total",
                "counter",
                "Copies of readings already accepted, with other content: they replaced the first.",
                g(&live.corrections),
            ),
            ("citybrain_watermark_ms", "gauge", "The event-time clock (epoch ms).", wm),
            ("citybrain_lag_ms", "gauge", "Wall clock minus the event-time clock, ms.", lag),
            ("citybrain_max_event_ms", "gauge", "The largest event time seen (epoch ms).", max),
            (
                "citybrain_alert_transitions_total",
                "counter",
                "Alert transitions published by the hub.",
                g(&hub.transitions),
            ),
            ("citybrain_alert_acks_total", "counter", "Alerts acknowledged.", g(&hub.acks)),
            (
                "citybrain_alert_escalations_total",
                "counter",
                "Alerts escalated for being unacknowledged.",
                g(&hub.escalations),
            ),
            (
                "citybrain_alert_flaps_total",
                "counter",
                "Re-raises kept within the hold-down (no new alert).",
                g(&hub.flaps),
            ),
            (
                "citybrain_alert_store_errors_total",
                "counter",
                "Failed writes to the alert store.",
                g(&hub.store_errors),
            ),
            ("citybrain_alerts_active", "gauge", "Active alerts.", g(&hub.active)),
            (
                "citybrain_alert_store_backlog",
                "gauge",
                "Alert transitions published and not yet stored.",
                the_hub.store_backlog(),
            ),
            (
                "citybrain_dead_letters_unstored_total",
                "counter",
                "Dead letters counted but not kept (their store failed for too long).",
                dead.lock().unstored(),
            ),
        ];
        if let Some(o) = &outlet {
            plain.extend([
                ("citybrain_alert_mqtt_published_total", "counter", "Alert transitions published to MQTT.", g(&o.published)),
                (
                    "citybrain_alert_mqtt_dropped_total",
                    "counter",
                    "Alert transitions not published to MQTT (broker unreachable; the retained sets recover).",
                    g(&o.dropped),
                ),
            ]);
        }
        if let Some(i) = &influx {
            plain.extend([
                (
                    "citybrain_influx_lines_written_total",
                    "counter",
                    "Lines InfluxDB accepted.",
                    g(&i.lines_written),
                ),
                (
                    "citybrain_influx_lines_rejected_total",
                    "counter",
                    "Lines InfluxDB refused.",
                    g(&i.lines_rejected),
                ),
                (
                    "citybrain_influx_write_failures_total",
                    "counter",
                    "Failed writes (retried).",
                    g(&i.write_failures),
                ),
                ("citybrain_influx_spool_bytes", "gauge", "Bytes waiting in the spool.", g(&i.spool_bytes)),
                (
                    "citybrain_influx_spool_batches",
                    "gauge",
                    "Batches waiting in the spool.",
                    g(&i.spool_batches),
                ),
                (
                    "citybrain_influx_unspooled_batches",
                    "gauge",
                    "Batches waiting in memory because the spool cannot be written.",
                    g(&i.memory_batches),
                ),
                (
                    "citybrain_influx_spool_quarantined_total",
                    "counter",
                    "Unreadable spool files renamed to *.corrupt and skipped.",
                    g(&i.quarantined),
                ),
            ]);
        }
        let mut out = String::new();
        for (name, kind, help, v) in plain {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let name = "citybrain_ingest_rejected_total";
        let _ = writeln!(out, "# HELP {name} Elements dead-lettered, by reason.\n# TYPE {name} counter");
        for (reason, n) in dead.lock().counts() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
        health.render(&mut out);
        out
    }
}
