//! The public-health domain (公共卫生; CONTRACT §1, §2, §7): persons' case status, trips and
//! venue check-ins, and the co-passenger contact query (同乘接触者) with its `health.contact`
//! alert, which goes to the officers of the contact's cell.
//!
//! * [`events`] — the payloads of the three topics, their validation and owned records (persons
//!   by pseudonym only: the decoder replaced the clear id before anything here sees it);
//! * [`config`] — the `[health]` section: lookback, row and venue windows, retention grace;
//! * [`model`] — a case, a trip and a check-in as of an event time (retention is a timer);
//! * [`ingest`] — per-worker upserts on event time (the entity's owner worker);
//! * [`rules`] — the alert rule.
//!
//! No measurement is written: CONTRACT §6 defines none for health, and pseudonyms are not
//! written to the time-series store.
//!
//! # The contact rule
//! For each active case — a person `P` whose latest status is confirmed or suspected, active
//! since `C` (the first active status of the run) and last reported at `L ≥ C` (see
//! [`model`]) — with lookback `B` (`lookback_days`, 14 days):
//!
//! * **Trips.** Every trip record of `P` stamped in `[C − B, L]` (for a single status, `L = C`:
//!   a trip exactly 14 days before is in, 14 days and one second before is out) is joined by
//!   trip id with every trip record of the same trip. Another person `Q` on it is a contact
//!   when `P`'s record is on a bus or the metro (everyone on the trip), or on a train or flight
//!   when both have a row and `|row_P − row_Q| ≤ row_window` (±3 in, ±4 out). A traveller
//!   without a row matches nobody by row ([`events`]).
//! * **Venues.** Every check-in of `P` stamped in `[C − B, L]` at venue `V` is joined by venue
//!   id with every check-in at `V`; another person `Q` is a contact when the two check-ins are
//!   at most `venue_window_min` (30 min) apart (31 min out).
//! * `P` is never its own contact. A contact is reported once per (person `Q`, trip or venue,
//!   local date of `Q`'s trip or check-in in `time.city_tz`), naming the smallest case
//!   pseudonym that makes it (deterministic), with the cell of `Q`'s latest check-in that has
//!   a cell (`None` if none), so the alert reaches that cell's officers.
//!
//! # Why it is correct
//! The ingest releases each case, trip and check-in version over exactly the event-time
//! interval it held ([`crate::upsert`]): a case from its first active status until it is
//! cleared (or `R` after its latest status), a trip or check-in from its time until its
//! retention `R` = lookback + grace ends. Every condition above is evaluated on the records'
//! own timestamps (never on arrival or processing time), inside differential joins keyed by
//! person, trip id and venue id, and a `reduce` per contact person; so the contact collection
//! at each event time is a function of the records present then, identical for any arrival
//! order, cut into rounds or number of workers. Clearing a case retracts its state, and the
//! joins retract every contact it made at that event time (unless another active case makes
//! the same contact). A record leaving the state at the end of its retention likewise retracts
//! the contacts it made: nothing is derived from a deleted record. With the default grace a
//! case reported up to a day late still finds the whole of its lookback.

pub mod config;
pub mod events;
pub mod ingest;
pub mod model;
pub mod rules;

use crate::alerts::AlertKey;
use crate::city::Idx;
use crate::config::Config;
use crate::grid::calendar::Calendar;
use crate::time::Ms;
use differential_dataflow::VecCollection;
use differential_dataflow::input::{Input, InputSession};
use events::{CheckedCheckin, CheckedTrip};
use model::ActiveCase;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::Scope;

/// The input collections of the health dataflow (see [`ingest`]).
pub struct HealthInputs {
    /// Active cases, each version present over the event-time interval it held.
    pub cases: InputSession<Ms, ActiveCase, isize>,
    /// Trips, each present from its time until its retention ends.
    pub trips: InputSession<Ms, CheckedTrip, isize>,
    /// Check-ins, likewise.
    pub checkins: InputSession<Ms, CheckedCheckin, isize>,
    /// The facts of the health models (there are none; the upsert engine needs an input).
    pub facts: InputSession<Ms, (), isize>,
}

impl HealthInputs {
    /// Advances every input to `t`.
    pub fn advance_to(&mut self, t: Ms) {
        self.cases.advance_to(t);
        self.trips.advance_to(t);
        self.checkins.advance_to(t);
        self.facts.advance_to(t);
    }

    /// Flushes buffered updates into the dataflow.
    pub fn flush(&mut self) {
        self.cases.flush();
        self.trips.flush();
        self.checkins.flush();
        self.facts.flush();
    }
}

/// How a contact met a case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// On the same trip (trip id).
    Trip(String),
    /// At the same venue within the venue window (venue id).
    Venue(String),
}

/// A contact of an active case (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// The contact's pseudonym.
    pub person: String,
    /// The pseudonym of a case that makes the contact (the smallest, when several do).
    pub case: String,
    /// The trip or venue they shared.
    pub via: Via,
    /// The local date (`time.city_tz`) of the contact's trip or check-in, `YYYY-MM-DD`.
    pub date: String,
    /// The cell of the contact's latest check-in with a cell.
    pub cell: Option<Idx>,
}

/// One output record of the health dataflow (boxed, as [`crate::grid::GridOut`]'s are).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HealthOut {
    /// A contact (+1 found, −1 no longer: the case cleared or a record's retention ended).
    Contact(Box<Contact>),
}

/// The outputs of the health dataflow.
pub struct HealthOutputs<'s> {
    /// Contacts.
    pub out: VecCollection<'s, Ms, HealthOut>,
    /// Active health alerts (a set).
    pub alerts: VecCollection<'s, Ms, AlertKey>,
}

/// What the per-person `reduce` sees of a person: a contact they are, or a check-in of theirs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    /// A contact: how, the date, and the case.
    Contact(Via, String, String),
    /// A check-in: its time and cell.
    Seen(Ms, Option<Idx>),
}

/// Builds the health dataflow in `scope` (see the module docs for the rule).
pub fn dataflow<'s>(scope: Scope<'s, Ms>, cfg: Arc<Config>) -> (HealthInputs, HealthOutputs<'s>) {
    let (cases_in, cases) = scope.new_collection::<ActiveCase, isize>();
    let (trips_in, trips) = scope.new_collection::<CheckedTrip, isize>();
    let (checkins_in, checkins) = scope.new_collection::<CheckedCheckin, isize>();
    let (facts_in, _facts) = scope.new_collection::<(), isize>();

    let h = &cfg.health;
    let lookback = h.lookback_ms();
    let row_window = h.row_window as i64;
    let venue_window = h.venue_window_ms();
    // The time zone was validated with the config; should it not be valid, Shanghai's is used.
    let calendar =
        Calendar::new(&cfg.time.city_tz, &cfg.grid.calendar).unwrap_or_else(|_| Calendar::shanghai());
    let date = move |ts: Ms| calendar.date(ts).format("%Y-%m-%d").to_string();
    let in_lookback = move |ts: Ms, (since, last): (Ms, Ms)| ts + lookback >= since && ts <= last;

    let active = cases.map(|c| (c.person, (c.since, c.last))).arrange_by_key();

    // The cases' own trips in their lookback, by trip id, joined with everyone on the trip.
    let case_trips = trips
        .clone()
        .map(|t| (t.person, (t.trip, t.carrier, t.row, t.ts)))
        .join_core(active.clone(), move |p, (trip, carrier, row, ts), &w| {
            in_lookback(*ts, w).then(|| (trip.clone(), (p.clone(), *carrier, *row)))
        })
        .distinct();
    let travellers = trips.map(|t| (t.trip, (t.person, t.row, t.ts))).arrange_by_key();
    let trip_date = date.clone();
    let trip_contacts =
        case_trips.join_core(travellers, move |trip, (p, carrier, row_p), (q, row_q, ts_q)| {
            let near = !carrier.by_row()
                || matches!((row_p, row_q), (Some(a), Some(b)) if (*a as i64 - *b as i64).abs() <= row_window);
            (q != p && near).then(|| (q.clone(), Part::Contact(Via::Trip(trip.clone()), trip_date(*ts_q), p.clone())))
        });

    // The cases' own check-ins in their lookback, by venue, joined with every check-in there.
    let case_visits = checkins
        .clone()
        .map(|c| (c.person, (c.venue, c.ts)))
        .join_core(active, move |p, (venue, ts), &w| {
            in_lookback(*ts, w).then(|| (venue.clone(), (p.clone(), *ts)))
        })
        .distinct();
    let visitors = checkins.clone().map(|c| (c.venue, (c.person, c.ts))).arrange_by_key();
    let venue_contacts = case_visits.join_core(visitors, move |venue, (p, ts_p), (q, ts_q)| {
        (q != p && ts_p.abs_diff(*ts_q) <= venue_window)
            .then(|| (q.clone(), Part::Contact(Via::Venue(venue.clone()), date(*ts_q), p.clone())))
    });

    // Per contact person: one contact per (trip or venue, date), with their latest cell.
    let seen = checkins.map(|c| (c.person, Part::Seen(c.ts, c.cell)));
    let contacts = trip_contacts
        .concat(venue_contacts)
        .concat(seen)
        .reduce(|q: &String, input: &[(&Part, isize)], out: &mut Vec<(Contact, isize)>| {
            let cell = input
                .iter()
                .filter_map(|(p, _)| match p {
                    Part::Seen(ts, Some(cell)) => Some((*ts, *cell)),
                    _ => None,
                })
                .max()
                .map(|(_, cell)| cell);
            // Sorted: the first part of each (via, date) names the smallest case.
            let mut last: Option<(&Via, &String)> = None;
            for (part, _) in input {
                if let Part::Contact(via, date, case) = part
                    && last != Some((via, date))
                {
                    last = Some((via, date));
                    out.push((
                        Contact {
                            person: q.clone(),
                            case: case.clone(),
                            via: via.clone(),
                            date: date.clone(),
                            cell,
                        },
                        1,
                    ));
                }
            }
        })
        .map(|(_, c)| c);

    let alerts = rules::alerts(contacts.clone());
    let out = contacts.map(|c| HealthOut::Contact(Box::new(c)));
    (
        HealthInputs { cases: cases_in, trips: trips_in, checkins: checkins_in, facts: facts_in },
        HealthOutputs { out, alerts },
    )
}
