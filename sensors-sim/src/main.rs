//! The `citybrain-sim` command line: `city` generates a city model, `run` simulates its loop
//! detectors (and, with `--emergency on`, its emergency calls and units; with `--grid on`, its
//! grid cases and cell sensors; with `--health on`, its travellers' trips, check-ins and cases)
//! into a recording and/or to an MQTT broker, `replay` publishes a
//! recording to MQTT.
//! Progress and summaries go to stderr.

use anyhow::{Context, Result};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::time::{MINUTE, Ms, format_ms};
use citybrain_sim::city::CityOptions;
use citybrain_sim::emergency::{DEFAULT_CALL_RATE, DEFAULT_OUT_OF_ORDER, DEFAULT_UNITS_PER_STATION};
use citybrain_sim::feed::{
    DEFAULT_DURATION_MIN, DEFAULT_INTERVAL_S, DEFAULT_SEED, DEFAULT_START, DEFAULT_TOPIC_PREFIX,
};
use citybrain_sim::grid::DEFAULT_CASE_RATE;
use citybrain_sim::health::DEFAULT_TRAVELLERS;
use citybrain_sim::{
    EmergencyOptions, EmergencySim, FeedOptions, GridOptions, GridSim, HealthOptions, HealthSim,
    IncidentSpec, MassCasualtySpec, MqttTarget, Pace, PublishProgress, PublishReport, RainstormSpec,
    Recording, RoadNetwork, Scenario, SilentSensorSpec, Simulator, generate_city, geojson_text, open_lines,
    parse_start, publish_lines_with_progress,
};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const DEFAULT_CITY: CityOptions = CityOptions::DEFAULT;

const EXAMPLES: &str = "Examples:
  citybrain-sim city --out city.geojson
  citybrain-sim run --city city.geojson --out feed.jsonl.gz --duration-min 120 \\
      --incident seg-h3e-2:1:10:20
  citybrain-sim run --city city.geojson --mqtt mqtt://127.0.0.1:1883 --speed 60
  citybrain-sim run --city city.geojson --out feed.jsonl.gz --emergency on \\
      --mass-casualty district-5@20+12
  citybrain-sim run --city city.geojson --out week.jsonl.gz --duration-min 10080 --grid on \\
      --rainstorm district-2@30+60 --silent-sensor 45
  citybrain-sim run --city city.geojson --out health.jsonl --duration-min 180 --health on \\
      --confirmed-case 120 --clear-after 30
  citybrain-sim replay --input feed.jsonl.gz --mqtt mqtt://127.0.0.1:1883 --fast";

/// citybrain's sensor simulator: synthetic city models and detector recordings, deterministic
/// for a seed.
#[derive(Parser)]
#[command(name = "citybrain-sim", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a city model (GeoJSON)
    ///
    /// One FeatureCollection (WGS84) of districts, grid cells with their officers, directed road
    /// segments, loop detectors (one per lane, near each segment's downstream end) and fire, EMS
    /// and police stations. The same seed and options always give the same file.
    City(CityArgs),
    /// Simulate the loop detectors of a city model into a recording and/or to MQTT
    ///
    /// Every detector reports every interval. The recording is JSON Lines,
    /// `{"topic": "city/traffic/detector/{id}", "payload": {…}}` in arrival order (interval start
    /// plus a delivery delay under 2 s), gzip-compressed when the output ends in .gz. The same
    /// seed, city and options always give a byte-identical file. With --mqtt every payload is
    /// published to its topic, in real time by default (--speed, --fast); with --out as well,
    /// the recording holds exactly the lines published.
    ///
    /// With --emergency on, the city's emergency services run as well: calls for help in every
    /// district (`city/emergency/incident/{id}`: reported, dispatched, en_route, on_scene,
    /// cleared or cancelled) and the units of every station (`city/emergency/unit/{id}`: fire
    /// engines, ambulances, police cars), dispatched to the calls, driving the road network at the
    /// simulated traffic speed and reporting their positions. Their events are merged with the
    /// readings in arrival order; the detector readings stay exactly those of the same run
    /// without emergencies.
    ///
    /// With --grid on, the city's grid management runs as well: cases in every cell
    /// (`city/grid/case/{id}`: reported, assigned to one of the cell's officers, in_progress,
    /// resolved, closed or reopened) and the cells' sensors (`city/grid/sensor/{id}`: water level,
    /// manhole tilt, smoke, PM2.5, noise, feeder load), with rainstorms and silent sensors on
    /// request. Their events follow the emergency events of each interval; the detector readings
    /// and emergency events stay exactly those of the same run without them.
    Run(Box<RunArgs>),
    /// Publish a recording to an MQTT broker
    ///
    /// Every line's payload (its JSON text as recorded) goes to the line's topic, in order, paced
    /// by the payloads' event time (`ts`) at --speed (default 1, real time) or as fast as the
    /// broker acknowledges (--fast). At QoS 1 every message is acknowledged before the
    /// command ends. Ctrl-C stops publishing and waits for the outstanding acknowledgements.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct CityArgs {
    /// Where to write the GeoJSON.
    #[arg(long, value_name = "CITY.geojson")]
    out: PathBuf,
    /// Random seed: the same seed and options always give the same file.
    #[arg(long, default_value_t = DEFAULT_CITY.seed)]
    seed: u64,
    /// Districts from west to east.
    #[arg(long, default_value_t = DEFAULT_CITY.districts_x)]
    districts_x: u32,
    /// Districts from south to north.
    #[arg(long, default_value_t = DEFAULT_CITY.districts_y)]
    districts_y: u32,
    /// Grid cells along each side of a district (one east–west and one north–south road per row
    /// and column of cells).
    #[arg(long, default_value_t = DEFAULT_CITY.cells_per_district_side)]
    cells_per_district_side: u32,
    /// Side of a square grid cell, metres (200–5000).
    #[arg(long, default_value_t = DEFAULT_CITY.cell_size_m)]
    cell_size_m: f64,
    /// Longitude of the city centre (WGS84).
    #[arg(long, default_value_t = DEFAULT_CITY.center_lon, allow_negative_numbers = true)]
    center_lon: f64,
    /// Latitude of the city centre (WGS84).
    #[arg(long, default_value_t = DEFAULT_CITY.center_lat, allow_negative_numbers = true)]
    center_lat: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
#[command(group = ArgGroup::new("sink").required(true).multiple(true).args(["out", "mqtt"]))]
struct RunArgs {
    /// The city model (GeoJSON, e.g. from `citybrain-sim city`).
    #[arg(long, value_name = "CITY.geojson")]
    city: PathBuf,
    /// Where to write the recording; gzip-compressed when it ends in .gz.
    #[arg(long, value_name = "FEED.jsonl[.gz]")]
    out: Option<PathBuf>,
    /// Publish the readings to this MQTT broker (plain TCP).
    #[arg(long, value_name = "mqtt://HOST:PORT")]
    mqtt: Option<MqttTarget>,
    #[command(flatten)]
    publish: PublishArgs,
    /// Random seed: the same seed, city and options always give a byte-identical recording.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Start of the run: RFC 3339 or epoch milliseconds (rounded down to a multiple of the
    /// interval). Times of day are read in the city time zone, Asia/Shanghai (UTC+8).
    #[arg(long, value_parser = parse_start, default_value = DEFAULT_START, value_name = "RFC3339|EPOCH_MS")]
    start: Ms,
    /// Length of the run, simulated minutes.
    #[arg(long, default_value_t = DEFAULT_DURATION_MIN, value_name = "M")]
    duration_min: u32,
    /// Reporting interval of every detector, seconds (2–3600).
    #[arg(long, default_value_t = DEFAULT_INTERVAL_S, value_name = "S")]
    interval_s: u32,
    /// Block one lane: SEGMENT:LANE:START_MIN:DURATION_MIN, minutes from the start of the run
    /// (e.g. seg-h3e-2:1:10:20). That lane's detector reads occupancy ≈ 1 and no vehicles, the
    /// other lanes keep flowing, the downstream segments get less traffic. Repeatable.
    #[arg(long = "incident", value_name = "SEG:LANE:START_MIN:DURATION_MIN")]
    incidents: Vec<IncidentSpec>,
    /// Morning (≈08:00) and evening (≈17:30) rush hours, or a flat daytime profile.
    #[arg(long, value_enum, default_value = "on")]
    rush_hours: OnOff,
    /// Topic prefix, as configured in citybrain.
    #[arg(long, default_value = DEFAULT_TOPIC_PREFIX)]
    topic_prefix: String,
    #[command(flatten)]
    emergency: EmergencyArgs,
    #[command(flatten)]
    grid: GridArgs,
    #[command(flatten)]
    health: HealthArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Emergency scenario")]
struct EmergencyArgs {
    /// Simulate emergency calls and the units answering them, alongside the detectors.
    ///
    /// Each station of the city model gets --units-per-station units of its type (fire →
    /// fire_engine, ems → ambulance, police → police), e.g. unit-fire-3-1. Calls arrive in every
    /// district (medical 50 %, police 25 %, traffic 15 %, fire 10 %; severity 1–5) at a point of
    /// a random cell; after a 20–90 s dispatch delay the nearest available unit of the right type
    /// is dispatched (a district never lends its last one; without a unit the call waits),
    /// turns out in 30–80 s, drives the road network reporting its position every 15–30 s, stays
    /// on scene 5–30 min, and drives back to its station. About 4 % of calls are cancelled before
    /// dispatch.
    #[arg(long, value_enum, default_value = "off")]
    emergency: OnOff,
    /// Calls per district per hour, on the daily average; the rate follows a daily profile in the
    /// city time zone, from 0.37 × at 04:00 to 1.42 × at 14:00 [default: 1.5]
    #[arg(long, value_name = "X", value_parser = parse_rate)]
    call_rate: Option<f64>,
    /// Units per station (1–100) [default: 2]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    units_per_station: Option<u32>,
    /// A mass-casualty incident: CALLS medical calls (default 12; severity 1–3) within five
    /// minutes from MINUTE (counted from the start of the run) in one cell of DISTRICT (id or
    /// name), e.g. district-5@20+12. Units run out; calls wait unassigned. Repeatable.
    #[arg(long = "mass-casualty", value_name = "DISTRICT@MINUTE[+CALLS]")]
    mass_casualty: Vec<MassCasualtySpec>,
    /// Share of incidents whose en_route events arrive after their on_scene events (0–1), as a
    /// real feed sometimes does [default: 0.02]
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    out_of_order: Option<f64>,
}

impl EmergencyArgs {
    /// The emergency options, or `None` with --emergency off (then no other emergency option
    /// may be given).
    fn options(&self) -> Result<Option<EmergencyOptions>> {
        if matches!(self.emergency, OnOff::Off) {
            let given = [
                (self.call_rate.is_some(), "--call-rate"),
                (self.units_per_station.is_some(), "--units-per-station"),
                (!self.mass_casualty.is_empty(), "--mass-casualty"),
                (self.out_of_order.is_some(), "--out-of-order"),
            ];
            if let Some((_, name)) = given.iter().find(|(g, _)| *g) {
                anyhow::bail!("{name} needs --emergency on");
            }
            return Ok(None);
        }
        Ok(Some(EmergencyOptions {
            call_rate: self.call_rate.unwrap_or(DEFAULT_CALL_RATE),
            units_per_station: self.units_per_station.unwrap_or(DEFAULT_UNITS_PER_STATION),
            mass_casualty: self.mass_casualty.clone(),
            out_of_order: self.out_of_order.unwrap_or(DEFAULT_OUT_OF_ORDER),
            ..EmergencyOptions::default()
        }))
    }
}

#[derive(Args)]
#[command(next_help_heading = "Grid scenario")]
struct GridArgs {
    /// Simulate grid management: cases in every cell and the officers working them, and the
    /// cells' sensors, alongside the detectors.
    ///
    /// Cases (urgent: flooding, manhole_cover, road_collapse, gas_leak, fallen_tree, fire_hazard,
    /// 10 %; ordinary: garbage, illegal_parking, street_light, road_damage, illegal_advertising,
    /// illegal_construction, graffiti, 85 %; other categories 5 %) are reported by hotline, patrol
    /// or app, naming their cell or (20 %) a point of it; assigned to one of the cell's officers
    /// 5–60 min later, worked (urgent ones within hours, any time; ordinary ones within days,
    /// 08:00–20:00 local), resolved, and closed 10 min–4 h later; about 10 % run past their time
    /// limit and 5 % are reopened. Every cell has a water-level sensor (every 60 s), a third of
    /// them one more (manhole tilt, smoke, PM2.5, noise, feeder load), with rare tilted manhole
    /// covers and night-time noise.
    #[arg(long, value_enum, default_value = "off")]
    grid: OnOff,
    /// Cases per cell per hour, on the daily average; the rate follows a daily profile in the
    /// city time zone, from 0.22 × at night to 1.75 × from 10:00 to 16:00 [default: 0.3]
    #[arg(long, value_name = "X", value_parser = parse_case_rate)]
    case_rate: Option<f64>,
    /// A rainstorm over DISTRICT (id or name) from MINUTE (counted from the start of the run) for
    /// DURATION_MIN minutes (default 60), e.g. district-2@30+60: the water level of every cell
    /// of the district rises to 0.35–0.6 m within about 10 min and drains within 20 min of the
    /// end; each cell's sensor opens a flooding case (source sensor). Repeatable.
    #[arg(long = "rainstorm", value_name = "DISTRICT@MINUTE[+DURATION_MIN]")]
    rainstorms: Vec<RainstormSpec>,
    /// A sensor that stops reporting from MINUTE (counted from the start of the run) on: a
    /// water_level sensor chosen by the simulator (outside any rainstorm's district; the summary
    /// names it), or SENSOR (e.g. ws-cell-1-2-water_level). Repeatable.
    #[arg(long = "silent-sensor", value_name = "[SENSOR@]MINUTE")]
    silent_sensors: Vec<SilentSensorSpec>,
}

impl GridArgs {
    /// The grid options, or `None` with --grid off (then no other grid option may be given).
    fn options(&self) -> Result<Option<GridOptions>> {
        if matches!(self.grid, OnOff::Off) {
            let given = [
                (self.case_rate.is_some(), "--case-rate"),
                (!self.rainstorms.is_empty(), "--rainstorm"),
                (!self.silent_sensors.is_empty(), "--silent-sensor"),
            ];
            if let Some((_, name)) = given.iter().find(|(g, _)| *g) {
                anyhow::bail!("{name} needs --grid on");
            }
            return Ok(None);
        }
        Ok(Some(GridOptions {
            case_rate: self.case_rate.unwrap_or(DEFAULT_CASE_RATE),
            rainstorms: self.rainstorms.clone(),
            silent_sensors: self.silent_sensors.clone(),
        }))
    }
}

#[derive(Args)]
#[command(next_help_heading = "Health scenario")]
struct HealthArgs {
    /// Simulate public health: travellers with id-card numbers, their trips and venue check-ins,
    /// and confirmed cases, alongside the detectors.
    ///
    /// Trains (G1001–G1008, every 20 min, 30–80 travellers with row 1–20 and seat such as 12A),
    /// metro trains (every 5 min, 10–30 travellers) and buses (every 10 min, 5–15) depart through
    /// the run; every traveller checks in at a venue of a cell about once every 4 hours. The
    /// id-card numbers (valid GB 11643-1999 numbers of Hangzhou) are clear personal ids that
    /// citybrain pseudonymizes at ingestion; they appear in payloads only, never in topics.
    #[arg(long, value_enum, default_value = "off")]
    health: OnOff,
    /// Number of travellers (1–1000000) [default: 2000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    travellers: Option<u32>,
    /// At MINUTE (counted from the start of the run) one traveller who travelled earlier in the
    /// run is confirmed (`city/health/case/hc-mMMMM-K`): their co-passengers and venue contacts
    /// are what citybrain's `health.contact` rule finds. Repeatable.
    #[arg(long = "confirmed-case", value_name = "MINUTE")]
    confirmed_cases: Vec<u32>,
    /// Clear every confirmed case MIN minutes after its confirmation (1–20160), if within the run.
    #[arg(long, value_name = "MIN", value_parser = clap::value_parser!(u32).range(1..=20_160))]
    clear_after: Option<u32>,
}

impl HealthArgs {
    /// The health options, or `None` with --health off (then no other health option may be
    /// given).
    fn options(&self) -> Result<Option<HealthOptions>> {
        if matches!(self.health, OnOff::Off) {
            let given = [
                (self.travellers.is_some(), "--travellers"),
                (!self.confirmed_cases.is_empty(), "--confirmed-case"),
                (self.clear_after.is_some(), "--clear-after"),
            ];
            if let Some((_, name)) = given.iter().find(|(g, _)| *g) {
                anyhow::bail!("{name} needs --health on");
            }
            return Ok(None);
        }
        Ok(Some(HealthOptions {
            travellers: self.travellers.unwrap_or(DEFAULT_TRAVELLERS),
            confirmed_cases: self.confirmed_cases.clone(),
            clear_after_min: self.clear_after,
        }))
    }
}

fn parse_case_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of cases per cell per hour (0–100)")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of calls per district per hour (0–1000)")),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

#[derive(Args)]
struct ReplayArgs {
    /// The recording (JSON Lines, gzip when it ends in .gz).
    #[arg(long, value_name = "FEED.jsonl[.gz]")]
    input: PathBuf,
    /// The MQTT broker (plain TCP).
    #[arg(long, value_name = "mqtt://HOST:PORT")]
    mqtt: MqttTarget,
    #[command(flatten)]
    publish: PublishArgs,
}

#[derive(Args)]
struct PublishArgs {
    /// Simulated seconds per wall-clock second, paced by each payload's `ts` relative to the
    /// first one [default: 1, real time].
    #[arg(long, value_name = "X", value_parser = parse_speed, requires = "mqtt")]
    speed: Option<f64>,
    /// Publish as fast as the broker acknowledges.
    #[arg(long, conflicts_with = "speed", requires = "mqtt")]
    fast: bool,
    /// MQTT QoS of every publish: 1 (at least once; every message acknowledged) or 0.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1), requires = "mqtt")]
    qos: u8,
    /// MQTT client id [default: citybrain-sim-{PID}-0].
    #[arg(long, value_name = "ID", requires = "mqtt")]
    client_id: Option<String>,
}

impl PublishArgs {
    fn pace(&self) -> Pace {
        if self.fast { Pace::AsFastAsPossible } else { Pace::Speed(self.speed.unwrap_or(1.0)) }
    }

    fn target(&self, mut target: MqttTarget) -> MqttTarget {
        target.qos = self.qos;
        if let Some(id) = &self.client_id {
            target.client_id = id.clone();
        }
        target
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1e-6 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn pace_text(pace: Pace) -> String {
    match pace {
        Pace::AsFastAsPossible => "as fast as possible".to_string(),
        Pace::Speed(x) => format!("at speed {x}"),
    }
}

fn city(a: CityArgs) -> Result<()> {
    let opts = CityOptions {
        seed: a.seed,
        districts_x: a.districts_x,
        districts_y: a.districts_y,
        cells_per_district_side: a.cells_per_district_side,
        cell_size_m: a.cell_size_m,
        center_lon: a.center_lon,
        center_lat: a.center_lat,
    };
    let geojson = generate_city(&opts).context("invalid city options")?;
    let text = geojson_text(&geojson);
    // Loading it back proves the file is a valid city model, and gives the summary.
    let model = CityModel::from_geojson_str(&text).context("the generated city does not load (a bug)")?;
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "citybrain-sim: wrote {} — {} districts, {} cells, {} segments, {} detectors, {} stations",
        a.out.display(),
        model.districts.len(),
        model.cells.len(),
        model.segments.len(),
        model.detectors.len(),
        model.stations.len()
    );
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.city)
        .with_context(|| format!("reading city model {}", a.city.display()))?;
    let model = CityModel::from_geojson_str(&text)
        .with_context(|| format!("loading city model {}", a.city.display()))?;
    let opts = FeedOptions {
        seed: a.seed,
        start_ms: a.start,
        duration_min: a.duration_min,
        interval_s: a.interval_s,
        incidents: a.incidents,
        rush_hours: matches!(a.rush_hours, OnOff::On),
        topic_prefix: a.topic_prefix,
    };
    let emergency = a.emergency.options()?;
    let grid = a.grid.options()?;
    let health = a.health.options()?;
    let traffic = Simulator::new(&model, &opts).context("invalid run options")?;
    let mut sim = match &emergency {
        None => Scenario::traffic_only(traffic),
        Some(em) => {
            let net = RoadNetwork::from_geojson(&model, &text)
                .with_context(|| format!("the road network of {}", a.city.display()))?;
            let em = EmergencySim::new(&model, net, &opts, em).context("invalid emergency options")?;
            Scenario::new(traffic, Some(em))?
        }
    };
    if let Some(grid) = &grid {
        sim = sim.with_grid(GridSim::new(&model, &opts, grid).context("invalid grid options")?)?;
    }
    if let Some(health) = &health {
        sim = sim.with_health(HealthSim::new(&model, &opts, health).context("invalid health options")?)?;
    }
    let (start, total) = (sim.start_ms(), sim.interval_count());
    let destination = match (&a.out, &a.mqtt) {
        (Some(out), None) => out.display().to_string(),
        (None, Some(mqtt)) => format!("{mqtt} {}", pace_text(a.publish.pace())),
        (Some(out), Some(mqtt)) => format!("{} and {mqtt} {}", out.display(), pace_text(a.publish.pace())),
        (None, None) => anyhow::bail!("--out or --mqtt is required"),
    };
    eprintln!(
        "citybrain-sim: {} detectors every {} s for {} min from {} → {destination}",
        model.detectors.len(),
        opts.interval_s,
        opts.duration_min,
        format_ms(start),
    );
    if let (Some(em), Some(sim)) = (&emergency, sim.emergency()) {
        let mci: Vec<String> = em
            .mass_casualty
            .iter()
            .map(|m| format!(", mass casualty: {} calls in {} at minute {}", m.calls, m.district, m.minute))
            .collect();
        eprintln!(
            "citybrain-sim: emergency: {} units at {} stations, {} calls per district per hour{}",
            sim.unit_count(),
            model.stations.len(),
            em.call_rate,
            mci.concat()
        );
    }
    if let (Some(grid), Some(sim)) = (&grid, sim.grid()) {
        let storms: Vec<String> = grid
            .rainstorms
            .iter()
            .map(|r| {
                format!(", rainstorm: {} from minute {} for {} min", r.district, r.minute, r.duration_min)
            })
            .collect();
        let silent: Vec<String> = sim
            .silent_sensors()
            .iter()
            .map(|(id, from)| format!(", {id} silent from minute {}", (from - start) / MINUTE))
            .collect();
        eprintln!(
            "citybrain-sim: grid: {} cells, {} officers, {} sensors, {} cases per cell per hour{}{}",
            model.cells.len(),
            model.officers().count(),
            sim.sensor_count(),
            grid.case_rate,
            storms.concat(),
            silent.concat()
        );
    }
    if let (Some(health), Some(sim)) = (&health, sim.health()) {
        let cases: Vec<String> = health
            .confirmed_cases
            .iter()
            .map(|m| match health.clear_after_min {
                Some(c) => format!(", confirmed case at minute {m} (cleared {c} min later)"),
                None => format!(", confirmed case at minute {m}"),
            })
            .collect();
        eprintln!(
            "citybrain-sim: health: {} travellers, {} venues{}",
            sim.traveller_count(),
            sim.venue_count(),
            cases.concat()
        );
    }
    let out = match (a.out, a.mqtt) {
        (out, Some(mqtt)) => return run_to_mqtt(sim, out, a.publish.target(mqtt), a.publish.pace()),
        (Some(out), None) => out,
        (None, None) => unreachable!("checked above"),
    };
    let long_run = total * model.detectors.len() as u64 >= 100_000;
    let mut rec = Recording::create(&out)?;
    for (i, batch) in (1..).zip(sim.by_ref()) {
        let batch = batch?;
        for line in &batch.lines {
            rec.write_line(line)?;
        }
        // Progress at every tenth of a long run (about 100 000 readings or more).
        if long_run && i * 10 / total > (i - 1) * 10 / total {
            eprintln!(
                "citybrain-sim: {:3}% simulated up to {} ({} {})",
                i * 100 / total,
                format_ms(batch.ts),
                rec.lines(),
                if emergency.is_some() || grid.is_some() || health.is_some() { "lines" } else { "readings" }
            );
        }
    }
    let lines = rec.finish()?;
    eprintln!("citybrain-sim: wrote {} to {}", what_was_written(&sim, lines), out.display());
    Ok(())
}

/// `N readings`, or with other scenarios `N lines (R detector readings, E emergency events,
/// G grid events, H health events)` (the parts of the scenarios that are on).
fn what_was_written(sim: &Scenario<'_>, lines: u64) -> String {
    if sim.emergency().is_none() && sim.grid().is_none() && sim.health().is_none() {
        return format!("{lines} readings");
    }
    let mut parts = vec![format!("{} detector readings", sim.readings())];
    if sim.emergency().is_some() {
        parts.push(format!("{} emergency events", sim.emergency_events()));
    }
    if sim.grid().is_some() {
        parts.push(format!("{} grid events", sim.grid_events()));
    }
    if let Some(h) = sim.health() {
        parts.push(format!(
            "{} health events: {} trips, {} check-ins, {} cases",
            sim.health_events(),
            h.trip_count(),
            h.checkin_count(),
            h.case_count()
        ));
    }
    format!("{lines} lines ({})", parts.join(", "))
}

/// `run --mqtt`: publishes the simulated feed; with `out`, also records exactly the lines
/// published (a line is written once the next one is asked for, i.e. once it went out).
fn run_to_mqtt(sim: Scenario<'_>, out: Option<PathBuf>, target: MqttTarget, pace: Pace) -> Result<()> {
    let mut rec = out.as_deref().map(Recording::create).transpose()?;
    let failure = RefCell::new(None);
    let mut sim = sim;
    let mut batch = Vec::<String>::new().into_iter();
    let mut held: Option<String> = None;
    let lines = std::iter::from_fn(|| {
        if let (Some(line), Some(rec)) = (held.take(), rec.as_mut())
            && let Err(e) = rec.write_line(&line)
        {
            *failure.borrow_mut() = Some(e);
            return None;
        }
        loop {
            if let Some(line) = batch.next() {
                if rec.is_some() {
                    held = Some(line.clone());
                }
                return Some(line);
            }
            match sim.next()? {
                Ok(b) => batch = b.lines.into_iter(),
                Err(e) => {
                    *failure.borrow_mut() = Some(e);
                    return None;
                }
            }
        }
    });
    let published = publish(&target, lines, pace);
    // `held`, if any, is a line that was not published (stopped): it stays out of the recording.
    if let (Some(rec), Some(out)) = (rec, &out) {
        let lines = rec.finish()?;
        let mixed = sim.emergency().is_some() || sim.grid().is_some() || sim.health().is_some();
        let what = if mixed { format!("{lines} lines") } else { format!("{lines} readings") };
        eprintln!("citybrain-sim: wrote {what} to {}", out.display());
    }
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    published
}

/// `replay`: publishes a recording, streaming it from disk.
fn replay(a: ReplayArgs) -> Result<()> {
    let target = a.publish.target(a.mqtt);
    let pace = a.publish.pace();
    let mut reader = open_lines(&a.input)?;
    eprintln!("citybrain-sim: replaying {} → {target} {}", a.input.display(), pace_text(pace));
    let failure = RefCell::new(None);
    let lines = std::iter::from_fn(|| match reader.next()? {
        Ok(line) => Some(line),
        Err(e) => {
            *failure.borrow_mut() = Some(e);
            None
        }
    });
    let published = publish(&target, lines, pace);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    published
}

/// Publishes `lines` on a fresh tokio runtime, with a progress line every 2 s, Ctrl-C to stop
/// (twice to quit at once) and a summary at the end.
fn publish(target: &MqttTarget, lines: impl Iterator<Item = String>, pace: Pace) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (report, interrupted) = runtime.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "citybrain-sim: stopping: waiting for outstanding acknowledgements (Ctrl-C again to quit)"
                );
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let progress = Arc::new(PublishProgress::default());
        let printer = tokio::spawn(print_progress(progress.clone()));
        let report = publish_lines_with_progress(target, lines, pace, Some(stop.clone()), progress).await;
        printer.abort();
        ctrl_c.abort();
        let interrupted = *stop.borrow();
        report.map(|r| (r, interrupted))
    })?;
    summary(target, &report, interrupted);
    Ok(())
}

fn summary(target: &MqttTarget, r: &PublishReport, interrupted: bool) {
    eprintln!(
        "citybrain-sim: published {} messages ({:.1} MB of payload) to {target} at QoS {} in {:.1} s — {:.0} msg/s{}",
        r.messages,
        r.bytes as f64 / 1e6,
        target.qos,
        r.seconds,
        r.rate(),
        if interrupted { " (stopped early)" } else { "" }
    );
}

/// A progress line every 2 s: messages published and confirmed, the rate, the event time.
async fn print_progress(progress: Arc<PublishProgress>) {
    const EVERY: Duration = Duration::from_secs(2);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    let (mut last_at, mut last) = (Instant::now(), 0);
    loop {
        tick.tick().await;
        let confirmed = progress.confirmed();
        let rate = (confirmed - last) as f64 / last_at.elapsed().as_secs_f64();
        (last_at, last) = (Instant::now(), confirmed);
        let at = progress.event_ts().map(|t| format!(", event time {}", format_ms(t))).unwrap_or_default();
        eprintln!(
            "citybrain-sim: {} published, {confirmed} confirmed, {rate:.0} msg/s{at}",
            progress.published()
        );
    }
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::City(a) => city(a),
        Command::Run(a) => run(*a),
        Command::Replay(a) => replay(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line, without a backtrace.
            eprintln!("citybrain-sim: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
