//! # citybrain-dataflows — the pure core of citybrain
//!
//! Everything citybrain computes, and nothing that touches the outside world: no sockets, no
//! files, no wall clock. Typed inputs go in, typed output collections come out; the same input
//! gives the same output on one worker or many.
//!
//! * [`event`] — the one decoder of every MQTT topic (validation, pseudonymization,
//!   dead-letter reasons); each domain's payload types live in its folder.
//! * [`city`] — the city model from GeoJSON, interned ids, point placement.
//! * [`names`] — compact id tables (string id ↔ index).
//! * [`config`] — the settings of the dataflows, with documented defaults (a section per domain).
//! * [`scan`] — the plain shape of a detector recording line, read without serde.
//! * [`time`] — event time, window alignment and the city-wide watermark.
//! * [`ingest`] — checked, routable records and the per-worker ingest of every domain.
//! * [`totals`] — per-key totals over event time: the window operator.
//! * [`windows`] — temporal helpers (validity intervals, persistence) shared by all domains.
//! * [`alerts`] — alert identities and their descriptions.
//! * [`pipeline`] — the list of domains, the whole city dataflow and the ordered delivery of
//!   its results.
//! * [`lp`] — measurement rows ([`lp::RowSink`]) and their one encoding, InfluxDB line protocol.
//!
//! # Domains
//! A domain is one folder: `events.rs` (its topics' payloads, validation, records and their
//! identity), `config.rs` (its config section), `ingest.rs` (its per-worker upserts), its
//! dataflow in `mod.rs`, `rules.rs` (its alert rules) and `measure.rs` (its measurements as
//! rows). [`pipeline`] lists the domains; [`ingest::Record`] routes each record to the worker
//! owning its entity.
//!
//! * [`traffic`] — detector, segment and district windows, levels, the district index and
//!   the traffic alert rules.
//! * [`emergency`] — incidents and units, district indicators, dispatch recommendations over
//!   the live road network and the emergency alert rules.
//! * [`grid`] — grid management: cases with time limits, cell sensors, the cell risk score
//!   and the grid alert rules.
//! * [`health`] — public health: case status, trips and check-ins, the co-passenger contact
//!   query and its alert rule.
#![warn(missing_docs)]

pub mod alerts;
pub mod city;
pub mod config;
mod diff;
pub mod emergency;
pub mod event;
pub mod grid;
pub mod health;
pub mod ingest;
pub mod lp;
pub mod names;
pub mod pipeline;
pub mod pseudonym;
pub mod scan;
pub mod time;
pub mod totals;
pub mod traffic;
pub mod upsert;
pub mod windows;

pub use city::CityModel;
pub use config::Config;
pub use time::Ms;
