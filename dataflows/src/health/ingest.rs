//! The health ingest: case events, trips and check-ins in, timed upserts of the health input
//! collections out. All three are folded by [`crate::upsert::Entities`] with the models of
//! [`crate::health::model`] (which say how long each record lives).

use crate::config::Config;
use crate::event::{Rejected, TopicKind};
use crate::health::HealthInputs;
use crate::health::events::{CheckedCase, CheckedCheckin, CheckedTrip, record_key};
use crate::health::model::{CaseModel, CheckinModel, TripModel};
use crate::time::Ms;
use crate::upsert::Entities;

/// A health record.
#[derive(Clone, Debug)]
pub enum HealthRecord {
    /// A case event.
    Case(CheckedCase),
    /// A trip.
    Trip(CheckedTrip),
    /// A venue check-in.
    Checkin(CheckedCheckin),
}

impl HealthRecord {
    /// The entity the record belongs to: the person for a case event, the record's identity
    /// (person, trip or venue, ts) for a trip or check-in.
    pub fn entity(&self) -> String {
        match self {
            HealthRecord::Case(r) => r.person.clone(),
            HealthRecord::Trip(r) => record_key(&r.person, &r.trip, r.ts),
            HealthRecord::Checkin(r) => record_key(&r.person, &r.venue, r.ts),
        }
    }
}

/// Per-worker health ingest state.
pub struct Ingest {
    /// Persons' case status.
    pub cases: Entities<CaseModel>,
    /// Trips.
    pub trips: Entities<TripModel>,
    /// Venue check-ins.
    pub checkins: Entities<CheckinModel>,
}

impl Ingest {
    /// A fresh state for one worker.
    pub fn new(cfg: &Config) -> Self {
        let h = &cfg.health;
        let retention = h.retention_ms();
        Ingest {
            cases: Entities::new(CaseModel::new(h), retention),
            trips: Entities::new(TripModel::new(h), retention),
            checkins: Entities::new(CheckinModel::new(h), retention),
        }
    }

    /// Offers one record (`seq`: its place in the input order).
    pub fn offer(&mut self, seq: u64, rec: HealthRecord) -> Result<(), Rejected> {
        let id = rec.entity();
        match rec {
            HealthRecord::Case(r) => self.cases.offer(seq, id, r),
            HealthRecord::Trip(r) => self.trips.offer(seq, id, r),
            HealthRecord::Checkin(r) => self.checkins.offer(seq, id, r),
        }
    }

    /// Identical copies of accepted records of one topic family, so far.
    pub fn duplicates_of(&self, kind: TopicKind) -> u64 {
        match kind {
            TopicKind::HealthCase => self.cases.duplicates(),
            TopicKind::Trip => self.trips.duplicates(),
            TopicKind::Checkin => self.checkins.duplicates(),
            _ => 0,
        }
    }

    /// Identical copies of accepted records, so far.
    pub fn duplicates(&self) -> u64 {
        self.cases.duplicates() + self.trips.duplicates() + self.checkins.duplicates()
    }

    /// Copies with other content that replaced the first, so far.
    pub fn corrections(&self) -> u64 {
        self.cases.corrections() + self.trips.corrections() + self.checkins.corrections()
    }

    /// The latest event time applied.
    pub fn max_applied(&self) -> Option<Ms> {
        self.cases.max_applied().max(self.trips.max_applied()).max(self.checkins.max_applied())
    }

    /// Records remembered (cases, trips, check-ins): the state's size.
    pub fn len(&self) -> usize {
        self.cases.len() + self.trips.len() + self.checkins.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the records still held at the end of input, with their places in the input order.
    pub fn take_held(&mut self) -> Vec<(u64, HealthRecord)> {
        let mut held: Vec<_> =
            self.cases.take_held().into_iter().map(|(s, r)| (s, HealthRecord::Case(r))).collect();
        held.extend(self.trips.take_held().into_iter().map(|(s, r)| (s, HealthRecord::Trip(r))));
        held.extend(self.checkins.take_held().into_iter().map(|(s, r)| (s, HealthRecord::Checkin(r))));
        held.sort_by_key(|h| h.0);
        held
    }

    /// Ends the round for cases, trips and check-ins (see [`Entities::flush`]).
    pub fn flush(&mut self, inputs: &mut HealthInputs, upto: Ms, horizon: Ms) {
        self.cases.flush(&mut inputs.cases, &mut inputs.facts, upto, horizon);
        self.trips.flush(&mut inputs.trips, &mut inputs.facts, upto, horizon);
        self.checkins.flush(&mut inputs.checkins, &mut inputs.facts, upto, horizon);
    }
}
