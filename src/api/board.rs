//! The board: the latest value of every indicator the API serves, one read model per domain,
//! under a single version number so `/ws/live` can send only what changed.
//!
//! The service's output consumer calls [`Board::apply`] with each completed event time's output;
//! the board hands the batch to every domain's [`ReadModel`] and takes a new version when any of
//! them changed. A read model stamps each row it changes with that version, so
//! [`ReadModel::live`] can give the rows changed since the version a `/ws/live` client last got.
//! A domain's routes read its own model through the board's field for it (`board.traffic`).

use super::traffic::TrafficBoard;
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::{CityModel, Config, Ms};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// A domain's read model: folds the dataflow's output into the latest rows its routes serve.
pub trait ReadModel: Send + Sync {
    /// Folds one completed event time's output (consolidated) into the model, taking only this
    /// domain's records (`Out` variants) and ignoring the rest. `version` is the board version
    /// this batch gets if anything changes: changed rows are stamped with it. Returns whether
    /// anything changed.
    fn apply(&mut self, version: u64, records: &[(Out, isize)]) -> bool;

    /// Adds this domain's part to a `/ws/live` message, one key a list: the rows changed after
    /// board version `since`, or all rows when `since` is `None` (the snapshot).
    fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>);
}

/// The latest indicators, with a version per change so `/ws/live` can send only what changed.
pub struct Board {
    /// Traffic: segments and districts.
    pub(super) traffic: TrafficBoard,
    version: u64,
    clock: Ms,
}

impl Board {
    /// An empty board for `city`.
    pub fn new(city: Arc<CityModel>, cfg: Arc<Config>) -> Board {
        Board { traffic: TrafficBoard::new(city, cfg), version: 0, clock: 0 }
    }

    /// Every domain's read model, in the order their parts appear in `/ws/live` messages.
    fn models(&self) -> [&dyn ReadModel; 1] {
        [&self.traffic]
    }

    /// [`Board::models`], to update.
    fn models_mut(&mut self) -> [&mut dyn ReadModel; 1] {
        [&mut self.traffic]
    }

    /// Applies one completed event time's output (consolidated): newer windows replace older
    /// ones. Returns the new version.
    pub fn apply(&mut self, t: Ms, records: &[(Out, isize)]) -> u64 {
        self.clock = self.clock.max(t);
        let v = self.version + 1;
        let mut changed = false;
        for model in self.models_mut() {
            changed |= model.apply(v, records);
        }
        if changed {
            self.version = v;
        }
        self.version
    }

    /// The current version: bumped by every [`Board::apply`] that changed something.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every domain's part of a `/ws/live` message (see [`ReadModel::live`]).
    pub(super) fn live(&self, since: Option<u64>, msg: &mut Map<String, Value>) {
        for model in self.models() {
            model.live(since, msg);
        }
    }

    /// City-wide figures for dashboards.
    pub(super) fn kpis(&self, active_alerts: u64) -> Kpis {
        Kpis {
            clock: self.clock,
            active_alerts,
            congested_km: self.traffic.congested_km(),
            mean_tpi: self.traffic.mean_tpi(),
        }
    }
}

/// City-wide figures of `/ws/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Kpis {
    /// The latest event time the indicators reflect, epoch ms.
    pub clock: Ms,
    /// Active alerts.
    pub active_alerts: u64,
    /// Congested road length across the city, km.
    pub congested_km: f64,
    /// Mean district traffic performance index.
    pub mean_tpi: f64,
}
