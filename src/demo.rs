//! `citybrain demo`'s city and simulator: a generated city whose detectors publish to the
//! embedded broker in accelerated real time, with one lane blocked early on so an incident
//! alert is raised (and cleared) within the first minute at the default speed.

use anyhow::{Context, Result};
use citybrain_dataflows::{CityModel, Ms};
use citybrain_sim::publish::{MqttTarget, Pace, publish_lines};
use citybrain_sim::{CityOptions, FeedOptions, IncidentSpec, Simulator, generate_city, geojson_text};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// Writes the demo city (deterministic: the simulator's default city) to `DATA_DIR/city.geojson`.
pub fn write_city(data_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join("city.geojson");
    let text = geojson_text(&generate_city(&CityOptions::default())?);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Publishes a day of detector readings from now on, `speed` simulated seconds per wall second,
/// until `stop` turns true. Lane 1 of the first multi-lane segment with a downstream neighbour
/// is blocked from minute 10 to minute 25 of simulated time.
pub async fn simulate(
    city: Arc<CityModel>,
    port: u16,
    speed: f64,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as Ms;
    let incidents = city
        .segments
        .iter()
        .find(|s| s.lanes >= 2 && !s.downstream.is_empty())
        .map(|s| IncidentSpec { segment: s.id.clone(), lane: 1, start_min: 10, duration_min: 15 })
        .into_iter()
        .collect();
    let opts = FeedOptions {
        start_ms: now - now % 30_000,
        duration_min: 24 * 60,
        incidents,
        ..FeedOptions::default()
    };
    let sim = Simulator::new(&city, &opts)?;
    let lines = sim.map_while(|batch| batch.ok()).flat_map(|batch| batch.lines);
    let target = MqttTarget {
        client_id: format!("citybrain-demo-sim-{}", std::process::id()),
        ..MqttTarget::new("127.0.0.1", port)
    };
    let report = publish_lines(&target, lines, Pace::Speed(speed), Some(stop)).await?;
    tracing::info!(messages = report.messages, rate = report.rate(), "simulator stopped");
    Ok(())
}
