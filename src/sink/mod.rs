//! Sinks: where indicators and alerts leave citybrain.
//!
//! * [`influx`] — InfluxDB v2 write API, batched, retried, spooled to disk while the server is down.
//!
//! `citybrain replay` writes line protocol to one file itself (see `replay`).

pub mod files;
pub mod influx;
