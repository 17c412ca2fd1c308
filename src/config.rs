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
use citybrain_dataflows::config::{TimeConfig, TrafficConfig};
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
    traffic: TrafficConfig,
    mqtt: MqttConfig,
    influxdb: Option<InfluxConfig>,
    http: HttpConfig,
    live: LiveConfig,
}

/// `[http]`: the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080` (loopback: authentication arrives with the alerts issue).
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:8080".into() }
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
        let dataflow = citybrain_dataflows::Config { time: file.time, traffic: file.traffic };
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
