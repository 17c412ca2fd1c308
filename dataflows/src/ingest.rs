//! The ingest side of the dataflows: every domain's records in, timed updates of the input
//! collections out.
//!
//! A decoded [`Event`] is checked against the city model once, at the edge, into a
//! [`Record`]: an owned, routable value. Each record has an owner worker
//! ([`Record::owner`]: the detector, incident or unit it is about), and drivers hand it to that
//! worker's [`Ingest`], so an entity's state lives in exactly one place for any number of
//! workers. [`Ingest`] holds one ingest per domain and ends rounds for all of them together
//! ([`Ingest::flush`]); the domains' own modules say how their updates are timed and why
//! that is correct: [`crate::traffic::ingest`], [`crate::emergency::ingest`],
//! [`crate::upsert`] (grid cases and sensors, health cases, trips and check-ins).

use crate::city::CityModel;
use crate::config::Config;
use crate::emergency::events::{IncidentRecord, UnitRecord};
use crate::emergency::ingest::{EmRecord, Ingest as EmergencyIngest};
use crate::event::{Event, Rejected, TopicKind};
use crate::grid::events::{CaseRecord, SensorRecord};
use crate::grid::ingest::{GridRecord, Ingest as GridIngest};
use crate::health::events::{CheckedCase, CheckedCheckin, CheckedTrip};
use crate::health::ingest::{HealthRecord, Ingest as HealthIngest};
use crate::pipeline::Inputs;
use crate::time::{Ms, Source, SourceClock, source_of};
use crate::traffic::ingest::Ingest as TrafficIngest;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use crate::traffic::events::CheckedReading;
pub use crate::traffic::ingest::Sequenced;

/// A validated record, checked against the city model, owned and ready to route.
#[derive(Clone, Debug)]
pub enum Record {
    /// A detector reading.
    Detector(CheckedReading),
    /// An incident event.
    Incident(IncidentRecord),
    /// A unit report.
    Unit(UnitRecord),
    /// A grid case event.
    Case(CaseRecord),
    /// A cell sensor reading.
    GridSensor(SensorRecord),
    /// A public-health case event (the person by pseudonym).
    HealthCase(CheckedCase),
    /// A trip (the person by pseudonym).
    Trip(CheckedTrip),
    /// A venue check-in (the person by pseudonym).
    Checkin(CheckedCheckin),
}

impl Record {
    /// Checks a decoded event against the city model.
    pub fn check(city: &CityModel, ev: &Event<'_>) -> Result<Record, Rejected> {
        Ok(match ev {
            Event::Detector(r) => Record::Detector(CheckedReading::check(city, r)?),
            Event::Incident(e) => Record::Incident(IncidentRecord::check(e)),
            Event::Unit(e) => Record::Unit(UnitRecord::check(city, e)?),
            Event::Case(e) => Record::Case(CaseRecord::check(city, e)?),
            Event::GridSensor(e) => Record::GridSensor(SensorRecord::check(city, e)?),
            Event::HealthCase(e) => Record::HealthCase(CheckedCase::check(city, e)?),
            Event::Trip(e) => Record::Trip(CheckedTrip::check(city, e)?),
            Event::Checkin(e) => Record::Checkin(CheckedCheckin::check(city, e)?),
        })
    }

    /// The topic family.
    pub fn kind(&self) -> TopicKind {
        match self {
            Record::Detector(_) => TopicKind::Detector,
            Record::Incident(_) => TopicKind::Incident,
            Record::Unit(_) => TopicKind::Unit,
            Record::Case(_) => TopicKind::Case,
            Record::GridSensor(_) => TopicKind::GridSensor,
            Record::HealthCase(_) => TopicKind::HealthCase,
            Record::Trip(_) => TopicKind::Trip,
            Record::Checkin(_) => TopicKind::Checkin,
        }
    }

    /// Event time.
    pub fn ts(&self) -> Ms {
        match self {
            Record::Detector(r) => r.ts,
            Record::Incident(r) => r.ts,
            Record::Unit(r) => r.ts,
            Record::Case(r) => r.ts,
            Record::GridSensor(r) => r.ts,
            Record::HealthCase(r) => r.ts,
            Record::Trip(r) => r.ts,
            Record::Checkin(r) => r.ts,
        }
    }

    /// The clock's source key (the entity that reported it).
    pub fn source(&self) -> Source {
        match self {
            Record::Detector(r) => r.source(),
            Record::Incident(r) => source_of(TopicKind::Incident as u8, &r.id),
            Record::Unit(r) => source_of(TopicKind::Unit as u8, &r.id),
            Record::Case(r) => source_of(TopicKind::Case as u8, &r.id),
            Record::GridSensor(r) => source_of(TopicKind::GridSensor as u8, &r.id),
            Record::HealthCase(r) => source_of(TopicKind::HealthCase as u8, &r.person),
            Record::Trip(r) => source_of(TopicKind::Trip as u8, &r.person),
            Record::Checkin(r) => source_of(TopicKind::Checkin as u8, &r.person),
        }
    }

    /// The worker (of `workers`) that owns the record's entity: detectors by index, incidents,
    /// units, cases and sensors by a hash of their id, health cases by a hash of the person's
    /// pseudonym, trips and check-ins by a hash of their identity (person, trip or venue, ts);
    /// the same on every run and worker count.
    pub fn owner(&self, workers: usize) -> usize {
        let key = match self {
            Record::Detector(r) => r.det as u64,
            Record::Incident(r) => stable_hash(&r.id),
            Record::Unit(r) => stable_hash(&r.id),
            Record::Case(r) => stable_hash(&r.id),
            Record::GridSensor(r) => stable_hash(&r.id),
            Record::HealthCase(r) => stable_hash(&r.person),
            Record::Trip(r) => stable_hash(&crate::health::events::record_key(&r.person, &r.trip, r.ts)),
            Record::Checkin(r) => stable_hash(&crate::health::events::record_key(&r.person, &r.venue, r.ts)),
        };
        (key % workers.max(1) as u64) as usize
    }

    /// The topic below the prefix that names this record's entity (for dead letters written
    /// after the message is gone): `traffic/detector/d-1`, `emergency/incident/i-7`, ….
    pub fn topic(&self, city: &CityModel) -> String {
        match self {
            Record::Detector(r) => format!("traffic/detector/{}", city.detectors[r.det as usize].id),
            Record::Incident(r) => format!("emergency/incident/{}", r.id),
            Record::Unit(r) => format!("emergency/unit/{}", r.id),
            Record::Case(r) => format!("grid/case/{}", r.id),
            Record::GridSensor(r) => format!("grid/sensor/{}", r.id),
            // A personal topic's id could be a clear personal id: it is never written back.
            Record::HealthCase(_) | Record::Trip(_) => self.kind().path().to_string(),
            Record::Checkin(r) => format!("health/checkin/{}", r.venue),
        }
    }
}

/// A hash of an id that is the same in every process (FxHash of its bytes).
fn stable_hash(id: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    id.hash(&mut h);
    h.finish().rotate_left(32)
}

/// A record still held at the end of input (beyond the clock's horizon): `future_ts`.
#[derive(Clone, Debug)]
pub struct Held {
    /// Its place in the input order.
    pub seq: u64,
    /// The record.
    pub record: Record,
}

/// Per-worker ingest state of every domain.
pub struct Ingest {
    /// Detector readings.
    pub traffic: TrafficIngest,
    /// Incidents and units.
    pub emergency: EmergencyIngest,
    /// Cases and cell sensors.
    pub grid: GridIngest,
    /// Health cases, trips and check-ins.
    pub health: HealthIngest,
    /// Sources of this worker's records (the traffic ingest keeps its own).
    sources: SourceClock,
    next_seq: u64,
}

impl Ingest {
    /// A fresh ingest state for one worker.
    pub fn new(city: Arc<CityModel>, cfg: &Config) -> Self {
        Ingest {
            traffic: TrafficIngest::new(city.clone(), cfg),
            emergency: EmergencyIngest::new(city.clone(), cfg),
            grid: GridIngest::new(city, cfg),
            health: HealthIngest::new(cfg),
            sources: SourceClock::default(),
            next_seq: 0,
        }
    }

    /// Checks and offers one decoded event, numbering it in offer order (for tests and simple
    /// drivers; drivers that route records use [`Ingest::offer_record`]).
    pub fn offer(&mut self, event: &Event<'_>) -> Result<(), Rejected> {
        let record = Record::check(&self.traffic_city(), event)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.offer_record(record, seq)
    }

    fn traffic_city(&self) -> Arc<CityModel> {
        self.traffic.city()
    }

    /// Offers a detector reading already checked (see [`TrafficIngest::offer_checked`]).
    pub fn offer_checked(&mut self, reading: CheckedReading, seq: u64) -> Result<(), Rejected> {
        self.traffic.offer_checked(reading, seq)
    }

    /// Offers one record; `seq` places it in the input order.
    pub fn offer_record(&mut self, record: Record, seq: u64) -> Result<(), Rejected> {
        let (source, ts) = (record.source(), record.ts());
        match record {
            // The traffic ingest keeps its own sources.
            Record::Detector(r) => return self.traffic.offer_checked(r, seq),
            Record::Incident(r) => self.emergency.offer(seq, EmRecord::Incident(r))?,
            Record::Unit(r) => self.emergency.offer(seq, EmRecord::Unit(r))?,
            Record::Case(r) => self.grid.offer(seq, GridRecord::Case(r))?,
            Record::GridSensor(r) => self.grid.offer(seq, GridRecord::Sensor(r))?,
            Record::HealthCase(r) => self.health.offer(seq, HealthRecord::Case(r))?,
            Record::Trip(r) => self.health.offer(seq, HealthRecord::Trip(r))?,
            Record::Checkin(r) => self.health.offer(seq, HealthRecord::Checkin(r))?,
        }
        self.sources.observe(source, ts);
        Ok(())
    }

    /// The sources this worker has seen (accepted records only), for the city's clock.
    pub fn sources(&self) -> SourceClock {
        let mut s = self.sources;
        s.merge(self.traffic.sources());
        s
    }

    /// The latest event time applied to any domain's state (held records excluded).
    pub fn max_applied(&self) -> Option<Ms> {
        self.traffic
            .max_applied()
            .max(self.emergency.max_applied())
            .max(self.grid.max_applied())
            .max(self.health.max_applied())
    }

    /// Identical copies of accepted records, so far.
    pub fn duplicates(&self) -> u64 {
        self.traffic.duplicates()
            + self.emergency.duplicates()
            + self.grid.duplicates()
            + self.health.duplicates()
    }

    /// Identical copies of accepted records of one topic family, so far.
    pub fn duplicates_of(&self, kind: TopicKind) -> u64 {
        match kind {
            TopicKind::Detector => self.traffic.duplicates(),
            TopicKind::Incident | TopicKind::Unit => self.emergency.duplicates_of(kind),
            TopicKind::Case | TopicKind::GridSensor => self.grid.duplicates_of(kind),
            TopicKind::HealthCase | TopicKind::Trip | TopicKind::Checkin => self.health.duplicates_of(kind),
        }
    }

    /// Copies with other content that replaced the first, so far.
    pub fn corrections(&self) -> u64 {
        self.traffic.corrections()
            + self.emergency.corrections()
            + self.grid.corrections()
            + self.health.corrections()
    }

    /// Window sums held live (see [`TrafficIngest::live_windows`]).
    pub fn live_windows(&self) -> usize {
        self.traffic.live_windows()
    }

    /// The input time: the watermark at the end of the last round.
    pub fn now(&self) -> Ms {
        self.traffic.now()
    }

    /// Takes the records still held at the end of input, in input order.
    pub fn take_held(&mut self) -> Vec<Held> {
        let mut held: Vec<Held> = self
            .traffic
            .take_held()
            .into_iter()
            .map(|h| Held { seq: h.seq, record: Record::Detector(h.reading) })
            .collect();
        held.extend(self.emergency.take_held().into_iter().map(|(seq, r)| Held {
            seq,
            record: match r {
                EmRecord::Incident(r) => Record::Incident(r),
                EmRecord::Unit(r) => Record::Unit(r),
            },
        }));
        held.extend(self.grid.take_held().into_iter().map(|(seq, r)| Held {
            seq,
            record: match r {
                GridRecord::Case(r) => Record::Case(r),
                GridRecord::Sensor(r) => Record::GridSensor(r),
            },
        }));
        held.extend(self.health.take_held().into_iter().map(|(seq, r)| Held {
            seq,
            record: match r {
                HealthRecord::Case(r) => Record::HealthCase(r),
                HealthRecord::Trip(r) => Record::Trip(r),
                HealthRecord::Checkin(r) => Record::Checkin(r),
            },
        }));
        held.sort_by_key(|h| h.seq);
        held
    }

    /// Ends the round for every domain (see [`TrafficIngest::flush`]).
    pub fn flush(&mut self, inputs: &mut Inputs, upto: Ms, horizon: Ms, timers_upto: Ms) {
        self.traffic.flush(&mut inputs.traffic, upto, horizon, timers_upto);
        self.emergency.flush(&mut inputs.emergency, upto, horizon);
        self.grid.flush(&mut inputs.grid, upto, horizon);
        self.health.flush(&mut inputs.health, upto, horizon);
    }
}
