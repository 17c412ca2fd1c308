//! Entities with a lifecycle (grid cases, cell sensors) as timed upserts: their events in, the
//! versions of their state over event time out, into a dataflow input.
//!
//! A domain describes an entity by a [`Model`]: how its events fold into an accumulator, what
//! state the accumulator means at an event time (a deadline may pass with no further event), at
//! which instants that state changes by itself (its timers), and which timed facts it implies.
//! [`Entities`] does the rest, the same way for every domain:
//!
//! * **Upserts on event time.** An entity's state at `t` is the fold of its events stamped at or
//!   before `t`. When a round ends at watermark `upto`, each entity that changed (or has a timer
//!   due) walks the instants in `[now, upto]` at which its state may change — `now` itself when
//!   a late event arrived, its events' times, its timers, its facts' expiries — and wherever the
//!   state differs from the version released, retracts that version and inserts the new one *at
//!   that instant*. So the dataflow sees each version over exactly the event-time interval it
//!   held, whatever the arrival order or the cut into rounds, and a timer (an overdue case, a
//!   stale sensor) fires when the watermark passes it, with no further input.
//! * **Facts** implied by the state (a case closed today) are inserted when the state first
//!   implies them and retracted at their expiry, or earlier when a correction stops implying them.
//! * **Idempotence** (CONTRACT §1). An event's identity is its entity and its key (event time
//!   first). An identical copy is a duplicate and changes nothing; a copy with other content
//!   replaces the first (a correction) and the entity is re-folded from the start of the round.
//! * **Bounded state.** An event older than the retention behind the watermark is `too_late`;
//!   events that can no longer be corrected are folded into the entity's base accumulator, and
//!   an entity with nothing in the dataflow, no timer due and no event within the retention is
//!   forgotten.
//!
//! Each record reaches the worker that owns its entity ([`crate::ingest::Record::owner`]), so an
//! entity's state lives in exactly one place for any number of workers.

use crate::event::{Reason, Rejected};
use crate::time::Ms;
use differential_dataflow::input::InputSession;
use std::collections::{BTreeMap, BTreeSet};

/// How one kind of entity folds its events into states over event time.
pub trait Model {
    /// An event's identity within its entity, after its event time (e.g. the status).
    type Sub: Ord + Clone;
    /// An event.
    type Event: Clone + PartialEq;
    /// The fold of an entity's events.
    type Acc: Clone;
    /// The entity's state as the dataflow sees it.
    type State: differential_dataflow::ExchangeData + std::hash::Hash;
    /// A timed fact a state implies.
    type Fact: differential_dataflow::ExchangeData + std::hash::Hash;

    /// An event's identity within its entity: its event time and [`Model::Sub`].
    fn key(e: &Self::Event) -> (Ms, Self::Sub);
    /// Folds one event (in identity order) into the accumulator (`None` before the first).
    fn step(&self, acc: &mut Option<Self::Acc>, e: &Self::Event);
    /// The state at `t` of an entity whose events up to `t` are folded in `acc`; `None` when
    /// the entity is not (or no longer) in the dataflow.
    fn state(&self, acc: &Self::Acc, t: Ms) -> Option<Self::State>;
    /// The instants at which `state(acc, ·)` changes by itself (deadlines, staleness, grace).
    fn timers(&self, acc: &Self::Acc, out: &mut Vec<Ms>);
    /// The facts `acc` implies, each with the instant it expires.
    fn facts(&self, acc: &Self::Acc, out: &mut Vec<(Self::Fact, Ms)>);
}

struct Entity<M: Model> {
    /// The fold of the events compacted away.
    base: Option<M::Acc>,
    /// Events still open to correction, by identity.
    events: BTreeMap<(Ms, M::Sub), M::Event>,
    /// The fold of every event at or before `folded.0`, when no later-arriving event has
    /// landed at or before it since (saves re-folding a long history every round).
    folded: Option<(Ms, Option<M::Acc>)>,
    /// The latest event time seen.
    last_ts: Ms,
    /// The version in the dataflow.
    released: Option<M::State>,
    /// Facts in the dataflow, with their expiry.
    facts: BTreeMap<M::Fact, Ms>,
}

/// The entities of one model on one worker (see module docs).
pub struct Entities<M: Model> {
    model: M,
    retention: Ms,
    now: Ms,
    map: BTreeMap<String, Entity<M>>,
    staged: Vec<(u64, String, M::Event)>,
    held: Vec<(u64, String, M::Event)>,
    due: BTreeMap<Ms, BTreeSet<String>>,
    max_applied: Option<Ms>,
    duplicates: u64,
    corrections: u64,
}

impl<M: Model> Entities<M> {
    /// No entities yet; events older than `retention` behind the watermark are too late.
    pub fn new(model: M, retention: Ms) -> Self {
        Entities {
            model,
            retention,
            now: 0,
            map: BTreeMap::new(),
            staged: Vec::new(),
            held: Vec::new(),
            due: BTreeMap::new(),
            max_applied: None,
            duplicates: 0,
            corrections: 0,
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Offers one event of entity `id` (`seq`: its place in the input order).
    pub fn offer(&mut self, seq: u64, id: String, e: M::Event) -> Result<(), Rejected> {
        if M::key(&e).0 + self.retention <= self.now {
            return Err(Rejected::new(Reason::TooLate, "older than the retention"));
        }
        self.staged.push((seq, id, e));
        Ok(())
    }

    /// Identical copies of accepted events, so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Copies with other content that replaced the first, so far.
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// The latest event time applied.
    pub fn max_applied(&self) -> Option<Ms> {
        self.max_applied
    }

    /// Entities remembered: the state's size.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entity is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes the events still held at the end of input (the `future_ts` dead letters).
    pub fn take_held(&mut self) -> Vec<(u64, M::Event)> {
        let mut held: Vec<_> = std::mem::take(&mut self.held).into_iter().map(|(s, _, e)| (s, e)).collect();
        held.sort_by_key(|h| h.0);
        held
    }

    /// Ends the round (see [`crate::traffic::ingest::Ingest::flush`] for the arguments): applies
    /// the staged events within `horizon`, releases every change due by `upto` into `states`
    /// and `facts` at its event time, and moves `now` to `upto`.
    pub fn flush(
        &mut self,
        states: &mut InputSession<Ms, M::State, isize>,
        facts: &mut InputSession<Ms, M::Fact, isize>,
        upto: Ms,
        horizon: Ms,
    ) {
        let now = self.now;
        let upto = upto.max(now);
        let horizon = horizon.max(upto);
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut staged = std::mem::take(&mut self.staged);
        if self.held.iter().any(|(_, _, e)| M::key(e).0 <= horizon) {
            let (due, wait): (Vec<_>, Vec<_>) =
                self.held.drain(..).partition(|(_, _, e)| M::key(e).0 <= horizon);
            self.held = wait;
            staged.extend(due);
        }
        staged.sort_by_key(|(seq, _, _)| *seq);
        for (seq, id, e) in staged {
            if M::key(&e).0 > horizon {
                self.held.push((seq, id, e));
            } else if self.apply(&id, e) {
                dirty.insert(id);
            }
        }
        while let Some(e) = self.due.first_entry().filter(|e| *e.key() <= upto) {
            dirty.extend(e.remove());
        }
        for id in dirty {
            self.release(&id, states, facts, now, upto);
        }
        self.now = upto;
    }

    /// Applies one event; whether anything changed.
    fn apply(&mut self, id: &str, e: M::Event) -> bool {
        let key = M::key(&e);
        let ts = key.0;
        let ent = self.map.entry(id.to_string()).or_insert_with(|| Entity {
            base: None,
            events: BTreeMap::new(),
            folded: None,
            last_ts: 0,
            released: None,
            facts: BTreeMap::new(),
        });
        match ent.events.entry(key) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(e);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if *o.get() == e {
                    self.duplicates += 1;
                    return false;
                }
                o.insert(e);
                self.corrections += 1;
            }
        }
        if ent.folded.as_ref().is_some_and(|(t, _)| ts <= *t) {
            ent.folded = None;
        }
        ent.last_ts = ent.last_ts.max(ts);
        self.max_applied = self.max_applied.max(Some(ts));
        true
    }

    fn release(
        &mut self,
        id: &str,
        states: &mut InputSession<Ms, M::State, isize>,
        facts: &mut InputSession<Ms, M::Fact, isize>,
        now: Ms,
        upto: Ms,
    ) {
        let Some(mut ent) = self.map.remove(id) else { return };
        let model = &self.model;
        // Start from the cached fold at `now` when it is still valid, else from the base.
        let (mut acc, from) = match ent.folded.take() {
            Some((t, acc)) if t == now => (acc, Some(now)),
            _ => (ent.base.clone(), None),
        };
        let mut events = ent.events.iter().filter(|((ts, _), _)| from.is_none_or(|f| *ts > f)).peekable();
        let mut t = now;
        let mut timers = Vec::new();
        let mut want = Vec::new();
        let next = loop {
            while let Some((_, e)) = events.next_if(|((ts, _), _)| *ts <= t) {
                model.step(&mut acc, e);
            }
            let state = acc.as_ref().and_then(|a| model.state(a, t));
            if state != ent.released {
                if let Some(old) = ent.released.take() {
                    states.update_at(old, t, -1);
                }
                if let Some(new) = &state {
                    states.update_at(new.clone(), t, 1);
                }
                ent.released = state;
            }
            want.clear();
            if let Some(a) = &acc {
                model.facts(a, &mut want);
            }
            want.retain(|(_, until)| *until > t);
            let gone: Vec<M::Fact> =
                ent.facts.keys().filter(|f| !want.iter().any(|(w, _)| w == *f)).cloned().collect();
            for f in gone {
                ent.facts.remove(&f);
                facts.update_at(f, t, -1);
            }
            for (f, until) in want.drain(..) {
                if let std::collections::btree_map::Entry::Vacant(slot) = ent.facts.entry(f) {
                    facts.update_at(slot.key().clone(), t, 1);
                    slot.insert(until);
                }
            }
            if t == upto {
                ent.folded = Some((upto, acc.clone()));
            }
            // The next instant anything may change.
            timers.clear();
            if let Some(a) = &acc {
                model.timers(a, &mut timers);
            }
            let next = events
                .peek()
                .map(|((ts, _), _)| *ts)
                .into_iter()
                .chain(timers.iter().copied())
                .chain(ent.facts.values().copied())
                .filter(|&x| x > t)
                .min();
            match next {
                Some(n) if n <= upto => t = n,
                // The fold at `upto` (the loop stopped short of it: nothing changes in between).
                _ => {
                    if t < upto {
                        ent.folded = Some((upto, acc.clone()));
                    }
                    break next;
                }
            }
        };
        // Events no copy of which could be accepted any more are folded into the base.
        while let Some(entry) = ent.events.first_entry().filter(|e| e.key().0 + self.retention <= upto) {
            let e = entry.remove();
            model.step(&mut ent.base, &e);
        }
        let quiet = ent.released.is_none() && ent.facts.is_empty() && ent.events.is_empty();
        if quiet && next.is_none() && ent.last_ts + self.retention <= upto {
            return; // forgotten
        }
        if let Some(n) = next {
            self.due.entry(n).or_default().insert(id.to_string());
        } else if ent.last_ts + self.retention > upto && quiet {
            // Remember it until a copy of its last event would be too late.
            self.due.entry(ent.last_ts + self.retention).or_default().insert(id.to_string());
        }
        self.map.insert(id.to_string(), ent);
    }

    /// The released state of every entity (for tests and diagnostics).
    pub fn states(&self) -> impl Iterator<Item = &M::State> {
        self.map.values().filter_map(|e| e.released.as_ref())
    }
}
