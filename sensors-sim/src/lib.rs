//! # citybrain-sim — the sensor simulator
//!
//! Synthetic inputs for citybrain, deterministic for a seed:
//!
//! * [`city`] — generates a city model (CONTRACT §3): districts, grid cells with their
//!   officers, a directed road network with per-lane loop detectors, and emergency stations.
//! * [`feed`] — simulates the loop detectors of a city model over a run (daily profile with rush
//!   hours, a fundamental-diagram traffic model, injected lane-blocking incidents) and encodes
//!   every reading as a recording line with the processor's own payload type
//!   ([`citybrain_dataflows::event::DetectorReading`]), so the two can never disagree.
//! * [`emergency`] — the emergency scenario: calls per district (with mass-casualty incidents),
//!   the dispatcher, and fire engines, ambulances and police cars driving the road network at
//!   the simulated traffic speed, encoded with the processor's payload types
//!   ([`citybrain_dataflows::event::IncidentEvent`], [`citybrain_dataflows::event::UnitEvent`]);
//!   [`Scenario`] merges it with the detector feed in arrival order.
//! * [`grid`] — the grid-management scenario: cases reported in every grid cell (urgent and
//!   ordinary categories, a daily profile) and worked by the cell's officers through their
//!   lifecycle (assigned, in progress, resolved, closed or reopened; some overdue), the cells'
//!   sensors (water level, manhole tilt, smoke, PM2.5, noise, feeder load), rainstorms that flood
//!   a district and open `flooding` cases, and sensors that go silent, encoded with the
//!   processor's payload types ([`citybrain_dataflows::event::CaseEvent`],
//!   [`citybrain_dataflows::event::GridSensorReading`]); [`Scenario::with_grid`] adds it to a run.
//! * [`health`] — the public-health scenario: travellers with valid 18-digit id-card numbers
//!   (GB 11643-1999, [`id_check_digit`]), their train, metro and bus trips (rows and seats on
//!   trains), venue check-ins in the cells, and confirmed (optionally later cleared) cases among
//!   those who travelled, encoded with the processor's payload types
//!   ([`citybrain_dataflows::event::TripRecord`], [`citybrain_dataflows::event::Checkin`],
//!   [`citybrain_dataflows::event::HealthCase`]); [`Scenario::with_health`] adds it to a run.
//! * [`recording`] — writes and reads recordings (CONTRACT §4: JSON Lines, gzip for `.gz`).
//! * [`publish`] — publishes recording lines to an MQTT broker, as fast as possible or paced by
//!   event time, confirming every message (PubAck at QoS 1) before it disconnects.
//!
//! Tests elsewhere use it without files:
//!
//! ```
//! use citybrain_sim::{CityOptions, FeedOptions, detector_feed_geojson, generate_city};
//! let city = generate_city(&CityOptions::default())?;
//! let lines = detector_feed_geojson(&city, &FeedOptions { duration_min: 1, ..FeedOptions::default() })?;
//! assert!(lines[0].starts_with(r#"{"topic":"city/traffic/detector/"#));
//! # Ok::<(), anyhow::Error>(())
//! ```
#![warn(missing_docs)]

pub mod agenda;
pub mod city;
pub mod emergency;
pub mod feed;
pub mod grid;
pub mod health;
pub mod publish;
pub mod recording;

pub use agenda::Part;
pub use city::{CityOptions, generate_city, geojson_text};
pub use emergency::{EmergencyOptions, EmergencySim, MassCasualtySpec, RoadNetwork, Scenario, scenario_feed};
pub use feed::{
    Batch, FeedOptions, IncidentSpec, Simulator, detector_feed, detector_feed_geojson, parse_start,
};
pub use grid::{GridOptions, GridSim, RainstormSpec, SilentSensorSpec};
pub use health::{DEFAULT_TRAVELLERS, HealthOptions, HealthSim, id_check_digit, is_valid_id_card};
pub use publish::{
    MqttTarget, Pace, PublishProgress, PublishReport, parse_line, publish_lines, publish_lines_with_progress,
};
pub use recording::{Recording, open_lines, read_lines, write_lines};
