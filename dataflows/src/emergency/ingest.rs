//! The emergency ingest: incident and unit events in, timed upserts of the emergency input
//! collections out.
//!
//! One [`Ingest`] per worker; every record reaches the worker that owns its incident or unit
//! (the drivers route by [`crate::ingest::Record::owner`]), so an entity's events, and the
//! state derived from them, live in exactly one place for any number of workers.
//!
//! # Upserts on event time
//! An entity's state at event time `t` is the fold of its events stamped at or before `t`
//! ([`crate::emergency::model`]). The ingest keeps the version it last released into the
//! dataflow; when a round ends at watermark `upto` it walks the entity's event times in
//! `(now, upto]` (and `now` itself when a late event arrived) and, wherever the fold changes,
//! retracts the released version and inserts the new one *at that time*. So the dataflow sees
//! each version over exactly the event-time interval it held — a report at 10:00:00 and a
//! dispatch at 10:00:50 in the same round still leave the incident unassigned for 50 s — and a
//! late event corrects the state from the moment it arrives (the past already written stays
//! written, as for late traffic readings). Events beyond the round's horizon wait, as detector
//! readings do ([`crate::traffic::ingest`]).
//!
//! A closed incident is retracted `closed_grace_s` after it closed. Its events are remembered
//! for idempotence until no copy could be accepted any more (`retention_s` after it closed,
//! and after its facts expired), then forgotten.
//!
//! # Facts
//! Each incident version implies timed facts ([`Fact`]): its interval samples, present for 60
//! minutes after the event that completes them (CONTRACT §6), and its report, present for the
//! surge window and baseline. A fact is inserted when a version implying it is released and
//! retracted when it expires — or earlier, at the time a correction makes a version that no
//! longer implies it. The percentiles are computed from the facts present.
//!
//! # Idempotence
//! An incident event's identity is (incident, status, ts); a unit report's is (unit, ts)
//! (CONTRACT §1). An identical copy is counted as a duplicate and changes nothing; a copy with
//! other content replaces the first (a correction) and the state is re-folded.

use crate::city::CityModel;
use crate::config::Config;
use crate::emergency::EmergencyInputs;
use crate::emergency::config::EmergencyConfig;
use crate::emergency::events::{IncidentRecord, UnitRecord};
use crate::emergency::model::{Fact, FactKind, Incident, Unit};
use crate::event::{IncidentStatus, Reason, Rejected};
use crate::time::{MINUTE, Ms};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An emergency record with its place in the input order.
#[derive(Clone, Debug)]
pub enum EmRecord {
    /// An incident event.
    Incident(IncidentRecord),
    /// A unit report.
    Unit(UnitRecord),
}

impl EmRecord {
    /// Event time.
    pub fn ts(&self) -> Ms {
        match self {
            EmRecord::Incident(r) => r.ts,
            EmRecord::Unit(r) => r.ts,
        }
    }
}

/// How long a sample stays in the sliding hour.
pub const SAMPLE_LIFE: Ms = 60 * MINUTE;

#[derive(Default)]
struct IncidentEntity {
    /// Events by identity (ts, status).
    events: BTreeMap<(Ms, IncidentStatus), IncidentRecord>,
    /// The version in the dataflow.
    released: Option<Incident>,
    /// Facts in the dataflow, with their expiry.
    facts: BTreeMap<Fact, Ms>,
}

#[derive(Default)]
struct UnitEntity {
    /// Reports by ts.
    events: BTreeMap<Ms, UnitRecord>,
    released: Option<Unit>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Incident(String),
    Unit(String),
}

/// Per-worker emergency ingest state (see module docs).
pub struct Ingest {
    city: Arc<CityModel>,
    cfg: EmergencyConfig,
    /// How long a report fact lives (surge window + baseline).
    report_life: Ms,
    now: Ms,
    incidents: BTreeMap<String, IncidentEntity>,
    units: BTreeMap<String, UnitEntity>,
    staged: Vec<(u64, EmRecord)>,
    held: Vec<(u64, EmRecord)>,
    /// Entities with something due at a time after `now`: an event, a grace retraction, a
    /// fact expiry or the end of their memory.
    due: BTreeMap<Ms, BTreeSet<Key>>,
    max_applied: Option<Ms>,
    duplicates: u64,
    unit_duplicates: u64,
    corrections: u64,
}

impl Ingest {
    /// A fresh state for one worker.
    pub fn new(city: Arc<CityModel>, cfg: &Config) -> Self {
        let e = cfg.emergency.clone();
        let report_life = e.surge.window_ms() * 2 + e.surge.baseline_ms();
        Ingest {
            city,
            cfg: e,
            report_life,
            now: 0,
            incidents: BTreeMap::new(),
            units: BTreeMap::new(),
            staged: Vec::new(),
            held: Vec::new(),
            due: BTreeMap::new(),
            max_applied: None,
            duplicates: 0,
            unit_duplicates: 0,
            corrections: 0,
        }
    }

    /// Offers one record (`seq`: its place in the input order). Too late when older than the
    /// retention behind the watermark.
    pub fn offer(&mut self, seq: u64, rec: EmRecord) -> Result<(), Rejected> {
        if rec.ts() + self.cfg.retention_ms() <= self.now {
            return Err(Rejected::new(Reason::TooLate, "older than the emergency retention"));
        }
        self.staged.push((seq, rec));
        Ok(())
    }

    /// Identical copies of accepted events, so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Identical copies of accepted events of one topic family (incident or unit), so far.
    pub fn duplicates_of(&self, kind: crate::event::TopicKind) -> u64 {
        match kind {
            crate::event::TopicKind::Incident => self.duplicates - self.unit_duplicates,
            crate::event::TopicKind::Unit => self.unit_duplicates,
            _ => 0,
        }
    }

    /// Copies with other content that replaced the first, so far.
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// The latest event time applied.
    pub fn max_applied(&self) -> Option<Ms> {
        self.max_applied
    }

    /// Entities remembered (incidents and units): the state's size.
    pub fn entities(&self) -> usize {
        self.incidents.len() + self.units.len()
    }

    /// Takes the records still held at the end of input (the `future_ts` dead letters).
    pub fn take_held(&mut self) -> Vec<(u64, EmRecord)> {
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|h| h.0);
        held
    }

    /// Ends the round (see [`crate::traffic::ingest::Ingest::flush`] for the arguments): applies
    /// the staged records within `horizon`, releases every change due by `upto` into `inputs`
    /// at its event time, and moves `now` to `upto`.
    pub fn flush(&mut self, inputs: &mut EmergencyInputs, upto: Ms, horizon: Ms) {
        let now = self.now;
        let upto = upto.max(now);
        let horizon = horizon.max(upto);
        let mut dirty: BTreeSet<Key> = BTreeSet::new();
        // Held records within the horizon join the staged ones; the order is the input order.
        let mut staged = std::mem::take(&mut self.staged);
        if self.held.iter().any(|(_, r)| r.ts() <= horizon) {
            let (due, wait): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(_, r)| r.ts() <= horizon);
            self.held = wait;
            staged.extend(due);
        }
        staged.sort_by_key(|(seq, _)| *seq);
        for (seq, rec) in staged {
            if rec.ts() > horizon {
                self.held.push((seq, rec));
                continue;
            }
            let key = self.apply(rec);
            dirty.extend(key);
        }
        while let Some(e) = self.due.first_entry().filter(|e| *e.key() <= upto) {
            dirty.extend(e.remove());
        }
        for key in dirty {
            match key {
                Key::Incident(id) => self.release_incident(&id, inputs, now, upto),
                Key::Unit(id) => self.release_unit(&id, inputs, now, upto),
            }
        }
        self.now = upto;
    }

    /// Applies one record to its entity's events; the entity's key when anything changed.
    fn apply(&mut self, rec: EmRecord) -> Option<Key> {
        let ts = rec.ts();
        let (changed, key) = match rec {
            EmRecord::Incident(r) => {
                let id = r.id.clone();
                let e = self.incidents.entry(id.clone()).or_default();
                (upsert(&mut e.events, (r.ts, r.status), r), Key::Incident(id))
            }
            EmRecord::Unit(r) => {
                let id = r.id.clone();
                let e = self.units.entry(id.clone()).or_default();
                (upsert(&mut e.events, r.ts, r), Key::Unit(id))
            }
        };
        match changed {
            Upsert::Same => {
                self.duplicates += 1;
                self.unit_duplicates += matches!(key, Key::Unit(_)) as u64;
                return None;
            }
            Upsert::Replaced => self.corrections += 1,
            Upsert::New => {}
        }
        self.max_applied = self.max_applied.max(Some(ts));
        if ts > self.now {
            self.due.entry(ts).or_default().insert(key.clone());
        }
        Some(key)
    }

    /// The times in `[now, upto]` at which an entity with events at `times` may change.
    fn steps(now: Ms, upto: Ms, times: impl Iterator<Item = Ms>, extra: &[Ms]) -> Vec<Ms> {
        let mut t: Vec<Ms> = std::iter::once(now)
            .chain(times.filter(|&t| t > now && t <= upto))
            .chain(extra.iter().copied().filter(|&t| t > now && t <= upto))
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    fn release_incident(&mut self, id: &str, inputs: &mut EmergencyInputs, now: Ms, upto: Ms) {
        let Some(mut ent) = self.incidents.remove(id) else { return };
        let grace = self.cfg.grace_ms();
        let fold_at = |ent: &IncidentEntity, t: Ms| {
            Incident::fold(&self.city, ent.events.range(..(t + 1, IncidentStatus::Reported)).map(|(_, e)| e))
        };
        // Closing times bound the grace retraction; fact expiries are steps too.
        let closings: Vec<Ms> = ent
            .events
            .keys()
            .filter(|(_, s)| matches!(s, IncidentStatus::Cleared | IncidentStatus::Cancelled))
            .map(|(t, _)| t + grace)
            .collect();
        let mut steps: BTreeSet<Ms> = Self::steps(now, upto, ent.events.keys().map(|(t, _)| *t), &closings)
            .into_iter()
            .chain(ent.facts.values().copied().filter(|&x| x > now && x <= upto))
            .collect();
        while let Some(t) = steps.pop_first() {
            let inc = fold_at(&ent, t);
            // A closed incident leaves `closed_grace_s` after it closed.
            let v = inc.clone().filter(|i| i.closed.is_none_or(|c| c + grace > t));
            if v != ent.released {
                if let Some(old) = ent.released.take() {
                    inputs.incidents.update_at(old, t, -1);
                }
                if let Some(new) = &v {
                    inputs.incidents.update_at(new.clone(), t, 1);
                }
                ent.released = v;
            }
            // The facts the state implies at t, unexpired.
            let mut want: BTreeMap<Fact, Ms> = BTreeMap::new();
            if let Some(inc) = inc
                && let Some(district) = inc.district
            {
                let fact = |what, at| Fact { district, what, at, incident: inc.id.clone() };
                want.insert(fact(FactKind::Report, inc.reported), inc.reported + self.report_life);
                for (kind, value, at) in inc.samples() {
                    want.insert(fact(FactKind::Sample(kind, value), at), at + SAMPLE_LIFE);
                }
            }
            want.retain(|_, until| *until > t);
            let old: Vec<Fact> = ent.facts.keys().filter(|f| !want.contains_key(*f)).cloned().collect();
            for f in old {
                ent.facts.remove(&f);
                inputs.facts.update_at(f, t, -1);
            }
            for (f, until) in want {
                if let std::collections::btree_map::Entry::Vacant(slot) = ent.facts.entry(f) {
                    inputs.facts.update_at(slot.key().clone(), t, 1);
                    slot.insert(until);
                    if until <= upto {
                        steps.insert(until);
                    }
                }
            }
        }
        // What is due later: events beyond upto, the grace retraction, fact expiries, and the
        // end of the memory.
        let closed = ent
            .events
            .keys()
            .find(|(_, s)| matches!(s, IncidentStatus::Cleared | IncidentStatus::Cancelled))
            .map(|(t, _)| *t);
        let forget = closed.map(|c| {
            let facts_end = ent.facts.values().copied().max().unwrap_or(0);
            (c + grace.max(self.cfg.retention_ms())).max(facts_end)
        });
        let mut later: Vec<Ms> = ent.events.keys().map(|(t, _)| *t).filter(|&t| t > upto).collect();
        later.extend(closings.iter().copied().filter(|&t| t > upto));
        later.extend(ent.facts.values().copied().filter(|&t| t > upto));
        match forget {
            Some(f) if f <= upto && ent.released.is_none() && ent.facts.is_empty() => return,
            Some(f) => later.push(f.max(upto + 1)),
            None => {}
        }
        if let Some(&next) = later.iter().min() {
            self.due.entry(next).or_default().insert(Key::Incident(id.to_string()));
        }
        self.incidents.insert(id.to_string(), ent);
    }

    fn release_unit(&mut self, id: &str, inputs: &mut EmergencyInputs, now: Ms, upto: Ms) {
        let Some(ent) = self.units.get_mut(id) else { return };
        let city = &self.city;
        for t in Self::steps(now, upto, ent.events.keys().copied(), &[]) {
            let mut prev: Option<Unit> = None;
            for r in ent.events.range(..=t).map(|(_, r)| r) {
                prev = Some(Unit::of(city, r, prev.as_ref()));
            }
            if prev != ent.released {
                if let Some(old) = ent.released.take() {
                    inputs.units.update_at(old, t, -1);
                }
                if let Some(new) = &prev {
                    inputs.units.update_at(new.clone(), t, 1);
                }
                ent.released = prev;
            }
        }
        // Reports no copy of which could be accepted any more are folded into the state: keep
        // the last of them as the base, carrying forward the position and station a later report
        // without them falls back on (a copy of the base is too late, so changing it is safe).
        let retention = self.cfg.retention_ms();
        while ent.events.len() > 1 && ent.events.keys().nth(1).is_some_and(|&t| t + retention <= upto) {
            if let Some((_, old)) = ent.events.pop_first()
                && let Some(mut base) = ent.events.first_entry()
            {
                let base = base.get_mut();
                base.pos = base.pos.or(old.pos);
                base.station = base.station.or(old.station);
            }
        }
        if let Some(next) = ent.events.keys().copied().find(|&t| t > upto) {
            self.due.entry(next).or_default().insert(Key::Unit(id.to_string()));
        }
    }
}

enum Upsert {
    New,
    Same,
    Replaced,
}

fn upsert<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, V>, key: K, value: V) -> Upsert {
    match map.entry(key) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(value);
            Upsert::New
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            if *o.get() == value {
                Upsert::Same
            } else {
                o.insert(value);
                Upsert::Replaced
            }
        }
    }
}
