//! The public-health scenario: a population of travellers with their trips
//! (`city/health/trip/{id}`), their venue check-ins (`city/health/checkin/{venue}`) and, at the
//! minutes asked for, a confirmed case (`city/health/case/{id}`, CONTRACT §2), simulated alongside
//! the detectors of [`crate::feed`] and merged into the run by [`Scenario`](crate::Scenario).
//!
//! # Travellers
//! [`HealthOptions::travellers`] people (default [`DEFAULT_TRAVELLERS`]), each with a valid
//! 18-digit resident id-card number (GB 11643-1999): a 6-digit area code of Hangzhou (one of
//! [`AREA_CODES`]), a birth date `YYYYMMDD` from 1950 to 2005, a 3-digit sequence and the check
//! digit of [`id_check_digit`]. No two travellers share a number. These numbers are the clear
//! personal ids the processor must pseudonymize at ingestion: they appear in `person` only,
//! never in a topic.
//!
//! # Trips
//! Departures at fixed headways from a random phase, each boarded by travellers drawn at random:
//! * a high-speed train (`G1001`…`G1008` in turn) every 20 min, 30–80 travellers, each with a
//!   `row` 1–20 and a seat such as `"12A"` (letters A, B, C, D, F);
//! * a metro train (`M1`…`M5`) every 5 min, 10–30 travellers, no row or seat;
//! * a bus (`B10`…`B19`) every 10 min, 5–15 travellers, no row or seat.
//!
//! The trip id is the service and its local date (`G1003@2026-03-02`; a metro or bus run also
//! carries its departure time, `M2-0735@2026-03-02`), the trip record is stamped with the
//! traveller's boarding, 0–10 min before the departure (never before the run). The topic id is
//! the record's number in the run (`trip-000042`), not the person.
//!
//! # Check-ins
//! Every cell of the city has two venues, `venue-{cell}-1` and `venue-{cell}-2`. Each traveller
//! checks in at a random venue about once every 4 hours (a Poisson process for the population
//! at [`CHECKINS_PER_HOUR`] per traveller); the record names the venue's cell.
//!
//! # Cases
//! At each minute of [`HealthOptions::confirmed_cases`] (counted from the start of the run), one
//! traveller who boarded a trip earlier in the run (chosen at random; none yet: the case is not
//! reported) is `confirmed`; with [`HealthOptions::clear_after_min`] the same person is
//! `cleared` that many minutes later (if still within the run). The topic id names the case by
//! its minute and number (`hc-m0090-1`), never the person.
//!
//! # Delivery and determinism
//! Every record arrives after a random delivery delay in [0, 2 s), as detector readings do;
//! [`HealthSim::advance`] returns the lines in arrival order. The scenario's random streams are
//! its own (the population, the departures of each service, the check-ins, the cases), separate
//! from the traffic, emergency and grid streams, so the same seed and options always give the
//! same bytes and turning the scenario on or off changes nothing else.

use crate::agenda::Agenda;
use crate::emergency::{local_date, stream};
use crate::feed::FeedOptions;
use anyhow::{Context, Result, ensure};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::event::{Carrier, Checkin, HealthCase, HealthStatus, TripRecord};
use citybrain_dataflows::time::{MINUTE, Ms, SECOND, Ts};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Default number of travellers.
pub const DEFAULT_TRAVELLERS: u32 = 2_000;
/// Check-ins per traveller per hour.
pub const CHECKINS_PER_HOUR: f64 = 0.25;
/// Area codes (the first six digits of an id-card number) of Hangzhou's districts.
pub const AREA_CODES: [&str; 10] =
    ["330102", "330105", "330106", "330108", "330109", "330110", "330111", "330112", "330113", "330114"];

/// Largest delivery delay (exclusive), as for detector readings.
const MAX_DELAY_MS: Ms = 2 * SECOND;
/// Latest boarding before a departure.
const BOARDING_MS: Ms = 10 * MINUTE;
/// Seat letters of a train row.
const SEAT_LETTERS: [char; 5] = ['A', 'B', 'C', 'D', 'F'];
/// Random streams of the seed; traffic, emergencies and the grid use `0..` to `11 << 32`.
const POPULATION_STREAM: u64 = 12 << 32;
const SERVICE_STREAMS: u64 = 13 << 32;
const CHECKIN_STREAM: u64 = 14 << 32;
const CASE_STREAM: u64 = 15 << 32;

/// Weights of the first 17 digits of an id-card number (GB 11643-1999).
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// The check digit by the weighted sum modulo 11.
const ID_CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// The check digit (GB 11643-1999) of the first 17 digits of an 18-digit id-card number: the
/// digits weighted by 7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2, summed, and the sum
/// modulo 11 mapped through `1 0 X 9 8 7 6 5 4 3 2`. `None` unless `first17` is 17 ASCII digits.
pub fn id_check_digit(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b.iter().zip(ID_WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    Some(ID_CHECK[(sum % 11) as usize])
}

/// Whether `id` is an 18-character id-card number whose last character is the check digit of
/// the first 17 (an upper-case `X` for 10).
pub fn is_valid_id_card(id: &str) -> bool {
    id.len() == 18 && id.is_char_boundary(17) && id_check_digit(&id[..17]) == id[17..].chars().next()
}

/// What the health scenario simulates (the seed, start, length and topic prefix are those of the
/// run's [`FeedOptions`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthOptions {
    /// Number of travellers (1–1 000 000).
    pub travellers: u32,
    /// Minutes (from the start of the run) at which a traveller is confirmed, one case each.
    pub confirmed_cases: Vec<u32>,
    /// Minutes after its confirmation at which a case is cleared (none: never in the run).
    pub clear_after_min: Option<u32>,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions { travellers: DEFAULT_TRAVELLERS, confirmed_cases: Vec::new(), clear_after_min: None }
    }
}

impl HealthOptions {
    /// Checks the ranges (what needs the run is checked by [`HealthSim::new`]).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (1..=1_000_000).contains(&self.travellers),
            "travellers must be 1..1000000, not {}",
            self.travellers
        );
        if let Some(m) = self.clear_after_min {
            ensure!((1..=20_160).contains(&m), "clear after must be 1..20160 minutes, not {m}");
        }
        Ok(())
    }
}

/// A public-transport service.
#[derive(Clone, Copy, Debug)]
struct Service {
    carrier: Carrier,
    headway: Ms,
    riders: (u32, u32),
}

const SERVICES: [Service; 3] = [
    Service { carrier: Carrier::Train, headway: 20 * MINUTE, riders: (30, 80) },
    Service { carrier: Carrier::Metro, headway: 5 * MINUTE, riders: (10, 30) },
    Service { carrier: Carrier::Bus, headway: 10 * MINUTE, riders: (5, 15) },
];

/// What happens at a scheduled time.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// The `n`-th departure of service `s`.
    Departure(usize, u64),
    /// A check-in by someone.
    Checkin,
    /// The `k`-th confirmed case (of the options), at its minute.
    Case(usize),
}

/// A recording line.
#[derive(Serialize)]
struct Message<'a, P> {
    topic: &'a str,
    payload: &'a P,
}

/// The health simulator over one run: travellers, their trips and check-ins, and the cases
/// (see the module docs), advanced interval by interval by [`Scenario`](crate::Scenario).
pub struct HealthSim {
    opts: HealthOptions,
    start: Ms,
    end: Ms,
    interval: Ms,
    topic_prefix: String,
    /// Every traveller's id-card number.
    people: Vec<String>,
    /// Venues: (id, cell id).
    venues: Vec<(String, String)>,
    /// Each service's stream.
    services: Vec<ChaCha8Rng>,
    checkins_rng: ChaCha8Rng,
    cases_rng: ChaCha8Rng,
    /// Travellers who boarded a trip, with their earliest boarding.
    travelled: Vec<Option<Ms>>,
    trips: u64,
    checkins: u64,
    cases: u64,
    agenda: Agenda<Action>,
}

impl HealthSim {
    /// Prepares the scenario over the run of `feed` (seed, start, length, interval, topic prefix)
    /// in `city`, checking the options first: every confirmed case must fall within the run.
    pub fn new(city: &CityModel, feed: &FeedOptions, opts: &HealthOptions) -> Result<Self> {
        opts.validate()?;
        ensure!((2..=3600).contains(&feed.interval_s), "interval must be 2..3600 s, not {}", feed.interval_s);
        for &m in &opts.confirmed_cases {
            ensure!(
                m < feed.duration_min,
                "confirmed case at minute {m}: after the end of the {}-minute run",
                feed.duration_min
            );
        }
        let interval = feed.interval_s as Ms * SECOND;
        let start = feed.start_ms - feed.start_ms % interval;
        let end = start + feed.duration_min as Ms * MINUTE / interval * interval;
        let mut population = stream(feed.seed, POPULATION_STREAM);
        let mut seen = BTreeSet::new();
        let mut people = Vec::with_capacity(opts.travellers as usize);
        while people.len() < opts.travellers as usize {
            let id = random_id(&mut population);
            if seen.insert(id.clone()) {
                people.push(id);
            }
        }
        let venues = city
            .cells
            .iter()
            .flat_map(|c| (1..=2).map(move |k| (format!("venue-{}-{k}", c.id), c.id.clone())))
            .collect();
        let mut sim = HealthSim {
            opts: opts.clone(),
            start,
            end,
            interval,
            topic_prefix: feed.topic_prefix.trim_end_matches('/').to_string(),
            travelled: vec![None; people.len()],
            people,
            venues,
            services: (0..SERVICES.len()).map(|s| stream(feed.seed, SERVICE_STREAMS + s as u64)).collect(),
            checkins_rng: stream(feed.seed, CHECKIN_STREAM),
            cases_rng: stream(feed.seed, CASE_STREAM),
            trips: 0,
            checkins: 0,
            cases: 0,
            agenda: Agenda::default(),
        };
        for (s, service) in SERVICES.iter().enumerate() {
            let phase = sim.services[s].random_range(0..service.headway / SECOND) * SECOND;
            // The first departure leaves time to board within the run.
            sim.agenda.at(start + BOARDING_MS + phase, Action::Departure(s, 0));
        }
        if let Some(t) = sim.next_checkin(start) {
            sim.agenda.at(t, Action::Checkin);
        }
        for (k, &m) in opts.confirmed_cases.iter().enumerate() {
            sim.agenda.at(start + m as Ms * MINUTE, Action::Case(k));
        }
        Ok(sim)
    }

    /// Number of travellers.
    pub fn traveller_count(&self) -> usize {
        self.people.len()
    }

    /// Number of venues.
    pub fn venue_count(&self) -> usize {
        self.venues.len()
    }

    /// Trip records written so far.
    pub fn trip_count(&self) -> u64 {
        self.trips
    }

    /// Check-ins written so far.
    pub fn checkin_count(&self) -> u64 {
        self.checkins
    }

    /// Cases confirmed so far.
    pub fn case_count(&self) -> u64 {
        self.cases
    }

    /// The options of the scenario.
    pub fn options(&self) -> &HealthOptions {
        &self.opts
    }

    /// Simulates up to `until` (exclusive; at most the end of the run) and returns the lines that
    /// arrive before it, in arrival order.
    pub fn advance(&mut self, until: Ms) -> Result<Vec<String>> {
        let until = until.min(self.end);
        while let Some((t, action)) = self.agenda.next_before(until) {
            match action {
                Action::Departure(s, n) => self.departure(t, s, n)?,
                Action::Checkin => self.checkin(t)?,
                Action::Case(k) => self.case(t, k)?,
            }
        }
        Ok(self.agenda.arrived_before(until))
    }

    /// Departure `n` of service `s` at `t`: its travellers' trip records, and the next departure.
    fn departure(&mut self, t: Ms, s: usize, n: u64) -> Result<()> {
        let service = SERVICES[s];
        let date = iso_date(t);
        let local = (t + crate::emergency::CITY_UTC_OFFSET_MS) % (24 * 60 * MINUTE) / MINUTE;
        let trip = match service.carrier {
            Carrier::Train | Carrier::Flight => format!("G{}@{date}", 1001 + n % 8),
            Carrier::Metro => format!("M{}-{:02}{:02}@{date}", 1 + n % 5, local / 60, local % 60),
            Carrier::Bus => format!("B{}-{:02}{:02}@{date}", 10 + n % 10, local / 60, local % 60),
        };
        let rng = &mut self.services[s];
        let riders = rng.random_range(service.riders.0..=service.riders.1).min(self.people.len() as u32);
        let mut chosen = BTreeSet::new();
        while chosen.len() < riders as usize {
            chosen.insert(rng.random_range(0..self.people.len()));
        }
        let mut records = Vec::with_capacity(chosen.len());
        let mut seats = BTreeSet::new();
        for p in chosen {
            let boarded = (t - rng.random_range(0..BOARDING_MS / SECOND) * SECOND).max(self.start);
            let (row, seat) = if service.carrier.by_row() {
                let (row, letter) = loop {
                    let row = rng.random_range(1..=20u32);
                    let letter = SEAT_LETTERS[rng.random_range(0..SEAT_LETTERS.len())];
                    if seats.insert((row, letter)) || seats.len() >= 100 {
                        break (row, letter);
                    }
                };
                (Some(serde_json::Value::from(row)), Some(serde_json::Value::from(format!("{row}{letter}"))))
            } else {
                (None, None)
            };
            records.push((p, boarded, row, seat));
        }
        for (p, boarded, row, seat) in records {
            let record = TripRecord {
                person: Cow::Borrowed(&self.people[p]),
                ts: Ts(boarded),
                carrier: service.carrier,
                trip: Cow::Borrowed(&trip),
                row,
                seat,
            };
            self.trips += 1;
            let topic = format!("{}/health/trip/trip-{:06}", self.topic_prefix, self.trips);
            let line = encode(&topic, &record)?;
            let arrival = boarded + self.services[s].random_range(0..MAX_DELAY_MS);
            self.agenda.post(arrival, line);
            let first = &mut self.travelled[p];
            *first = Some(first.map_or(boarded, |f| f.min(boarded)));
        }
        let next = t + service.headway;
        if next < self.end {
            self.agenda.at(next, Action::Departure(s, n + 1));
        }
        Ok(())
    }

    /// The next check-in of the population after `after`, if within the run.
    fn next_checkin(&mut self, after: Ms) -> Option<Ms> {
        let per_ms = self.people.len() as f64 * CHECKINS_PER_HOUR / (60 * MINUTE) as f64;
        if per_ms <= 0.0 || self.venues.is_empty() {
            return None;
        }
        let gap = -(1.0 - self.checkins_rng.random::<f64>()).ln() / per_ms;
        let t = after.saturating_add((gap.ceil() as Ms).max(1));
        (t < self.end).then_some(t)
    }

    /// A check-in at `t` by a random traveller at a random venue, and the next one.
    fn checkin(&mut self, t: Ms) -> Result<()> {
        let p = self.checkins_rng.random_range(0..self.people.len());
        let v = self.checkins_rng.random_range(0..self.venues.len());
        let (venue, cell) = &self.venues[v];
        let record = Checkin {
            person: Cow::Borrowed(&self.people[p]),
            ts: Ts(t),
            venue: Cow::Borrowed(venue),
            cell: Some(Cow::Borrowed(cell)),
            lon: None,
            lat: None,
        };
        let topic = format!("{}/health/checkin/{venue}", self.topic_prefix);
        let line = encode(&topic, &record)?;
        self.checkins += 1;
        self.post_line(t, line, RngPick::Checkin);
        if let Some(next) = self.next_checkin(t) {
            self.agenda.at(next, Action::Checkin);
        }
        Ok(())
    }

    /// Holds an encoded line until its arrival (after the delivery delay drawn from `rng_pick`).
    fn post_line(&mut self, ts: Ms, line: String, rng_pick: RngPick) {
        let rng = match rng_pick {
            RngPick::Checkin => &mut self.checkins_rng,
            RngPick::Case => &mut self.cases_rng,
        };
        let arrival = ts + rng.random_range(0..MAX_DELAY_MS);
        self.agenda.post(arrival, line);
    }

    /// The `k`-th confirmed case at `t`: a traveller who boarded before `t`, and their
    /// clearance if asked for.
    fn case(&mut self, t: Ms, k: usize) -> Result<()> {
        let candidates: Vec<usize> =
            (0..self.people.len()).filter(|&p| self.travelled[p].is_some_and(|b| b < t)).collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let p = candidates[self.cases_rng.random_range(0..candidates.len())];
        let minute = (t - self.start) / MINUTE;
        let topic = format!("{}/health/case/hc-m{minute:04}-{}", self.topic_prefix, k + 1);
        self.cases += 1;
        let mut events = vec![(HealthStatus::Confirmed, t)];
        if let Some(after) = self.opts.clear_after_min {
            let cleared = t + after as Ms * MINUTE;
            if cleared < self.end {
                events.push((HealthStatus::Cleared, cleared));
            }
        }
        for (status, ts) in events {
            let record = HealthCase { person: Cow::Borrowed(&self.people[p]), ts: Ts(ts), status };
            let line = encode(&topic, &record)?;
            self.post_line(ts, line, RngPick::Case);
        }
        Ok(())
    }
}

/// Which random stream draws a delivery delay.
#[derive(Clone, Copy, Debug)]
enum RngPick {
    Checkin,
    Case,
}

/// One recording line (CONTRACT §4). The error names the topic, never the payload (which
/// holds a clear personal id).
fn encode<P: Serialize>(topic: &str, payload: &P) -> Result<String> {
    serde_json::to_string(&Message { topic, payload })
        .with_context(|| format!("encoding a record for {topic}"))
}

/// A random valid id-card number of Hangzhou (see the module docs).
fn random_id(rng: &mut ChaCha8Rng) -> String {
    let area = AREA_CODES[rng.random_range(0..AREA_CODES.len())];
    let year = rng.random_range(1950..=2005u32);
    let month = rng.random_range(1..=12u32);
    let day = rng.random_range(1..=28u32);
    let seq = rng.random_range(0..1000u32);
    let first17 = format!("{area}{year:04}{month:02}{day:02}{seq:03}");
    let check = id_check_digit(&first17).unwrap_or('0');
    format!("{first17}{check}")
}

/// `YYYY-MM-DD` of an instant in the city time zone.
fn iso_date(t: Ms) -> String {
    let d = local_date(t);
    format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8])
}

crate::agenda::impl_part!(HealthSim);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::{CityOptions, generate_city, geojson_text};
    use crate::{Scenario, Simulator};
    use citybrain_dataflows::event::{Decoder, Event};
    use citybrain_dataflows::pseudonym::Pseudonymizer;
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    fn city() -> &'static CityModel {
        static CITY: OnceLock<CityModel> = OnceLock::new();
        CITY.get_or_init(|| {
            CityModel::from_geojson_str(&geojson_text(&generate_city(&CityOptions::default()).unwrap()))
                .unwrap()
        })
    }

    fn run(feed: &FeedOptions, opts: &HealthOptions) -> Vec<String> {
        let mut sim = HealthSim::new(city(), feed, opts).unwrap();
        let lines = sim.advance(Ms::MAX).unwrap();
        assert!(sim.advance(Ms::MAX).unwrap().is_empty());
        lines
    }

    fn opts() -> (FeedOptions, HealthOptions) {
        let feed = FeedOptions { duration_min: 180, ..FeedOptions::default() };
        let health = HealthOptions {
            confirmed_cases: vec![90, 150],
            clear_after_min: Some(20),
            ..HealthOptions::default()
        };
        (feed, health)
    }

    #[test]
    fn the_check_digit_follows_gb_11643() {
        // Worked examples: the standard's sample 11010519491231002X and a computed one.
        assert_eq!(id_check_digit("11010519491231002"), Some('X'));
        assert!(is_valid_id_card("11010519491231002X"));
        assert_eq!(id_check_digit("44052418800101001"), Some('4'));
        assert!(!is_valid_id_card("110105194912310021"));
        assert_eq!(id_check_digit("1101051949123100"), None);
        assert_eq!(id_check_digit("1101051949123100A"), None);
        assert!(!is_valid_id_card("11010519491231002é"));
    }

    #[test]
    fn every_line_decodes_with_valid_ids_and_the_case_travelled_first() {
        let (feed, health) = opts();
        let lines = run(&feed, &health);
        let decoder = Decoder::new("city/", Pseudonymizer::new(vec![7; 32]));
        let (mut trips, mut checkins) = (0, 0);
        // Clear person → first boarding, from the raw lines; cases by clear person.
        let mut boarded: BTreeMap<String, Ms> = BTreeMap::new();
        let mut cases: Vec<(String, Ms, HealthStatus, String)> = Vec::new();
        for line in &lines {
            let raw: serde_json::Value = serde_json::from_str(line).unwrap();
            let person = raw["payload"]["person"].as_str().unwrap().to_string();
            assert!(is_valid_id_card(&person), "{person}");
            assert!(AREA_CODES.contains(&&person[..6]));
            let topic = raw["topic"].as_str().unwrap();
            assert!(!topic.contains(&person[..14]), "{topic} names the person");
            let mut events = 0;
            decoder.decode_line(line.as_bytes(), |_, ev| {
                events += 1;
                match ev {
                    Ok(Event::Trip(t)) => {
                        trips += 1;
                        assert_ne!(t.person, person, "pseudonymized");
                        assert_eq!(t.row.is_some(), t.carrier == Carrier::Train, "{line}");
                        if t.carrier == Carrier::Train {
                            assert!((1..=20).contains(&t.row_number().unwrap().unwrap()));
                            assert!(t.trip.starts_with('G') && t.trip.ends_with("@2026-03-02"), "{}", t.trip);
                        }
                        let b = boarded.entry(person.clone()).or_insert(t.ts.0);
                        *b = (*b).min(t.ts.0);
                    }
                    Ok(Event::Checkin(c)) => {
                        checkins += 1;
                        assert!(city().cell(c.cell.as_deref().unwrap()).is_some());
                        assert!(c.venue.starts_with("venue-"));
                    }
                    Ok(Event::HealthCase(c)) => {
                        cases.push((person.clone(), c.ts.0, c.status, topic.to_string()));
                    }
                    other => panic!("{line}: {other:?}"),
                }
            });
            assert_eq!(events, 1, "{line}");
        }
        assert!(trips > 1000, "{trips}");
        assert!(checkins > 1000, "{checkins}");
        let start = feed.start_ms;
        assert_eq!(cases.len(), 4, "{cases:?}");
        for (k, m) in [90, 150].into_iter().enumerate() {
            let confirmed = &cases[2 * k];
            assert_eq!(confirmed.1, start + m * MINUTE);
            assert_eq!(confirmed.2, HealthStatus::Confirmed);
            assert_eq!(confirmed.3, format!("city/health/case/hc-m{m:04}-{}", k + 1));
            assert!(boarded[&confirmed.0] < confirmed.1, "the case travelled before");
            let cleared = &cases[2 * k + 1];
            assert_eq!(
                (&cleared.0, cleared.1, cleared.2),
                (&confirmed.0, confirmed.1 + 20 * MINUTE, HealthStatus::Cleared)
            );
        }
    }

    #[test]
    fn same_seed_same_lines_and_unique_people() {
        let (feed, health) = opts();
        let a = run(&feed, &health);
        assert_eq!(a, run(&feed, &health));
        assert_ne!(a, run(&FeedOptions { seed: 2, ..feed.clone() }, &health));
        let sim = HealthSim::new(city(), &feed, &health).unwrap();
        let unique: BTreeSet<&String> = sim.people.iter().collect();
        assert_eq!(unique.len(), DEFAULT_TRAVELLERS as usize);
        // The scenario changes no detector reading, and comes after them in each batch.
        let traffic = |h: bool| {
            let mut s = Scenario::traffic_only(Simulator::new(city(), &feed).unwrap());
            if h {
                s = s.with_health(HealthSim::new(city(), &feed, &health).unwrap()).unwrap();
            }
            let lines: Vec<String> = s.flat_map(|b| b.unwrap().lines).collect();
            lines
        };
        let with: Vec<String> = traffic(true);
        let detectors: Vec<&String> = with.iter().filter(|l| l.contains("/traffic/detector/")).collect();
        assert_eq!(detectors, traffic(false).iter().collect::<Vec<_>>());
        assert_eq!(with.len() - detectors.len(), a.len());
    }

    #[test]
    fn options_are_checked() {
        let (feed, _) = opts();
        let bad = |o: HealthOptions| HealthSim::new(city(), &feed, &o).err().unwrap().to_string();
        assert!(bad(HealthOptions { travellers: 0, ..Default::default() }).contains("travellers"));
        assert!(
            bad(HealthOptions { confirmed_cases: vec![180], ..Default::default() }).contains("minute 180")
        );
        assert!(
            bad(HealthOptions { clear_after_min: Some(0), ..Default::default() }).contains("clear after")
        );
    }
}
