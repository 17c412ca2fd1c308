//! `cargo bench --bench health` — the public-health contact rule at the issue's scale.
//!
//! The workload of the issue: 1,000,000 trip records over 14 days of event time and 10,000
//! cases; then the latency of the contact query after one more case is confirmed, and memory.
//! Seeded and deterministic. The city is the simulator's default (`generate_city`: 36 cells);
//! only the venues' check-ins name cells.
//!
//! * **Travellers**: 200,000 (`trips / 5` by default), each with a valid 18-digit GB 11643
//!   id-card number (`citybrain_sim::id_check_digit`); each trip draws its riders uniformly.
//! * **Trips**, departing 06:00–23:00 local time (Asia/Shanghai), the records split by carrier:
//!   40 % trains (300–800 riders on 8 coaches of 20 rows × 5 seats; `row` 1–20 within the coach
//!   and `seat` such as `"12A"`, boarding 0–10 min before departure), 15 % flights (150–300
//!   passengers, 50 rows × 6 seats, `seat` only, so the row comes from the seat; boarding 0–30
//!   min before), 25 % buses (10–60 riders) and 20 % metro runs (30–200), without rows, boarding
//!   over the first 30 min of the run.
//! * **Check-ins**: 200,000 (`trips / 5`) at 200 venues spread over the cells, 08:00–22:00, each
//!   naming its venue's cell: venue contacts are exercised and contacts have cells.
//! * **Cases**: 10,000, confirmed (4 in 5) or suspected at random times over the last 4 days,
//!   each a traveller who had boarded a trip before.
//!
//! Everything runs through the real city dataflow on one timely worker, as `replay` and the live
//! service drive it (see `benches/dispatch.rs`): JSON payloads are decoded by `event::Decoder`
//! (which pseudonymizes `person` with HMAC-SHA256: part of the cost), offered to the per-worker
//! `ingest::Ingest`, released into `pipeline::Inputs` when the round ends, and the output is
//! collected by `pipeline::deliver`.
//!
//! 1. **Load**: every record in event-time order, in rounds of 60 s of event time
//!    (`CITYBRAIN_BENCH_ROUND_S`); rounds with no record (the nights) are skipped, as a replay's
//!    blocks would skip them. Wall time of the rounds (payloads are formatted before each
//!    round's clock starts), records/s, the contacts found, and one line per day of event time.
//! 2. **Latency**: after the load, one more case is confirmed in a round of its own, a minute of
//!    event time apart: the wall time from handing the case's payload to the decoder until the
//!    output at its event time (its contacts) is delivered. p50 / p99 / max.
//! 3. **Clear**: a few of those cases are cleared, each in a round of its own, timed the same way
//!    (their contacts retract, or are renamed to the next case that makes them).
//! 4. **Memory**: `VmRSS` and `VmHWM` (peak) of the process, before and after the load and at
//!    the end. They include the bench's own generated records (compact, about 85 MB at full size)
//!    and the idle traffic, emergency and grid dataflows of the small default city.
//!
//! **Checks** (the bench panics if they fail): the same rule is recomputed from the generated
//! records with integer ids (an oracle, outside the timed rounds). The number of current
//! contacts after the load must equal the oracle's, and for every later confirmation and clear
//! the delivered changes must be exactly the oracle's: the new contacts and the contacts renamed
//! to this case (a contact names the smallest case pseudonym that makes it), all naming the
//! case's pseudonym; for a clear, the retractions and renames.
//!
//! **Caveats.** A contact is one per (person, trip or venue, date), so a confirmation delivers
//! only the contacts no smaller case already makes: with 10,000 cases among 200,000 travellers
//! (5 %), most riders are already contacts, and the number of contacts a case *has* (the
//! oracle's count, printed) is larger than the changes it delivers. The payloads carry no coach
//! (CONTRACT §2 has `row` and `seat` only), so on a train the rows ±3 of a case match in every
//! coach: about 7/20 of the train. `CITYBRAIN_BENCH_ROWS=train` numbers rows through the train
//! instead (coach 2 row 1 is row 21), for the fan-out a coach-aware rule would have. The latency
//! excludes MQTT and the live service's round tick (up to 250 ms).
//!
//! Sizes: `CITYBRAIN_BENCH_TRIPS` (default 1,000,000), `CITYBRAIN_BENCH_CASES` (10,000),
//! `CITYBRAIN_BENCH_CONFIRMATIONS` (200), `CITYBRAIN_BENCH_CLEARS` (10),
//! `CITYBRAIN_BENCH_TRAVELLERS` (trips / 5), `CITYBRAIN_BENCH_CHECKINS` (trips / 5),
//! `CITYBRAIN_BENCH_ROUND_S` (60), `CITYBRAIN_BENCH_ROWS` (`coach`, or `train`). At full size it
//! takes about 8 minutes and 6.2 GB of peak RSS on 2 cores (the 4 days with cases take 95 % of
//! the load); 200,000 trips with 2,000 cases take about 85 s and 1.2 GB. It prints figures; it
//! never fails on a slow machine.

use citybrain_dataflows::event::Decoder;
use citybrain_dataflows::health::config::DAY;
use citybrain_dataflows::health::{Contact, HealthOut};
use citybrain_dataflows::ingest::Ingest;
use citybrain_dataflows::pipeline::{self, Inputs, Out};
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::time::{MINUTE, SECOND};
use citybrain_dataflows::{CityModel, Config, Ms};
use citybrain_sim::{CityOptions, generate_city, geojson_text, id_check_digit};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// 2026-01-01T00:00:00+08:00: day `d` of the run is the local date 2026-01-01 + `d`.
const T0: Ms = 1_767_196_800_000;
const HOUR: Ms = 60 * MINUTE;
/// Days of event time the trips and check-ins cover.
const DAYS: Ms = 14;
/// The cases of the load are confirmed over the last this many days.
const CASE_DAYS: Ms = 4;
/// The city's UTC offset (Asia/Shanghai has no daylight saving).
const TZ_OFFSET: Ms = 8 * HOUR;
const VENUES: usize = 200;
const SEED: u64 = 0x4EA1_7B3C_0A7C;
/// The decoder's pseudonym key (the oracle computes the same pseudonyms).
const KEY: &[u8] = b"bench";

mod common;
use common::SplitMix as Rng;

/// What this benchmark draws beyond the shared stream.
trait Between {
    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64;
}

impl Between for Rng {
    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

// ---- The synthetic population and its records ----

/// A carrier, with the shape of its trips.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Train,
    Flight,
    Bus,
    Metro,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Train, Kind::Flight, Kind::Bus, Kind::Metro];

    /// The contract's name.
    fn name(self) -> &'static str {
        match self {
            Kind::Train => "train",
            Kind::Flight => "flight",
            Kind::Bus => "bus",
            Kind::Metro => "metro",
        }
    }

    /// Percentage of the trip records.
    fn share(self) -> u64 {
        match self {
            Kind::Train => 40,
            Kind::Flight => 15,
            Kind::Bus => 25,
            Kind::Metro => 20,
        }
    }

    /// Riders per trip, inclusive.
    fn riders(self) -> (u64, u64) {
        match self {
            Kind::Train => (300, 800),
            Kind::Flight => (150, 300),
            Kind::Bus => (10, 60),
            Kind::Metro => (30, 200),
        }
    }

    /// Seats: (rows per coach, seat letters, coaches); none on a bus or the metro.
    fn seats(self) -> Option<(u64, &'static [u8], u64)> {
        match self {
            Kind::Train => Some((20, b"ABCDF", 8)),
            Kind::Flight => Some((50, b"ABCDEF", 1)),
            Kind::Bus | Kind::Metro => None,
        }
    }

    /// Whether the rule matches by row (train, flight) or the whole trip.
    fn by_row(self) -> bool {
        self.seats().is_some()
    }

    /// Boarding relative to the departure: (earliest offset, window), ms.
    fn boarding(self) -> (i64, Ms) {
        match self {
            Kind::Train => (-10 * MINUTE as i64, 10 * MINUTE),
            Kind::Flight => (-30 * MINUTE as i64, 30 * MINUTE),
            Kind::Bus | Kind::Metro => (0, 30 * MINUTE),
        }
    }
}

/// One departure.
struct Trip {
    /// Trip id, e.g. `G1007@2026-01-03`.
    id: String,
    kind: Kind,
    /// Its records (indices into [`World::recs`]).
    riders: Vec<u32>,
}

/// One trip record, compact.
#[derive(Clone, Copy)]
struct TripRec {
    person: u32,
    trip: u32,
    ts: Ms,
    /// The row the rule compares (0: none).
    row: u16,
    /// The seat's row label and letter (trains and flights).
    seat_row: u8,
    letter: u8,
}

/// One venue check-in.
#[derive(Clone, Copy)]
struct Visit {
    person: u32,
    venue: u32,
    ts: Ms,
}

/// A venue, in the cell it names.
struct Venue {
    id: String,
    cell: String,
    /// Its check-ins (indices into [`World::visits`]).
    visits: Vec<u32>,
}

/// A case report of the load.
#[derive(Clone, Copy)]
struct Case {
    person: u32,
    ts: Ms,
    status: &'static str,
}

/// Everything the bench feeds, in compact form; payloads are formatted from it round by round.
struct World {
    /// Id-card numbers, by person.
    ids: Vec<String>,
    trips: Vec<Trip>,
    recs: Vec<TripRec>,
    visits: Vec<Visit>,
    venues: Vec<Venue>,
    cases: Vec<Case>,
    /// Each person's trip records and check-ins.
    person_recs: Vec<Vec<u32>>,
    person_visits: Vec<Vec<u32>>,
}

/// What to generate.
struct Sizes {
    trips: usize,
    travellers: usize,
    checkins: usize,
    cases: usize,
    /// Train rows numbered through the train (`CITYBRAIN_BENCH_ROWS=train`) instead of per coach.
    rows_through: bool,
}

/// A valid GB 11643-1999 number for person `i` (unique for `i` below 16.8 million): area code
/// 330106 (Hangzhou, Xihu), a birth date from `i / 1000`, the sequence `i % 1000`, the check digit.
fn id_card(i: usize) -> String {
    let k = i / 1000;
    let (y, m, d) = (1950 + k % 50, 1 + (k / 50) % 12, 1 + (k / 600) % 28);
    let first = format!("330106{y:04}{m:02}{d:02}{:03}", i % 1000);
    let check = id_check_digit(&first).expect("17 digits");
    format!("{first}{check}")
}

/// The local date of day `d` of the run.
fn date(d: Ms) -> String {
    let day0 = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date");
    (day0 + chrono::Days::new(d)).format("%Y-%m-%d").to_string()
}

/// The day of the run holding `ts` (local dates).
fn day_of(ts: Ms) -> Ms {
    (ts + TZ_OFFSET - (T0 + TZ_OFFSET)) / DAY
}

fn world(rng: &mut Rng, s: &Sizes, cells: &[String]) -> World {
    let ids: Vec<String> = (0..s.travellers).map(id_card).collect();
    let mut trips: Vec<Trip> = Vec::new();
    let mut recs: Vec<TripRec> = Vec::new();
    let mut seats: Vec<u16> = Vec::new();
    let mut riders: HashSet<u32> = HashSet::new();
    let mut left = s.trips as u64;
    for (k, kind) in Kind::ALL.into_iter().enumerate() {
        let total = if k + 1 == Kind::ALL.len() { left } else { s.trips as u64 * kind.share() / 100 };
        left -= total;
        for day in 0..DAYS {
            let mut quota = total / DAYS + u64::from(day < total % DAYS);
            let mut n = 0;
            while quota > 0 {
                let (lo, hi) = kind.riders();
                let size =
                    s.travellers.min(hi as usize).min(quota as usize).min(rng.between(lo, hi) as usize);
                quota -= size as u64;
                let dep = T0 + day * DAY + 6 * HOUR + rng.below(17 * HOUR);
                let id = match kind {
                    Kind::Train => format!("G{}@{}", 1000 + n, date(day)),
                    Kind::Flight => format!("MU{}@{}", 5000 + n, date(day)),
                    Kind::Bus => format!("B{}-{n:04}@{}", 10 + n % 90, date(day)),
                    Kind::Metro => format!("M{}-{n:04}@{}", 1 + n % 9, date(day)),
                };
                n += 1;
                let trip = trips.len() as u32;
                // Distinct riders, and distinct seats (a partial shuffle of the seat numbers).
                riders.clear();
                if let Some((rows, letters, coaches)) = kind.seats() {
                    seats.clear();
                    seats.extend(0..(rows * letters.len() as u64 * coaches) as u16);
                }
                let mut list = Vec::with_capacity(size);
                for i in 0..size {
                    let person = loop {
                        let p = rng.below(s.travellers as u64) as u32;
                        if riders.insert(p) {
                            break p;
                        }
                    };
                    let (first, window) = kind.boarding();
                    let ts = dep.saturating_add_signed(first) + rng.below(window);
                    let (mut row, mut seat_row, mut letter) = (0, 0, 0);
                    if let Some((rows, letters, _)) = kind.seats() {
                        let j = i + rng.below((seats.len() - i) as u64) as usize;
                        seats.swap(i, j);
                        let seat = seats[i] as u64;
                        let per_coach = rows * letters.len() as u64;
                        let (coach, in_coach) = (seat / per_coach, seat % per_coach);
                        seat_row = (in_coach / letters.len() as u64 + 1) as u8;
                        letter = letters[(in_coach % letters.len() as u64) as usize];
                        row = if s.rows_through {
                            (coach * rows) as u16 + seat_row as u16
                        } else {
                            seat_row as u16
                        };
                    }
                    list.push(recs.len() as u32);
                    recs.push(TripRec { person, trip, ts, row, seat_row, letter });
                }
                trips.push(Trip { id, kind, riders: list });
            }
        }
    }

    let mut venues: Vec<Venue> = (0..VENUES)
        .map(|v| {
            let cell = cells[v % cells.len()].clone();
            Venue { id: format!("venue-{cell}-{}", v / cells.len() + 1), cell, visits: Vec::new() }
        })
        .collect();
    let mut visits: Vec<Visit> = (0..s.checkins)
        .map(|_| Visit {
            person: rng.below(s.travellers as u64) as u32,
            venue: rng.below(VENUES as u64) as u32,
            ts: T0 + rng.below(DAYS) * DAY + 8 * HOUR + rng.below(14 * HOUR),
        })
        .collect();
    visits.sort_by_key(|v| v.ts);
    for (i, v) in visits.iter().enumerate() {
        venues[v.venue as usize].visits.push(i as u32);
    }

    let mut person_recs = vec![Vec::new(); s.travellers];
    for (i, r) in recs.iter().enumerate() {
        person_recs[r.person as usize].push(i as u32);
    }
    let mut person_visits = vec![Vec::new(); s.travellers];
    for (i, v) in visits.iter().enumerate() {
        person_visits[v.person as usize].push(i as u32);
    }

    let mut w = World { ids, trips, recs, visits, venues, cases: Vec::new(), person_recs, person_visits };
    let mut times: Vec<Ms> =
        (0..s.cases).map(|_| T0 + (DAYS - CASE_DAYS) * DAY + rng.below(CASE_DAYS * DAY)).collect();
    times.sort_unstable();
    let mut taken = HashSet::new();
    for ts in times {
        let person = w.pick(rng, &mut taken, ts);
        let status = if rng.below(5) == 0 { "suspected" } else { "confirmed" };
        w.cases.push(Case { person, ts, status });
    }
    w
}

/// A message: topic and payload.
type Msg = (String, String);

impl World {
    /// A traveller not in `taken` who boarded a trip before `ts` (then in `taken`).
    fn pick(&self, rng: &mut Rng, taken: &mut HashSet<u32>, ts: Ms) -> u32 {
        for _ in 0..1_000_000 {
            let p = rng.below(self.ids.len() as u64) as u32;
            let boarded = self.person_recs[p as usize].iter().any(|&r| self.recs[r as usize].ts < ts);
            if boarded && taken.insert(p) {
                return p;
            }
        }
        panic!("no traveller left to be a case: more travellers, or fewer cases");
    }

    fn trip_msg(&self, r: u32) -> Msg {
        let rec = &self.recs[r as usize];
        let trip = &self.trips[rec.trip as usize];
        let mut p = format!(
            r#"{{"person":"{}","ts":{},"carrier":"{}","trip":"{}""#,
            self.ids[rec.person as usize],
            rec.ts,
            trip.kind.name(),
            trip.id
        );
        let letter = rec.letter as char;
        match trip.kind {
            Kind::Train => write!(p, r#","row":{},"seat":"{}{letter}""#, rec.row, rec.seat_row),
            Kind::Flight => write!(p, r#","seat":"{}{letter}""#, rec.seat_row),
            Kind::Bus | Kind::Metro => Ok(()),
        }
        .expect("writing to a String");
        p.push('}');
        (format!("city/health/trip/t{r:07}"), p)
    }

    fn visit_msg(&self, i: u32) -> Msg {
        let v = &self.visits[i as usize];
        let venue = &self.venues[v.venue as usize];
        (
            format!("city/health/checkin/{}", venue.id),
            format!(
                r#"{{"person":"{}","ts":{},"venue":"{}","cell":"{}"}}"#,
                self.ids[v.person as usize], v.ts, venue.id, venue.cell
            ),
        )
    }

    fn case_msg(&self, n: usize, person: u32, ts: Ms, status: &str) -> Msg {
        (
            format!("city/health/case/hc{n:06}"),
            format!(r#"{{"person":"{}","ts":{ts},"status":"{status}"}}"#, self.ids[person as usize]),
        )
    }
}

// ---- The oracle: the rule recomputed with integer ids ----

/// A contact as the oracle keys it: the contact's person (bits 32..64), the trip or venue (bits
/// 8..32; venues from [`VENUE_BIT`]) and the day of the run of the contact's record (bits 0..8).
type Key = u64;
const VENUE_BIT: u64 = 1 << 23;

fn key(q: u32, via: u64, day: Ms) -> Key {
    (u64::from(q) << 32) | (via << 8) | day
}

/// The rule of `dataflows/src/health/mod.rs`, recomputed from the generated records: the active
/// cases and, for each current contact, the case naming it (the smallest pseudonym).
struct Oracle<'w> {
    w: &'w World,
    lookback: Ms,
    row_window: u16,
    venue_window: Ms,
    /// Active cases: person → time (one status each, so since = last).
    active: HashMap<u32, Ms>,
    /// Current contacts and the case that names each.
    named: HashMap<Key, u32>,
    pz: Pseudonymizer,
    pseudonyms: HashMap<u32, String>,
}

/// What a confirmation or a clear changes, by the oracle: contacts the case has, contacts
/// inserted, retracted, and renamed (another case now names them).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Change {
    has: usize,
    inserted: usize,
    retracted: usize,
    renamed: usize,
}

impl<'w> Oracle<'w> {
    fn new(w: &'w World, cfg: &Config) -> Self {
        Oracle {
            w,
            lookback: cfg.health.lookback_ms(),
            row_window: cfg.health.row_window as u16,
            venue_window: cfg.health.venue_window_ms(),
            active: HashMap::new(),
            named: HashMap::new(),
            pz: Pseudonymizer::new(KEY.to_vec()),
            pseudonyms: HashMap::new(),
        }
    }

    fn pseudonym(&mut self, p: u32) -> &str {
        let (pz, ids) = (&self.pz, &self.w.ids);
        self.pseudonyms.entry(p).or_insert_with(|| pz.pseudonym(&ids[p as usize]))
    }

    fn in_lookback(&self, ts: Ms, c: Ms) -> bool {
        ts + self.lookback >= c && ts <= c
    }

    fn near(&self, kind: Kind, a: u16, b: u16) -> bool {
        !kind.by_row() || (a > 0 && b > 0 && a.abs_diff(b) <= self.row_window)
    }

    /// The contacts case `p` (at `c`) makes, sorted and distinct.
    fn contacts_of(&self, p: u32, c: Ms) -> Vec<Key> {
        let w = self.w;
        let mut out = Vec::new();
        for &r in &w.person_recs[p as usize] {
            let rp = w.recs[r as usize];
            if !self.in_lookback(rp.ts, c) {
                continue;
            }
            let trip = &w.trips[rp.trip as usize];
            for &o in &trip.riders {
                let rq = w.recs[o as usize];
                if rq.person != p && self.near(trip.kind, rp.row, rq.row) {
                    out.push(key(rq.person, u64::from(rp.trip), day_of(rq.ts)));
                }
            }
        }
        for &i in &w.person_visits[p as usize] {
            let vp = w.visits[i as usize];
            if !self.in_lookback(vp.ts, c) {
                continue;
            }
            for &o in &w.venues[vp.venue as usize].visits {
                let vq = w.visits[o as usize];
                if vq.person != p && vq.ts.abs_diff(vp.ts) <= self.venue_window {
                    out.push(key(vq.person, VENUE_BIT | u64::from(vp.venue), day_of(vq.ts)));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether active case `p` (at `c`) makes contact `k`.
    fn makes(&self, p: u32, c: Ms, k: Key) -> bool {
        let w = self.w;
        let (q, via, day) = ((k >> 32) as u32, (k >> 8) & 0xFF_FFFF, k & 0xFF);
        if p == q {
            return false;
        }
        if via & VENUE_BIT == 0 {
            let on = |x: u32| {
                w.person_recs[x as usize].iter().map(|&r| w.recs[r as usize]).find(|r| r.trip as u64 == via)
            };
            let (Some(rp), Some(rq)) = (on(p), on(q)) else { return false };
            self.in_lookback(rp.ts, c)
                && day_of(rq.ts) == day
                && self.near(w.trips[via as usize].kind, rp.row, rq.row)
        } else {
            let at = |x: u32| {
                w.person_visits[x as usize]
                    .iter()
                    .map(|&i| w.visits[i as usize])
                    .filter(move |v| v.venue as u64 == via & !VENUE_BIT)
            };
            at(p)
                .filter(|vp| self.in_lookback(vp.ts, c))
                .any(|vp| at(q).any(|vq| day_of(vq.ts) == day && vq.ts.abs_diff(vp.ts) <= self.venue_window))
        }
    }

    /// Case `p` becomes active at `c`.
    fn confirm(&mut self, p: u32, c: Ms) -> Change {
        self.active.insert(p, c);
        let mine = self.pseudonym(p).to_string();
        let keys = self.contacts_of(p, c);
        let mut ch = Change { has: keys.len(), ..Change::default() };
        for k in keys {
            match self.named.get(&k).copied() {
                None => {
                    self.named.insert(k, p);
                    ch.inserted += 1;
                }
                Some(old) if mine.as_str() < self.pseudonym(old) => {
                    self.named.insert(k, p);
                    ch.renamed += 1;
                }
                Some(_) => {}
            }
        }
        ch
    }

    /// Case `p` is cleared.
    fn clear(&mut self, p: u32) -> Change {
        let c = self.active.remove(&p).expect("an active case");
        let keys = self.contacts_of(p, c);
        let mut ch = Change { has: keys.len(), ..Change::default() };
        for k in keys {
            if self.named.get(&k) != Some(&p) {
                continue;
            }
            // The next case that makes it: the trip's riders or the venue's visitors.
            let w = self.w;
            let via = (k >> 8) & 0xFF_FFFF;
            let candidates: Vec<u32> = if via & VENUE_BIT == 0 {
                w.trips[via as usize].riders.iter().map(|&r| w.recs[r as usize].person).collect()
            } else {
                w.venues[(via & !VENUE_BIT) as usize]
                    .visits
                    .iter()
                    .map(|&i| w.visits[i as usize].person)
                    .collect()
            };
            let mut best: Option<(String, u32)> = None;
            for x in candidates {
                let Some(&cx) = self.active.get(&x) else { continue };
                if self.makes(x, cx, k) {
                    let px = self.pseudonym(x).to_string();
                    if best.as_ref().is_none_or(|(pb, _)| px < *pb) {
                        best = Some((px, x));
                    }
                }
            }
            match best {
                Some((_, b)) => {
                    self.named.insert(k, b);
                    ch.renamed += 1;
                }
                None => {
                    self.named.remove(&k);
                    ch.retracted += 1;
                }
            }
        }
        ch
    }
}

// ---- Driving the dataflow ----

/// One delivered batch (or progress marker: `marker`) and when it came.
#[derive(Clone, Copy)]
struct Delivered {
    t: Ms,
    at: Instant,
    /// The net change in the number of contacts (Σ of the contact records' differences).
    contacts: isize,
    marker: bool,
}

/// The contact records delivered while kept (`Some`): event time, contact, difference.
type Kept = Rc<RefCell<Option<Vec<(Ms, Contact, isize)>>>>;

/// The city dataflow on one worker, with its ingest, fed round by round as the runtime does.
struct Driver {
    inputs: Inputs,
    probe: ProbeHandle<Ms>,
    ingest: Ingest,
    decoder: Decoder,
    log: Rc<RefCell<Vec<Delivered>>>,
    /// When set, the contact records delivered are kept here (for the checks).
    kept: Kept,
}

impl Driver {
    fn new(worker: &mut Worker, city: Arc<CityModel>, cfg: Arc<Config>) -> Driver {
        let log = Rc::new(RefCell::new(Vec::new()));
        let kept: Kept = Rc::new(RefCell::new(None));
        let (sink, keep) = (log.clone(), kept.clone());
        let (inputs, probe) = worker.dataflow::<Ms, _, _>(|scope| {
            let (inputs, out) = pipeline::build(scope, city.clone(), cfg.clone());
            let (probe, out) = out.probe();
            pipeline::deliver(out, move |t, records: Vec<(Out, isize)>| {
                let at = Instant::now();
                let marker = records.is_empty();
                let mut contacts = 0;
                let mut keep = keep.borrow_mut();
                for (o, r) in records {
                    if let Out::Health(HealthOut::Contact(c)) = o {
                        contacts += r;
                        if let Some(k) = keep.as_mut() {
                            k.push((t, *c, r));
                        }
                    }
                }
                sink.borrow_mut().push(Delivered { t, at, contacts, marker });
            });
            (inputs, probe)
        });
        let ingest = Ingest::new(city, &cfg);
        let decoder = Decoder::new("city/", Pseudonymizer::new(KEY.to_vec()));
        Driver { inputs, probe, ingest, decoder, log, kept }
    }

    /// One round: decode and offer `msgs`, end the round at watermark `upto`, step until every
    /// time before `upto` is complete and delivered. Returns the time spent decoding and offering.
    fn round(&mut self, worker: &mut Worker, msgs: &[Msg], upto: Ms) -> Duration {
        let Driver { inputs, probe, ingest, decoder, log, .. } = self;
        let start = Instant::now();
        log.borrow_mut().clear();
        for (topic, payload) in msgs {
            decoder.decode(topic, payload.as_bytes(), |ev| {
                let ev = ev.unwrap_or_else(|e| panic!("{topic}: {e}"));
                ingest.offer(&ev).unwrap_or_else(|e| panic!("{topic}: {e}"));
            });
        }
        let decoded = start.elapsed();
        ingest.flush(inputs, upto, Ms::MAX, upto);
        inputs.advance_to(upto);
        inputs.flush();
        worker.step_or_park_while(None, || {
            probe.less_than(&upto) || !log.borrow().iter().any(|d| d.marker && d.t >= upto)
        });
        decoded
    }

    /// The net change in the number of contacts delivered by the last round.
    fn contacts_delivered(&self) -> isize {
        self.log.borrow().iter().map(|d| d.contacts).sum()
    }

    /// A round of one message whose change happens at event time `event`: the wall time from
    /// handing it to the decoder until the output at `event` was delivered, and the contact
    /// records delivered at `event`, consolidated.
    fn measure(&mut self, worker: &mut Worker, msg: &Msg, event: Ms) -> (Duration, Vec<(Contact, isize)>) {
        *self.kept.borrow_mut() = Some(Vec::new());
        let start = Instant::now();
        self.round(worker, std::slice::from_ref(msg), event + 1);
        let log = self.log.borrow();
        let first = log.iter().find(|d| d.t >= event).expect("the round's output was delivered");
        let latency = first.at.saturating_duration_since(start);
        let kept = self.kept.borrow_mut().take().unwrap_or_default();
        let mut at: Vec<(Contact, isize)> =
            kept.into_iter().filter(|x| x.0 == event).map(|x| (x.1, x.2)).collect();
        differential_dataflow::consolidation::consolidate(&mut at);
        (latency, at)
    }
}

// ---- Figures ----

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `p50 … p99 … max …` of some durations.
fn spread(samples: &[Duration]) -> String {
    let mut l = samples.to_vec();
    l.sort_unstable();
    if l.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pct(&l, 0.5)),
        ms(pct(&l, 0.99)),
        ms(*l.last().expect("not empty"))
    )
}

/// `VmRSS` and `VmHWM` (peak) of this process, MB (0 where `/proc` has no such line).
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (mb("VmRSS:"), mb("VmHWM:"))
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// Checks the contact records delivered for a confirmation (or a clear: `cleared`) of `case`
/// against the oracle's `want`.
fn check(what: &str, delivered: &[(Contact, isize)], case: &str, want: Change, cleared: bool) {
    let plus: Vec<&Contact> = delivered.iter().filter(|(_, r)| *r > 0).map(|(c, _)| c).collect();
    let minus = delivered.iter().filter(|(_, r)| *r < 0).count();
    assert!(delivered.iter().all(|(_, r)| r.abs() == 1), "{what}: a contact delivered twice");
    assert_eq!(
        (plus.len(), minus),
        (want.inserted + want.renamed, want.retracted + want.renamed),
        "{what}: contacts inserted and retracted, against the oracle's {want:?}"
    );
    if cleared {
        assert!(plus.iter().all(|c| c.case != case), "{what}: a contact still names the cleared case");
    } else {
        assert!(plus.iter().all(|c| c.case == case), "{what}: a new contact names another case");
    }
}

fn main() {
    let trips = env("CITYBRAIN_BENCH_TRIPS", 1_000_000);
    let sizes = Sizes {
        trips,
        travellers: env("CITYBRAIN_BENCH_TRAVELLERS", (trips / 5).max(1_000)),
        checkins: env("CITYBRAIN_BENCH_CHECKINS", trips / 5),
        cases: env("CITYBRAIN_BENCH_CASES", 10_000),
        rows_through: std::env::var("CITYBRAIN_BENCH_ROWS").is_ok_and(|v| v == "train"),
    };
    let confirmations = env("CITYBRAIN_BENCH_CONFIRMATIONS", 200);
    let clears = env("CITYBRAIN_BENCH_CLEARS", 10).min(confirmations);
    let round = env("CITYBRAIN_BENCH_ROUND_S", 60).max(1) as Ms * SECOND;
    let started = Instant::now();
    let city = generate_city(&CityOptions::default()).expect("the default city");
    let model = Arc::new(CityModel::from_geojson_str(&geojson_text(&city)).expect("the default city loads"));
    let cells: Vec<String> = model.cells.iter().map(|c| c.id.clone()).collect();
    let cfg = Arc::new(Config::default());
    let mut rng = Rng(SEED);
    let w = world(&mut rng, &sizes, &cells);
    let per_kind = |k: Kind| w.trips.iter().filter(|t| t.kind == k).count();
    println!("public-health contact benchmark (one timely worker, release build)");
    println!(
        "  {} trip records over {DAYS} days on {} trips ({} trains, {} flights, {} buses, {} metro runs; train rows {}), {} travellers, {} check-ins at {VENUES} venues in {} cells, {} cases over the last {CASE_DAYS} days (generated in {:.1} s)",
        w.recs.len(),
        w.trips.len(),
        per_kind(Kind::Train),
        per_kind(Kind::Flight),
        per_kind(Kind::Bus),
        per_kind(Kind::Metro),
        if sizes.rows_through {
            "numbered through the train"
        } else {
            "1-20 in each coach, no coach in the payload"
        },
        w.ids.len(),
        w.visits.len(),
        cells.len(),
        w.cases.len(),
        started.elapsed().as_secs_f64()
    );
    let pz = Pseudonymizer::new(KEY.to_vec());
    let t = Instant::now();
    let n = 100_000;
    let sum: usize = (0..n).map(|i| pz.pseudonym(&w.ids[i % w.ids.len()]).len()).sum();
    assert_eq!(sum, 64 * n);
    println!(
        "  one pseudonym (HMAC-SHA256 of the id) takes {:.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    // The load's records in event-time order: (ts, kind, index), kind 0 trip, 1 check-in, 2 case.
    let mut feed: Vec<(Ms, u8, u32)> = Vec::with_capacity(w.recs.len() + w.visits.len() + w.cases.len());
    feed.extend(w.recs.iter().enumerate().map(|(i, r)| (r.ts, 0, i as u32)));
    feed.extend(w.visits.iter().enumerate().map(|(i, v)| (v.ts, 1, i as u32)));
    feed.extend(w.cases.iter().enumerate().map(|(i, c)| (c.ts, 2, i as u32)));
    feed.sort_unstable();
    let end = T0 + DAYS * DAY;
    assert!(feed.last().is_none_or(|f| f.0 < end));

    timely::execute_directly(move |worker| {
        let w = &w;
        let mut d = Driver::new(worker, model, cfg.clone());
        let (rss0, _) = memory();
        println!("  RSS before the load (city, idle dataflow, generated records): {rss0:.0} MB");

        // ---- 1. Load ----
        println!(
            "\n1. load: every record through decode + ingest + dataflow, rounds of {} s of event time",
            round / SECOND
        );
        let (mut wall, mut decoding) = (Duration::ZERO, Duration::ZERO);
        let mut per_round = Vec::new();
        let mut contacts: isize = 0;
        let mut day_wall = Duration::ZERO;
        let mut fed = 0;
        let mut day = 0;
        let mut i = 0;
        while i < feed.len() {
            let upto = (feed[i].0 / round + 1) * round;
            let mut msgs = Vec::new();
            while i < feed.len() && feed[i].0 < upto {
                let (_, kind, n) = feed[i];
                msgs.push(match kind {
                    0 => w.trip_msg(n),
                    1 => w.visit_msg(n),
                    _ => {
                        let c = w.cases[n as usize];
                        w.case_msg(n as usize, c.person, c.ts, c.status)
                    }
                });
                i += 1;
            }
            let t = Instant::now();
            decoding += d.round(worker, &msgs, upto);
            let took = t.elapsed();
            wall += took;
            day_wall += took;
            per_round.push(took);
            fed += msgs.len();
            contacts += d.contacts_delivered();
            let next_day = if i < feed.len() { day_of(feed[i].0) } else { DAYS };
            if next_day != day {
                let (rss, _) = memory();
                println!(
                    "  day {:>2} ({}): {fed:>9} records fed, {contacts:>9} contacts, {:>6.1} s of rounds, RSS {rss:>6.0} MB",
                    day + 1,
                    date(day),
                    day_wall.as_secs_f64()
                );
                day = next_day;
                day_wall = Duration::ZERO;
            }
        }
        let (rss_load, peak_load) = memory();
        println!(
            "  {fed} records (trips, check-ins, cases) in {:.1} s of rounds = {:.0} records/s (decode + pseudonymize + offer: {:.1} s; ingest flush + dataflow: {:.1} s); {} rounds: {}",
            wall.as_secs_f64(),
            fed as f64 / wall.as_secs_f64(),
            decoding.as_secs_f64(),
            (wall - decoding).as_secs_f64(),
            per_round.len(),
            spread(&per_round)
        );
        println!(
            "  contacts found: {contacts} current contacts (one per person, trip or venue, date) after the load; ingest holds {} health records",
            d.ingest.health.len()
        );
        println!("  memory after the load: RSS {rss_load:.0} MB, peak RSS {peak_load:.0} MB");

        // The oracle agrees.
        let t = Instant::now();
        let mut oracle = Oracle::new(w, &cfg);
        for c in &w.cases {
            oracle.confirm(c.person, c.ts);
        }
        assert!(contacts > 0, "the load found no contacts");
        assert_eq!(
            contacts,
            oracle.named.len() as isize,
            "current contacts after the load, against the oracle"
        );
        let via_venue = oracle.named.keys().filter(|k| (*k >> 8) & VENUE_BIT != 0).count();
        println!(
            "  checked: the oracle (the rule recomputed from the generated records, {:.1} s) finds the same {} contacts ({} by trip, {via_venue} by venue)",
            t.elapsed().as_secs_f64(),
            oracle.named.len(),
            oracle.named.len() - via_venue
        );

        // ---- 2. Confirmations ----
        let mut taken: HashSet<u32> = w.cases.iter().map(|c| c.person).collect();
        let mut rng = Rng(SEED ^ 0x00C0_FFEE);
        let mut latencies = Vec::new();
        let (mut has, mut changed) = (0, 0);
        let mut confirmed = Vec::new();
        let mut e = end;
        for n in 0..confirmations {
            e += MINUTE;
            let p = w.pick(&mut rng, &mut taken, e);
            let msg = w.case_msg(w.cases.len() + n, p, e, "confirmed");
            let (latency, delivered) = d.measure(worker, &msg, e);
            let want = oracle.confirm(p, e);
            check(&format!("confirmation {n}"), &delivered, oracle.pseudonym(p), want, false);
            latencies.push(latency);
            has += want.has;
            changed += delivered.len();
            confirmed.push(p);
        }
        if confirmations > 0 {
            let k = confirmations as f64;
            println!(
                "\n2. a case is confirmed ({confirmations} cases, each in a round of its own, a minute apart): {}",
                spread(&latencies)
            );
            println!(
                "  contacts per case: {:.0} (the oracle's count: persons × trip or venue × date the case makes); contact records delivered per case: {:.0} (new contacts, and renames to this case where its pseudonym is the smallest); all checked against the oracle",
                has as f64 / k,
                changed as f64 / k
            );
        }

        // ---- 3. Clears ----
        let mut latencies = Vec::new();
        let mut changed = 0;
        for (n, &p) in confirmed.iter().take(clears).enumerate() {
            e += MINUTE;
            let msg = w.case_msg(w.cases.len() + confirmations + n, p, e, "cleared");
            let (latency, delivered) = d.measure(worker, &msg, e);
            let pseudonym = oracle.pseudonym(p).to_string();
            let want = oracle.clear(p);
            check(&format!("clear {n}"), &delivered, &pseudonym, want, true);
            latencies.push(latency);
            changed += delivered.len();
        }
        if clears > 0 {
            println!(
                "\n3. a case is cleared ({clears} of them, each in a round of its own): {}; {:.0} contact records delivered per clear (retractions and renames), checked against the oracle",
                spread(&latencies),
                changed as f64 / clears as f64
            );
        }

        let (rss, peak) = memory();
        println!(
            "\n4. memory: RSS {rss0:.0} MB before the load, {rss_load:.0} MB after it, {rss:.0} MB at the end; peak RSS {peak_load:.0} MB during the load, {peak:.0} MB in all (the oracle's maps included)"
        );
    });
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}
