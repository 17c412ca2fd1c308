//! # citybrain — the binary's library
//!
//! The I/O shell around the pure dataflows of `citybrain-dataflows`:
//!
//! * [`config`] — the `citybrain.toml` file: dataflow settings plus what only the binary needs.
//! * [`replay`] — `citybrain replay`: a recording through the city dataflow as fast as possible.
//! * [`runtime`] — the per-worker round loop every driver shares.
//! * [`live`] — the live driver: messages in, rounds on a wall-clock tick, idle clock.
//! * [`mqtt`] — MQTT ingestion (rumqttc) into the live driver.
//! * [`alerts`] — the dataflow's alert transitions as alert objects of the contract.
//! * [`hub`] — the alert hub: lifecycle (acks, hold-down, escalation), the SQLite store, fan-out
//!   to websockets, files and the MQTT outlet.
//! * [`auth`] — bearer tokens and roles.
//! * [`sink`] — InfluxDB v2 (batched, retried, spooled).
//! * [`deadletter`] — the bounded, rotated dead-letter store (personal ids pseudonymized).
//! * [`api`] — the HTTP and websocket API (axum): a module a domain (its read model and routes)
//!   beside the shared ones (auth, errors, OpenAPI, websockets).
//! * [`service`] — `run` and `demo`: the parts assembled; [`broker`] and [`demo`] — the demo's
//!   embedded MQTT broker and simulator.
//!
//! Where to look: a topic is decoded in `dataflows/src/event.rs`; indicators are computed in
//! `dataflows/src/traffic.rs` (one module per domain); alerts are raised by the rule functions at
//! the end of each domain module, turned into alert objects in [`alerts`] and given their
//! lifecycle in [`hub`].
#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod deadletter;
pub mod demo;
pub mod hub;
pub mod live;
pub mod mqtt;
pub mod replay;
pub mod runtime;
pub mod service;
pub mod sink;
