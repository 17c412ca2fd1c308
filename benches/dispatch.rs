//! `cargo bench --bench dispatch` — emergency dispatch recommendations at city scale.
//!
//! The workload of the issue: 500 units, 200 open incidents and 10,000 directed road segments
//! whose speeds change every 5-minute window. The city is synthetic and fixed (seeded): a grid
//! of two-way streets 200 m apart (50 east-west streets, 51 north-south ones; 10,000 directed
//! segments, each with its `downstream` neighbour along its street and one loop detector), 100
//! grid cells in 25 districts, 36 stations. Units and incidents stand at random points.
//!
//! Everything runs through the real city dataflow on one timely worker, as `replay` and the
//! live service drive it: JSON payloads are decoded by `event::Decoder`, offered to the
//! per-worker `ingest::Ingest`, released into `pipeline::Inputs` when the round ends, and the
//! output is collected by `pipeline::deliver`. Every detector reports every minute
//! (`interval_s` 60, a random speed), so each round that ends a minute carries 10,000 readings.
//!
//! 1. Latency: wall time from handing a round's payloads to the decoder until the output at the
//!    changed event time is delivered — (a) the round whose watermark closes a 5-minute window
//!    (new live speeds on every segment: all 200 incidents re-ranked), (b) one unit moving or
//!    changing status, (c) one incident opening (another is cancelled in a round of its own, so
//!    200 stay open). p50 / p99 / max; the issue's target is p99 ≤ 1 s.
//! 2. Throughput of emergency events through decode + ingest + dataflow on one worker: unit
//!    position reports (every unit every 5 s of event time, each at its own millisecond, rounds
//!    of 1 s), then incident lifecycle events (reported → dispatched → en route → on scene →
//!    cleared; a new incident every 5 s, rounds of 60 s of event time as replay cuts blocks).
//!
//! The latency of (a) is an upper bound for the live service: there the minute's readings
//! arrive spread over the minute and are ingested in earlier rounds, here all 10,000 come in the
//! round that closes the window. The live service adds up to one tick (250 ms) of batching
//! before a round starts.
//!
//! Sizes: `CITYBRAIN_BENCH_MINUTES` (measured minutes of traffic, default 500: 100 window
//! closes), `CITYBRAIN_BENCH_UNIT_REPORTS` (default 20,000; the rate is flat, 100,000 take about
//! five times as long), `CITYBRAIN_BENCH_INCIDENT_EVENTS` (default 20,000). About 80 s in all on
//! 2 cores. It prints figures; it never fails on a slow machine.

use citybrain_dataflows::emergency::EmOut;
use citybrain_dataflows::event::Decoder;
use citybrain_dataflows::ingest::Ingest;
use citybrain_dataflows::pipeline::{self, Inputs, Out};
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::{CityModel, Config, Ms};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// 2026-01-01T00:00:00Z: every window boundary lies on a round minute.
const T0: Ms = 1_767_225_600_000;
const MINUTE: Ms = 60_000;
const SEED: u64 = 0x5EED_D15F_A7C4;

// ---- The synthetic city ----

/// The street grid: east-west streets (rows) and north-south streets (columns).
const ROWS: usize = 50;
const COLS: usize = 51;
const BLOCK_M: f64 = 200.0;
/// The area the cells and districts tile, metres (the grid spans 0..10,200 × 0..9,800).
const AREA: (f64, f64, f64, f64) = (-500.0, -500.0, 10_700.0, 10_300.0);
const CELLS: usize = 10;
const LON0: f64 = 121.47;
const LAT0: f64 = 31.23;

const UNITS: [(&str, &str, usize); 3] =
    [("fire_engine", "fire", 150), ("ambulance", "ems", 200), ("police", "police", 150)];
const INCIDENT_TYPES: [&str; 4] = ["fire", "medical", "police", "traffic"];
const OPEN_INCIDENTS: usize = 200;
const STATIONS_PER_KIND: usize = 12;

/// Event time per round of the incident stream (a replay-sized block: about 60 events).
const INCIDENT_ROUND: Ms = 60_000;

mod common;

/// The shared random stream, with the draws this benchmark needs.
struct Rng(common::SplitMix);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next()
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// A random point on the street grid's area, metres.
    fn point(&mut self) -> (f64, f64) {
        (self.range(0.0, (COLS - 1) as f64 * BLOCK_M), self.range(0.0, (ROWS - 1) as f64 * BLOCK_M))
    }
}

/// WGS84 of a point `x` east and `y` north of (LON0, LAT0), metres.
fn lonlat(x: f64, y: f64) -> (f64, f64) {
    let ky = 6_371_008.8f64.to_radians();
    (LON0 + x / (ky * LAT0.to_radians().cos()), LAT0 + y / ky)
}

fn coord(x: f64, y: f64) -> String {
    let (lon, lat) = lonlat(x, y);
    format!("[{lon},{lat}]")
}

/// Cell boundaries along one axis (shared exactly by neighbours).
fn edges(lo: f64, hi: f64) -> Vec<f64> {
    (0..=CELLS).map(|i| lo + (hi - lo) * i as f64 / CELLS as f64).collect()
}

/// The district holding a point (districts are 2 × 2 cells).
fn district_of(x: f64, y: f64) -> String {
    let (x0, y0, x1, y1) = AREA;
    let col = (((x - x0) / (x1 - x0) * CELLS as f64) as usize).min(CELLS - 1);
    let row = (((y - y0) / (y1 - y0) * CELLS as f64) as usize).min(CELLS - 1);
    format!("d{}{}", row / 2, col / 2)
}

/// One directed segment of the grid, with its detector.
struct Seg {
    id: String,
    detector: String,
    limit_kmh: f64,
}

/// A station: id, kind (`fire`, `ems`, `police`).
#[derive(Clone)]
struct Station {
    id: String,
    kind: &'static str,
}

struct City {
    geojson: String,
    segments: Vec<Seg>,
    stations: Vec<Station>,
}

fn city(rng: &mut Rng) -> City {
    let mut features: Vec<String> = Vec::new();
    let (x0, y0, x1, y1) = AREA;
    let (xs, ys) = (edges(x0, x1), edges(y0, y1));
    let square = |a: f64, b: f64, c: f64, d: f64| {
        format!(
            r#"{{"type":"Polygon","coordinates":[[{},{},{},{},{}]]}}"#,
            coord(a, b),
            coord(c, b),
            coord(c, d),
            coord(a, d),
            coord(a, b)
        )
    };
    for r in 0..CELLS / 2 {
        for c in 0..CELLS / 2 {
            features.push(format!(
                r#"{{"type":"Feature","geometry":{},"properties":{{"kind":"district","id":"d{r}{c}","name":"District {r}{c}"}}}}"#,
                square(xs[2 * c], ys[2 * r], xs[2 * c + 2], ys[2 * r + 2])
            ));
        }
    }
    for r in 0..CELLS {
        for c in 0..CELLS {
            features.push(format!(
                r#"{{"type":"Feature","geometry":{},"properties":{{"kind":"cell","id":"c{r}_{c}","district":"d{}{}","officers":["o{r}_{c}"]}}}}"#,
                square(xs[c], ys[r], xs[c + 1], ys[r + 1]),
                r / 2,
                c / 2
            ));
        }
    }
    // Streets: (id, from, to, next along the street in the same direction, arterial).
    type Street = (String, (f64, f64), (f64, f64), Option<String>, bool);
    let mut streets: Vec<Street> = Vec::new();
    let node = |c: usize, r: usize| (c as f64 * BLOCK_M, r as f64 * BLOCK_M);
    for r in 0..ROWS {
        // Row 0 runs one block further east: 5,002 + 4,998 = 10,000 segments.
        let blocks = if r == 0 { COLS } else { COLS - 1 };
        let arterial = r % 5 == 0;
        for c in 0..blocks {
            let next_e = (c + 1 < blocks).then(|| format!("h{r}_{}e", c + 1));
            let next_w = (c > 0).then(|| format!("h{r}_{}w", c - 1));
            streets.push((format!("h{r}_{c}e"), node(c, r), node(c + 1, r), next_e, arterial));
            streets.push((format!("h{r}_{c}w"), node(c + 1, r), node(c, r), next_w, arterial));
        }
    }
    for c in 0..COLS {
        let arterial = c % 5 == 0;
        for r in 0..ROWS - 1 {
            let next_n = (r + 2 < ROWS).then(|| format!("v{c}_{}n", r + 1));
            let next_s = (r > 0).then(|| format!("v{c}_{}s", r - 1));
            streets.push((format!("v{c}_{r}n"), node(c, r), node(c, r + 1), next_n, arterial));
            streets.push((format!("v{c}_{r}s"), node(c, r + 1), node(c, r), next_s, arterial));
        }
    }
    let mut segments = Vec::with_capacity(streets.len());
    for (i, (id, a, b, next, arterial)) in streets.iter().enumerate() {
        let (mx, my) = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
        let (limit, class, lanes) = if *arterial { (60.0, "arterial", 2) } else { (40.0, "secondary", 1) };
        let down = next.as_ref().map(|n| format!(r#","downstream":["{n}"]"#)).unwrap_or_default();
        features.push(format!(
            r#"{{"type":"Feature","geometry":{{"type":"LineString","coordinates":[{},{}]}},"properties":{{"kind":"segment","id":"{id}","district":"{}","length_m":{BLOCK_M},"speed_limit_kmh":{limit},"lanes":{lanes},"road_class":"{class}"{down}}}}}"#,
            coord(a.0, a.1),
            coord(b.0, b.1),
            district_of(mx, my)
        ));
        let detector = format!("k{i}");
        features.push(format!(
            r#"{{"type":"Feature","geometry":{{"type":"Point","coordinates":{}}},"properties":{{"kind":"detector","id":"{detector}","segment":"{id}","lane":0}}}}"#,
            coord(mx, my)
        ));
        segments.push(Seg { id: id.clone(), detector, limit_kmh: limit });
    }
    let mut stations = Vec::new();
    for (_, kind, _) in UNITS {
        for n in 0..STATIONS_PER_KIND {
            let (c, r) = (rng.below(COLS), rng.below(ROWS));
            let (x, y) = node(c, r);
            let id = format!("st-{kind}-{n}");
            features.push(format!(
                r#"{{"type":"Feature","geometry":{{"type":"Point","coordinates":{}}},"properties":{{"kind":"station","id":"{id}","type":"{kind}","district":"{}"}}}}"#,
                coord(x, y),
                district_of(x, y)
            ));
            stations.push(Station { id, kind });
        }
    }
    let geojson = format!(r#"{{"type":"FeatureCollection","features":[{}]}}"#, features.join(",\n"));
    City { geojson, segments, stations }
}

// ---- Payloads ----

/// A message: topic and payload.
type Msg = (String, String);

struct UnitSim {
    id: String,
    kind: &'static str,
    station: String,
    at: (f64, f64),
    available: bool,
}

impl UnitSim {
    fn report(&self, ts: Ms) -> Msg {
        let (lon, lat) = lonlat(self.at.0, self.at.1);
        let status = if self.available { "available" } else { "returning" };
        (
            format!("city/emergency/unit/{}", self.id),
            format!(
                r#"{{"unit":"{}","ts":{ts},"type":"{}","status":"{status}","lon":{lon:.7},"lat":{lat:.7},"station":"{}"}}"#,
                self.id, self.kind, self.station
            ),
        )
    }
}

struct IncidentSim {
    id: String,
    kind: &'static str,
    severity: u8,
    at: (f64, f64),
}

impl IncidentSim {
    fn event(&self, ts: Ms, status: &str, unit: Option<&str>) -> Msg {
        let (lon, lat) = lonlat(self.at.0, self.at.1);
        let unit = unit.map(|u| format!(r#","unit":"{u}""#)).unwrap_or_default();
        (
            format!("city/emergency/incident/{}", self.id),
            format!(
                r#"{{"incident":"{}","ts":{ts},"status":"{status}","type":"{}","severity":{},"lon":{lon:.7},"lat":{lat:.7}{unit}}}"#,
                self.id, self.kind, self.severity
            ),
        )
    }
}

fn units(rng: &mut Rng, stations: &[Station]) -> Vec<UnitSim> {
    let mut out = Vec::new();
    for (kind, station_kind, n) in UNITS {
        let homes: Vec<&Station> = stations.iter().filter(|s| s.kind == station_kind).collect();
        for _ in 0..n {
            out.push(UnitSim {
                id: format!("u-{:03}", out.len()),
                kind,
                station: homes[rng.below(homes.len())].id.clone(),
                at: rng.point(),
                available: true,
            });
        }
    }
    out
}

fn incident(rng: &mut Rng, id: String) -> IncidentSim {
    IncidentSim {
        id,
        kind: INCIDENT_TYPES[rng.below(INCIDENT_TYPES.len())],
        severity: 1 + rng.below(5) as u8,
        at: rng.point(),
    }
}

/// Every detector's reading for the minute starting at `ts` (a new random speed each).
fn readings(rng: &mut Rng, segments: &[Seg], ts: Ms) -> Vec<Msg> {
    segments
        .iter()
        .map(|s| {
            let speed = s.limit_kmh * rng.range(0.15, 1.0);
            let count = 3 + rng.below(25);
            let occ = rng.range(0.02, 0.6);
            (
                format!("city/traffic/detector/{}", s.detector),
                format!(
                    r#"{{"sensor":"{}","segment":"{}","ts":{ts},"interval_s":60,"count":{count},"occupancy":{occ:.3},"speed_kmh":{speed:.1}}}"#,
                    s.detector, s.id
                ),
            )
        })
        .collect()
}

// ---- Driving the dataflow ----

/// One delivered batch (or progress marker: `marker`) and when it came.
#[derive(Clone, Copy)]
struct Delivered {
    t: Ms,
    at: Instant,
    records: usize,
    dispatch: usize,
    marker: bool,
}

/// The city dataflow on one worker, with its ingest, fed round by round as the runtime does.
struct Driver {
    inputs: Inputs,
    probe: ProbeHandle<Ms>,
    ingest: Ingest,
    decoder: Decoder,
    log: Rc<RefCell<Vec<Delivered>>>,
}

/// One measured change: latency to delivery, records and recommendation changes delivered at it.
#[derive(Clone, Copy)]
struct Sample {
    latency: Duration,
    records: usize,
    dispatch: usize,
}

impl Driver {
    fn new(worker: &mut Worker, city: Arc<CityModel>, cfg: Arc<Config>) -> Driver {
        let log = Rc::new(RefCell::new(Vec::new()));
        let sink = log.clone();
        let (inputs, probe) = worker.dataflow::<Ms, _, _>(|scope| {
            let (inputs, out) = pipeline::build(scope, city.clone(), cfg.clone());
            let (probe, out) = out.probe();
            pipeline::deliver(out, move |t, records: Vec<(Out, isize)>| {
                let at = Instant::now();
                let dispatch = records
                    .iter()
                    .filter(|(o, r)| *r > 0 && matches!(o, Out::Emergency(EmOut::Dispatch(_))))
                    .count();
                let marker = records.is_empty();
                sink.borrow_mut().push(Delivered { t, at, records: records.len(), dispatch, marker });
            });
            (inputs, probe)
        });
        let ingest = Ingest::new(city, &cfg);
        let decoder = Decoder::new("city/", Pseudonymizer::new(b"bench".to_vec()));
        Driver { inputs, probe, ingest, decoder, log }
    }

    /// One round: decode and offer `msgs`, end the round at watermark `upto`, step until every
    /// time before `upto` is complete and delivered.
    fn round(&mut self, worker: &mut Worker, msgs: &[Msg], upto: Ms) {
        let Driver { inputs, probe, ingest, decoder, log } = self;
        log.borrow_mut().clear();
        for (topic, payload) in msgs {
            decoder.decode(topic, payload.as_bytes(), |ev| {
                let ev = ev.unwrap_or_else(|e| panic!("{topic}: {e}"));
                ingest.offer(&ev).unwrap_or_else(|e| panic!("{topic}: {e}"));
            });
        }
        ingest.flush(inputs, upto, Ms::MAX, upto);
        inputs.advance_to(upto);
        inputs.flush();
        worker.step_or_park_while(None, || {
            probe.less_than(&upto) || !log.borrow().iter().any(|d| d.marker && d.t >= upto)
        });
    }

    /// A round whose change happens at event time `event` (< `upto`): the wall time from the
    /// start of the round until the output at `event` was delivered.
    fn measure(&mut self, worker: &mut Worker, msgs: &[Msg], event: Ms, upto: Ms) -> Sample {
        let start = Instant::now();
        self.round(worker, msgs, upto);
        let log = self.log.borrow();
        let first = log.iter().find(|d| d.t >= event).expect("the round's output was delivered");
        let at_event = log.iter().filter(|d| d.t == event && !d.marker);
        let (records, dispatch) = at_event.fold((0, 0), |(r, d), x| (r + x.records, d + x.dispatch));
        Sample { latency: first.at.saturating_duration_since(start), records, dispatch }
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

fn report(name: &str, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    let mut l: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    l.sort_unstable();
    let n = samples.len() as f64;
    let recs = samples.iter().map(|s| s.records).sum::<usize>() as f64 / n;
    let disp = samples.iter().map(|s| s.dispatch).sum::<usize>() as f64 / n;
    let ok = if pct(&l, 0.99) <= Duration::from_secs(1) { "met" } else { "NOT MET" };
    println!(
        "  {name:<46} n={:<4} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  (p99 ≤ 1 s: {ok}; {recs:.0} records, {disp:.0} recommendation changes delivered per change)",
        samples.len(),
        ms(pct(&l, 0.5)),
        ms(pct(&l, 0.99)),
        ms(*l.last().unwrap()),
    );
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let minutes = env("CITYBRAIN_BENCH_MINUTES", 500);
    let unit_reports = env("CITYBRAIN_BENCH_UNIT_REPORTS", 20_000);
    let incident_events = env("CITYBRAIN_BENCH_INCIDENT_EVENTS", 20_000);
    let started = Instant::now();
    let mut rng = Rng(common::SplitMix(SEED));
    let c = city(&mut rng);
    let model = Arc::new(CityModel::from_geojson_str(&c.geojson).expect("the synthetic city loads"));
    let cfg = Arc::new(Config::default());
    let k = cfg.emergency.dispatch.k;
    println!("emergency dispatch benchmark (one timely worker, release build)");
    println!(
        "  city: {} directed segments (two-way streets on a {} x {} grid, {} m blocks), {} detectors, {} cells, {} districts, {} stations (built in {:.1} s)",
        model.segments.len(),
        COLS,
        ROWS,
        BLOCK_M,
        model.detectors.len(),
        model.cells.len(),
        model.districts.len(),
        model.stations.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  {} units (150 fire engines, 200 ambulances, 150 police) and {OPEN_INCIDENTS} open unassigned incidents at random points; top {k} recommended per incident",
        UNITS.iter().map(|u| u.2).sum::<usize>()
    );
    println!(
        "  traffic: every detector reports every minute (10,000 readings per round); every 5-minute window gives every segment a new live speed"
    );
    println!(
        "  latency = wall time from handing a round's JSON payloads to the decoder until the output at the changed event time is delivered"
    );

    let segments = c.segments;
    let stations = c.stations;
    let stations2 = stations.clone();

    // ---- 1. Latency ----
    let (city1, cfg1) = (model.clone(), cfg.clone());
    let seed = rng.next();
    let latency = timely::execute_directly(move |worker| {
        let mut rng = Rng(common::SplitMix(seed));
        let mut d = Driver::new(worker, city1, cfg1);
        let mut fleet = units(&mut rng, &stations);
        let mut open: VecDeque<IncidentSim> =
            (0..OPEN_INCIDENTS).map(|n| incident(&mut rng, format!("i-{n:04}"))).collect();
        let mut seedmsgs: Vec<Msg> = fleet.iter().enumerate().map(|(i, u)| u.report(T0 + i as Ms)).collect();
        seedmsgs.extend(open.iter().enumerate().map(|(i, x)| x.event(T0 + 500 + i as Ms, "reported", None)));
        d.round(worker, &seedmsgs, T0 + 1_000);

        let warm = 20;
        let (mut close5, mut close1, mut moves, mut statuses, mut opens) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut unavailable: Option<usize> = None;
        let t = Instant::now();
        for m in 1..=warm + minutes {
            let b = T0 + m as Ms * MINUTE;
            let measured = m > warm;
            // (a) The minute's readings; at a 5-minute boundary they close the window.
            let msgs = readings(&mut rng, &segments, b - MINUTE);
            let s = d.measure(worker, &msgs, b, b + 1_000);
            if measured {
                if m % 5 == 0 { close5.push(s) } else { close1.push(s) }
            }
            // (b) One unit moves up to 1 km.
            let e = b + 10_000;
            let pick = rng.below(fleet.len());
            let u = &mut fleet[pick];
            let (x, y) = u.at;
            u.at = (
                (x + rng.range(-1000.0, 1000.0)).clamp(0.0, (COLS - 1) as f64 * BLOCK_M),
                (y + rng.range(-1000.0, 1000.0)).clamp(0.0, (ROWS - 1) as f64 * BLOCK_M),
            );
            let s = d.measure(worker, &[u.report(e)], e, e + 1);
            if measured {
                moves.push(s);
            }
            // (b) One unit changes status: back to available, or available → returning.
            let e = b + 20_000;
            let i = match unavailable.take() {
                Some(i) => i,
                None => {
                    let i = rng.below(fleet.len());
                    unavailable = Some(i);
                    i
                }
            };
            fleet[i].available = !fleet[i].available;
            let s = d.measure(worker, &[fleet[i].report(e)], e, e + 1);
            if measured {
                statuses.push(s);
            }
            // (c) One incident opens …
            let e = b + 30_000;
            let x = incident(&mut rng, format!("i-{:04}", OPEN_INCIDENTS + m));
            let s = d.measure(worker, &[x.event(e, "reported", None)], e, e + 1);
            open.push_back(x);
            if measured {
                opens.push(s);
            }
            // … and the oldest is cancelled, in a round of its own (not measured).
            let e = b + 40_000;
            let old = open.pop_front().unwrap();
            d.round(worker, &[old.event(e, "cancelled", None)], e + 1);
        }
        let secs = t.elapsed().as_secs_f64();
        (close5, close1, moves, statuses, opens, secs, warm)
    });
    let (close5, close1, moves, statuses, opens, secs, warm) = latency;
    println!(
        "\n1. latency from a change to the delivered recommendations ({minutes} measured minutes of event time after {warm} of warm-up; ran in {secs:.1} s)"
    );
    report("(a) 5-minute window closes: 10,000 new speeds", &close5);
    report("(a') other minute rounds (1-minute windows only)", &close1);
    report("(b) one unit moves (position report)", &moves);
    report("(b) one unit changes status", &statuses);
    report("(c) one incident opens", &opens);
    for (what, s) in [("(a)", &close5), ("(c)", &opens)] {
        let short = s.iter().filter(|x| x.dispatch == 0).count();
        if short > 0 {
            println!("  note: {short} of the {what} changes delivered no recommendation change");
        }
    }

    // ---- 2. Throughput ----
    let city2 = model.clone();
    let cfg2 = cfg.clone();
    let seed = rng.next();
    let stations = stations2;
    let (unit_run, inc_run) = timely::execute_directly(move |worker| {
        let mut rng = Rng(common::SplitMix(seed));
        let mut d = Driver::new(worker, city2, cfg2);
        let mut fleet = units(&mut rng, &stations);
        let open: Vec<IncidentSim> =
            (0..OPEN_INCIDENTS).map(|n| incident(&mut rng, format!("i-{n:04}"))).collect();
        let mut seedmsgs: Vec<Msg> = fleet.iter().enumerate().map(|(i, u)| u.report(T0 + i as Ms)).collect();
        seedmsgs.extend(open.iter().enumerate().map(|(i, x)| x.event(T0 + 500 + i as Ms, "reported", None)));
        d.round(worker, &seedmsgs, T0 + 1_000);

        // 2a. Unit position reports: every unit every 5 s at its own offset, rounds of 1 s.
        let period: Ms = 5_000;
        let offsets: Vec<Ms> = fleet.iter().map(|_| rng.below(period as usize) as Ms).collect();
        let mut rounds: Vec<(Vec<Msg>, Ms)> = Vec::new();
        let mut sent = 0;
        let mut sec = T0 + 1_000;
        while sent < unit_reports {
            let mut msgs = Vec::new();
            for (i, u) in fleet.iter_mut().enumerate() {
                let phase = (sec - T0) % period;
                let o = offsets[i];
                if o >= phase && o < phase + 1_000 && sent < unit_reports {
                    let (x, y) = u.at;
                    u.at = (
                        (x + rng.range(-60.0, 60.0)).clamp(0.0, (COLS - 1) as f64 * BLOCK_M),
                        (y + rng.range(-60.0, 60.0)).clamp(0.0, (ROWS - 1) as f64 * BLOCK_M),
                    );
                    msgs.push((sec + (o - phase), u.report(sec + (o - phase))));
                    sent += 1;
                }
            }
            msgs.sort_by_key(|m| m.0);
            sec += 1_000;
            rounds.push((msgs.into_iter().map(|m| m.1).collect(), sec));
        }
        let mut per_round = Vec::with_capacity(rounds.len());
        let t = Instant::now();
        for (msgs, upto) in &rounds {
            let r = Instant::now();
            d.round(worker, msgs, *upto);
            per_round.push(r.elapsed());
        }
        let unit_run = (sent, t.elapsed(), per_round, sec - T0 - 1_000);

        // 2b. Incident lifecycles: one new incident every 5 s, dispatched after 20 s, en route
        // after 60 s, on scene after 6 min, cleared after 17 min (about 200 in progress at a time, beside the 200
        // unassigned ones seeded above).
        let start = sec;
        let lifecycle: [(Ms, &str); 5] = [
            (0, "reported"),
            (20_000, "dispatched"),
            (60_000, "en_route"),
            (360_000, "on_scene"),
            (1_020_000, "cleared"),
        ];
        let n_incidents = incident_events.div_ceil(lifecycle.len());
        let mut events: Vec<(Ms, Msg)> = Vec::new();
        for n in 0..n_incidents {
            let x = incident(&mut rng, format!("j-{n:05}"));
            let at = start + n as Ms * 5_000 + rng.below(5_000) as Ms;
            let unit = fleet[rng.below(fleet.len())].id.clone();
            for (after, status) in lifecycle {
                let unit = (status != "reported").then_some(unit.as_str());
                events.push((at + after, x.event(at + after, status, unit)));
            }
        }
        events.sort_by_key(|e| e.0);
        events.truncate(incident_events);
        let mut rounds: Vec<(Vec<Msg>, Ms)> = Vec::new();
        let mut it = events.into_iter().peekable();
        let mut sec = start;
        while it.peek().is_some() {
            sec += INCIDENT_ROUND;
            let mut msgs = Vec::new();
            while let Some((_, m)) = it.next_if(|e| e.0 < sec) {
                msgs.push(m);
            }
            rounds.push((msgs, sec));
        }
        let mut per_round = Vec::with_capacity(rounds.len());
        let t = Instant::now();
        let mut n = 0;
        for (msgs, upto) in &rounds {
            let r = Instant::now();
            d.round(worker, msgs, *upto);
            per_round.push(r.elapsed());
            n += msgs.len();
        }
        let inc_run = (n, t.elapsed(), per_round, sec - start);
        (unit_run, inc_run)
    });
    println!("\n2. throughput of emergency events (JSON decode + ingest + dataflow, one worker)");
    for (what, round_s, (n, wall, mut per_round, span)) in [
        ("unit position reports (every unit every 5 s)", 1, unit_run),
        (
            "incident lifecycle events (a new incident every 5 s, ~200 in progress)",
            INCIDENT_ROUND / 1_000,
            inc_run,
        ),
    ] {
        per_round.sort_unstable();
        println!(
            "  {what}: {n} events in {:.2} s = {:.0} events/s; {:.0} s of event time in rounds of {round_s} s ({:.1}x real time), round p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64(),
            span as f64 / 1e3,
            (span as f64 / 1e3) / wall.as_secs_f64(),
            ms(pct(&per_round, 0.5)),
            ms(pct(&per_round, 0.99)),
            ms(*per_round.last().unwrap()),
        );
    }
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}
