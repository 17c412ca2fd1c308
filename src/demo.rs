//! `citybrain demo`'s city and simulator: a generated city whose detectors, emergency calls and
//! emergency units publish to the embedded broker in accelerated real time. One lane is blocked
//! early on so a traffic incident alert is raised (and cleared) within the first minute at the
//! default speed; calls come at twice the simulator's default rate, so incidents show within the
//! first minutes; and a mass-casualty incident in the middle district after 20 simulated minutes
//! exhausts its ambulances (coverage gaps, unassigned calls). The grid runs alongside: cases
//! at [`DEMO_CASE_RATE`] worked by the cells' officers, every cell's sensors, a rainstorm over
//! the first district from minute [`DEMO_RAINSTORM_MINUTE`] (water levels rise, flooding cases),
//! and one water-level sensor that falls silent at minute [`DEMO_SILENT_SENSOR_MINUTE`] (stale
//! 15 minutes later). Public health too: [`DEFAULT_TRAVELLERS`] travellers ride trains, metro
//! and buses and check in at venues; one of them is confirmed at minute
//! [`DEMO_CONFIRMED_CASE_MINUTE`] (their co-passengers and venue contacts are alerted to their
//! cells' officers) and cleared [`DEMO_CLEAR_AFTER_MIN`] minutes later (the contacts retract).

use anyhow::{Context, Result};
use citybrain_dataflows::{CityModel, Ms};
use citybrain_sim::publish::{MqttTarget, Pace, publish_lines};
use citybrain_sim::{
    CityOptions, DEFAULT_TRAVELLERS, EmergencyOptions, EmergencySim, FeedOptions, GridOptions, GridSim,
    HealthOptions, HealthSim, IncidentSpec, MassCasualtySpec, RainstormSpec, RoadNetwork, Scenario,
    SilentSensorSpec, Simulator, generate_city, geojson_text,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// Calls per district per hour in the demo (daily mean): 27 an hour in the default city, a call
/// every two or three simulated minutes by day — at speed 60, one every few wall seconds.
pub const DEMO_CALL_RATE: f64 = 3.0;
/// Simulated minute of the demo's mass-casualty incident.
pub const DEMO_MASS_CASUALTY_MINUTE: u32 = 20;
/// Calls of the demo's mass-casualty incident.
pub const DEMO_MASS_CASUALTY_CALLS: u32 = 12;

/// Grid cases per cell per hour in the demo (daily mean): about 70 an hour in the default city.
pub const DEMO_CASE_RATE: f64 = 2.0;
/// Simulated minute the demo's rainstorm begins (it lasts 40 minutes).
pub const DEMO_RAINSTORM_MINUTE: u32 = 5;
/// Simulated minute the demo's silent sensor stops reporting.
pub const DEMO_SILENT_SENSOR_MINUTE: u32 = 2;

/// The simulated minute at which the demo's public-health case is confirmed.
pub const DEMO_CONFIRMED_CASE_MINUTE: u32 = 45;
/// Minutes after its confirmation at which the demo's case is cleared.
pub const DEMO_CLEAR_AFTER_MIN: u32 = 180;

/// The demo's public-health scenario (see the module docs).
pub fn health_options() -> HealthOptions {
    HealthOptions {
        travellers: DEFAULT_TRAVELLERS,
        confirmed_cases: vec![DEMO_CONFIRMED_CASE_MINUTE],
        clear_after_min: Some(DEMO_CLEAR_AFTER_MIN),
    }
}

/// The demo's grid scenario (see the module docs).
pub fn grid_options(city: &CityModel) -> GridOptions {
    let rainstorms = city
        .districts
        .first()
        .map(|d| RainstormSpec { district: d.id.clone(), minute: DEMO_RAINSTORM_MINUTE, duration_min: 40 })
        .into_iter()
        .collect();
    GridOptions {
        case_rate: DEMO_CASE_RATE,
        rainstorms,
        silent_sensors: vec![SilentSensorSpec { sensor: None, minute: DEMO_SILENT_SENSOR_MINUTE }],
    }
}

/// The demo city's GeoJSON text: the simulator's default city (deterministic).
fn city_text() -> Result<String> {
    Ok(geojson_text(&generate_city(&CityOptions::default())?))
}

/// Writes the demo city (deterministic: the simulator's default city) to `DATA_DIR/city.geojson`.
pub fn write_city(data_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join("city.geojson");
    std::fs::write(&path, city_text()?).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The demo's emergency scenario: [`DEMO_CALL_RATE`], the default units per station, and
/// [`DEMO_MASS_CASUALTY_CALLS`] calls at [`DEMO_MASS_CASUALTY_MINUTE`] in the middle district of
/// the model (`district-5` of the default 3 × 3 city).
pub fn emergency_options(city: &CityModel) -> EmergencyOptions {
    let mass_casualty = city
        .districts
        .get(city.districts.len() / 2)
        .map(|d| MassCasualtySpec {
            district: d.id.clone(),
            minute: DEMO_MASS_CASUALTY_MINUTE,
            calls: DEMO_MASS_CASUALTY_CALLS,
        })
        .into_iter()
        .collect();
    EmergencyOptions { call_rate: DEMO_CALL_RATE, mass_casualty, ..EmergencyOptions::default() }
}

/// Publishes a day of detector readings and emergency events from now on, `speed` simulated
/// seconds per wall second, until `stop` turns true. Lane 1 of the first multi-lane segment with a
/// downstream neighbour is blocked from minute 10 to minute 25 of simulated time; emergencies
/// follow [`emergency_options`]. The road network the units drive is the demo city's (the one
/// [`write_city`] writes); should `city` not be that city, the demo runs traffic alone, with a
/// warning.
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
    let traffic = Simulator::new(&city, &opts)?;
    let emergency = city_text()
        .and_then(|text| RoadNetwork::from_geojson(&city, &text))
        .and_then(|net| EmergencySim::new(&city, net, &opts, &emergency_options(&city)));
    let sim = match emergency {
        Ok(em) => {
            tracing::info!(units = em.unit_count(), call_rate = DEMO_CALL_RATE, "emergency scenario on");
            Scenario::new(traffic, Some(em))?
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "emergency scenario off: traffic only");
            Scenario::traffic_only(traffic)
        }
    };
    let sim = match GridSim::new(&city, &opts, &grid_options(&city)) {
        Ok(grid) => {
            tracing::info!(sensors = grid.sensor_count(), case_rate = DEMO_CASE_RATE, "grid scenario on");
            sim.with_grid(grid)?
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "grid scenario off");
            sim
        }
    };
    let sim = match HealthSim::new(&city, &opts, &health_options()) {
        Ok(health) => {
            tracing::info!(
                travellers = health.traveller_count(),
                confirmed_minute = DEMO_CONFIRMED_CASE_MINUTE,
                "public-health scenario on"
            );
            sim.with_health(health)?
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "public-health scenario off");
            sim
        }
    };
    let lines = sim.map_while(|batch| batch.ok()).flat_map(|batch| batch.lines);
    let target = MqttTarget {
        client_id: format!("citybrain-demo-sim-{}", std::process::id()),
        ..MqttTarget::new("127.0.0.1", port)
    };
    let report = publish_lines(&target, lines, Pace::Speed(speed), Some(stop)).await?;
    tracing::info!(messages = report.messages, rate = report.rate(), "simulator stopped");
    Ok(())
}
