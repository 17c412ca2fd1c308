//! # citybrain-dataflows — the pure core of citybrain
//!
//! Everything citybrain computes, and nothing that touches the outside world: no sockets, no
//! files, no wall clock. Typed inputs go in, typed output collections come out; the same input
//! gives the same output on one worker or many.
//!
//! * [`event`] — the payload types of every MQTT topic and the one decoder (validation,
//!   pseudonymization, dead-letter reasons).
//! * [`city`] — the city model from GeoJSON, interned ids, point placement.
//! * [`names`] — compact id tables (string id ↔ index).
//! * [`config`] — the settings of the dataflows, with documented defaults.
//! * [`scan`] — the plain shape of a detector recording line, read without serde.
//! * [`time`] — event time, window alignment and the city-wide watermark.
//! * [`ingest`] — turns decoded events into timed, pre-aggregated input updates.
//! * [`traffic`] — traffic windows, levels, district index and traffic alert rules.
//! * [`totals`] — per-key totals over event time: the window operator.
//! * [`windows`] — temporal helpers (validity intervals, persistence) shared by all domains.
//! * [`alerts`] — alert identities and their descriptions.
//! * [`pipeline`] — the whole city dataflow and the ordered delivery of its results.
//! * [`lp`] — InfluxDB line protocol for the results.
#![warn(missing_docs)]

pub mod alerts;
pub mod city;
pub mod config;
mod diff;
pub mod event;
pub mod ingest;
pub mod lp;
pub mod names;
pub mod pipeline;
pub mod pseudonym;
pub mod scan;
pub mod time;
pub mod totals;
pub mod traffic;
pub mod windows;

pub use city::CityModel;
pub use config::Config;
pub use time::Ms;
