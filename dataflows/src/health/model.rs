//! A person's case status, a trip and a check-in as of an event time: the [`Model`]s the health
//! ingest folds their records with ([`crate::upsert`]).
//!
//! # Retention
//! Every public-health record is deleted `R` = `lookback_days` + `retention_grace_days` after
//! its event time (CONTRACT §1: 14 days + a grace of 1 day by default): a trip or check-in is
//! in the state over `[ts, ts + R)`, leaves the dataflow at `ts + R` (a timer: no further input
//! is needed) and is then forgotten by [`crate::upsert::Entities`]; a copy arriving later is
//! `too_late`. A case is in the state while active, until `R` after its latest status.
//!
//! # Cases
//! A person is a case while the latest status by event time is `confirmed` or `suspected`;
//! `cleared` ends it. A case's [`ActiveCase::since`] is the time of the first active status of
//! the current run (a suspected person later confirmed stays one case), and
//! [`ActiveCase::last`] the time of its latest active status; both are event times, so the
//! lookback window derived from them is the same for any arrival order.

use crate::health::config::HealthConfig;
use crate::health::events::{CheckedCase, CheckedCheckin, CheckedTrip, HealthStatus};
use crate::time::Ms;
use crate::upsert::Model;
use serde::{Deserialize, Serialize};

/// An active case (confirmed or suspected) as of an event time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActiveCase {
    /// The person's pseudonym.
    pub person: String,
    /// The latest status (confirmed or suspected).
    pub status: HealthStatus,
    /// The time of the first active status of the current run.
    pub since: Ms,
    /// The time of the latest active status.
    pub last: Ms,
}

/// The fold of a person's case events.
#[derive(Clone, Debug)]
pub struct CaseAcc {
    person: String,
    status: HealthStatus,
    since: Ms,
    last: Ms,
}

/// How a person's case events fold (see module docs).
pub struct CaseModel {
    retention: Ms,
}

impl CaseModel {
    /// The case model with the health settings.
    pub fn new(cfg: &HealthConfig) -> Self {
        CaseModel { retention: cfg.retention_ms() }
    }
}

impl Model for CaseModel {
    type Sub = HealthStatus;
    type Event = CheckedCase;
    type Acc = CaseAcc;
    type State = ActiveCase;
    /// Health records imply no facts.
    type Fact = ();

    fn key(e: &CheckedCase) -> (Ms, HealthStatus) {
        (e.ts, e.status)
    }

    fn step(&self, acc: &mut Option<CaseAcc>, e: &CheckedCase) {
        let a = acc.get_or_insert_with(|| CaseAcc {
            person: e.person.clone(),
            status: HealthStatus::Cleared,
            since: e.ts,
            last: e.ts,
        });
        if e.status.is_active() && !a.status.is_active() {
            a.since = e.ts;
        }
        a.status = e.status;
        a.last = e.ts;
    }

    fn state(&self, acc: &CaseAcc, t: Ms) -> Option<ActiveCase> {
        (acc.status.is_active() && t < acc.last + self.retention).then(|| ActiveCase {
            person: acc.person.clone(),
            status: acc.status,
            since: acc.since,
            last: acc.last,
        })
    }

    fn timers(&self, acc: &CaseAcc, out: &mut Vec<Ms>) {
        if acc.status.is_active() {
            out.push(acc.last + self.retention);
        }
    }

    fn facts(&self, _acc: &CaseAcc, _out: &mut Vec<((), Ms)>) {}
}

/// A record that lives from its event time until its retention ends (a trip, a check-in).
pub trait Timed {
    /// Its event time.
    fn ts(&self) -> Ms;
}

impl Timed for CheckedTrip {
    fn ts(&self) -> Ms {
        self.ts
    }
}

impl Timed for CheckedCheckin {
    fn ts(&self) -> Ms {
        self.ts
    }
}

/// How a trip or check-in folds: each record is its own entity (its identity), present over
/// `[ts, ts + R)`; a copy with other content replaces it (a correction).
pub struct RecordModel<E> {
    retention: Ms,
    _e: std::marker::PhantomData<fn() -> E>,
}

impl<E> RecordModel<E> {
    /// The record model with the health settings.
    pub fn new(cfg: &HealthConfig) -> Self {
        RecordModel { retention: cfg.retention_ms(), _e: std::marker::PhantomData }
    }
}

impl<E> Model for RecordModel<E>
where
    E: Timed + Clone + PartialEq + differential_dataflow::ExchangeData + std::hash::Hash,
{
    type Sub = ();
    type Event = E;
    type Acc = E;
    type State = E;
    /// Health records imply no facts.
    type Fact = ();

    fn key(e: &E) -> (Ms, ()) {
        (e.ts(), ())
    }

    fn step(&self, acc: &mut Option<E>, e: &E) {
        *acc = Some(e.clone());
    }

    fn state(&self, acc: &E, t: Ms) -> Option<E> {
        (t < acc.ts() + self.retention).then(|| acc.clone())
    }

    fn timers(&self, acc: &E, out: &mut Vec<Ms>) {
        out.push(acc.ts() + self.retention);
    }

    fn facts(&self, _acc: &E, _out: &mut Vec<((), Ms)>) {}
}

/// The trips' model.
pub type TripModel = RecordModel<CheckedTrip>;
/// The check-ins' model.
pub type CheckinModel = RecordModel<CheckedCheckin>;
