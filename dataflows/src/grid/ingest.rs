//! The grid ingest: case events and sensor readings in, timed upserts of the grid input
//! collections out. Cases and sensors are entities with a lifecycle, folded by
//! [`crate::upsert::Entities`] with the models of [`crate::grid::model`] (which say why the
//! versions, timers and facts are exact).

use crate::city::CityModel;
use crate::config::Config;
use crate::event::{Rejected, TopicKind};
use crate::grid::GridInputs;
use crate::grid::calendar::Calendar;
use crate::grid::events::{CaseRecord, SensorRecord};
use crate::grid::model::{CaseModel, SensorModel};
use crate::time::{Ms, SECOND};
use crate::upsert::Entities;
use std::sync::Arc;

/// A grid record.
#[derive(Clone, Debug)]
pub enum GridRecord {
    /// A case event.
    Case(CaseRecord),
    /// A sensor reading.
    Sensor(SensorRecord),
}

/// Per-worker grid ingest state.
pub struct Ingest {
    /// Cases.
    pub cases: Entities<CaseModel>,
    /// Cell sensors.
    pub sensors: Entities<SensorModel>,
}

impl Ingest {
    /// A fresh state for one worker. The city time zone must be valid (the config is validated
    /// before any dataflow is built); should it not be, Asia/Shanghai is used.
    pub fn new(city: Arc<CityModel>, cfg: &Config) -> Self {
        let g = &cfg.grid;
        let calendar = Calendar::new(&cfg.time.city_tz, &g.calendar).unwrap_or_else(|_| Calendar::shanghai());
        Ingest {
            cases: Entities::new(CaseModel::new(city.clone(), g.clone(), calendar), g.retention_ms()),
            sensors: Entities::new(SensorModel::new(city, g.sensor_rules()), g.sensor_retention_s * SECOND),
        }
    }

    /// Offers one record (`seq`: its place in the input order).
    pub fn offer(&mut self, seq: u64, rec: GridRecord) -> Result<(), Rejected> {
        match rec {
            GridRecord::Case(r) => self.cases.offer(seq, r.id.clone(), r),
            GridRecord::Sensor(r) => self.sensors.offer(seq, r.id.clone(), r),
        }
    }

    /// Identical copies of accepted records of one topic family, so far.
    pub fn duplicates_of(&self, kind: TopicKind) -> u64 {
        match kind {
            TopicKind::Case => self.cases.duplicates(),
            TopicKind::GridSensor => self.sensors.duplicates(),
            _ => 0,
        }
    }

    /// Identical copies of accepted records, so far.
    pub fn duplicates(&self) -> u64 {
        self.cases.duplicates() + self.sensors.duplicates()
    }

    /// Copies with other content that replaced the first, so far.
    pub fn corrections(&self) -> u64 {
        self.cases.corrections() + self.sensors.corrections()
    }

    /// The latest event time applied.
    pub fn max_applied(&self) -> Option<Ms> {
        self.cases.max_applied().max(self.sensors.max_applied())
    }

    /// Takes the records still held at the end of input, with their places in the input order.
    pub fn take_held(&mut self) -> Vec<(u64, GridRecord)> {
        let mut held: Vec<_> =
            self.cases.take_held().into_iter().map(|(s, r)| (s, GridRecord::Case(r))).collect();
        held.extend(self.sensors.take_held().into_iter().map(|(s, r)| (s, GridRecord::Sensor(r))));
        held.sort_by_key(|h| h.0);
        held
    }

    /// Ends the round for cases and sensors (see [`Entities::flush`]).
    pub fn flush(&mut self, inputs: &mut GridInputs, upto: Ms, horizon: Ms) {
        self.cases.flush(&mut inputs.cases, &mut inputs.facts, upto, horizon);
        self.sensors.flush(&mut inputs.sensors, &mut inputs.facts, upto, horizon);
    }
}
