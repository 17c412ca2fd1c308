//! The `citybrain.toml` configuration file of the binary.
//!
//! One file for everything: the dataflow settings (`[time]`, `[traffic]`, …, see
//! `citybrain_dataflows::config`) plus what only the binary needs (topic prefix, privacy key).
//! Unknown keys are errors that name the key; every setting has a documented default, so an
//! empty file is a valid configuration. Secrets can come from the environment instead of the
//! file (`CITYBRAIN_PSEUDONYM_KEY`).

use crate::mqtt::MqttConfig;
use crate::sink::influx::InfluxConfig;
use anyhow::{Context, Result, bail};
use citybrain_dataflows::config::{IngestConfig, TimeConfig, TrafficConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The environment variable that overrides `privacy.pseudonym_key`.
pub const PSEUDONYM_KEY_ENV: &str = "CITYBRAIN_PSEUDONYM_KEY";

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    topic_prefix: Option<String>,
    city: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    privacy: PrivacyConfig,
    time: TimeConfig,
    ingest: IngestConfig,
    traffic: TrafficConfig,
    emergency: citybrain_dataflows::config::EmergencyConfig,
    grid: citybrain_dataflows::config::GridConfig,
    health: citybrain_dataflows::config::HealthConfig,
    mqtt: MqttConfig,
    influxdb: Option<InfluxConfig>,
    http: HttpConfig,
    live: LiveConfig,
    auth: AuthConfig,
    alerts: AlertsConfig,
}

/// `[http]`: the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Largest request body of the JSON actions (acks, …), bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest body of `POST /api/ingest/…`, bytes. Default 16 MiB (a batch of readings).
    pub max_ingest_bytes: usize,
    /// Open websockets at most (further upgrades get 503). Default 4096.
    pub max_ws_connections: usize,
    /// Seconds between heartbeats on a websocket. Default 15.
    pub ws_heartbeat_s: u64,
    /// Least time between two `/ws/live` updates to one client, ms. Default 1000.
    pub live_interval_ms: u64,
    /// Whether websockets may pass the token as `?token=` (browsers cannot set headers on a
    /// websocket; the token then shows in URLs). Default true.
    pub ws_query_token: bool,
    /// Origins allowed by CORS (e.g. `["https://ops.example.org"]`). Default none: no CORS
    /// headers, so browsers only let pages served by citybrain itself call the API.
    pub cors_origins: Vec<String>,
    /// `POST /api/health/contact-check` requests a minute per client address (the bucket's
    /// refill rate). Default 10.
    pub contact_check_per_minute: u32,
    /// `POST /api/health/contact-check` requests a client may make in a burst. Default 5.
    pub contact_check_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 << 10,
            max_ingest_bytes: 16 << 20,
            max_ws_connections: 4096,
            ws_heartbeat_s: 15,
            live_interval_ms: 1000,
            ws_query_token: true,
            cors_origins: Vec::new(),
            contact_check_per_minute: 10,
            contact_check_burst: 5,
        }
    }
}

/// `[auth]`: who may call the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`: the tokens, as hashes with roles (see `citybrain token --help`).
    /// Default none: every protected route answers 401.
    pub tokens: Vec<crate::auth::TokenConfig>,
}

/// `[alerts]`: the alert hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A clear followed by a re-raise within this many seconds of event time keeps the alert
    /// (no storm). Default 120; 0 publishes every clear at once.
    pub hold_down_s: u64,
    /// Seconds of event time after which an unacknowledged alert escalates (severity one step
    /// up, re-sent). Default 900; 0 never escalates.
    pub escalate_after_s: u64,
    /// After a restart, stored alerts the dataflow has not raised again within this many
    /// seconds of event time are cleared. Default 900.
    pub restore_grace_s: u64,
    /// Days of event time the transition history is kept. Default 90.
    pub history_days: u64,
    /// Transitions a websocket client may fall behind before it is re-sent a snapshot.
    /// Default 65536.
    pub broadcast_capacity: usize,
    /// Whether transitions are published to MQTT (`{prefix}alerts/{domain}/{cell}`). Default true.
    pub mqtt_outlet: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            hold_down_s: 120,
            escalate_after_s: 900,
            restore_grace_s: 900,
            history_days: 90,
            broadcast_capacity: 65536,
            mqtt_outlet: true,
        }
    }
}

impl AlertsConfig {
    /// The hub's options.
    pub fn hub_options(&self) -> crate::hub::HubOptions {
        let s = |secs: u64| secs.saturating_mul(1000);
        crate::hub::HubOptions {
            policy: crate::hub::lifecycle::Policy {
                hold_down_ms: s(self.hold_down_s),
                escalate_after_ms: (self.escalate_after_s > 0).then(|| s(self.escalate_after_s)),
                restore_grace_ms: s(self.restore_grace_s),
            },
            history_ms: s(self.history_days.saturating_mul(86_400)),
            domain_history_ms: Vec::new(),
            broadcast_capacity: self.broadcast_capacity,
        }
    }
}

/// `[live]`: the live driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Dataflow worker threads. Default: the number of cores (at most 8).
    pub workers: usize,
    /// Wall-clock length of a round, ms. Default 250.
    pub tick_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8),
            tick_ms: 250,
        }
    }
}

/// `[privacy]`: pseudonymization of personal identifiers.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PrivacyConfig {
    /// The HMAC key for pseudonyms (at least 16 bytes). Prefer the environment variable.
    pseudonym_key: Option<String>,
}

/// The loaded, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Settings of the dataflows.
    pub dataflow: citybrain_dataflows::Config,
    /// MQTT topic prefix, ending in `/`. Default `city/`.
    pub topic_prefix: String,
    /// The pseudonym key.
    pub pseudonym_key: Vec<u8>,
    /// Whether the key was generated for this run (pseudonyms then do not match across runs).
    pub ephemeral_key: bool,
    /// The city model file (`city`), required by `run`.
    pub city: Option<PathBuf>,
    /// Where line protocol, dead letters, alerts and spools go (`data_dir`). Default `data`.
    pub data_dir: PathBuf,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[influxdb]`, when present.
    pub influxdb: Option<InfluxConfig>,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[live]`.
    pub live: LiveConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
}

impl Settings {
    /// Loads settings from a TOML file (`None`: all defaults and an ephemeral pseudonym key,
    /// unless the key is in the environment).
    pub fn load(path: Option<&Path>) -> Result<Settings> {
        let file: FileConfig = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config {}: {}", p.display(), e.to_string().trim_end()))?
            }
            None => FileConfig::default(),
        };
        let dataflow = citybrain_dataflows::Config {
            time: file.time,
            ingest: file.ingest,
            traffic: file.traffic,
            emergency: file.emergency,
            grid: file.grid,
            health: file.health,
        };
        dataflow.validate().map_err(|e| {
            anyhow::anyhow!("config {}: {e}", path.map(|p| p.display().to_string()).unwrap_or_default())
        })?;
        let env_key = std::env::var(PSEUDONYM_KEY_ENV).ok().filter(|k| !k.is_empty());
        let (pseudonym_key, ephemeral_key) = match env_key.or(file.privacy.pseudonym_key) {
            Some(k) if k.len() < 16 => {
                bail!("config key `privacy.pseudonym_key`: must be at least 16 bytes")
            }
            Some(k) => (k.into_bytes(), false),
            None => {
                let key: [u8; 32] = rand::random();
                (key.to_vec(), true)
            }
        };
        let mut topic_prefix = file.topic_prefix.unwrap_or_else(|| "city/".to_string());
        if !topic_prefix.ends_with('/') {
            topic_prefix.push('/');
        }
        let mut influxdb = file.influxdb;
        if let (Some(influx), Ok(token)) = (influxdb.as_mut(), std::env::var("CITYBRAIN_INFLUX_TOKEN")) {
            influx.token = token;
        }
        if let Some(influx) = &influxdb {
            crate::sink::influx::check_url(&influx.url)?;
        }
        if file.http.max_ws_connections == 0
            || file.http.ws_heartbeat_s == 0
            || file.alerts.broadcast_capacity == 0
        {
            bail!(
                "config keys `http.max_ws_connections`, `http.ws_heartbeat_s` and `alerts.broadcast_capacity` must be at least 1"
            );
        }
        if file.live.tick_ms == 0 || file.live.workers == 0 {
            bail!("config keys `live.tick_ms` and `live.workers` must be at least 1");
        }
        Ok(Settings {
            dataflow,
            topic_prefix,
            pseudonym_key,
            ephemeral_key,
            city: file.city,
            data_dir: file.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            mqtt: file.mqtt,
            influxdb,
            http: file.http,
            live: file.live,
            auth: file.auth,
            alerts: file.alerts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads_with_its_documented_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/citybrain.example.toml"));
        let s = Settings::load(Some(path)).unwrap();
        assert_eq!(s.dataflow, citybrain_dataflows::Config::default());
        assert_eq!(s.influxdb.unwrap().batch_lines, InfluxConfig::default().batch_lines);
        assert_eq!(s.mqtt.port, 1883);
        assert_eq!(s.city.unwrap(), PathBuf::from("data/demo/city.geojson"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("cb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "[traffic]\nretention_sec = 5\n").unwrap();
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("retention_sec"), "{e}");
        std::fs::write(&p, "[traffic.incident]\npersist_min = 0\n").unwrap();
        let e = Settings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("traffic.incident.persist_min"), "{e}");
        std::fs::write(&p, "topic_prefix = \"town\"\n[privacy]\npseudonym_key = \"0123456789abcdef\"\n")
            .unwrap();
        let s = Settings::load(Some(&p)).unwrap();
        assert_eq!(s.topic_prefix, "town/");
        assert!(!s.ephemeral_key);
    }
}
