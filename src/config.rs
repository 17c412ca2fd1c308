//! The `citybrain.toml` configuration file of the binary.
//!
//! One file for everything: the dataflow settings (`[time]`, `[traffic]`, …, see
//! `citybrain_dataflows::config`) plus what only the binary needs (topic prefix, privacy key).
//! Unknown keys are errors that name the key; every setting has a documented default, so an
//! empty file is a valid configuration. Secrets can come from the environment instead of the
//! file (`CITYBRAIN_PSEUDONYM_KEY`).

use anyhow::{Context, Result, bail};
use citybrain_dataflows::config::{TimeConfig, TrafficConfig};
use serde::Deserialize;
use std::path::Path;

/// The environment variable that overrides `privacy.pseudonym_key`.
pub const PSEUDONYM_KEY_ENV: &str = "CITYBRAIN_PSEUDONYM_KEY";

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    topic_prefix: Option<String>,
    privacy: PrivacyConfig,
    time: TimeConfig,
    traffic: TrafficConfig,
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
        Ok(Settings { dataflow, topic_prefix, pseudonym_key, ephemeral_key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
