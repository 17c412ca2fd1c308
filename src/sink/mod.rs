//! Sinks: where indicators and alerts leave citybrain.
//!
//! * [`files`] — append-only, size-rotated files that keep every write until it is on disk.
//! * [`influx`] — InfluxDB v2 write API, batched, retried, spooled to disk while the server is down.
//! * [`health`] — every output's health: what `/readyz`, `/metrics` and input acknowledgement
//!   consult, so an output failure is never silent.
//!
//! `citybrain replay` writes line protocol to one file itself (see `replay`).

pub mod files;
pub mod health;
pub mod influx;
